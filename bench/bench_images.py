"""Image prompts: memory and event-loop lag of a prompt with the most image links at their largest.

The most 6000² links one prompt can carry is the smaller of `PROMPT_MAX_IMAGES` (10) and what
`IMAGE_PROMPT_MAX_TOTAL_PIXELS` admits (200 MP: five such pictures); a sixth is refused on its
header, before it is decoded. `LINKS` is computed from those defaults.

- `image_prompts_peak_rss_mb`: peak RSS of a fresh process that serves five 6000×6000 PNGs
  (about 100 KB each on the wire, 108 MB each decoded) from a loopback server and runs
  `engine.imaging.fetch.fetch_init_image` on all five links, as `/imagine` does for a prompt
  with five image links: fetched three at a time, each decoded (one at a time) and reduced,
  blended and saved. Goal ≤ 1024 MB (before issue 13, four such links took 4.6 GB).
- `image_prompts_loop_lag_ms`: the longest the event loop of that process went without
  running a 5 ms ticker during the fetch (decoding and blending run in worker threads).
- `image_prompts_seconds`: how long the five links took, without a goal.

The loopback server is reached through an explicit bench-only policy (its host and port
allowed), not by weakening the default, which refuses loopback.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import Result

ROOT = Path(__file__).resolve().parent.parent
SIDE = 6000


def _most_links() -> int:
    from engine.imaging.fetch import FetchLimits
    from engine.prompt import PromptLimits

    limits = FetchLimits()
    return min(PromptLimits().max_images, limits.max_total_pixels // (SIDE * SIDE))


LINKS = _most_links()


def _pictures(workdir: Path) -> list[Path]:
    """Five different 6000² PNGs: smooth gradients, so they are small on the wire (kept in the cache)."""
    import numpy as np
    from PIL import Image

    folder = workdir / "image_prompts"
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for n in range(LINKS):
        path = folder / f"{SIDE}_{n}.png"
        if not path.exists():
            ramp = (np.arange(SIDE, dtype=np.uint16) * 255 // (SIDE - 1)).astype(np.uint8)
            array = np.empty((SIDE, SIDE, 3), dtype=np.uint8)
            array[..., 0] = ramp[None, :]
            array[..., 1] = ramp[:, None]
            array[..., 2] = 40 * n
            Image.fromarray(array, "RGB").save(folder / "partial.png", optimize=False, compress_level=9)
            (folder / "partial.png").replace(path)
            del array
        paths.append(path)
    return paths


def run(ctx: Any) -> list[Result]:
    paths = _pictures(ctx.workdir)
    command = [sys.executable, "-m", "bench.bench_images", "rss", *map(str, paths)]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"image prompt run failed: {done.stderr[-2000:]}")
    measured = json.loads(done.stdout.strip().splitlines()[-1])
    print(f"image prompts: {LINKS} x {SIDE}² ({measured['wire_kb']:.0f} KB each on the wire) in "
          f"{measured['seconds']:.1f} s", file=sys.stderr)
    return [Result("image_prompts_peak_rss_mb", measured["peak_rss_mb"], "MB", 1024.0, "<="),
            Result("image_prompts_loop_lag_ms", measured["loop_lag_ms"], "ms", 200.0, "<="),
            Result("image_prompts_seconds", measured["seconds"], "s", None)]


async def _fetch_all(paths: list[Path]) -> dict[str, float]:
    from aiohttp import web

    from engine.imaging.fetch import FetchLimits, FetchPolicy, fetch_init_image

    bodies = [p.read_bytes() for p in paths]

    async def serve(request: web.Request) -> web.Response:
        return web.Response(body=bodies[int(request.match_info["n"])], content_type="image/png")

    app = web.Application()
    app.router.add_get("/{n}.png", serve)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    policy = FetchPolicy.build(allowed_hosts=["127.0.0.1"], ports=[port])  # bench only: loopback allowed

    lag = 0.0
    stop = asyncio.Event()

    async def ticker() -> None:
        nonlocal lag
        while not stop.is_set():
            before = time.perf_counter()
            await asyncio.sleep(0.005)
            lag = max(lag, time.perf_counter() - before - 0.005)

    tick = asyncio.create_task(ticker())
    started = time.perf_counter()
    try:
        with tempfile.TemporaryDirectory() as folder:
            await fetch_init_image([f"http://127.0.0.1:{port}/{n}.png" for n in range(len(paths))], Path(folder),
                                   policy=policy, limits=FetchLimits())
        seconds = time.perf_counter() - started
    finally:
        stop.set()
        await tick
        await runner.cleanup()
    return {"seconds": seconds, "loop_lag_ms": lag * 1000, "wire_kb": sum(map(len, bodies)) / len(bodies) / 1024}


def _rss_main(argv: list[str]) -> int:
    """Child process: serve the pictures on loopback, fetch them as one prompt, print peak RSS."""
    from bench.bench_upscale import _peak_kb

    parser = argparse.ArgumentParser()
    parser.add_argument("paths", nargs="+", type=Path)
    args = parser.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    measured = asyncio.run(_fetch_all(args.paths))
    measured["peak_rss_mb"] = _peak_kb() / 1024
    print(json.dumps(measured))
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "rss":
        sys.exit(_rss_main(sys.argv[2:]))
    print("usage: python -m bench --only images", file=sys.stderr)
    sys.exit(2)

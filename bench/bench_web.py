"""Web gallery benchmarks (issue 19): server time of its pages, and thumbnails off the loop.

- `web_gallery_page_p95_ms`: 95th percentile server time (the `Server-Timing` header the
  gallery sets: from the request reaching the app to the response being ready) of grid
  pages over 100,000 shares (20,000 with --quick): newest, most liked this week and of all
  time, one server's page, a search, a filtered page (model and aspect), each the first page
  and a page 300 images down. Requests are sent one at a time over keep-alive.
- `web_api_shares_p95_ms`: the same for `/api/shares` (what infinite scroll fetches).
- `web_share_page_p95_ms`: the image page (parameters and lineage).
- `web_thumb_loop_lag_p99_ms`: 99th percentile event-loop lag (how late a 5 ms timer fires)
  while 1,000 WebP thumbnails (300 with --quick) are made from 512² PNGs through the
  gallery's thumbnailer; the time to make them is printed on stderr.
"""

from __future__ import annotations

import asyncio
import io
import json
import random
import shutil
import sqlite3
import statistics
import sys
import time
from pathlib import Path

from bench.common import Result

GUILDS = (1111, 2222, 3333)
MODELS = ("stable-diffusion-v1-5/stable-diffusion-v1-5", "/srv/models/dreamy-v2.safetensors", "sdxl/base")
SIZES = ((512, 512), (768, 512), (512, 768))
_WORDS = ("lighthouse", "fox", "castle", "robot", "forest", "city", "dragon", "portrait", "cat", "ship",
          "mountain", "garden", "astronaut", "samurai", "library", "desert", "owl", "train", "bridge")
_STYLES = ("watercolor", "oil painting", "photograph", "anime", "pixel art", "isometric", "cinematic")


def _fill(folder: Path, count: int) -> None:
    """Insert `count` shares with their jobs (with requests) and image rows, in bulk."""
    rng = random.Random(19)
    con = sqlite3.connect(folder / "tessera.sqlite3")
    now = time.time()
    with con:
        for start in range(0, count, 5000):
            batch = range(start, min(count, start + 5000))
            rows = []
            for n in batch:
                width, height = SIZES[n % 3]
                prompt = f"{rng.choice(_WORDS)} {rng.choice(_WORDS)} {rng.choice(_STYLES)} v{n}"
                request = {"prompts": [{"text": prompt, "weight": 1.0}], "width": width, "height": height,
                           "steps": 30, "guidance": 7.0, "seed": n, "sampler": "euler_a", "model": MODELS[n % 3]}
                rows.append((f"w{n:06d}", n % 700, GUILDS[n % 3], prompt, json.dumps(request), width, height,
                             int(rng.paretovariate(1.5)) - 1, now - (count - n) * 60))
            con.executemany(
                "INSERT INTO jobs (id, kind, state, user_id, guild_id, prompt_text, request_json, model, created_at) "
                "VALUES (?, 'imagine', 'done', ?, ?, ?, ?, ?, ?)",
                [(r[0], r[1], r[2], r[3], r[4], MODELS[n % 3], r[8]) for n, r in zip(batch, rows, strict=True)])
            con.executemany(
                "INSERT INTO images (job_id, idx, path, width, height, format, sha256, bytes, created_at) "
                "VALUES (?, 0, ?, ?, ?, 'PNG', ?, 1, ?)",
                [(r[0], f"x/{r[0]}.png", r[5], r[6], f"{n:064x}", r[8]) for n, r in zip(batch, rows, strict=True)])
            con.executemany(
                "INSERT INTO gallery (job_id, idx, author_id, guild_id, channel_id, message_id, prompt_text, likes, "
                "created_at) VALUES (?, 0, ?, ?, 5, ?, ?, ?, ?)",
                [(r[0], r[1], r[2], 10**17 + n, r[3], r[7], r[8]) for n, r in zip(batch, rows, strict=True)])
    con.execute("INSERT INTO gallery_fts (gallery_fts) VALUES ('optimize')")
    con.commit()
    con.close()


def _p(values: list[float], q: int) -> float:
    return statistics.quantiles(values, n=100)[q - 1]


async def _server_times(port: int, paths: list[str], rounds: int) -> list[float]:
    import aiohttp

    timings: list[float] = []
    async with aiohttp.ClientSession() as session:
        for round_number in range(rounds + 1):
            for path in paths:
                async with session.get(f"http://127.0.0.1:{port}{path}") as response:
                    await response.read()
                    if response.status != 200:
                        raise RuntimeError(f"{path}: {response.status}")
                    if round_number:  # the first round warms the page cache
                        timings.append(float(response.headers["Server-Timing"].split("dur=")[1]))
    return timings


def _api_path(page: str) -> str:
    """The /api/shares request for the same page as the grid address `page`."""
    if page.startswith("/g/"):
        guild, _, query = page[3:].partition("?")
        return f"/api/shares?server={guild}" + (f"&{query}" if query else "")
    return "/api/shares" + page[1:]


async def _pages(workdir: Path, count: int, rounds: int) -> tuple[list[float], list[float], list[float]]:
    from bot.web import WebOptions, start_web
    from storage import Storage

    folder = workdir / "web-gallery"
    shutil.rmtree(folder, ignore_errors=True)
    await (await Storage.open(folder)).close()
    _fill(folder, count)
    server = await start_web(folder, host="127.0.0.1", port=0, options=WebOptions(rate_per_s=1e6, rate_burst=10**6))
    deep = "offset=300"
    grids = ["/", f"/?{deep}", "/?sort=likes&period=week", f"/?sort=likes&{deep}", "/?sort=likes",
             f"/g/{GUILDS[1]}", f"/g/{GUILDS[1]}?{deep}", "/?q=fox", "/?q=lighthouse+watercolor&" + deep,
             "/?q=cast*&sort=likes", f"/g/{GUILDS[0]}?q=robot", "/?model=dreamy-v2.safetensors&aspect=portrait",
             "/?aspect=landscape&sort=likes&period=day"]
    try:
        pages = await _server_times(server.port, grids, rounds)
        api = await _server_times(server.port, [_api_path(path) for path in grids], rounds)
        share = await _server_times(server.port, [f"/s/{n}" for n in range(1, count, max(1, count // 20))], rounds)
    finally:
        await server.close()
        shutil.rmtree(folder, ignore_errors=True)
    return pages, api, share


def _sources(folder: Path, count: int) -> list[tuple[Path, str]]:
    import hashlib

    from PIL import Image, ImageDraw

    folder.mkdir(parents=True, exist_ok=True)
    found = []
    for n in range(count):
        image = Image.linear_gradient("L").resize((512, 512)).convert("RGB")
        ImageDraw.Draw(image).ellipse((n % 300, 40, n % 300 + 180, 220), fill=(n % 256, 120, 200))
        out = io.BytesIO()
        image.save(out, "PNG", compress_level=1)
        path = folder / f"{n}.png"
        path.write_bytes(out.getvalue())
        found.append((path, hashlib.sha256(out.getvalue()).hexdigest()))
    return found


async def _thumbnail_lag(workdir: Path, thumbnails: int) -> tuple[list[float], float]:
    from bot.web.thumbs import SIZES as THUMB_SIZES
    from bot.web.thumbs import Thumbnailer

    folder = workdir / "web-thumbs"
    shutil.rmtree(folder, ignore_errors=True)
    sources = _sources(folder / "src", -(-thumbnails // len(THUMB_SIZES)))
    thumbs = Thumbnailer(folder / "cache")
    lags: list[float] = []
    done = asyncio.Event()

    async def ticker() -> None:
        while not done.is_set():
            started = time.perf_counter()
            await asyncio.sleep(0.005)
            lags.append((time.perf_counter() - started - 0.005) * 1000)

    tick = asyncio.create_task(ticker())
    started = time.perf_counter()
    try:
        keys = [(path, sha, size) for path, sha in sources for size in THUMB_SIZES][:thumbnails]
        await asyncio.gather(*(thumbs.get(path, sha, size) for path, sha, size in keys))
    finally:
        elapsed = time.perf_counter() - started
        done.set()
        await tick
        thumbs.close()
        shutil.rmtree(folder, ignore_errors=True)
    return lags, elapsed


def run(ctx) -> list[Result]:
    count = 20_000 if ctx.quick else 100_000
    rounds = 3 if ctx.quick else 10
    thumbnails = 300 if ctx.quick else 1000
    pages, api, share = asyncio.run(_pages(ctx.workdir, count, rounds))
    lags, elapsed = asyncio.run(_thumbnail_lag(ctx.workdir, thumbnails))
    print(f"  web: {count} shares; grid p50 {statistics.median(pages):.1f} ms, max {max(pages):.1f} ms; "
          f"{thumbnails} thumbnails in {elapsed:.1f} s, loop lag max {max(lags):.1f} ms", file=sys.stderr)
    return [
        Result("web_gallery_page_p95_ms", _p(pages, 95), "ms", 50, "<="),
        Result("web_api_shares_p95_ms", _p(api, 95), "ms", 50, "<="),
        Result("web_share_page_p95_ms", _p(share, 95), "ms", 50, "<="),
        Result("web_thumb_loop_lag_p99_ms", _p(lags, 99), "ms", 50, "<"),
    ]

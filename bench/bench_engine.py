"""Generation engine benchmarks: batching gain, GPU-thread overhead, time to a Discord-ready grid.

- `grid_batch_speedup`: the grid's 4 images as one batch vs 4 single runs (tiny SD 1.5, 128²,
  where per-step overhead dominates as on a GPU), measured alternately in the same run, best
  of N each.
- `overhead_ms_per_grid`: per 512² grid, the time the generating (GPU) thread spends outside
  the pipeline call (`Generator.generate`, which ends with 8-bit PIL images): handing the
  images to the writer pool, where grids, JPEG/PNG encoding and storage writes run while the
  thread starts the next job. For information, the time inside the call that is not spent in
  the UNet, VAE or text encoders (scheduler, guidance arithmetic, previews, 8-bit conversion)
  is printed on stderr: on a CPU-only machine it is tensor arithmetic on the CPU, on a GPU
  it is kernel launches.
- `grid_ready_ms`: from the end of the pipeline call to a Discord-ready grid file at 512²: the
  hand-off to the pool, `make_grid` and `encode_for_discord(prefer="jpeg")`.
"""

from __future__ import annotations

import statistics
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import Any

from bench.common import Result, alternating_ratio


def _request(width: int, steps: int, seed: int, count: int) -> Any:
    from engine.prompt import WeightedText
    from engine.request import GenerationRequest

    return GenerationRequest(prompts=(WeightedText("a lighthouse at dusk, oil painting"),), negative=("fog",),
                             width=width, height=width, steps=steps, guidance=7.0, seed=seed, sampler="euler_a",
                             model="bench", count=count)


def _timed(fn: Callable[[], Any]) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


class _ModelClock:
    """Adds up the time spent inside the model forwards (wrapped on the instances)."""

    def __init__(self, pipe: Any) -> None:
        self.seconds = 0.0
        self._undo: list[tuple[Any, str]] = []
        targets = [(pipe.unet, "forward"), (pipe.vae, "decode"), (pipe.vae, "encode")]
        for name in ("text_encoder", "text_encoder_2"):
            if getattr(pipe, name, None) is not None:
                targets.append((getattr(pipe, name), "forward"))
        for obj, attr in targets:
            self._wrap(obj, attr)

    def _wrap(self, obj: Any, attr: str) -> None:
        original = getattr(obj, attr)

        def timed(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                self.seconds += time.perf_counter() - started

        setattr(obj, attr, timed)
        self._undo.append((obj, attr))

    def close(self) -> None:
        for obj, attr in self._undo:
            delattr(obj, attr)


def _discord_grid(images: list[Any]) -> Any:
    from engine.imaging.encoding import encode_for_discord
    from engine.imaging.grid import make_grid

    return encode_for_discord(make_grid(images), stem="bench", prefer="jpeg")


def run(ctx: Any) -> list[Result]:
    from engine.diffusion.generate import Generator
    from engine.diffusion.models import load_model

    ref = ctx.model or str(ctx.models["sd15"])
    model = load_model(ref, device=ctx.device)
    generator = Generator(model)
    tiny = ctx.model is None

    # 1. Batch of 4 vs 4 single runs, alternated so machine noise hits both alike.
    size = 128 if tiny else model.profile.native
    steps = 4 if tiny else 20
    rounds = 3 if ctx.quick else 5
    batch = _request(size, steps, 1, 4)
    singles = [replace(batch, seed=batch.image_seed(i), count=1) for i in range(4)]
    generator.generate([batch])  # warm-up
    speedup = alternating_ratio(lambda: _timed(lambda: [generator.generate([r]) for r in singles]),
                                lambda: _timed(lambda: generator.generate([batch])), rounds)

    # 2. and 3. A 512² grid: time outside the model calls, then pipeline end -> Discord file.
    grid_request = _request(512, 1 if ctx.quick else 2, 7, 4)
    grids = 1 if ctx.quick else 2
    overheads, ready, glue = [], [], []
    with ThreadPoolExecutor(max_workers=2, thread_name_prefix="writer") as pool:
        pool.submit(_discord_grid, generator.generate([_request(64, 1, 1, 4)])[0]).result()  # warm the pool
        for _ in range(grids):
            clock = _ModelClock(model.pipe)
            try:
                started = time.perf_counter()
                images = generator.generate([grid_request])[0]
                ended = time.perf_counter()
                future = pool.submit(_discord_grid, images)  # the GPU thread's last act for this grid
                handed_off = time.perf_counter()
            finally:
                clock.close()
            future.result()
            done = time.perf_counter()
            overheads.append(handed_off - ended)
            glue.append(ended - started - clock.seconds)
            ready.append(done - ended)
    print(f"bench_engine: inside generate(), outside the model forwards: {statistics.median(glue) * 1000:.1f} ms "
          f"per 512² grid ({ctx.device})", file=sys.stderr)
    return [
        Result("grid_batch_speedup", round(speedup, 3), "x", 1.5, ">="),
        Result("overhead_ms_per_grid", round(statistics.median(overheads) * 1000, 2), "ms", 15.0, "<="),
        Result("grid_ready_ms", round(statistics.median(ready) * 1000, 2), "ms", 100.0, "<="),
    ]

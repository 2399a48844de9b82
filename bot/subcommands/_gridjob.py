"""What `tessera imagine`, `vary` and `reroll` share: run one grid job as the bot would.

The job is recorded in storage (queued -> running -> done, or failed/cancelled), its four
PNGs (with metadata) are stored like the bot stores them and also written to --out with the
2x2 grid, and one JSON object is printed per job:
{"job_id", "seed", "width", "height", "steps", "files", "grid", "ignored"}.
A progress bar goes to stderr when stderr is a terminal.

`generate_images` is the one call that generates; the queue work routes it elsewhere.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path
from typing import Any


def add_common_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, default=Path("."), help="folder for the PNG files (default: here)")
    parser.add_argument("--user", type=int, default=0, help="user id to record the job under (default 0)")


def generate_images(model: Any, request: Any, on_step: Any = None) -> list[Any]:
    """Generate one request's images on `model` (blocking; run it off the event loop)."""
    from engine.generate import run_generation

    return run_generation(model, [request], on_step=on_step)[0]


class ProgressBar:
    """`job [#######.........] 7/20` on stderr, redrawn in place; silent when not a terminal."""

    def __init__(self, label: str, stream: Any = sys.stderr) -> None:
        self.label = label
        self.stream = stream
        self.enabled = bool(getattr(stream, "isatty", lambda: False)())

    def __call__(self, _index: int, progress: Any) -> None:
        if not self.enabled:
            return
        width = 30
        filled = round(width * progress.step / max(progress.total, 1))
        self.stream.write(f"\r{self.label} [{'#' * filled}{'.' * (width - filled)}] {progress.step}/{progress.total}")
        if progress.step >= progress.total:
            self.stream.write("\n")
        self.stream.flush()


def load(settings: Any, ref: str) -> Any:
    from engine.models import load_model

    return load_model(ref, device=settings.device, dtype=settings.dtype, attention_slicing=settings.attention_slicing,
                      vae_tiling=settings.vae_tiling, cpu_offload=settings.cpu_offload)


async def run_job(storage: Any, model: Any, new_job: Any, request: Any, out_dir: Path) -> dict:
    """Create the job, generate, store and write the files; the JSON summary of the job."""
    from engine.encoding import encode_png, filename_stem
    from engine.errors import JobCancelled
    from engine.grid import make_grid
    from engine.metadata import pnginfo_for
    from storage.models import JobState

    job = await storage.jobs.create(new_job)
    await storage.jobs.transition(job.id, JobState.RUNNING)
    try:
        images = await asyncio.to_thread(generate_images, model, request, ProgressBar(job.id))
        pngs = await asyncio.to_thread(
            lambda: [encode_png(image, pnginfo_for(request, index=i)) for i, image in enumerate(images)])
        for index, (image, png) in enumerate(zip(images, pngs, strict=True)):
            await storage.images.add(job.id, index, png, image.width, image.height)
    except (JobCancelled, KeyboardInterrupt, asyncio.CancelledError):
        await storage.jobs.transition(job.id, JobState.CANCELLED)
        raise
    except BaseException as exc:
        await storage.jobs.transition(job.id, JobState.FAILED, error=(str(exc) or type(exc).__name__)[:500])
        raise
    await storage.jobs.transition(job.id, JobState.DONE)

    out_dir.mkdir(parents=True, exist_ok=True)
    stem = filename_stem(new_job.prompt_text, job.id)
    files = []
    for index, png in enumerate(pngs):
        path = (out_dir / f"{stem}_{index + 1}.png").resolve()
        path.write_bytes(png)
        files.append(str(path))
    grid_path = (out_dir / f"{stem}_grid.png").resolve()
    grid_path.write_bytes(await asyncio.to_thread(lambda: encode_png(make_grid(images))))
    return {"job_id": job.id, "seed": request.seed, "width": request.width, "height": request.height,
            "steps": request.steps, "files": files, "grid": str(grid_path), "ignored": list(request.ignored)}


def report_error(command: str, exc: BaseException) -> int:
    print(f"tessera {command}: {exc}", file=sys.stderr)
    return 1


def print_result(result: dict) -> None:
    print(json.dumps(result), flush=True)

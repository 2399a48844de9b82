"""Upscale one image of a job with Real-ESRGAN.

The upscale is recorded as a job of its own (kind "upscale", child of JOB and its image
INDEX), exactly as a U1–U4 button press would record it, and the full PNG (with the source's
metadata plus the upscale step) is stored and written to --out. Prints one JSON object:
{"job_id": "...", "file": "/abs/path.png", "width": ..., "height": ...}.

INDEX counts from 1, as on the U1–U4 buttons (an upscale's single image is 1).
Missing Real-ESRGAN weights are downloaded once into UPSCALER_WEIGHTS_DIR (with a progress bar).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path
from typing import Any


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("job", metavar="JOB", help="the job id, as shown under the grid")
    parser.add_argument("index", metavar="INDEX", type=int, help="which image: 1-4 as on U1-U4 (1 for an upscale)")
    parser.add_argument("--scale", type=int, choices=(2, 4), default=4, help="enlargement factor (default 4)")
    parser.add_argument("--out", type=Path, default=Path("."), help="folder to write the PNG into (default: here)")
    parser.add_argument("--no-download", action="store_true", help="never download missing weights")


def main(args: argparse.Namespace) -> int:
    from bot.config import load_settings
    from engine.errors import TesseraError

    settings = load_settings()
    try:
        result = asyncio.run(_upscale_job(settings, args.job, args.index, args.scale, args.out,
                                          allow_download=not args.no_download))
    except TesseraError as exc:
        print(f"tessera upscale: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(result))
    return 0


def run_upscale(upscaler: Any, source: Path, scale: int) -> Any:
    """The one call that does the work (the queue routes this to the GPU worker)."""
    from engine.upscale import upscale_to_png

    return upscale_to_png(upscaler, source, scale)  # type: ignore[arg-type]


async def _upscale_job(settings: Any, job_id: str, index: int, scale: int, out_dir: Path, *,
                       allow_download: bool) -> dict:
    from engine.encoding import filename_stem
    from engine.errors import StorageError
    from engine.upscale import Upscaler
    from storage.db import Storage
    from storage.models import JobKind, JobState, NewJob

    storage = await Storage.open(settings.data_dir)
    try:
        parent = await storage.jobs.require(job_id)
        images = await storage.images.for_job(parent.id)
        if not images:
            raise StorageError(f"job {parent.id} has no images (it is {parent.state})")
        if not 1 <= index <= len(images):
            raise StorageError(f"job {parent.id} has {len(images)} image(s); INDEX must be 1 to {len(images)}")
        record = next((r for r in images if r.index == index - 1), None)
        if record is None:
            raise StorageError(f"job {parent.id} has no image {index}")
        upscaler = Upscaler.from_settings(settings, allow_download=allow_download)
        upscaler.check_scale(record.width, record.height, scale)

        job = await storage.jobs.create(NewJob(
            kind=JobKind.UPSCALE, user_id=parent.user_id, prompt_text=parent.prompt_text,
            prompt_json=parent.prompt_json, seed=parent.seed, model=parent.model, guild_id=parent.guild_id,
            parent_id=parent.id, parent_index=record.index, options={"scale": scale, "source": str(record.path)},
        ))
        await storage.jobs.transition(job.id, JobState.RUNNING)
        try:
            result = await asyncio.to_thread(run_upscale, upscaler, record.path, scale)
            await storage.images.add(job.id, 0, result.png, result.width, result.height)
        except BaseException as exc:
            message = str(exc) if isinstance(exc, Exception) else exc.__class__.__name__
            await storage.jobs.transition(job.id, JobState.FAILED, error=message[:500])
            raise
        await storage.jobs.transition(job.id, JobState.DONE)
    finally:
        await storage.close()

    out_dir.mkdir(parents=True, exist_ok=True)
    path = (out_dir / f"{filename_stem(parent.prompt_text, job.id)}.png").resolve()
    path.write_bytes(result.png)
    return {"job_id": job.id, "file": str(path), "width": result.width, "height": result.height}

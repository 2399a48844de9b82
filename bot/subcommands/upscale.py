"""Upscale one image of a job with Real-ESRGAN.

The upscale goes through the job service exactly as a U1–U4 button press does: recorded as a
job of its own (kind "upscale", child of JOB and its image INDEX), queued ahead of grids, run
on the GPU thread (or on a worker with `QUEUE_URL=redis://…`). The full PNG (with the source's
metadata plus the upscale step) is stored and copied to --out. Prints one JSON object:
{"job_id": "...", "file": "/abs/path.png", "width": ..., "height": ...}.

INDEX counts from 1, as on the U1–U4 buttons (an upscale's single image is 1).
Missing Real-ESRGAN weights are downloaded once into UPSCALER_WEIGHTS_DIR (with a progress bar).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from bot.config import load_settings
from bot.subcommands._submit import copy_file, run_command, run_jobs
from engine.jobs.model import Job
from engine.upscale.weights import ensure_weights, spec_for

if TYPE_CHECKING:
    from engine.jobs.executor import (  # heavy for the CLI: PIL
        BatchControl,
        EngineExecutor,
        WorkItem,
        WorkResult,
    )
    from engine.jobs.queue import QueueEvent  # heavy for the CLI: PIL


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("job", metavar="JOB", help="the job id, as shown under the grid")
    parser.add_argument("index", metavar="INDEX", type=int, help="which image: 1-4 as on U1-U4 (1 for an upscale)")
    parser.add_argument("--scale", type=int, choices=(2, 4), default=4, help="enlargement factor (default 4)")
    parser.add_argument("--no-download", action="store_true", help="never download missing weights")
    parser.add_argument("--out", type=Path, default=Path("."), help="folder to write the PNG into (default: here)")
    parser.add_argument("--user", type=int, default=None, help="user id to record the job under (default: the grid's)")


class ModelOnDemand:
    """The engine's executor, minus the model load at start: an upscale needs no diffusion
    model, so `tessera upscale` works whatever MODEL_ID is (jobs that generate load it)."""

    def __init__(self, inner: EngineExecutor) -> None:
        self.inner = inner

    @property
    def model(self) -> object:
        return self.inner.model

    def prepare(self) -> None:
        pass

    def run(self, items: Sequence[WorkItem], control: BatchControl) -> list[WorkResult]:
        return self.inner.run(items, control)  # a generation batch loads the model first

    def close(self) -> None:
        self.inner.close()


def main(args: argparse.Namespace) -> int:
    return run_command("upscale", lambda: _upscale(args))


async def _upscale(args: argparse.Namespace) -> int:
    import asyncio

    from bot.service import Tessera  # heavy for the CLI: aiosqlite, PIL
    from engine.jobs.executor import EngineExecutor  # heavy for the CLI: PIL

    settings = load_settings()
    if args.no_download and not settings.queue_url:  # a Redis worker has its own weights folder
        from engine.upscale.realesrgan import DEFAULT_MODEL  # heavy for the CLI: PIL

        await asyncio.to_thread(ensure_weights, spec_for(DEFAULT_MODEL), settings.weights_dir, allow_download=False)

    async def submit(service: Tessera) -> list:
        user = args.user
        if user is None:  # recorded under the grid's owner, as a button press by them would be
            user = (await service.storage.jobs.require(args.job)).user_id
        return [await service.upscale(user_id=user, job_id=args.job, index=args.index - 1, scale=args.scale)]

    return await run_jobs("upscale", settings, submit, write_upscale, args.out,
                          executor=ModelOnDemand(EngineExecutor.from_settings(settings)))


def write_upscale(job: Job, event: QueueEvent, out_dir: Path) -> dict:
    from engine.imaging.encoding import filename_stem  # heavy for the CLI: PIL

    [record] = event.images
    path = copy_file(record.path, out_dir.resolve() / f"{filename_stem(job.prompt_text, job.id)}.png")
    return {"job_id": job.id, "file": path, "width": record.width, "height": record.height}

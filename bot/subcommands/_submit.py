"""What `tessera imagine`, `vary`, `reroll` and `upscale` share: submit through the job service.

The CLI starts the same `bot.service.Tessera` the bot runs, so a CLI job is checked, stored,
queued and run exactly like a bot job: on this machine's GPU thread with the in-process queue,
or on a GPU worker when `QUEUE_URL=redis://…` is set. Each command submits its jobs, waits for
each one's final event, copies the stored PNGs to --out and prints one JSON object per job, in
the order the jobs were submitted. A failed job is one line on stderr and exit status 1.

Unlike the bot, the CLI starts the service with `resume=False`: it runs only the jobs it
submits and leaves every other job stored in DATA_DIR (queued or running) to the bot that
owns it, so it may share a running bot's DATA_DIR, with either queue, without running that
bot's jobs a second time. Its own jobs are recorded with this process's identity
(`requester="cli"`): the bot never resumes them, and once this process is gone the next CLI
run (or `tessera doctor --fix`) marks whatever it left unfinished failed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import shutil
import sys
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from bot.authorization import Actor
from bot.cli import run_async
from bot.config import ConfigError, Settings, load_settings
from engine.errors import TesseraError
from engine.jobs.model import Job
from engine.request import GenerationRequest

if TYPE_CHECKING:
    from bot.service import Tessera  # heavy for the CLI: aiosqlite, PIL
    from engine.jobs.executor import Executor  # heavy for the CLI: PIL
    from engine.jobs.queue import QueueEvent  # heavy for the CLI: PIL

Submit = Callable[["Tessera"], Awaitable[Sequence["Job"]]]
Write = Callable[["Job", "QueueEvent", Path], dict]


def add_common_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, default=Path("."), help="folder for the PNG files (default: here)")
    parser.add_argument("--user", type=int, default=0, help="user id to record the job under (default 0)")


class ProgressBars:
    """One tqdm bar per watched job on stderr, driven by the queue's events.

    Silent when the stream is not a terminal (scripts read stdout's JSON; stderr stays clean).
    Events of jobs that are not watched (e.g. resumed ones) are ignored.
    """

    def __init__(self, stream: TextIO | None = None, *, enabled: bool | None = None,
                 loading: Callable[[], bool] | None = None) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.loading = loading  # True while the model loads: a started job shows that, not "running"
        self.enabled = bool(getattr(self.stream, "isatty", lambda: False)()) if enabled is None else enabled
        self._watched: set[str] = set()
        self._bars: dict[str, Any] = {}
        self._early: dict[str, QueueEvent] = {}  # queue positions announced before `watch`

    def watch(self, job_ids: Iterable[str]) -> None:
        job_ids = list(job_ids)
        self._watched.update(job_ids)
        early, self._early = self._early, {}
        for job_id in job_ids:
            if job_id in early:
                self(early[job_id])

    def __call__(self, event: QueueEvent) -> None:
        if not self.enabled:
            return
        if event.job_id not in self._watched:
            if event.kind in ("queued", "position"):  # submit announces the position before it returns
                self._early[event.job_id] = event
            return
        if event.kind in ("done", "failed", "cancelled"):
            self._close(event.job_id, complete=event.kind == "done")
            return
        bar = self._bar(event.job_id)
        if event.kind in ("queued", "position") and event.position is not None:
            bar.set_postfix_str(f"queued #{event.position}")
        elif event.kind == "started":
            bar.set_postfix_str("loading model" if self.loading is not None and self.loading() else "running")
        elif event.kind == "progress" and event.total:
            if bar.total != event.total:
                bar.reset(total=event.total)
            bar.update((event.step or 0) - bar.n)
            bar.set_postfix_str("running", refresh=False)

    def _bar(self, job_id: str) -> Any:
        bar = self._bars.get(job_id)
        if bar is None:
            from tqdm import tqdm

            # The queue already throttles progress events (PROGRESS_INTERVAL_S): draw every one.
            bar = tqdm(total=None, desc=job_id, unit="step", file=self.stream, leave=True, dynamic_ncols=True,
                       mininterval=0)
            self._bars[job_id] = bar
        return bar

    def _close(self, job_id: str, *, complete: bool) -> None:
        bar = self._bars.pop(job_id, None)
        if bar is None:
            return
        if complete and bar.total:
            bar.update(bar.total - bar.n)
        bar.close()

    def close(self) -> None:
        for job_id in list(self._bars):
            self._close(job_id, complete=False)


async def run_jobs(command: str, settings: Settings, submit: Submit, write: Write, out_dir: Path, *,
                   executor: Executor | None = None, bars: ProgressBars | None = None) -> int:
    """Start the service, submit, wait for each job, write its files and print its JSON.

    Interrupted (Ctrl-C), the jobs not finished yet are cancelled before the service stops,
    so they do not run on the next start.
    """
    from bot.service import Tessera  # heavy for the CLI: aiosqlite, PIL

    service = await Tessera.start(settings, executor=executor, resume=False, requester="cli")
    bars = bars if bars is not None else ProgressBars()
    if bars.loading is None:
        from bot.tracker import is_warming  # heavy for the CLI: discord, aiosqlite, PIL

        bars.loading = lambda: is_warming(service)
    service.subscribe(bars)
    jobs: list[Job] = []
    finished: set[str] = set()
    status = 0
    try:
        jobs = list(await submit(service))
        bars.watch(job.id for job in jobs)
        for job in jobs:
            event = (await service.wait_for_jobs([job.id]))[job.id]
            finished.add(job.id)
            if event.kind == "done":
                print_result(await asyncio.to_thread(write, job, event, out_dir))
            else:
                status = 1
                print(f"tessera {command}: job {job.id} {event.kind}: {event.error or 'no result'}", file=sys.stderr)
    finally:
        bars.close()
        try:
            for job in jobs:
                if job.id not in finished:
                    with contextlib.suppress(TesseraError):  # it finished meanwhile
                        await service.cancel(actor=Actor(user_id=job.user_id), job_id=job.id)  # its owner
        finally:
            await service.close()
    return status


async def settings_for_parent(job_ref: str) -> Settings:
    """Settings whose MODEL_ID is the model `job_ref` was made with (vary, reroll).

    The in-process GPU thread loads MODEL_ID first; making it the job's model means a CLI run
    loads one model, not MODEL_ID and then the job's. An unknown job fails here, clearly.
    """
    from storage.api import Storage  # heavy for the CLI: aiosqlite

    settings = load_settings()
    storage = await Storage.open(settings.data_dir)
    try:
        model = (await storage.jobs.require(job_ref)).model
    finally:
        await storage.close()
    if not model or model == settings.model_id:
        return settings
    try:
        return load_settings(model_id=model)
    except ConfigError:
        return settings  # the model is gone: the job reports it with the loader's message


def copy_file(source: Path, target: Path) -> str:
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, target)
    return str(target.resolve())


def write_grid(job: Job, event: QueueEvent, out_dir: Path) -> dict:
    """Copy a grid job's stored PNGs to `out_dir`, add the 2x2 grid; the job's JSON summary."""
    from PIL import Image

    from engine.imaging.encoding import encode_png, filename_stem  # heavy for the CLI: PIL
    from engine.imaging.grid import make_grid  # heavy for the CLI: PIL
    from engine.imaging.metadata import grid_pnginfo  # heavy for the CLI: PIL

    request = GenerationRequest.from_json(job.request_json or {})
    records = sorted(event.images, key=lambda record: record.index)
    stem = filename_stem(job.prompt_text, job.id)
    out_dir = out_dir.resolve()
    files = [copy_file(record.path, out_dir / f"{stem}_{record.index + 1}.png") for record in records]
    images = []
    for record in records:
        with Image.open(record.path) as image:
            images.append(image.convert("RGB"))
    grid_path = out_dir / f"{stem}_grid.png"
    grid_path.write_bytes(encode_png(make_grid(images), grid_pnginfo(request)))
    return {"job_id": job.id, "seed": request.seed, "width": request.width, "height": request.height,
            "steps": request.steps, "files": files, "grid": str(grid_path),
            "ignored": list(event.ignored or request.ignored), "flagged": list(event.flagged)}


def run_command(command: str, main: Callable[[], Coroutine[Any, Any, int]]) -> int:
    """`asyncio.run(main())` with user errors as one line on stderr and exit status 1
    (`bot.cli.run_async`: the CLI's one error policy)."""
    return run_async(command, main)


def print_result(result: dict) -> None:
    print(json.dumps(result), flush=True)

"""Fixtures for the bot tests: the real `Tessera` service with a controllable executor.

The service, storage and queue are the real ones; only the GPU work is faked (except in the
tiny-model test), so each test runs in a fraction of a second and can hold a job "on the GPU"
while it checks what the user sees.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image

from bot.client import TesseraClient
from bot.config import load_settings
from bot.service import Tessera
from engine.errors import JobCancelled
from engine.jobs.executor import BatchControl, Executor, WorkItem, WorkResult
from engine.jobs.model import Job, JobKind
from tests.discord_harness import CapturedHTTP, Harness


class StepExecutor:
    """Three steps per job with a preview at step 2; `gate` cleared holds jobs after step 1.

    Jobs that answer text (/describe, /shorten) go to `text`, a real executor (tiny models)
    when the test gives one: there is nothing to fake in a caption."""

    def __init__(self, steps: int = 3, text: Executor | None = None) -> None:
        self.steps = steps
        self.text = text
        self.gate = threading.Event()
        self.gate.set()
        self.ran: list[str] = []
        self.loaded = threading.Event()  # cleared: the "model" is still loading
        self.loaded.set()

    def prepare(self) -> None:
        self.loaded.wait(30)

    def close(self) -> None:
        if self.text is not None:
            self.text.close()

    def run(self, items: Sequence[WorkItem], control: BatchControl) -> list[WorkResult]:
        if self.text is not None and JobKind(items[0].kind).answers_text:
            self.ran.extend(item.job_id for item in items)
            return self.text.run(items, control)
        results: list[WorkResult | None] = [None] * len(items)
        for step in range(1, self.steps + 1):
            for index in range(len(items)):
                if results[index] is None and control.should_stop(index):
                    results[index] = WorkResult(error=JobCancelled())
                elif results[index] is None:
                    preview = Image.new("RGB", (16, 16), (200, 100, 50)) if step == 2 else None
                    control.on_step(index, step, self.steps, preview)
            if step == 1:
                while not self.gate.wait(0.01):
                    if all(control.should_stop(i) for i in range(len(items))):
                        break
        out = []
        for index, item in enumerate(items):
            self.ran.append(item.job_id)
            if results[index] is not None:
                out.append(results[index])
                continue
            if item.request is None:  # an upscale: the source image, larger
                with Image.open(item.options["source"]) as source:
                    scale = int(item.options.get("scale", 4))
                    size = (source.width * scale, source.height * scale)
                out.append(WorkResult(images=[Image.new("RGB", size, (10, 200, 30))]))
            else:
                size = (item.request.width // 8, item.request.height // 8)  # small: fast tests
                out.append(WorkResult(images=[Image.new("RGB", size, (30 * i, 60, 90)) for i in range(item.request.count)]))
        return out


class FakeClock:
    """A monotonic clock the test moves forward (for the 15-minute token expiry)."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.monotonic() + self.offset

    def advance(self, seconds: float) -> None:
        self.offset += seconds


@dataclass
class Bot:
    """One running bot: harness (client + captured HTTP), service, executor and clock."""

    h: Harness
    service: Tessera
    executor: StepExecutor
    clock: FakeClock
    data_dir: Path

    @property
    def http(self) -> CapturedHTTP:
        return self.h.http

    async def jobs(self, user_id: int | None = None) -> list[Job]:
        return await self.service.storage.jobs.list(user_id=user_id, limit=100)

    async def until(self, condition: Callable[[], Any], timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            value = condition()
            if asyncio.iscoroutine(value):
                value = await value
            if value:
                return
            if time.monotonic() > deadline:
                raise AssertionError("condition not met in time")
            await asyncio.sleep(0.01)

    async def finished(self, job_id: str) -> Job:
        """Wait for a job to end and for its message to be final; return the stored job."""
        tracker = self.h.client.tracker  # type: ignore[attr-defined]

        async def done() -> bool:
            job = await self.service.storage.jobs.get(job_id)
            shown = job_id not in tracker.jobs and job_id not in tracker._early and job_id not in tracker._inbox
            return job is not None and job.state.finished and shown
        await self.until(done)
        await self.h.settle()
        job = await self.service.storage.jobs.get(job_id)
        assert job is not None
        return job

    async def only_job(self, user_id: int | None = None) -> Job:
        jobs = await self.jobs(user_id)
        assert len(jobs) == 1, jobs
        return jobs[0]

    async def close(self) -> None:
        for name in ("gate", "loaded"):
            event = getattr(self.executor, name, None)
            if event is not None:
                event.set()
        await self.h.settle()
        await self.service.close()
        await self.h.close()


async def start_bot(model_dir: Path, data_dir: Path, *, executor: Any = None, http: CapturedHTTP | None = None,
                    **settings: Any) -> Bot:
    """The real service (storage, queue) on `data_dir`, a client and the harness around it."""
    config = load_settings(model_id=str(model_dir), device="cpu", data_dir=data_dir, **settings)
    executor = executor if executor is not None else StepExecutor()
    service = await Tessera.start(config, executor=executor)
    clock = FakeClock()
    client = TesseraClient(service, sync_commands=False, edit_interval=0.0, orphan_grace=0.05, clock=clock)
    harness = await Harness.create(client, http)
    return Bot(harness, service, executor, clock, data_dir)

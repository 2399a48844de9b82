"""A controllable fake executor and small helpers for the queue tests (the queue is the unit)."""

from __future__ import annotations

import asyncio
import threading
import time
import zlib
from collections.abc import Callable, Sequence
from pathlib import Path

from PIL import Image

from engine.errors import JobCancelled
from engine.jobs.executor import BatchControl, WorkItem, WorkResult
from engine.jobs.model import Job, JobKind, NewJob
from engine.prompt import WeightedText
from engine.request import GenerationRequest


def make_request(**changes: object) -> GenerationRequest:
    values: dict = dict(prompts=(WeightedText("a lighthouse at dusk"),), negative=(), width=64, height=64, steps=4,
                        guidance=7.5, seed=7, sampler="euler_a", model="tiny")
    values.update(changes)
    return GenerationRequest(**values)  # type: ignore[arg-type]


def color_of(job_id: str) -> tuple[int, int, int]:
    """A colour only this job's images have, so tests can tell whose images came back."""
    h = zlib.crc32(job_id.encode())
    return (h & 255, (h >> 8) & 255, (h >> 16) & 255)


class FakeExecutor:
    """Runs `steps` steps per batch, honouring should_stop, with switches for every failure mode.

    - `gate`: cleared, the batch waits after step 1 (a job "on the GPU" the test controls);
    - `fail[job_id]`: that job's result is this exception;
    - `crash_with`: a batch containing one of these ids raises ValueError as a whole;
    - `oom_above`: a batch larger than this raises CUDA's out-of-memory RuntimeError;
    - `prepare_error`: `prepare` raises it once (a model that fails to load).
    """

    def __init__(self, steps: int = 3, step_delay: float = 0.0) -> None:
        self.steps = steps
        self.step_delay = step_delay
        self.batches: list[list[str]] = []
        self.gate = threading.Event()
        self.gate.set()
        self.started = threading.Event()
        self.fail: dict[str, BaseException] = {}
        self.crash_with: set[str] = set()
        self.oom_above: int | None = None
        self.prepare_error: BaseException | None = None
        self.prepared = 0
        self.on_complete: Callable[[str], None] | None = None

    def prepare(self) -> None:
        if self.prepare_error is not None:
            error, self.prepare_error = self.prepare_error, None
            raise error
        self.prepared += 1

    def close(self) -> None:
        pass

    def run(self, items: Sequence[WorkItem], control: BatchControl) -> list[WorkResult]:
        ids = [item.job_id for item in items]
        if self.oom_above is not None and len(items) > self.oom_above:
            raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")
        if self.crash_with & set(ids):
            raise ValueError("a broken batch")
        self.batches.append(ids)
        self.started.set()
        results: list[WorkResult | None] = [None] * len(items)
        for step in range(1, self.steps + 1):
            for index in range(len(items)):
                if results[index] is None and control.should_stop(index):
                    results[index] = WorkResult(error=JobCancelled())
                elif results[index] is None:
                    preview = Image.new("RGB", (8, 8), color_of(ids[index])) if step == 2 else None
                    control.on_step(index, step, self.steps, preview)
            if step == 1:
                while not self.gate.wait(0.01):
                    if all(control.should_stop(i) for i in range(len(items))):
                        break
            if self.step_delay:
                time.sleep(self.step_delay)
        out: list[WorkResult] = []
        for index, item in enumerate(items):
            result = results[index]
            if result is None:
                if item.job_id in self.fail:
                    result = WorkResult(error=self.fail[item.job_id])
                else:
                    count = item.request.count if item.request is not None else 1
                    size = (item.request.width, item.request.height) if item.request is not None else (32, 32)
                    result = WorkResult(images=[Image.new("RGB", size, color_of(item.job_id)) for _ in range(count)])
                    if self.on_complete is not None:
                        self.on_complete(item.job_id)
            out.append(result)
        return out


async def create_job(storage: object, user_id: int, *, request: GenerationRequest | None = None, priority: int = 0,
                     kind: JobKind = JobKind.IMAGINE, options: dict | None = None, parent_id: str | None = None,
                     parent_index: int | None = None) -> Job:
    if kind != JobKind.UPSCALE and request is None:
        request = make_request()
    return await storage.jobs.create(NewJob(  # type: ignore[attr-defined]
        kind=kind, user_id=user_id, prompt_text="a lighthouse at dusk", request_json=request.to_json() if request else None,
        seed=request.seed if request else None, model="tiny", priority=priority, options=options or {},
        parent_id=parent_id, parent_index=parent_index,
    ))


async def wait_for(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.01)


def make_png(path: Path, size: tuple[int, int] = (32, 32)) -> Path:
    Image.new("RGB", size, (10, 20, 30)).save(path)
    return path

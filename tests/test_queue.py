"""The in-process queue with a controllable fake executor and the real storage."""

from __future__ import annotations

import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from PIL import Image

from engine.errors import ModelError, QueueLimitError, UpscaleError
from engine.jobs.fairness import Limits
from engine.jobs.metrics import MetricsServer, render
from engine.jobs.model import JobKind, JobState
from engine.jobs.queue import InProcessQueue, QueueEvent
from storage.api import Storage
from tests.queue_helpers import FakeExecutor, color_of, create_job, make_png, make_request, wait_for


class Harness:
    def __init__(self, storage: Storage, executor: FakeExecutor, queue: InProcessQueue) -> None:
        self.storage = storage
        self.executor = executor
        self.queue = queue
        self.events: list[QueueEvent] = []
        queue.subscribe(self.events.append)

    def kinds(self, job_id: str) -> list[str]:
        return [e.kind for e in self.events if e.job_id == job_id]

    def last(self, job_id: str, kind: str) -> QueueEvent:
        return [e for e in self.events if e.job_id == job_id and e.kind == kind][-1]

    def finished(self, *job_ids: str) -> bool:
        return all(any(k in ("done", "failed", "cancelled") for k in self.kinds(j)) for j in job_ids)

    async def wait(self, *job_ids: str) -> None:
        await wait_for(lambda: self.finished(*job_ids))

    async def state(self, job_id: str) -> JobState:
        return (await self.storage.jobs.require(job_id)).state


async def open_queue(data_dir: Path, executor: FakeExecutor, **kw: object) -> Harness:
    storage = await Storage.open(data_dir)
    options: dict = {"limits": Limits(max_per_user=20, max_running_per_user=4, max_total=100, batch_size=4),
                     "job_timeout_s": 30.0, "max_attempts": 3}
    options.update(kw)
    queue = InProcessQueue(storage, executor, **options)
    harness = Harness(storage, executor, queue)
    await queue.start()
    return harness


@pytest.fixture
async def h(data_dir: Path) -> AsyncIterator[Harness]:
    harness = await open_queue(data_dir, FakeExecutor())
    yield harness
    await harness.queue.stop()
    await harness.storage.close()


async def test_job_runs_to_done_with_events_images_and_upload(h: Harness) -> None:
    job = await create_job(h.storage, 1, request=make_request(ignored=("--v 6",)))
    assert await h.queue.submit(job) == 1
    await h.wait(job.id)
    kinds = h.kinds(job.id)
    assert kinds[0] == "queued" and "started" in kinds and kinds[-1] == "done"
    assert h.events[0].position == 1
    progress = [e for e in h.events if e.job_id == job.id and e.kind == "progress"]
    assert progress and progress[-1].step == progress[-1].total == 3
    assert any(e.preview and e.preview[:2] == b"\xff\xd8" for e in progress)  # a JPEG preview
    done = h.last(job.id, "done")
    assert done.ignored == ("--v 6",) and h.last(job.id, "started").ignored == ("--v 6",)
    assert [r.index for r in done.images] == [0, 1, 2, 3]
    for record in done.images:
        with Image.open(record.path) as image:
            assert image.format == "PNG" and image.size == (64, 64)
            assert image.getpixel((0, 0)) == color_of(job.id)
            assert "tessera" in image.text or "parameters" in image.text  # metadata on disk
    assert done.upload is not None and done.upload.mime == "image/jpeg"
    with Image.open(__import__("io").BytesIO(done.upload.data)) as grid:
        assert grid.size == (128, 128)
    stored = await h.storage.jobs.require(job.id)
    assert stored.state == JobState.DONE and stored.attempts == 1
    stats = h.queue.stats()
    assert stats.done == 1 and stats.queued == 0 and stats.running == 0 and stats.workers == 1


async def test_newcomer_starts_within_one_job_per_active_user(h: Harness) -> None:
    h.executor.gate.clear()
    h.queue.scheduler.limits = Limits(max_per_user=50, max_running_per_user=1, max_total=100, batch_size=1)
    first = await create_job(h.storage, 1, request=make_request(width=128))
    await h.queue.submit(first)
    await wait_for(h.executor.started.is_set)
    hog = [await create_job(h.storage, 1) for _ in range(12)]
    others = [await create_job(h.storage, user) for user in (2, 3)]
    for job in hog + others:
        await h.queue.submit(job)
    newcomer = await create_job(h.storage, 99)
    position = await h.queue.submit(newcomer)
    assert position <= 4  # user 1's next, users 2 and 3, then the newcomer
    h.executor.gate.set()
    await h.wait(*[j.id for j in [first, *hog, *others, newcomer]])
    order = [b[0] for b in h.executor.batches]
    assert order.index(newcomer.id) - 1 <= 3  # jobs that ran after the first and before it
    assert order.index(newcomer.id) == position  # the position it was told was true


async def test_upscales_go_ahead_of_grids(h: Harness, tmp_path: Path) -> None:
    h.executor.gate.clear()
    h.queue.scheduler.limits = Limits(max_per_user=20, max_running_per_user=4, max_total=100, batch_size=1)
    blocker = await create_job(h.storage, 1)
    await h.queue.submit(blocker)
    await wait_for(h.executor.started.is_set)
    grids = [await create_job(h.storage, 2) for _ in range(2)]
    for job in grids:
        await h.queue.submit(job)
    source = make_png(tmp_path / "source.png")
    upscale = await create_job(h.storage, 3, kind=JobKind.UPSCALE, priority=1, options={"scale": 2, "source": str(source)})
    assert await h.queue.submit(upscale) == 1
    h.executor.gate.set()
    await h.wait(blocker.id, upscale.id, *[g.id for g in grids])
    assert [b[0] for b in h.executor.batches] == [blocker.id, upscale.id, grids[0].id, grids[1].id]
    done = h.last(upscale.id, "done")
    assert len(done.images) == 1 and done.upload is not None and done.upload.mime == "image/png"


async def test_limits_refuse_with_limit_and_count(h: Harness) -> None:
    h.executor.gate.clear()
    h.queue.scheduler.limits = Limits(max_per_user=2, max_running_per_user=1, max_total=3, batch_size=1)
    jobs = [await create_job(h.storage, 1) for _ in range(4)]
    await h.queue.submit(jobs[0])
    await wait_for(h.executor.started.is_set)  # jobs[0] runs: it no longer counts as waiting
    await h.queue.submit(jobs[1])
    await h.queue.submit(jobs[2])
    with pytest.raises(QueueLimitError) as info:
        await h.queue.submit(jobs[3])
    assert "at most 2 jobs waiting" in str(info.value) and "you have 2 waiting and 1 running" in str(info.value)
    await h.queue.submit(await create_job(h.storage, 2))
    with pytest.raises(QueueLimitError, match="at most 3 waiting jobs and has 3"):
        await h.queue.submit(await create_job(h.storage, 3))
    assert h.queue.position(jobs[3].id) is None
    h.executor.gate.set()


async def test_same_key_jobs_run_as_one_batch_and_get_their_own_images(h: Harness) -> None:
    h.executor.gate.clear()
    blocker = await create_job(h.storage, 9, request=make_request(width=128))
    await h.queue.submit(blocker)
    await wait_for(h.executor.started.is_set)
    same = [await create_job(h.storage, user) for user in (1, 2, 3)]
    other = await create_job(h.storage, 4, request=make_request(steps=8))
    for job in [same[0], other, same[1], same[2]]:
        await h.queue.submit(job)
    h.executor.gate.set()
    await h.wait(blocker.id, other.id, *[j.id for j in same])
    assert h.executor.batches == [[blocker.id], [same[0].id, same[1].id, same[2].id], [other.id]]
    for job in same:
        done = h.last(job.id, "done")
        with Image.open(done.images[0].path) as image:
            assert image.getpixel((5, 5)) == color_of(job.id)


async def test_out_of_memory_splits_the_batch_and_a_single_oom_fails_readably(h: Harness) -> None:
    h.executor.gate.clear()
    blocker = await create_job(h.storage, 9, request=make_request(width=128))
    await h.queue.submit(blocker)
    await wait_for(h.executor.started.is_set)
    jobs = [await create_job(h.storage, user) for user in (1, 2, 3, 4)]
    for job in jobs:
        await h.queue.submit(job)
    h.executor.oom_above = 1
    h.executor.gate.set()
    await h.wait(*[j.id for j in jobs])
    assert all(h.kinds(j.id)[-1] == "done" for j in jobs)
    assert sorted(len(b) for b in h.executor.batches[1:]) == [1, 1, 1, 1]

    h.executor.oom_above = 0
    lone = await create_job(h.storage, 5)
    await h.queue.submit(lone)
    await h.wait(lone.id)
    failed = h.last(lone.id, "failed")
    assert "ran out of memory" in (failed.error or "")
    assert (await h.storage.jobs.require(lone.id)).error == failed.error

    h.executor.oom_above = None  # the worker thread is still alive and takes the next job
    after = await create_job(h.storage, 5)
    await h.queue.submit(after)
    await h.wait(after.id)
    assert h.kinds(after.id)[-1] == "done"


async def test_a_failing_job_fails_alone(h: Harness) -> None:
    h.executor.gate.clear()
    blocker = await create_job(h.storage, 9, request=make_request(width=128))
    await h.queue.submit(blocker)
    await wait_for(h.executor.started.is_set)
    good, bad, fixable, crasher = [await create_job(h.storage, user) for user in (1, 2, 3, 4)]
    h.executor.fail[bad.id] = ValueError("tensor shapes do not match")
    h.executor.fail[fixable.id] = UpscaleError("the upscale factor must be 2 or 4, not 3")
    h.executor.crash_with = {crasher.id}
    for job in (good, bad, fixable, crasher):
        await h.queue.submit(job)
    h.executor.gate.set()
    await h.wait(good.id, bad.id, fixable.id, crasher.id)
    assert h.kinds(good.id)[-1] == "done"
    assert bad.id in (h.last(bad.id, "failed").error or "") and "tensor" not in (h.last(bad.id, "failed").error or "")
    assert h.last(fixable.id, "failed").error == "the upscale factor must be 2 or 4, not 3"
    assert h.kinds(crasher.id)[-1] == "failed"
    assert await h.state(bad.id) == JobState.FAILED
    assert h.queue.stats().failed == 3


async def test_cancel_waiting_and_running_jobs(h: Harness) -> None:
    h.executor.gate.clear()
    running = await create_job(h.storage, 1, request=make_request(width=128))
    waiting = await create_job(h.storage, 2)
    await h.queue.submit(running)
    await wait_for(h.executor.started.is_set)
    await h.queue.submit(waiting)
    assert await h.queue.cancel(waiting.id) is True
    assert h.kinds(waiting.id)[-1] == "cancelled" and await h.state(waiting.id) == JobState.CANCELLED
    assert h.queue.position(waiting.id) is None
    assert await h.queue.cancel(running.id) is True  # stops at its next step
    await h.wait(running.id)
    assert h.kinds(running.id)[-1] == "cancelled" and await h.state(running.id) == JobState.CANCELLED
    assert await h.queue.cancel(running.id) is False
    assert h.executor.batches == [[running.id]]  # the cancelled waiting job never ran
    assert not (await h.storage.images.for_job(running.id))


async def test_a_job_over_its_time_limit_fails_with_the_limit(data_dir: Path) -> None:
    h = await open_queue(data_dir, FakeExecutor(steps=50, step_delay=0.02), job_timeout_s=0.2)
    try:
        job = await create_job(h.storage, 1)
        await h.queue.submit(job)
        await h.wait(job.id)
        assert h.last(job.id, "failed").error == "This job took longer than the 0.2 s limit and was stopped."
        assert await h.state(job.id) == JobState.FAILED
    finally:
        await h.queue.stop()
        await h.storage.close()


async def test_positions_are_published_when_the_queue_moves(h: Harness) -> None:
    h.executor.gate.clear()
    h.queue.scheduler.limits = Limits(max_per_user=20, max_running_per_user=1, max_total=100, batch_size=1)
    first = await create_job(h.storage, 1)
    await h.queue.submit(first)
    await wait_for(h.executor.started.is_set)
    a, b, c = [await create_job(h.storage, 1) for _ in range(3)]
    for job in (a, b, c):
        await h.queue.submit(job)
    assert [h.queue.position(j.id) for j in (a, b, c)] == [1, 2, 3]
    newcomer = await create_job(h.storage, 2)
    assert await h.queue.submit(newcomer) == 2  # goes ahead of user 1's second and third
    await wait_for(lambda: any(e.kind == "position" and e.job_id == b.id for e in h.events))
    assert h.last(b.id, "position").position == 3 and h.last(c.id, "position").position == 4
    await h.queue.cancel(a.id)  # user 1 keeps its turn: b moves up to 1, the newcomer stays 2nd
    await wait_for(lambda: h.last(b.id, "position").position == 1)
    assert h.last(c.id, "position").position == 3 and "position" not in h.kinds(newcomer.id)
    h.executor.gate.set()
    await h.wait(first.id, b.id, c.id, newcomer.id)


async def test_restart_requeues_waiting_in_order_and_reruns_interrupted(data_dir: Path) -> None:
    storage = await Storage.open(data_dir)
    waiting = [await create_job(storage, 1) for _ in range(3)]
    interrupted = await create_job(storage, 2)
    await storage.jobs.transition(interrupted.id, JobState.RUNNING)  # the bot died while it ran
    worn_out = await create_job(storage, 3)
    for _ in range(3):
        await storage.jobs.transition(worn_out.id, JobState.RUNNING)
        await storage.jobs.transition(worn_out.id, JobState.QUEUED)
    await storage.jobs.transition(worn_out.id, JobState.RUNNING)  # a 4th start would exceed 3 attempts
    await storage.close()

    h = await open_queue(data_dir, FakeExecutor(), limits=Limits(max_per_user=1, max_running_per_user=1,
                                                                 max_total=1, batch_size=1))
    try:
        await h.wait(*[j.id for j in waiting], interrupted.id, worn_out.id)
        ran = [b[0] for b in h.executor.batches]
        assert worn_out.id not in ran
        assert [j for j in ran if j in {w.id for w in waiting}] == [w.id for w in waiting]  # original order
        assert interrupted.id in ran
        assert (await h.storage.jobs.require(interrupted.id)).attempts == 2
        failed = await h.storage.jobs.require(worn_out.id)
        assert failed.state == JobState.FAILED and "after 4 attempts" in (failed.error or "")
        for job in [*waiting, interrupted]:
            assert await h.state(job.id) == JobState.DONE
    finally:
        await h.queue.stop()
        await h.storage.close()


async def test_stop_puts_a_running_job_back_for_the_next_start(data_dir: Path) -> None:
    executor = FakeExecutor()
    executor.gate.clear()
    h = await open_queue(data_dir, executor)
    job = await create_job(h.storage, 1)
    await h.queue.submit(job)
    await wait_for(executor.started.is_set)
    await h.queue.stop()
    assert await h.state(job.id) == JobState.QUEUED
    await h.storage.close()
    h2 = await open_queue(data_dir, FakeExecutor())
    try:
        await h2.wait(job.id)
        assert h2.kinds(job.id)[-1] == "done"
    finally:
        await h2.queue.stop()
        await h2.storage.close()


async def test_a_model_that_fails_to_load_fails_jobs_and_is_retried(data_dir: Path) -> None:
    executor = FakeExecutor()
    executor.prepare_error = ModelError("the path '/models/nope' does not exist")
    h = await open_queue(data_dir, executor)
    try:
        assert await h.queue.wait_ready(5) is False
        assert h.queue.stats().model_ready is False
        job = await create_job(h.storage, 1)
        await h.queue.submit(job)  # the retry in the worker now succeeds
        await h.wait(job.id)
        assert h.kinds(job.id)[-1] == "done" and h.queue.stats().model_ready is True
    finally:
        await h.queue.stop()
        await h.storage.close()


async def test_stats_and_prometheus_metrics(h: Harness) -> None:
    jobs = [await create_job(h.storage, user) for user in (1, 1, 2)]
    for job in jobs:
        await h.queue.submit(job)
    await h.wait(*[j.id for j in jobs])
    stats = h.queue.stats()
    assert stats.done == 3 and stats.mean_run_s > 0 and 0 < stats.busy_fraction <= 1 and stats.per_user == {}
    text = render(h.queue.stats).decode()
    assert "tessera_queue_waiting_jobs 0.0" in text and 'tessera_jobs_finished_total{state="done"} 3.0' in text
    server = MetricsServer(h.queue.stats, port=0)
    server.start()
    try:
        assert server.port > 0
        with urllib.request.urlopen(f"http://127.0.0.1:{server.port}/metrics", timeout=5) as response:
            assert b"tessera_gpu_busy_fraction" in response.read()
    finally:
        server.stop()

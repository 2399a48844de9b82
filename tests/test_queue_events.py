"""Queue events at scale and the cheap answers the bot asks for on every event."""

from __future__ import annotations

from pathlib import Path

from engine.errors import ModelError
from engine.jobs.fairness import Limits
from engine.jobs.queue import POSITION_EXACT_UNTIL
from tests.queue_helpers import FakeExecutor, create_job, make_request, wait_for
from tests.test_queue import open_queue


async def test_far_back_jobs_hear_of_big_moves_only(data_dir: Path) -> None:
    executor = FakeExecutor()
    executor.gate.clear()
    h = await open_queue(data_dir, executor, limits=Limits(max_per_user=300, max_running_per_user=1,
                                                           max_total=300, batch_size=1))
    try:
        running = await create_job(h.storage, 1)
        await h.queue.submit(running)
        await wait_for(executor.started.is_set)
        waiting = [await create_job(h.storage, 1) for _ in range(120)]
        for job in waiting:
            await h.queue.submit(job)
        near, far = waiting[9], waiting[99]
        assert (h.last(near.id, "queued").position, h.last(far.id, "queued").position) == (10, 100)
        assert POSITION_EXACT_UNTIL < 100

        await h.queue.cancel(waiting[0].id)  # everyone moves up one place
        await wait_for(lambda: "position" in h.kinds(near.id))
        assert h.last(near.id, "position").position == 9
        assert "position" not in h.kinds(far.id)  # 100 -> 99 is not worth an event
        assert h.queue.position(far.id) == 99  # though asking still gives the exact place

        for job in waiting[1:10]:  # ten places in all: a tenth of 100
            await h.queue.cancel(job.id)
        await wait_for(lambda: "position" in h.kinds(far.id))
        assert h.last(far.id, "position").position == 90
        assert h.last(waiting[10].id, "position").position == 1
    finally:
        executor.gate.set()
        await h.queue.stop()
        await h.storage.close()


async def test_a_request_changed_after_submission_is_the_one_that_runs(data_dir: Path) -> None:
    executor = FakeExecutor()
    executor.gate.clear()
    h = await open_queue(data_dir, executor, limits=Limits(max_per_user=5, max_running_per_user=1,
                                                           max_total=10, batch_size=1))
    try:
        first = await create_job(h.storage, 1)
        await h.queue.submit(first)
        await wait_for(executor.started.is_set)
        same, changed = await create_job(h.storage, 1), await create_job(h.storage, 1)
        await h.queue.submit(same)
        await h.queue.submit(changed)
        smaller = make_request(width=32, height=48)
        await h.storage.jobs.set_request(changed.id, smaller.to_json(), smaller.seed, smaller.model)
        executor.gate.set()
        await h.wait(first.id, same.id, changed.id)
        assert {(r.width, r.height) for r in h.last(same.id, "done").images} == {(64, 64)}
        assert {(r.width, r.height) for r in h.last(changed.id, "done").images} == {(32, 48)}
    finally:
        executor.gate.set()
        await h.queue.stop()
        await h.storage.close()


async def test_model_ready_is_cheap_and_follows_the_model(data_dir: Path) -> None:
    executor = FakeExecutor()
    executor.prepare_error = ModelError("the path '/models/nope' does not exist")
    h = await open_queue(data_dir, executor)
    try:
        assert await h.queue.wait_ready(5) is False
        assert h.queue.model_ready() is False
        job = await create_job(h.storage, 1)
        await h.queue.submit(job)  # the worker retries loading the model, and now it loads
        await h.wait(job.id)
        assert h.queue.model_ready() is True and h.queue.stats().model_ready is True
    finally:
        await h.queue.stop()
        await h.storage.close()

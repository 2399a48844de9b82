"""The Redis backend against a real redis-server, with in-process workers running a fake executor.

The bot side (`RedisQueue`) and the worker side (`engine.jobs.worker.Worker`) share one event loop
here, so cancels, timeouts, duplicate results, malformed payloads and restarts are driven
step by step; tests/test_redis_workers.py runs real worker processes with the tiny model.
Each test uses its own key namespace on the shared server.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import os
import pickle
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from PIL import Image
from redis.asyncio import Redis

from engine.errors import QueueLimitError
from engine.jobs.executor import BatchControl, WorkItem, WorkResult
from engine.jobs.fairness import Limits
from engine.jobs.model import JobKind, JobState
from engine.jobs.queue import QueueEvent
from engine.jobs.redis_queue import RedisQueue, RedisUnavailable
from engine.jobs.redis_wire import (
    BatchPayload,
    JobPayload,
    Keys,
    PayloadError,
    ResultPayload,
    WorkerLimits,
    parse_batch,
    parse_result,
)
from engine.jobs.worker import Worker
from engine.redact import redact_url
from storage.api import Storage
from tests.fixtures.redis_server import RedisServer, free_port, redis_server
from tests.queue_helpers import FakeExecutor, color_of, create_job, make_png, make_request, wait_for

_names = itertools.count()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    with redis_server(tmp_path_factory.mktemp("redis")) as running:
        yield running


class RecordingExecutor(FakeExecutor):
    """A fake executor that also keeps what each job's input files contained on the worker."""

    def __init__(self, **kw: object) -> None:
        super().__init__(**kw)  # type: ignore[arg-type]
        self.seen: dict[str, dict] = {}

    def run(self, items: Sequence[WorkItem], control: BatchControl) -> list[WorkResult]:
        for item in items:
            paths = {"source": item.options.get("source"),
                     "init_image": item.request.init_image if item.request is not None else None,
                     "mask_image": item.request.mask_image if item.request is not None else None}
            self.seen[item.job_id] = {k: (v, Path(v).read_bytes()) for k, v in paths.items() if v}
        return super().run(items, control)


class Cluster:
    """A bot-side queue and in-process workers on one namespace."""

    def __init__(self, server: RedisServer, data_dir: Path) -> None:
        self.server = server
        self.data_dir = data_dir
        self.namespace = f"t{next(_names)}"
        self.keys = Keys(self.namespace)
        self.storage: Storage | None = None
        self.queue: RedisQueue | None = None
        self.events: list[QueueEvent] = []
        self.workers: list[tuple[Worker, asyncio.Task]] = []

    async def open(self, **kw: object) -> RedisQueue:
        self.storage = await Storage.open(self.data_dir)
        options: dict = {"limits": Limits(max_per_user=20, max_running_per_user=4, max_total=100, batch_size=4),
                         "job_timeout_s": 30.0, "max_attempts": 3, "worker_poll_s": 0.05}
        options.update(kw)
        self.queue = RedisQueue(self.storage, self.server.url, namespace=self.namespace, **options)
        self.queue.subscribe(self.events.append)
        await self.queue.start()
        return self.queue

    async def close_bot(self) -> None:
        if self.queue is not None:
            await self.queue.stop()
            self.queue = None
        if self.storage is not None:
            await self.storage.close()
            self.storage = None

    async def add_worker(self, executor: FakeExecutor, *, wait: bool = True, **kw: object) -> Worker:
        options: dict = {"visibility_timeout_s": 1.0, "poll_s": 0.05, "model_ref": "tiny"}  # make_request's model
        options.update(kw)
        worker = Worker(self.server.url, executor, namespace=self.namespace, worker_id=f"w{len(self.workers)}",
                        **options)
        self.workers.append((worker, asyncio.create_task(worker.run())))
        if wait and self.queue is not None:
            await wait_for(lambda: worker.worker_id in self.queue.workers())  # type: ignore[union-attr]
        return worker

    async def stop_workers(self) -> None:
        for worker, _task in self.workers:
            worker.request_stop()
        await asyncio.gather(*(task for _, task in self.workers), return_exceptions=True)
        self.workers.clear()

    def kinds(self, job_id: str) -> list[str]:
        return [e.kind for e in self.events if e.job_id == job_id]

    def last(self, job_id: str, kind: str) -> QueueEvent:
        return [e for e in self.events if e.job_id == job_id and e.kind == kind][-1]

    async def wait(self, *job_ids: str, timeout: float = 15.0) -> None:
        await wait_for(lambda: all(any(k in ("done", "failed", "cancelled") for k in self.kinds(j)) for j in job_ids),
                       timeout)

    async def state(self, job_id: str) -> JobState:
        assert self.storage is not None
        return (await self.storage.jobs.require(job_id)).state

    def redis(self) -> Redis:
        return Redis.from_url(self.server.url)


@pytest.fixture
async def cluster(server: RedisServer, data_dir: Path) -> AsyncIterator[Cluster]:
    c = Cluster(server, data_dir)
    yield c
    await c.stop_workers()
    await c.close_bot()


# ----- the wire format -----------------------------------------------------------------------
def _payload(**changes: object) -> dict:
    data = json.loads(BatchPayload(
        batch_id="b1", token="t1", reply_to="tessera:results:x", events="tessera:events:x", timeout_s=60.0,
        max_attempts=3, jobs=(JobPayload("job1", "imagine", make_request().to_json()),),
    ).to_bytes())
    data.update(changes)
    return data


def test_a_valid_payload_round_trips() -> None:
    batch = parse_batch(json.dumps(_payload()).encode())
    assert batch.token == "t1" and batch.jobs[0].job_id == "job1"
    assert batch.jobs[0].request == make_request().to_json()


@pytest.mark.parametrize("mutate, message", [
    (lambda d: pickle.dumps(d), "not JSON"),
    (lambda d: b"[1, 2]", "JSON object"),
    (lambda d: {**d, "v": 2}, "version"),
    (lambda d: {**d, "jobs": []}, "jobs must be a list"),
    (lambda d: {**d, "token": "a b"}, "token"),
    (lambda d: {**d, "max_attempts": "3"}, "max_attempts"),
    (lambda d: {**d, "jobs": [{**d["jobs"][0], "job_id": "../etc"}]}, "job_id"),
    (lambda d: {**d, "jobs": [{**d["jobs"][0], "kind": "shell"}]}, "kind"),
    (lambda d: {**d, "jobs": [{**d["jobs"][0], "request": {**d["jobs"][0]["request"], "width": "64"}}]}, "width"),
    (lambda d: {**d, "jobs": [{**d["jobs"][0], "request": {**d["jobs"][0]["request"], "steps": 10**6}}]}, "steps"),
    (lambda d: {**d, "jobs": [{**d["jobs"][0], "request": {**d["jobs"][0]["request"],
                                                           "init_image": "/etc/passwd", "strength": 0.5}}]},
     "init_image"),
    (lambda d: {**d, "jobs": [{**d["jobs"][0], "request": {**d["jobs"][0]["request"],
                                                           "mask_image": "/etc/shadow"}}]}, "mask_image"),
    (lambda d: {**d, "jobs": [{**d["jobs"][0], "request": {**d["jobs"][0]["request"], "feather": 10**6}}]},
     "feather"),
    (lambda d: {**d, "jobs": [{**d["jobs"][0], "options": {"x": [1, 2]}}]}, "options"),
    (lambda d: {**d, "jobs": [{"job_id": "u1", "kind": "upscale", "request": None,
                               "options": {"scale": 4, "source": "0" * 64}}]}, "source"),
    (lambda d: {**d, "files": {"0" * 64: "aGVsbG8="}}, "sha256"),
    (lambda d: {**d, "jobs": [d["jobs"][0], d["jobs"][0]]}, "twice"),
])
def test_malformed_payloads_are_refused_with_the_reason(mutate: object, message: str) -> None:
    data = mutate(_payload())  # type: ignore[operator]
    raw = data if isinstance(data, bytes) else json.dumps(data).encode()
    with pytest.raises(PayloadError, match=message):
        parse_batch(raw)


def test_oversized_payloads_and_results_are_refused() -> None:
    with pytest.raises(PayloadError, match="at most 100"):
        parse_batch(json.dumps(_payload()).encode(), max_bytes=100)
    good = ResultPayload("job1", "t1", "w0", "done", images=(b"\x89PNG",)).to_bytes()
    assert parse_result(good).images == (b"\x89PNG",)
    with pytest.raises(PayloadError, match="must carry images"):
        parse_result(ResultPayload("job1", "t1", "w0", "done").to_bytes())
    with pytest.raises(PayloadError, match="status"):
        parse_result(json.dumps({**json.loads(good), "status": "owned"}))


def test_passwords_are_kept_out_of_logs() -> None:
    assert redact_url("redis://:s3cret@10.0.0.5:6379/0") == "redis://***@10.0.0.5:6379/0"
    assert redact_url("rediss://bot:s3cret@host:6380/1") == "rediss://***@host:6380/1"
    assert redact_url("redis://127.0.0.1:6379/0") == "redis://127.0.0.1:6379/0"


async def test_an_unreachable_redis_is_a_clear_error(data_dir: Path) -> None:
    storage = await Storage.open(data_dir)
    try:
        queue = RedisQueue(storage, f"redis://:hunter2@127.0.0.1:{free_port()}/0")
        with pytest.raises(RedisUnavailable, match=r"Cannot reach Redis at QUEUE_URL=redis://\*\*\*@127\.0\.0\.1") as info:
            await queue.start()
        assert "hunter2" not in str(info.value)
    finally:
        await storage.close()


# ----- the bot side and workers ----------------------------------------------------------
async def test_jobs_run_on_a_worker_with_events_images_and_batching(cluster: Cluster) -> None:
    queue = await cluster.open()
    executor = FakeExecutor()
    await cluster.add_worker(executor)
    assert cluster.storage is not None
    jobs = [await create_job(cluster.storage, user, request=make_request(seed=user, ignored=("--v 6",)))
            for user in (1, 2, 3)]
    assert [await queue.submit(job) for job in jobs] == [1, 2, 3]
    await cluster.wait(*(j.id for j in jobs))
    assert executor.batches == [[j.id for j in jobs]]  # same batch key: one batch, in fair order
    for job in jobs:
        kinds = cluster.kinds(job.id)
        assert kinds[0] == "queued" and kinds[-1] == "done" and kinds.count("done") == 1
        progress = [e for e in cluster.events if e.job_id == job.id and e.kind == "progress"]
        assert progress[-1].step == progress[-1].total == 3
        assert any(e.preview and e.preview[:2] == b"\xff\xd8" for e in progress)  # JPEG previews via pub/sub
        done = cluster.last(job.id, "done")
        assert done.ignored == ("--v 6",) and done.upload is not None
        assert [r.index for r in done.images] == [0, 1, 2, 3]
        for record in done.images:  # stored by the bot, in the bot's data folder
            assert record.path.is_relative_to(cluster.data_dir)
            with Image.open(record.path) as image:
                assert image.format == "PNG" and image.getpixel((0, 0)) == color_of(job.id)
        assert await cluster.state(job.id) == JobState.DONE
        assert queue.worker_of[job.id] == "w0"
    stats = queue.stats()
    assert stats.workers == 1 and stats.done == 3 and stats.queued == stats.running == 0
    async with cluster.redis() as redis:  # nothing left behind in Redis
        assert await redis.xlen(cluster.keys.stream) == 0
        assert not [k async for k in redis.scan_iter(match=f"{cluster.namespace}:live:*")]


async def test_limits_and_fair_turns_hold_with_workers(cluster: Cluster) -> None:
    queue = await cluster.open(limits=Limits(max_per_user=5, max_running_per_user=1, max_total=100, batch_size=1))
    executor = FakeExecutor()
    executor.gate.clear()
    await cluster.add_worker(executor)
    assert cluster.storage is not None
    hog = [await create_job(cluster.storage, 1) for _ in range(6)]
    for job in hog[:5]:
        await queue.submit(job)
    await wait_for(lambda: executor.started.is_set())  # hog[0] runs on the worker
    await queue.submit(hog[5])
    with pytest.raises(QueueLimitError, match=r"at most 5 jobs waiting.*you have 5 waiting and 1 running"):
        await queue.submit(await create_job(cluster.storage, 1))
    newcomer = await create_job(cluster.storage, 2)
    assert await queue.submit(newcomer) == 2  # the hog's next turn, then the newcomer: not 6th
    executor.gate.set()
    await cluster.wait(newcomer.id, *(j.id for j in hog))
    order = [batch[0] for batch in executor.batches]
    assert order.index(newcomer.id) == 2  # the position it was told was true


async def test_cancel_a_job_running_on_a_worker(cluster: Cluster) -> None:
    queue = await cluster.open()
    executor = FakeExecutor()
    executor.gate.clear()
    await cluster.add_worker(executor)
    assert cluster.storage is not None
    job = await create_job(cluster.storage, 1)
    await queue.submit(job)
    await wait_for(lambda: executor.started.is_set())
    assert await queue.cancel(job.id)
    await cluster.wait(job.id)
    assert cluster.kinds(job.id)[-1] == "cancelled" and await cluster.state(job.id) == JobState.CANCELLED
    executor.gate.set()
    follow = await create_job(cluster.storage, 1)  # the worker goes on with the next job
    await queue.submit(follow)
    await cluster.wait(follow.id)
    assert cluster.kinds(follow.id)[-1] == "done"


async def test_a_job_over_its_time_limit_fails_with_the_limit(cluster: Cluster) -> None:
    queue = await cluster.open(job_timeout_s=0.3)
    executor = FakeExecutor()
    executor.gate.clear()
    await cluster.add_worker(executor)
    assert cluster.storage is not None
    job = await create_job(cluster.storage, 1)
    await queue.submit(job)
    await cluster.wait(job.id)
    assert "longer than the 0.3 s limit" in (cluster.last(job.id, "failed").error or "")
    assert await cluster.state(job.id) == JobState.FAILED


async def test_worker_errors_reach_the_user_readably(cluster: Cluster) -> None:
    from engine.errors import TesseraError

    queue = await cluster.open()
    executor = FakeExecutor()
    await cluster.add_worker(executor)
    assert cluster.storage is not None
    readable = await create_job(cluster.storage, 1, request=make_request(seed=1))
    internal = await create_job(cluster.storage, 2, request=make_request(seed=2))
    executor.fail[readable.id] = TesseraError("That sampler is not available.")
    executor.fail[internal.id] = KeyError("unet")
    for job in (readable, internal):
        await queue.submit(job)
    await cluster.wait(readable.id, internal.id)
    assert cluster.last(readable.id, "failed").error == "That sampler is not available."
    message = cluster.last(internal.id, "failed").error or ""
    assert internal.id in message and "unet" not in message  # details stay in the logs


async def test_a_second_result_for_a_job_is_ignored(cluster: Cluster) -> None:
    queue = await cluster.open()
    await cluster.add_worker(FakeExecutor())
    assert cluster.storage is not None
    job = await create_job(cluster.storage, 1)
    await queue.submit(job)
    await cluster.wait(job.id)
    token = "0" * 16
    records = await cluster.storage.images.for_job(job.id)
    png = records[0].path.read_bytes()
    # A slow worker whose entry was re-delivered finishes the same job again, and a forged
    # result with a wrong token arrives: neither completes the job a second time.
    async with cluster.redis() as redis:
        for answer in (ResultPayload(job.id, token, "w9", "done", images=(png,) * 4),
                       ResultPayload(job.id, token, "w9", "failed", error="late")):
            await redis.lpush(cluster.keys.results(queue.instance), answer.to_bytes())
    await wait_for(lambda: queue.ignored_results == 2)
    assert cluster.kinds(job.id).count("done") == 1 and "failed" not in cluster.kinds(job.id)
    assert await cluster.state(job.id) == JobState.DONE
    assert await cluster.storage.images.for_job(job.id) == records


async def test_malformed_payloads_are_logged_and_never_run(cluster: Cluster,
                                                           caplog: pytest.LogCaptureFixture) -> None:
    queue = await cluster.open()
    executor = FakeExecutor()
    worker = await cluster.add_worker(executor)
    async with cluster.redis() as redis:
        bad = _payload(reply_to=cluster.keys.results(queue.instance))
        bad["jobs"][0]["request"]["width"] = -5
        elsewhere = _payload(reply_to="tessera:jobs", events=cluster.keys.events(queue.instance))  # not a result list
        for data in (pickle.dumps({"job": "x"}), b"not json", json.dumps(bad).encode(), json.dumps(elsewhere).encode()):
            await redis.xadd(cluster.keys.stream, {b"data": data})
    assert cluster.storage is not None
    with caplog.at_level(logging.ERROR, logger="engine.jobs.worker"):
        job = await create_job(cluster.storage, 1)
        await queue.submit(job)
        await cluster.wait(job.id)
        await wait_for(lambda: worker.rejected == 4)
    assert executor.batches == [[job.id]]  # only the valid job ran
    rejected = [r.getMessage() for r in caplog.records if "rejected a malformed job payload" in r.getMessage()]
    assert len(rejected) == 4 and any("width" in line for line in rejected)
    assert any("this namespace's result list" in line for line in rejected)


async def test_inputs_travel_as_bytes_so_workers_need_no_shared_disk(cluster: Cluster, tmp_path: Path) -> None:
    queue = await cluster.open()
    executor = RecordingExecutor()
    await cluster.add_worker(executor)
    assert cluster.storage is not None
    source = make_png(tmp_path / "source.png")
    upscale = await create_job(cluster.storage, 1, kind=JobKind.UPSCALE, options={"scale": 4, "source": str(source)},
                               priority=1)
    init = make_png(tmp_path / "init.png", size=(64, 64))
    variation = await create_job(cluster.storage, 2, kind=JobKind.VARIATION,
                                 request=make_request(init_image=str(init), strength=0.35))
    mask = make_png(tmp_path / "mask.png", size=(48, 48))  # other bytes than the init image
    edit = await create_job(cluster.storage, 4, kind=JobKind.EDIT,
                            request=make_request(init_image=str(init), strength=0.9, mask_image=str(mask), feather=8))
    gone = await create_job(cluster.storage, 3, kind=JobKind.UPSCALE,
                            options={"scale": 4, "source": str(tmp_path / "pruned.png")}, priority=1)
    for job in (upscale, variation, edit, gone):
        await queue.submit(job)
    await cluster.wait(upscale.id, variation.id, edit.id, gone.id)
    assert cluster.kinds(upscale.id)[-1] == "done" and cluster.kinds(variation.id)[-1] == "done"
    assert cluster.kinds(edit.id)[-1] == "done"
    for job_id, name, original in ((upscale.id, "source", source), (variation.id, "init_image", init),
                                   (edit.id, "init_image", init), (edit.id, "mask_image", mask)):
        path, data = executor.seen[job_id][name]
        assert path != str(original) and data == original.read_bytes()  # a worker-side copy
    assert "no longer on disk" in (cluster.last(gone.id, "failed").error or "")


async def test_a_job_started_too_often_is_given_up_with_a_clear_failure(cluster: Cluster) -> None:
    queue = await cluster.open(max_attempts=2)
    assert cluster.storage is not None
    async with cluster.redis() as redis:
        # A worker that is only a heartbeat lets the bot hand the job over; then the job
        # "has killed" two workers already when a real one claims it.
        await redis.set(cluster.keys.worker("ghost"), json.dumps({"v": 1, "worker": "ghost"}), ex=30)
        await wait_for(lambda: "ghost" in queue.workers())
        job = await create_job(cluster.storage, 1)
        await queue.submit(job)
        await wait_for(lambda: job.id in queue._tokens)
        await redis.hset(cluster.keys.live(job.id), "attempts", 2)
        executor = FakeExecutor()
        await cluster.add_worker(executor, wait=False)
        await cluster.wait(job.id)
    assert "Gave up on this job after 2 attempts" in (cluster.last(job.id, "failed").error or "")
    assert executor.batches == []


async def test_stopping_the_bot_requeues_and_the_next_start_finishes(cluster: Cluster) -> None:
    queue = await cluster.open()
    executor = FakeExecutor()
    executor.gate.clear()
    await cluster.add_worker(executor)
    assert cluster.storage is not None
    running = await create_job(cluster.storage, 1, request=make_request(seed=1))
    waiting = await create_job(cluster.storage, 1, request=make_request(seed=2, steps=5))
    await queue.submit(running)
    await wait_for(lambda: executor.started.is_set())
    await queue.submit(waiting)
    await cluster.close_bot()
    await wait_for(lambda: executor.batches and len(executor.batches) == 1 and not cluster.workers[0][0]._busy)
    storage = await Storage.open(cluster.data_dir)
    try:
        assert (await storage.jobs.require(running.id)).state == JobState.QUEUED
    finally:
        await storage.close()
    executor.gate.set()
    cluster.events.clear()
    await cluster.open()
    await cluster.wait(running.id, waiting.id)
    assert cluster.kinds(running.id).count("done") == 1 and cluster.kinds(waiting.id).count("done") == 1
    assert await cluster.state(running.id) == JobState.DONE
    assert (await cluster.storage.jobs.require(running.id)).attempts == 2  # type: ignore[union-attr]


async def test_a_crashed_bot_resumes_and_stale_hand_overs_never_complete(cluster: Cluster) -> None:
    queue = await cluster.open()
    executor = FakeExecutor()
    executor.gate.clear()
    await cluster.add_worker(executor)
    assert cluster.storage is not None
    running = await create_job(cluster.storage, 1, request=make_request(seed=1))
    waiting = await create_job(cluster.storage, 2, request=make_request(seed=2, steps=5))
    await queue.submit(running)
    await wait_for(lambda: executor.started.is_set())
    await queue.submit(waiting)
    # The bot dies without stopping: no state change, its hand-over stays live in Redis.
    for task in queue._tasks:
        task.cancel()
    await asyncio.gather(*queue._tasks, return_exceptions=True)
    await queue._redis_client().aclose()
    await cluster.storage.close()
    cluster.queue, cluster.storage = None, None
    cluster.events.clear()
    restarted = await cluster.open()
    executor.gate.set()
    await cluster.wait(running.id, waiting.id)
    assert cluster.kinds(running.id).count("done") == 1 and cluster.kinds(waiting.id).count("done") == 1
    assert [batch for batch in executor.batches if running.id in batch] == [[running.id], [running.id]]
    assert (await cluster.storage.jobs.require(running.id)).attempts == 2  # type: ignore[union-attr]
    await asyncio.sleep(0.3)  # the first run's worker dropped its result: nothing else arrives
    assert restarted.ignored_results == 0 and cluster.kinds(running.id).count("done") == 1


# ----- hostile messages (issue 13, item 5) -----------------------------------------------------
# Each was seen to kill a worker (and every worker it was re-delivered to) or one of the bot's
# background tasks: json.loads recursing past the interpreter's limit raises RecursionError.
HOSTILE = [
    b"[" * 100_000,
    b'{"a":' * 50_000,
    b"[]" * 10_000 + b"[" * 40,
    b'{"v": 1, "x": ' + b"[" * 33 + b"]" * 33 + b"}",
    b'{"v": ' + b"9" * 100_000 + b"}",  # past int's digit limit
    b'{"v": 1e999999, "jobs": []}',
    b'{"v": NaN}',
    b'{"v": 1, "jobs": "all", "token": ["t"], "batch": {}, "type": 7, "job_ids": {"a": 1}}',
    b"\xff\xfe[\x00[\x00",  # not UTF-8 (json.loads would guess UTF-16)
    b'{"v": 2, "type": "started", "token": "t", "worker": "w", "job_ids": []}',
    b'{"v": 1, "model": "' + b"m" * 20_000 + b'"}',
    b"",
]


async def test_hostile_stream_entries_are_dropped_and_the_worker_goes_on(cluster: Cluster,
                                                                         caplog: pytest.LogCaptureFixture) -> None:
    queue = await cluster.open()
    executor = FakeExecutor()
    worker = await cluster.add_worker(executor)
    _worker, task = cluster.workers[0]
    async with cluster.redis() as redis:
        for data in HOSTILE:
            await redis.xadd(cluster.keys.stream, {b"data": data})
        assert cluster.storage is not None
        with caplog.at_level(logging.ERROR, logger="engine.jobs.worker"):
            await wait_for(lambda: worker.rejected == len(HOSTILE))
            job = await create_job(cluster.storage, 1)
            await queue.submit(job)
            await cluster.wait(job.id)
        assert cluster.kinds(job.id)[-1] == "done" and executor.batches == [[job.id]]
        assert not task.done()
        # Acknowledged and deleted: nothing is pending, so nothing is re-delivered to kill the next worker.
        assert await redis.xlen(cluster.keys.stream) == 0
        assert (await redis.xpending(cluster.keys.stream, cluster.keys.group))["pending"] == 0
    rejected = [r.getMessage() for r in caplog.records if "rejected a malformed job payload" in r.getMessage()]
    assert len(rejected) == len(HOSTILE) and any("nested deeper than 32" in line for line in rejected)
    assert all(len(line) < 600 for line in rejected)  # the payload itself is never echoed


async def test_hostile_events_results_and_heartbeats_leave_the_bot_listening(cluster: Cluster) -> None:
    queue = await cluster.open()
    executor = FakeExecutor()
    worker = await cluster.add_worker(executor)
    async with cluster.redis() as redis:
        for index, data in enumerate(HOSTILE):
            await redis.publish(cluster.keys.events(queue.instance), data)
            await redis.lpush(cluster.keys.results(queue.instance), data)
            await redis.set(cluster.keys.worker(f"evil{index}"), data, ex=30)
        await asyncio.sleep(3 * queue.worker_poll_s + 0.3)  # the workers task has read every heartbeat
        for _ in range(200):  # the results task has popped every result
            if not await redis.llen(cluster.keys.results(queue.instance)):
                break
            await asyncio.sleep(0.05)
        assert set(queue.workers()) == {worker.worker_id}  # only the real heartbeat counts
        assert all(not task.done() for task in queue._tasks) and queue.restarts == {}
        assert cluster.storage is not None
        job = await create_job(cluster.storage, 1)
        await queue.submit(job)
        await cluster.wait(job.id)
    # The bot still hears its worker: progress events and the result came through.
    assert [e.step for e in cluster.events if e.job_id == job.id and e.kind == "progress"][-1] == 3
    assert cluster.kinds(job.id)[-1] == "done"


async def test_a_background_task_that_fails_is_logged_and_restarted(cluster: Cluster,
                                                                   caplog: pytest.LogCaptureFixture,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    queue = await cluster.open()
    real_poll = queue._poll_workers
    failures = iter([RuntimeError("boom"), None])

    async def flaky_poll() -> None:
        error = next(failures, None)
        if error is not None:
            raise error
        await real_poll()

    monkeypatch.setattr(queue, "_poll_workers", flaky_poll)
    with caplog.at_level(logging.ERROR, logger="engine.jobs.redis_queue"):
        await wait_for(lambda: queue.restarts.get("workers") == 1)
        worker = await cluster.add_worker(FakeExecutor())  # the restarted task counts it
    assert worker.worker_id in queue.workers()
    assert any("workers task failed; restarting it" in r.getMessage() for r in caplog.records)


# ----- what a worker agrees to run (issue 13, item 6) -------------------------------------------
@pytest.mark.parametrize("changes, expected", [
    ({"model": "/etc/passwd"}, "a model the GPU workers are not set up to run"),
    ({"model": "/nonexistent/model"}, "a model the GPU workers are not set up to run"),
    ({"model": "stabilityai/stable-diffusion-xl-base-1.0"}, "a model the GPU workers are not set up to run"),
    ({"width": 8192, "height": 8192}, "8192x8192 pixels; the GPU workers allow at most 2048 per side"),
    ({"width": 2048, "height": 2048}, "2048x2048 pixels"),
    ({"steps": 1000}, "1000 steps; the GPU workers allow at most 120"),
    ({"count": 16}, "16 images"),
])
async def test_a_worker_refuses_what_it_was_not_configured_for(cluster: Cluster, changes: dict,
                                                               expected: str) -> None:
    queue = await cluster.open()
    executor = FakeExecutor()
    worker = await cluster.add_worker(executor)
    assert cluster.storage is not None
    job = await create_job(cluster.storage, 1, request=make_request(**changes))
    await queue.submit(job)
    await cluster.wait(job.id)
    error = cluster.last(job.id, "failed").error or ""
    assert expected in error and await cluster.state(job.id) == JobState.FAILED
    assert "passwd" not in error and "nonexistent" not in error and "exist" not in error
    assert executor.batches == [] and executor.prepared == 1 and worker.refused == 1  # never run, nothing loaded
    ok = await create_job(cluster.storage, 1)  # the worker goes on with what it may run
    await queue.submit(ok)
    await cluster.wait(ok.id)
    assert cluster.kinds(ok.id)[-1] == "done"


@pytest.mark.parametrize("options, expected", [
    ({"job_timeout_s": 7 * 24 * 3600.0}, "JOB_TIMEOUT_S"),
    ({"max_attempts": 1000}, "JOB_MAX_ATTEMPTS"),
])
async def test_a_worker_refuses_a_bot_beyond_its_own_time_and_attempt_limits(cluster: Cluster, options: dict,
                                                                           expected: str) -> None:
    queue = await cluster.open(**options)
    executor = FakeExecutor()
    await cluster.add_worker(executor, limits=WorkerLimits(frozenset({"tiny"}), max_timeout_s=600.0, max_attempts=3))
    assert cluster.storage is not None
    job = await create_job(cluster.storage, 1)
    await queue.submit(job)
    await cluster.wait(job.id)
    assert expected in (cluster.last(job.id, "failed").error or "") and executor.batches == []


async def test_a_batch_larger_than_queue_batch_size_is_refused(cluster: Cluster) -> None:
    queue = await cluster.open(limits=Limits(max_per_user=20, max_running_per_user=4, max_total=100, batch_size=4))
    executor = FakeExecutor()
    await cluster.add_worker(executor, limits=WorkerLimits(frozenset({"tiny"}), max_batch=2))
    assert cluster.storage is not None
    jobs = [await create_job(cluster.storage, user) for user in (1, 2, 3)]
    for job in jobs:
        await queue.submit(job)
    await cluster.wait(*(j.id for j in jobs))
    assert all("QUEUE_BATCH_SIZE" in (cluster.last(j.id, "failed").error or "") for j in jobs)
    assert executor.batches == []


async def test_worker_keys_are_read_in_bounded_number_and_size(cluster: Cluster) -> None:
    """A Redis writer's flood of worker keys, oversized values and keys of another type: the bot
    reads at most MAX_WORKERS keys, never fetches an oversized value, and keeps its real worker."""
    from engine.jobs.redis_queue import MAX_WORKERS
    from engine.jobs.redis_wire import MAX_HEARTBEAT_BYTES

    queue = await cluster.open()
    worker = await cluster.add_worker(FakeExecutor())
    fetched: list[int] = []
    client = queue._redis_client()
    real_mget = client.mget

    async def counting_mget(keys: list[Any], *args: Any) -> Any:
        fetched.append(len(keys))
        return await real_mget(keys, *args)

    client.mget = counting_mget  # type: ignore[method-assign]
    async with cluster.redis() as redis:
        async with redis.pipeline(transaction=False) as pipe:
            for index in range(MAX_WORKERS * 3):
                pipe.set(cluster.keys.worker(f"flood{index}"), b"x" * (MAX_HEARTBEAT_BYTES + 1), ex=30)
            pipe.hset(cluster.keys.worker("hashed"), "v", "1")
            pipe.expire(cluster.keys.worker("hashed"), 30)
            await pipe.execute()
        await asyncio.sleep(3 * queue.worker_poll_s + 0.3)
    # Every flood value is over the heartbeat size: none is fetched, at most the real heartbeat is.
    assert all(count <= 1 for count in fetched)
    assert queue.restarts == {} and all(not task.done() for task in queue._tasks)
    assert set(queue.workers()) <= {worker.worker_id}


async def test_a_batch_too_large_to_send_fails_its_jobs_and_the_queue_goes_on(
        cluster: Cluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import engine.jobs.redis_queue as redis_queue

    monkeypatch.setattr(redis_queue, "MAX_PAYLOAD_BYTES", 20_000)
    queue = await cluster.open(limits=Limits(max_per_user=20, max_running_per_user=4, max_total=100, batch_size=1))
    await cluster.add_worker(FakeExecutor())
    assert cluster.storage is not None
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(30_000))  # sent as base64: well past the bound
    heavy = await create_job(cluster.storage, 1, kind=JobKind.VARIATION,
                             request=make_request(init_image=str(big), strength=0.35))
    light = await create_job(cluster.storage, 2)
    for job in (heavy, light):
        await queue.submit(job)
    await cluster.wait(heavy.id, light.id)
    assert "too large to send to the GPU workers" in (cluster.last(heavy.id, "failed").error or "")
    assert cluster.kinds(light.id)[-1] == "done"  # the next hand-over was not held up
    assert await cluster.state(heavy.id) is JobState.FAILED

"""The scale-out backend: the bot keeps the queue, GPU worker processes on Redis run the jobs.

`RedisQueue` has the same interface as `engine.jobs.queue.InProcessQueue` and shares its
`QueueCore` (storage state changes, events, results, positions, stats) and its `Scheduler`,
so fairness, priorities, per-user limits and batching are decided here, in the bot, exactly
as on one GPU. Redis only ever holds what is about to run: the bot hands a batch over when a
worker is free (at most `prefetch` batches per live worker), so a user with 100 queued jobs
still cannot starve a newcomer, whatever the number of workers.

The bot stays the only owner of SQLite and the image folder. A hand-over is one JSON entry
on a Redis stream (see `engine.jobs.redis_wire` for the schema): the resolved requests, with any
init image or upscale source sent as bytes. A worker (`engine.jobs.worker`, `tessera worker`)
returns each job's images as PNG bytes on this process's result list; the grid, the PNGs
with metadata and the `done` event are then made here by the shared `ResultWriter`.
Progress flows back over Redis pub/sub.

Why taskiq-redis's stream broker and a few plain redis-py calls (rather than taskiq's task
decorator, result backend and worker):

- **Re-delivery after a visibility timeout.** Stream entries stay pending until a worker
  acknowledges them after pushing the results. A worker that dies mid-job stops renewing its
  claim; another worker reclaims the entry (XAUTOCLAIM) once it has been idle for the
  visibility timeout and runs it again. taskiq's own `listen()` does not reclaim on an idle
  stream, hence `engine.jobs.redis_wire.TesseraStreamBroker`.
- **Never completed twice.** Each hand-over carries a random token, stored on a per-job
  `live` key. The bot accepts exactly one result per token (a second one, from a slow worker
  whose entry was reclaimed, is logged and ignored) and deletes the key when the job ends,
  which also stops any other worker still on it. Re-deliveries to a bot that restarted since
  carry an old token and are skipped.
- **Results are not fire-and-forget.** They are pushed on a list the bot pops, not
  published: pub/sub drops messages while the bot reconnects. A result lost with the bot
  itself (a crash between pop and store) is not lost work: the job is still `running` in
  SQLite and runs again on the next start.
- **JSON only.** taskiq's default path pickles nothing either, but our messages are our own
  JSON bytes in a `BrokerMessage`, checked field by field by the worker.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import re
import secrets
import socket
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, cast

from redis.asyncio import Redis
from redis.exceptions import RedisError
from taskiq.message import BrokerMessage

from engine.diffusion.models import ModelProfile
from engine.errors import JobCancelled, TesseraError
from engine.jobs.executor import UPSCALE, WorkResult
from engine.jobs.fairness import Limits
from engine.jobs.joblog import for_job
from engine.jobs.model import JobKind, JobState
from engine.jobs.queue import QueueCore, QueueEvent, QueueTiming, RunningJob
from engine.jobs.redis_wire import (
    DEFAULT_NAMESPACE,
    LIVE_TTL_S,
    MAX_HEARTBEAT_BYTES,
    MAX_PAYLOAD_BYTES,
    REF_FILES,
    BatchPayload,
    JobPayload,
    Keys,
    PayloadError,
    ResultPayload,
    TesseraStreamBroker,
    parse_event,
    parse_heartbeat,
    parse_result,
)
from engine.jobs.results import ResultWriter
from engine.jobs.store import Store
from engine.redact import redact_url

log = logging.getLogger(__name__)

# Pixels of one result's images together, checked on their headers before decoding: a
# forged result must not make the bot hold gigabytes. A grid is at most 16 images of about
# 2048² (the largest profile), an upscale one image within UPSCALE_MAX_SIDE (default 4096).
MAX_RESULT_PIXELS = 8192 * 8192
MAX_WORKERS = 1000  # heartbeats read per poll (one per GPU; more is a flood, not a fleet)
WORKER_POLL_S = 1.0  # how often the bot counts live workers (their heartbeats)
RETRY_S = 1.0  # wait before handing a batch over again after Redis refused it
MAX_PREVIEW_BYTES = 1024 * 1024
SUPERVISE_MIN_S = 0.1  # first wait before restarting a failed background task; doubles each time
SUPERVISE_MAX_S = 10.0
SUPERVISE_RESET_S = 60.0  # a task that ran this long before failing starts again from the minimum wait


class RemoteError(Exception):
    """A worker's internal failure, as the worker reported it (it logged the traceback)."""


class RedisUnavailable(TesseraError):
    """Redis cannot be reached at start: the operator must fix QUEUE_URL or start Redis."""


def _instance_id() -> str:
    raw = f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"
    return re.sub(r"[^A-Za-z0-9_.-]", "-", raw)[:100]


class RedisQueue(QueueCore):
    """The bot side of the scale-out queue (select it with `QUEUE_URL=redis://…`)."""

    def __init__(self, storage: Store, url: str, *, limits: Limits | None = None, job_timeout_s: float = 600.0,
                 max_attempts: int = 3, writer: ResultWriter | None = None, prefetch: int = 1,
                 namespace: str = DEFAULT_NAMESPACE, worker_poll_s: float = WORKER_POLL_S) -> None:
        super().__init__(storage, limits=limits, job_timeout_s=job_timeout_s, max_attempts=max_attempts, writer=writer)
        self.url = url
        self.keys = Keys(namespace)
        self.prefetch = max(1, prefetch)
        self.worker_poll_s = worker_poll_s
        self.instance = _instance_id()
        self.worker_of: dict[str, str] = {}  # job -> the worker that last started it (logs, tests)
        self.ignored_results = 0  # duplicates and late results, for tests and /info
        self._redis: Redis | None = None
        self._broker: TesseraStreamBroker | None = None
        self._tasks: list[asyncio.Task] = []
        self._tokens: dict[str, str] = {}  # job -> token of its current hand-over
        self._batch_of: dict[str, str] = {}
        self._batches: dict[str, set[str]] = {}  # batch -> its jobs without a result yet
        self._workers_info: dict[str, dict] = {}
        self._workers_seen = asyncio.Event()
        self.restarts: dict[str, int] = {}
        self._bad_heartbeats: set[str] = set()  # background task -> times it was restarted (logs, tests)

    # ----- life cycle -------------------------------------------------------------------
    async def start(self, *, resume: bool = True) -> None:
        """Connect, resume stored jobs (unless `resume` is False: the CLI hands over only its
        own), start handing batches to workers."""
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        self._workers_seen = asyncio.Event()
        self._timing = QueueTiming()
        self._redis = Redis.from_url(self.url)
        try:
            await self._redis.ping()
        except (RedisError, OSError) as exc:
            await self._redis.aclose()
            raise RedisUnavailable(f"Cannot reach Redis at QUEUE_URL={redact_url(self.url)}: {exc}. Start Redis, "
                                   "check the host, port and password, or leave QUEUE_URL empty for the "
                                   "in-process queue.") from None
        self._broker = TesseraStreamBroker(self.url, keys=self.keys)
        await self._broker.startup()
        await self._poll_workers()
        if resume:
            await self._resume()
        for name, loop in (("dispatch", self._dispatch_loop), ("results", self._results_loop),
                           ("events", self._events_loop), ("workers", self._workers_loop)):
            self._tasks.append(asyncio.create_task(self._supervise(name, loop), name=f"tessera-redis-{name}"))
        log.info("Redis queue at %s (instance %s, %d workers live)", redact_url(self.url), self.instance,
                 len(self._workers_info))

    async def stop(self) -> None:
        """Stop handing over; jobs on workers are re-queued in storage and their workers told to drop them."""
        self._stopping = True
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        await self._drain_finishing()
        for job_id in list(self._running):
            try:
                await self.storage.jobs.transition(job_id, JobState.QUEUED)  # runs again after the restart
            except Exception as exc:  # stays "running": the next start re-queues it all the same
                for_job(log, job_id).error("could not re-queue the job on stop: %s", exc)
            self._running.pop(job_id, None)
            self._tokens.pop(job_id, None)
            try:
                await self._redis_client().delete(self.keys.live(job_id))  # a worker on it stops
            except RedisError:
                for_job(log, job_id).warning("could not withdraw the job from Redis; a worker may finish it in vain")
        await self._stop_settling()
        if self._redis is not None:
            with contextlib.suppress(RedisError):
                await self._redis.delete(self.keys.results(self.instance))
            await self._redis.aclose()
        if self._broker is not None:
            await self._broker.shutdown()
        self._pool.shutdown(wait=True)

    async def _supervise(self, name: str, loop: Callable[[], Awaitable[None]]) -> None:
        """Run one background loop until the queue stops, restarting it whenever it fails.

        Each loop handles the errors it expects (Redis going away, a malformed message); this
        is for the ones nobody expected. Without it a loop that raised ended silently and the
        bot went on without results, events or workers until someone restarted it.
        """
        backoff = SUPERVISE_MIN_S
        while not self._stopping:
            began = time.monotonic()
            try:
                await loop()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("the Redis queue's %s task failed; restarting it in %g s", name, backoff)
                self.restarts[name] = self.restarts.get(name, 0) + 1
            else:
                if self._stopping:
                    return
                log.error("the Redis queue's %s task ended by itself; restarting it in %g s", name, backoff)
                self.restarts[name] = self.restarts.get(name, 0) + 1
            if time.monotonic() - began > SUPERVISE_RESET_S:
                backoff = SUPERVISE_MIN_S  # it ran well for a while: this failure is not a crash loop
            await asyncio.sleep(backoff)
            backoff = min(SUPERVISE_MAX_S, backoff * 2)

    async def wait_ready(self, timeout: float | None = None) -> bool:
        """Wait until at least one worker is live (True when one is)."""
        try:
            await asyncio.wait_for(self._workers_seen.wait(), timeout)
        except TimeoutError:
            return False
        return True

    # ----- the public interface beyond QueueCore ----------------------------------------
    async def cancel(self, job_id: str) -> bool:
        """Cancel a waiting job at once; a handed-over one stops on its worker at the next step."""
        if not await super().cancel(job_id):
            return False
        if job_id in self._tokens:
            try:
                await self._redis_client().hset(self.keys.live(job_id), "cancel", "1")
            except RedisError:
                for_job(log, job_id).warning("could not tell the workers to cancel the job")
        return True

    def workers(self) -> dict[str, dict]:
        """Live workers: id -> heartbeat (model, device, profile, host, pid)."""
        return dict(self._workers_info)

    def model_profile(self, model: str) -> ModelProfile | None:
        """The profile a live worker that loaded `model` reports (the bot need not have the model)."""
        for info in self._workers_info.values():
            data = info.get("profile")
            if info.get("model") == model and isinstance(data, dict):
                try:
                    return ModelProfile(str(data["family"]), int(data["native"]), int(data["steps"]),  # type: ignore[arg-type]
                                        float(data["guidance"]))
                except (KeyError, TypeError, ValueError):
                    continue
        return None

    def _warn_heartbeat(self, name: str, reason: str) -> None:
        """Log a malformed heartbeat once per worker name (it is re-read every poll)."""
        if len(self._bad_heartbeats) > MAX_WORKERS:
            self._bad_heartbeats.clear()  # bounded: a flood of names must not grow it forever
        if name not in self._bad_heartbeats:
            self._bad_heartbeats.add(name)
            log.warning("ignored the malformed heartbeat of worker %r: %s", name, reason)

    def _workers(self) -> int:
        return len(self._workers_info)

    def _model_ready(self) -> bool:
        return bool(self._workers_info)

    def _redis_client(self) -> Redis:
        if self._redis is None:
            raise RuntimeError("the Redis queue is not started")
        return self._redis

    # ----- handing batches over ---------------------------------------------------------
    def _capacity(self) -> int:
        return len(self._workers_info) * self.prefetch

    async def _has_room(self) -> bool:
        """Up to `prefetch` batches per live worker are out at once."""
        return len(self._batches) < self._capacity()

    async def _dispatch(self, batch: list[RunningJob]) -> None:
        try:
            await self._hand_over(batch)
        except (RedisError, OSError) as exc:
            log.warning("could not hand a batch to Redis (%s); retrying in %g s", exc, RETRY_S)
            await self._put_back(batch)
            await asyncio.sleep(RETRY_S)
        except Exception:
            await self._put_back(batch)  # the jobs wait again rather than stay "running" forever
            raise  # _supervise logs it and restarts this loop

    async def _hand_over(self, batch: list[RunningJob]) -> None:
        token = secrets.token_hex(8)
        files: dict[str, bytes] = {}
        jobs: list[JobPayload] = []
        for running in batch:
            try:
                jobs.append(await self._job_payload(running, files))
            except TesseraError as error:  # an input file vanished: this job fails alone
                self._track(asyncio.ensure_future(self._finish(running.job.id, WorkResult(error=error))))
        if not jobs:
            return
        payload = BatchPayload(batch_id=token, token=token, reply_to=self.keys.results(self.instance),
                               events=self.keys.events(self.instance), timeout_s=self.job_timeout_s,
                               max_attempts=self.max_attempts, jobs=tuple(jobs), files=files)
        data = await asyncio.get_running_loop().run_in_executor(self._pool, payload.to_bytes)
        if len(data) > MAX_PAYLOAD_BYTES:  # a worker would drop it unanswered and the jobs would wait for ever
            too_big = TesseraError(f"The pictures of this job are too large to send to the GPU workers (at most "
                                   f"{MAX_PAYLOAD_BYTES // 2**20} MB together); use fewer or smaller pictures.")
            for job in jobs:
                for_job(log, job.job_id).warning("not handed over: its batch is %d bytes", len(data))
                self._track(asyncio.ensure_future(self._finish(job.job_id, WorkResult(error=too_big))))
            return
        redis = self._redis_client()
        async with redis.pipeline(transaction=True) as pipe:
            for job in jobs:
                key = self.keys.live(job.job_id)
                pipe.delete(key)
                pipe.hset(key, mapping={"token": token, "cancel": "0", "attempts": 0})
                pipe.expire(key, LIVE_TTL_S)
            await pipe.execute()
        for job in jobs:
            self._tokens[job.job_id] = token
            self._batch_of[job.job_id] = token
        self._batches[token] = {job.job_id for job in jobs}
        assert self._broker is not None
        try:
            await self._broker.kick(BrokerMessage(task_id=token, task_name="tessera.batch", message=data, labels={}))
        except BaseException:
            self._forget_batch(token)
            raise
        for job in jobs:
            if job.job_id in self._cancel_requested:  # cancelled while the hand-over was in flight
                await redis.hset(self.keys.live(job.job_id), "cancel", "1")

    async def _job_payload(self, running: RunningJob, files: dict[str, bytes]) -> JobPayload:
        item = running.item
        options = {k: v for k, v in item.options.items() if v is None or isinstance(v, str | int | float | bool)}
        request = None
        if item.request is not None:
            request = item.request.to_json()
            if request.get("init_image"):
                request["init_image"] = await self._attach(files, request["init_image"], "The image this job starts from")
            if request.get("mask_image"):  # edits: the mask travels as bytes like the init image
                request["mask_image"] = await self._attach(files, request["mask_image"], "The mask of this edit")
            for name in REF_FILES:  # reference pictures travel as bytes too
                request[name] = [await self._attach(files, path, "A reference picture") for path in request.get(name, [])]
        if item.kind == UPSCALE:
            options["source"] = await self._attach(files, str(item.options.get("source", "")), "The image to upscale")
        elif item.kind == JobKind.DESCRIBE:  # the picture travels as bytes, like an upscale's source
            options["source"] = await self._attach(files, str(item.options.get("source", "")), "The picture to describe")
        return JobPayload(item.job_id, item.kind, request, options, item.prompt_text)

    async def _attach(self, files: dict[str, bytes], path: str, what: str) -> str:
        try:
            key, data = await asyncio.to_thread(_read_keyed, path)  # megabytes to read and hash: off the loop
        except OSError:
            raise TesseraError(f"{what} is no longer on disk (it may have been pruned).") from None
        files[key] = data
        return key

    async def _put_back(self, batch: list[RunningJob]) -> None:
        """Redis refused the hand-over: the jobs wait again at the front of their users' lines."""
        for running in batch:
            job_id = running.job.id
            if job_id not in self._running:
                continue
            self._forget_job(job_id)
            self._running.pop(job_id, None)
            self.scheduler.requeue(job_id)
            try:
                await self.storage.jobs.transition(job_id, JobState.QUEUED)
            except Exception:
                for_job(log, job_id).exception("could not put the job back in the queue")

    def _forget_job(self, job_id: str) -> None:
        self._tokens.pop(job_id, None)
        batch_id = self._batch_of.pop(job_id, None)
        pending = self._batches.get(batch_id or "")
        if pending is not None:
            pending.discard(job_id)
            if not pending:
                del self._batches[batch_id or ""]
                self._wake.set()  # a worker is free: hand the next batch over

    def _forget_batch(self, batch_id: str) -> None:
        for job_id in list(self._batches.get(batch_id, ())):
            self._forget_job(job_id)
        self._batches.pop(batch_id, None)

    # ----- results ----------------------------------------------------------------------
    async def _results_loop(self) -> None:
        redis = Redis.from_url(self.url)
        key = self.keys.results(self.instance)
        try:
            while not self._stopping:  # a flag as well as cancel(): redis-py may turn a cancel into an error
                try:
                    popped = await redis.brpop([key], timeout=1)
                except (RedisError, OSError) as exc:
                    log.warning("reading results from Redis failed (%s); retrying", exc)
                    await asyncio.sleep(RETRY_S)
                    continue
                if popped:
                    # (key, value); bytes, as this client does not decode responses
                    self._track(asyncio.ensure_future(self._accept(cast(bytes, popped[1]))))
        finally:
            await redis.aclose()

    async def _accept(self, raw: bytes) -> None:
        """One result from a worker: the first for its hand-over finishes the job; others are ignored."""
        try:
            result, images = await asyncio.get_running_loop().run_in_executor(self._pool, _decode_result, raw)
        except PayloadError as exc:
            log.error("ignored a malformed result from Redis (%d bytes): %s", len(raw), exc)
            return
        except Exception:  # never let one message take the results down
            log.exception("ignored a result from Redis that could not be read (%d bytes)", len(raw))
            return
        job_id = result.job_id
        jl = for_job(log, job_id)
        if job_id not in self._running or self._tokens.get(job_id) != result.token:
            self.ignored_results += 1
            jl.info("ignored a %s result from worker %s: the job is already finished or was handed over again",
                    result.status, result.worker)
            return
        self._forget_job(job_id)  # from here on, any other result for this job is a duplicate
        self.worker_of.setdefault(job_id, result.worker)
        self._timing.busy_s += result.run_s / max(1, len(self._workers_info))  # run_s: this job's share of its batch
        try:
            await self._finish(job_id, self._work_result(result, images))
        finally:
            with contextlib.suppress(RedisError):
                await self._redis_client().delete(self.keys.live(job_id))

    def _work_result(self, result: ResultPayload, images: list[Any]) -> WorkResult:
        status = result.status
        if status == "done":
            return WorkResult(images=images, flagged=list(result.flagged), data=result.data)
        if status == "cancelled":
            return WorkResult(error=JobCancelled())
        if status == "timeout":
            with self._lock:
                self._timed_out.add(result.job_id)
            return WorkResult(error=JobCancelled())
        if status == "failed":
            return WorkResult(error=TesseraError(result.error or "The job failed on its GPU worker."))
        if status == "gave_up":
            return WorkResult(error=TesseraError(
                f"Gave up on this job after {result.attempts} attempts: the GPU worker running it stopped each "
                "time. Try a smaller image or a lower --quality."))
        return WorkResult(error=RemoteError(f"worker {result.worker}: {result.error}"))

    # ----- events and workers -----------------------------------------------------------
    async def _events_loop(self) -> None:
        redis = Redis.from_url(self.url)
        pubsub = redis.pubsub()
        try:
            while not self._stopping:
                try:
                    if not pubsub.subscribed:
                        await pubsub.subscribe(self.keys.events(self.instance))
                    message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
                except (RedisError, OSError) as exc:
                    log.warning("listening for worker events failed (%s); retrying", exc)
                    await asyncio.sleep(RETRY_S)
                    pubsub = redis.pubsub()
                    continue
                if message and message.get("type") == "message":
                    self._on_event(message["data"])
        finally:
            await pubsub.aclose()
            await redis.aclose()

    def _on_event(self, raw: Any) -> None:
        try:
            event = parse_event(raw)
        except PayloadError as exc:
            log.warning("ignored a malformed worker event (%d bytes): %s", len(raw), exc)
            return
        except Exception:  # parse_event raises only PayloadError; this is the net under it
            log.exception("ignored a worker event that could not be read")
            return
        token = event["token"]
        if event["type"] == "started":
            for job_id in event["job_ids"]:
                running = self._running.get(job_id)
                if running is not None and self._tokens.get(job_id) == token:
                    self.worker_of[job_id] = event["worker"]
                    running.started = time.monotonic()  # the timeout and run time count from here
            return
        job_id = event["job_id"]
        if job_id not in self._running or self._tokens.get(job_id) != token:
            return
        preview = event.get("preview")
        if preview is not None and len(preview) > MAX_PREVIEW_BYTES:
            preview = None
        self.events.emit(QueueEvent("progress", job_id, step=event["step"], total=event["total"], preview=preview))

    async def _workers_loop(self) -> None:
        while not self._stopping:
            await asyncio.sleep(self.worker_poll_s)
            try:
                await self._poll_workers()
            except (RedisError, OSError) as exc:
                log.warning("could not count the live workers (%s)", exc)

    async def _poll_workers(self) -> None:
        redis = self._redis_client()
        # Stop at MAX_WORKERS keys: a Redis writer with millions of worker keys must not grow the
        # bot's memory on every poll. Sizes are asked first (STRLEN) so an oversized value is
        # never read into memory.
        keys: list[Any] = []
        async for key in redis.scan_iter(match=self.keys.workers_pattern, count=200):
            keys.append(key)
            if len(keys) >= MAX_WORKERS:
                break
        found: dict[str, dict] = {}
        async with redis.pipeline(transaction=False) as pipe:
            for key in keys:
                pipe.strlen(key)
            sizes = await pipe.execute(raise_on_error=False) if keys else []
        small = []
        for key, size in zip(keys, sizes, strict=True):
            if not isinstance(size, int):  # not a string key (WRONGTYPE): not a heartbeat
                self._warn_heartbeat(_worker_name(key), "it is not a string")
            elif size > MAX_HEARTBEAT_BYTES:
                self._warn_heartbeat(_worker_name(key), f"it is {size} bytes (the most is {MAX_HEARTBEAT_BYTES})")
            elif size > 0:
                small.append(key)
        keys = small
        for key, value in zip(keys, await redis.mget(keys) if keys else [], strict=True):
            if value is None:
                continue
            name = _worker_name(key)
            try:
                info = parse_heartbeat(value, name)
            except PayloadError as exc:
                self._warn_heartbeat(name, str(exc))
                continue
            except Exception:  # parse_heartbeat raises only PayloadError; this is the net under it
                self._warn_heartbeat(name, "it could not be read")
                continue
            found[name] = info.to_json()
        before = set(self._workers_info)
        self._workers_info = found
        if set(found) != before:
            log.info("%d GPU workers live: %s", len(found), ", ".join(sorted(found)) or "none")
            self._wake.set()
        if found:
            self._workers_seen.set()
        else:
            self._workers_seen.clear()


def _read_keyed(path: str) -> tuple[str, bytes]:
    """A file's bytes and their sha256 (the key a batch sends them under)."""
    data = Path(path).read_bytes()
    return hashlib.sha256(data).hexdigest(), data


def _worker_name(key: Any) -> str:
    """A worker's name from its heartbeat key (bounded, for logs)."""
    return (key.decode("utf-8", "replace") if isinstance(key, bytes) else str(key)).rsplit(":", 1)[-1][:100]


def _decode_result(raw: bytes) -> tuple[ResultPayload, list[Any]]:
    """Parse a result and open its PNGs (on the thread pool: both can take a while)."""
    import io

    from PIL import Image, UnidentifiedImageError

    result = parse_result(raw)
    images = []
    left = MAX_RESULT_PIXELS
    for data in result.images:
        try:
            with Image.open(io.BytesIO(data), formats=("PNG",)) as image:
                if image.format != "PNG":
                    raise PayloadError(f"result images must be PNG, got {image.format}")
                width, height = image.size
                left -= width * height
                if left < 0:  # read from the header: nothing is decoded yet
                    raise PayloadError(f"result images hold more than {MAX_RESULT_PIXELS:,} pixels together")
                image.load()
                images.append(image.copy())  # keeps `info`, where PNG text chunks (an upscale's metadata) live
        except (UnidentifiedImageError, OSError, Image.DecompressionBombError) as exc:
            raise PayloadError(f"a result image cannot be read as a PNG ({exc.__class__.__name__})") from None
    return result, images


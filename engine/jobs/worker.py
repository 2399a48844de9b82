"""A GPU worker process for the Redis queue: load the model once, then run one batch at a time.

`tessera worker --queue redis://…` builds a `Worker` around the same `EngineExecutor` the
in-process queue uses. The worker never touches SQLite or the image folder: it receives the
resolved requests (and any init image or upscale source as bytes) and sends back PNG bytes,
so it can run on any machine that reaches Redis. Several workers share one stream; the bot
decides the order (fair turns, limits, batching) and hands over only what is about to run.

Per batch:
1. the entry's JSON is checked field by field (`engine.jobs.redis_wire.parse_batch`); a
   malformed one is logged and dropped (acknowledged, so it is never re-delivered to kill
   the next worker), never run. A well-formed batch outside this worker's models or the
   bot's own limits (`WorkerLimits`: size, steps, batch, timeout, attempts) is refused
   before anything loads: each job is answered "failed" with the reason;
2. each job is claimed on its `live` key: skipped if the bot no longer waits for this
   hand-over, answered "cancelled" if it was cancelled meanwhile, answered "gave_up" once it
   has been started `max_attempts` times (each earlier run died with its worker);
3. the executor runs on a thread (`engine.jobs.executor.run_split`: an out-of-memory batch is
   split, a failing job fails alone) while the event loop renews the entry's claim,
   watches the `live` keys for cancels and publishes throttled progress;
4. each job's result is pushed to the bot's list, then the entry is acknowledged. A worker
   killed before that leaves the entry pending; another worker re-runs it after the
   visibility timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import socket
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from redis.asyncio import Redis
from redis.exceptions import RedisError

from engine.errors import JobCancelled, TesseraError
from engine.imaging.encoding import encode_png
from engine.jobs.executor import UPSCALE, Executor, WorkItem, WorkResult, run_split
from engine.jobs.joblog import for_job
from engine.jobs.model import JobKind
from engine.jobs.redis_wire import (
    CLAIM_SCRIPT,
    DEFAULT_NAMESPACE,
    DEFAULT_VISIBILITY_S,
    REF_FILES,
    RESULT_TTL_S,
    WIRE_VERSION,
    BatchPayload,
    BatchRefused,
    Heartbeat,
    JobPayload,
    Keys,
    PayloadError,
    ResultPayload,
    StreamEntry,
    TesseraStreamBroker,
    WorkerLimits,
    b64,
    check_batch,
    dumps,
    parse_batch,
)
from engine.jobs.results import encode_preview
from engine.redact import redact_url
from engine.request import GenerationRequest
from engine.upscale.realesrgan import upscaled_pnginfo

if TYPE_CHECKING:
    from PIL.Image import Image

log = logging.getLogger(__name__)

PROGRESS_INTERVAL_S = 0.5  # as engine.jobs.queue: at most one progress event per job this often
POLL_S = 0.5  # how often a running batch's `live` keys are checked for cancels


def default_worker_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(2)}".replace(":", "-")[:100]


@dataclass
class _BatchRun:
    """What the GPU thread and the event loop share while one batch runs."""

    batch: BatchPayload
    job_ids: list[str]
    started: float = field(default_factory=time.monotonic)
    cancelled: set[str] = field(default_factory=set)  # the bot asked to stop these
    dropped: set[str] = field(default_factory=set)  # the bot no longer waits for these
    timed_out: set[str] = field(default_factory=set)
    interrupted: set[str] = field(default_factory=set)  # stopped because this worker is stopping
    last_progress: dict[str, float] = field(default_factory=dict)
    pending_preview: dict[str, Any] = field(default_factory=dict)
    pushes: list[asyncio.Task] = field(default_factory=list)
    progress: dict[str, asyncio.Task] = field(default_factory=dict)  # each job's latest progress event
    answered: set[str] = field(default_factory=set)
    ended: bool = False


class Worker:
    """Takes batches from the Redis stream and runs them on `executor`, one at a time."""

    def __init__(self, url: str, executor: Executor, *, namespace: str = DEFAULT_NAMESPACE,
                 worker_id: str | None = None, visibility_timeout_s: float = DEFAULT_VISIBILITY_S,
                 poll_s: float = POLL_S, model_ref: str = "", device: str = "",
                 limits: WorkerLimits | None = None) -> None:
        self.url = url
        self.executor = executor
        self.keys = Keys(namespace)
        self.worker_id = worker_id or default_worker_id()
        self.visibility_timeout_s = visibility_timeout_s
        self.poll_s = poll_s
        self.model_ref = model_ref
        self.device = device
        # Only these models, only what the bot itself would ask (see WorkerLimits): a message
        # naming another model or path is refused before anything is loaded.
        self.limits = limits or WorkerLimits(models=frozenset({model_ref} if model_ref else ()))
        self.rejected = 0  # malformed payloads dropped (tests, logs)
        self.refused = 0  # well-formed batches outside the limits, answered "failed"
        self.batches = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop = asyncio.Event()
        self._redis: Redis | None = None
        self._broker: TesseraStreamBroker | None = None
        self._claim: Any = None
        self._busy = False
        self._closing = False

    def request_stop(self) -> None:
        """Stop after (and interrupting) the current batch; its unfinished jobs are handed back."""
        self._stop.set()

    async def run(self, stop: asyncio.Event | None = None) -> None:
        """Connect, load the model, then take batches until `stop` (or `request_stop`)."""
        self._loop = asyncio.get_running_loop()
        if stop is not None:
            self._stop = stop
        self._redis = Redis.from_url(self.url)
        self._claim = self._redis.register_script(CLAIM_SCRIPT)
        self._broker = TesseraStreamBroker(self.url, keys=self.keys, consumer_name=self.worker_id,
                                           visibility_timeout_s=self.visibility_timeout_s)
        heartbeat: asyncio.Task | None = None
        log.info("worker %s: connecting to Redis at %s", self.worker_id, redact_url(self.url))
        try:
            await self._redis.ping()
            await self._broker.startup()
            log.info("worker %s: loading the model %s", self.worker_id, self.model_ref or "")
            await asyncio.to_thread(self.executor.prepare)
            profile = getattr(getattr(self.executor, "model", None), "profile", None)
            if profile is not None:
                self.limits = self.limits.allowing(profile)
            heartbeat = asyncio.create_task(self._heartbeat(), name="tessera-worker-heartbeat")
            await self._beat()
            log.info("worker %s ready: taking jobs from %s", self.worker_id, self.keys.stream)
            while not self._stop.is_set():
                try:
                    entry = await self._broker.take()
                except (RedisError, OSError) as exc:
                    log.warning("reading the job stream failed (%s); retrying", exc)
                    await asyncio.sleep(1.0)
                    continue
                if entry is None:
                    continue
                try:
                    await self.handle(entry)
                except (RedisError, OSError) as exc:  # e.g. acknowledging failed: the entry is re-delivered
                    log.warning("lost Redis while finishing stream entry %s (%s)", entry.id, exc)
                    await asyncio.sleep(1.0)
                except Exception:  # handle() has its own nets; nothing may end the worker
                    log.exception("the worker failed on stream entry %s; taking the next one", entry.id)
        finally:
            self._closing = True
            if heartbeat is not None:
                heartbeat.cancel()
                await asyncio.gather(heartbeat, return_exceptions=True)
            with contextlib.suppress(RedisError, OSError):
                await self._redis.delete(self.keys.worker(self.worker_id))
            await asyncio.to_thread(self.executor.close)
            await self._broker.shutdown()
            await self._redis.aclose()

    # ----- one stream entry -------------------------------------------------------------
    async def handle(self, entry: StreamEntry) -> None:
        """Check, run and answer one entry, then acknowledge it."""
        assert self._broker is not None
        try:
            batch = await asyncio.to_thread(parse_batch, entry.data)  # up to 64 MB: off the loop (heartbeats)
            if not (batch.reply_to.startswith(self.keys.results("")) and batch.events.startswith(self.keys.events(""))):
                raise PayloadError("reply_to and events must be this namespace's result list and event channel")
        except Exception as exc:  # PayloadError, or anything parse_batch failed to foresee: never run, never again
            self.rejected += 1
            reason = str(exc)[:300] if isinstance(exc, PayloadError) else f"unexpected {type(exc).__name__}"
            log.error("rejected a malformed job payload (stream entry %s, %d bytes): %s", entry.id, len(entry.data),
                      reason)
            await self._broker.done(entry.id)  # acknowledged and deleted: it is not re-delivered
            return
        try:
            check_batch(batch, self.limits)
        except BatchRefused as refusal:
            self.refused += 1
            log.warning("refused batch %s (stream entry %s): %s", batch.batch_id, entry.id, refusal)
            for job in batch.jobs:  # the bot's jobs end "failed" with the reason instead of waiting
                await self._push(batch, ResultPayload(job.job_id, batch.token, self.worker_id, "failed",
                                                      error=str(refusal)[:4000]))
            await self._broker.done(entry.id)
            return
        self._busy = True
        keeper: asyncio.Task | None = None
        run: _BatchRun | None = None
        try:
            run = await self._claim_jobs(batch)
            if run is not None:
                keeper = asyncio.create_task(self._keep(entry.id, run))
                await self._run(run)
                if run.interrupted:
                    await self._hand_back(entry, run)
        except (RedisError, OSError) as exc:  # Redis went away: the entry stays pending and is re-run
            log.error("lost Redis while running a batch (%s); it will be re-delivered", exc)
            return
        except Exception as error:  # never let the worker die on one batch
            log.exception("the worker failed on a batch")
            if run is not None:
                for job_id in run.job_ids:
                    if job_id not in run.answered:
                        await self._answer(run, job_id, WorkResult(error=error))
        finally:
            self._busy = False
            if run is not None:
                run.ended = True
            if keeper is not None:
                keeper.cancel()
                await asyncio.gather(keeper, return_exceptions=True)
        await self._broker.done(entry.id)
        self.batches += 1

    async def _claim_jobs(self, batch: BatchPayload) -> _BatchRun | None:
        """Claim each job on its live key; answer the cancelled and exhausted ones at once."""
        redis = self._redis_client()
        async with redis.pipeline(transaction=False) as pipe:
            for job in batch.jobs:
                await self._claim(keys=[self.keys.live(job.job_id)], args=[batch.token], client=pipe)
            claims = await pipe.execute()
        to_run: list[str] = []
        for job, claim in zip(batch.jobs, claims, strict=True):
            jl = for_job(log, job.job_id)
            claim = int(claim)
            if claim == -1:
                jl.info("skipping job: the bot no longer waits for this hand-over (finished, cancelled or re-queued)")
            elif claim == -2:
                await self._push(batch, ResultPayload(job.job_id, batch.token, self.worker_id, "cancelled"))
            elif claim > batch.max_attempts:
                jl.warning("giving up on job: started %d times, each run ended with its worker", claim - 1)
                await self._push(batch, ResultPayload(job.job_id, batch.token, self.worker_id, "gave_up",
                                                      attempts=claim - 1))
            else:
                jl.info("running job on worker %s (attempt %d of %d%s)", self.worker_id, claim, batch.max_attempts,
                        ": its previous worker stopped" if claim > 1 else "")
                to_run.append(job.job_id)
        if not to_run:
            return None
        return _BatchRun(batch, to_run)

    async def _run(self, run: _BatchRun) -> None:
        batch = run.batch
        jobs = {job.job_id: job for job in batch.jobs}
        loop = asyncio.get_running_loop()
        with contextlib.ExitStack() as stack:
            paths: dict[str, str] = {}
            if batch.files:  # init images and upscale sources, in a folder that goes with the batch
                folder = stack.enter_context(tempfile.TemporaryDirectory(prefix="tessera-worker-"))
                paths = await asyncio.to_thread(_write_files, batch.files, Path(folder))
            items = [_work_item(jobs[job_id], paths) for job_id in run.job_ids]
            await self._publish(batch, {"type": "started", "job_ids": run.job_ids})
            control = _Control(self, run)

            def deliver(index: int, result: WorkResult) -> None:
                loop.call_soon_threadsafe(self._deliver, run, run.job_ids[index], result)

            run.started = time.monotonic()
            await asyncio.to_thread(run_split, self.executor, items, control, deliver)
            # Every deliver() was queued on the loop before the thread returned.
            await asyncio.sleep(0)
            outcomes = await asyncio.gather(*run.pushes, return_exceptions=True)
            if any(isinstance(o, BaseException) for o in outcomes):
                raise ConnectionError("some results could not be sent")  # not acknowledged: re-run later

    def _deliver(self, run: _BatchRun, job_id: str, result: WorkResult) -> None:
        run.pushes.append(asyncio.ensure_future(self._answer(run, job_id, result)))

    async def _answer(self, run: _BatchRun, job_id: str, result: WorkResult) -> None:
        if job_id in run.answered:
            return
        run.answered.add(job_id)
        batch = run.batch
        jl = for_job(log, job_id)
        progress = run.progress.get(job_id)
        if progress is not None:  # the last progress event goes out before the result
            await asyncio.gather(progress, return_exceptions=True)
        share = (time.monotonic() - run.started) / len(run.job_ids)
        answer = ResultPayload(job_id, batch.token, self.worker_id, "done", run_s=share)
        error = result.error
        if error is None and result.data is not None:
            answer = replace(answer, data=result.data)
        elif error is None and result.images:
            kind = next(j.kind for j in batch.jobs if j.job_id == job_id)
            pngs = await asyncio.to_thread(_encode_pngs, kind, result.images)
            flagged = sorted({i for i in result.flagged if 0 <= i < len(pngs)})  # the bot refuses any other
            answer = replace(answer, images=tuple(pngs), flagged=tuple(flagged))
        elif error is None or isinstance(error, JobCancelled):
            if job_id in run.dropped:
                return  # nobody waits for it
            if job_id in run.interrupted and job_id not in run.cancelled and job_id not in run.timed_out:
                return  # handed back to the stream by _hand_back
            status = "timeout" if job_id in run.timed_out and job_id not in run.cancelled else "cancelled"
            answer = replace(answer, status=status)
        elif isinstance(error, TesseraError):
            jl.info("job failed: %s", error)
            answer = replace(answer, status="failed", error=str(error)[:4000])
        else:
            jl.error("job failed", exc_info=error)
            answer = replace(answer, status="error", error=f"{type(error).__name__}: {error}"[:4000])
        await self._push(batch, answer)

    async def _push(self, batch: BatchPayload, answer: ResultPayload) -> None:
        data = await asyncio.to_thread(answer.to_bytes) if answer.images else answer.to_bytes()
        redis = self._redis_client()
        for attempt in range(5):
            try:
                async with redis.pipeline(transaction=True) as pipe:
                    pipe.lpush(batch.reply_to, data)
                    pipe.expire(batch.reply_to, RESULT_TTL_S)
                    await pipe.execute()
                return
            except (RedisError, OSError) as exc:
                for_job(log, answer.job_id).warning("could not send the result (%s), try %d of 5", exc, attempt + 1)
                await asyncio.sleep(1.0)
        for_job(log, answer.job_id).error("gave up sending the result; the job runs again after the visibility timeout")
        raise ConnectionError("result not sent")  # handle() leaves the entry unacknowledged: it runs again

    async def _hand_back(self, entry: StreamEntry, run: _BatchRun) -> None:
        """This worker is stopping mid-batch: put the entry back for another worker, attempts undone."""
        assert self._broker is not None
        redis = self._redis_client()
        async with redis.pipeline(transaction=False) as pipe:
            for job_id in run.interrupted - run.cancelled - run.timed_out - run.dropped:
                pipe.hincrby(self.keys.live(job_id), "attempts", -1)
            await pipe.execute()
        await redis.xadd(self.keys.stream, {b"data": entry.data})
        log.info("worker %s stopping: handed %d unfinished jobs back to the queue", self.worker_id, len(run.interrupted))

    # ----- while a batch runs -----------------------------------------------------------
    async def _keep(self, entry_id: str, run: _BatchRun) -> None:
        """Renew the entry's claim and watch the jobs' live keys until the batch ends."""
        assert self._broker is not None
        redis = self._redis_client()
        renew_every = max(0.1, self.visibility_timeout_s / 3)
        renewed = time.monotonic()
        while not run.ended:  # a flag as well as cancel(): redis-py may turn a cancel into an error
            await asyncio.sleep(min(self.poll_s, renew_every))
            try:
                if time.monotonic() - renewed >= renew_every:
                    await self._broker.keep(entry_id)
                    renewed = time.monotonic()
                async with redis.pipeline(transaction=False) as pipe:
                    for job_id in run.job_ids:
                        pipe.hmget(self.keys.live(job_id), ["token", "cancel"])
                    states = await pipe.execute()
            except (RedisError, OSError) as exc:
                log.warning("could not reach Redis while running a batch (%s)", exc)
                continue
            for job_id, (token, cancel) in zip(run.job_ids, states, strict=True):
                if token is None or token.decode() != run.batch.token:
                    run.dropped.add(job_id)
                elif cancel == b"1":
                    run.cancelled.add(job_id)

    def should_stop(self, run: _BatchRun, job_id: str) -> bool:
        """Called on the GPU thread every step: cheap set lookups only."""
        if job_id in run.cancelled or job_id in run.dropped:
            return True
        if time.monotonic() - run.started > run.batch.timeout_s:
            run.timed_out.add(job_id)
            return True
        if self._stop.is_set():
            run.interrupted.add(job_id)
            return True
        return False

    def on_step(self, run: _BatchRun, job_id: str, step: int, total: int, preview: Image | None) -> None:
        """On the GPU thread: forward a throttled progress event to the loop."""
        if preview is not None:
            run.pending_preview[job_id] = preview
        now = time.monotonic()
        if step not in (1, total) and now - run.last_progress.get(job_id, 0.0) < PROGRESS_INTERVAL_S:
            return
        run.last_progress[job_id] = now
        preview = run.pending_preview.pop(job_id, None)
        assert self._loop is not None
        self._loop.call_soon_threadsafe(self._progress, run, job_id, step, total, preview)

    def _progress(self, run: _BatchRun, job_id: str, step: int, total: int, preview: Image | None) -> None:
        async def send() -> None:
            data = None
            if preview is not None:
                data = b64(await asyncio.to_thread(encode_preview, preview))
            await self._publish(run.batch, {"type": "progress", "job_id": job_id, "step": step, "total": total,
                                            "preview": data})

        previous = run.progress.get(job_id)

        async def in_order() -> None:
            if previous is not None:
                await asyncio.gather(previous, return_exceptions=True)
            await send()

        run.progress[job_id] = asyncio.ensure_future(in_order())

    async def _publish(self, batch: BatchPayload, event: dict) -> None:
        try:
            await self._redis_client().publish(batch.events, dumps({"v": WIRE_VERSION, "token": batch.token,
                                                                    "worker": self.worker_id, **event}))
        except (RedisError, OSError) as exc:
            log.debug("could not publish an event (%s)", exc)

    # ----- presence ---------------------------------------------------------------------
    async def _heartbeat(self) -> None:
        while not self._closing:
            await asyncio.sleep(max(0.1, self.visibility_timeout_s / 3))
            try:
                await self._beat()
            except (RedisError, OSError) as exc:
                log.warning("could not send the heartbeat (%s)", exc)
            except Exception:  # a silent heartbeat makes the bot think this worker is gone
                log.exception("could not send the heartbeat")

    async def _beat(self) -> None:
        model = getattr(self.executor, "model", None)
        profile = getattr(model, "profile", None)
        info = Heartbeat(
            worker=self.worker_id, host=socket.gethostname()[:200], pid=os.getpid(),
            model=getattr(model, "ref", None) or self.model_ref, device=self.device, busy=self._busy,
            profile=None if profile is None else {"family": profile.family, "native": profile.native,
                                                  "steps": profile.steps, "guidance": profile.guidance},
        )
        ttl = max(1, round(self.visibility_timeout_s))
        await self._redis_client().set(self.keys.worker(self.worker_id), dumps(info.to_json()), ex=ttl)

    def _redis_client(self) -> Redis:
        if self._redis is None:
            raise RuntimeError("the worker is not running")
        return self._redis


class _Control:
    """The `BatchControl` the executor gets for one batch."""

    def __init__(self, worker: Worker, run: _BatchRun) -> None:
        self.worker = worker
        self.run = run

    def on_step(self, index: int, step: int, total: int, preview: Image | None) -> None:
        self.worker.on_step(self.run, self.run.job_ids[index], step, total, preview)

    def should_stop(self, index: int) -> bool:
        return self.worker.should_stop(self.run, self.run.job_ids[index])


def _write_files(files: dict[str, bytes], folder: Path) -> dict[str, str]:
    """Write the batch's input images to a private folder; sha256 key -> local path."""
    paths = {}
    for key, data in files.items():  # parse_batch checked each against its key
        path = folder / f"{key}.img"
        path.write_bytes(data)
        paths[key] = str(path)
    return paths


def _work_item(job: JobPayload, paths: dict[str, str]) -> WorkItem:
    options = dict(job.options)
    request = None
    if job.kind == UPSCALE or job.kind == JobKind.DESCRIBE:
        options["source"] = paths[options["source"]]
    elif job.request is not None:
        data = dict(job.request)
        if data.get("init_image"):
            data["init_image"] = paths[data["init_image"]]
        if data.get("mask_image"):
            data["mask_image"] = paths[data["mask_image"]]
        for name in REF_FILES:
            data[name] = [paths[key] for key in data.get(name, [])]
        request = GenerationRequest.from_json(data)
    return WorkItem(job.job_id, job.kind, request, options, job.prompt_text)


def _encode_pngs(kind: str, images: Sequence[Image]) -> list[bytes]:
    """PNG bytes; an upscale keeps its text chunks (the bot stores them as they are)."""
    if kind == UPSCALE:
        return [encode_png(image, upscaled_pnginfo(image)) for image in images]
    return [encode_png(image) for image in images]


__all__ = ["Worker", "default_worker_id"]

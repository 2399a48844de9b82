"""The job queue: fair turns, batching, cancellation, timeouts and restarts, with events.

The queue holds job ids only; SQLite (through `storage`) holds every job's state, so a
crash loses nothing: `start()` re-queues what was waiting, in its original order, and re-runs
what was running (up to `JOB_MAX_ATTEMPTS` attempts).

`InProcessQueue` runs everything in this process. Torch never runs on the event loop: one
dedicated worker thread takes one batch at a time from the `Scheduler` (fair round-robin
across users, priorities, limits), runs it through an `Executor`, and hands each job's
result back with `loop.call_soon_threadsafe`. Grids, PNG encoding and storage writes happen
on the loop and a small thread pool (`ResultWriter`), so the worker thread goes straight on
to the next batch. The Redis backend reuses the same `Scheduler`, events and results code.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import queue as thread_queue
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable, Hashable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Protocol

from engine.errors import JobCancelled, StorageError, TesseraError
from engine.imaging.encoding import EncodedImage
from engine.jobs.answers import check_answer
from engine.jobs.executor import UPSCALE, Executor, WorkItem, WorkResult, run_split
from engine.jobs.fairness import Entry, Limits, Scheduler
from engine.jobs.joblog import for_job
from engine.jobs.model import Job, JobState
from engine.jobs.results import ResultWriter, encode_preview
from engine.jobs.store import Store
from engine.request import GenerationRequest

if TYPE_CHECKING:  # types only: no PIL or diffusion module is needed to run the queue core
    from PIL.Image import Image

    from engine.diffusion.models import ModelProfile

log = logging.getLogger(__name__)

EventKind = Literal["queued", "position", "started", "progress", "done", "failed", "cancelled"]

PROGRESS_INTERVAL_S = 0.5  # at most one progress event per job this often (plus first and last step)
POSITION_DEBOUNCE_S = 0.25  # position updates are coalesced: the bot edits messages, slowly
POSITION_EXACT_UNTIL = 50  # further back, a job hears of a new position once it moved by a tenth
STATS_WINDOW = 200  # jobs the mean wait and run times are taken over

SETTLE_RETRY_S = 5.0  # first retry of a "failed" that could not be stored (disk full), then doubling
SETTLE_RETRY_MAX_S = 300.0

INTERNAL_ERROR = ("Something went wrong while making this job (job {job_id}). It was logged; "
                  "try again, and quote the job id if it keeps happening.")


@dataclass(frozen=True)
class QueueEvent:
    kind: EventKind
    job_id: str
    position: int | None = None  # queued/position: 1 = next to run
    step: int | None = None  # progress
    total: int | None = None
    preview: bytes | None = None  # progress: JPEG bytes of a blurry preview (every few steps)
    images: tuple = ()  # done: tuple[engine.jobs.model.ImageRecord, ...]
    upload: EncodedImage | None = None  # done: the Discord-ready file
    error: str | None = None  # failed: a message fit to show the user
    ignored: tuple[str, ...] = ()  # started/done: prompt params accepted but not honoured
    flagged: tuple[int, ...] = ()  # done: indices of images the safety checker replaced with its notice
    result: dict | None = None  # done: the answer of a job that answers text (/describe, /shorten)


@dataclass(frozen=True)
class QueueStats:
    queued: int
    running: int
    per_user: dict[int, int]  # user -> jobs waiting or running
    mean_wait_s: float
    mean_run_s: float
    busy_fraction: float  # share of time since start the worker(s) spent running jobs
    workers: int  # workers able to take jobs (in-process: 1 once the model is loaded)
    model_ready: bool = True
    done: int = 0
    failed: int = 0
    cancelled: int = 0


Callback = Callable[[QueueEvent], Awaitable[None] | None]


class JobQueue(Protocol):
    """Everything the application service (`bot.service.Tessera`) uses of a queue; both
    `InProcessQueue` and the Redis queue satisfy it, so the service never probes with getattr."""

    scheduler: Scheduler  # fair turns and per-user counts (a server's own waiting limit reads it)
    writer: ResultWriter  # re-makes a done job's Discord file (/show, restarts)

    async def start(self, *, resume: bool = True) -> None: ...
    async def stop(self) -> None: ...
    async def submit(self, job: Job) -> int: ...
    async def cancel(self, job_id: str) -> bool: ...
    def check(self, user_id: int, count: int = 1) -> None: ...
    def position(self, job_id: str) -> int | None: ...
    def stats(self) -> QueueStats: ...
    def model_ready(self) -> bool: ...
    async def wait_ready(self, timeout: float | None = None) -> bool: ...
    def model_profile(self, model: str) -> ModelProfile | None: ...
    def subscribe(self, callback: Callback) -> None: ...


def limits_from_settings(settings: Any) -> Limits:
    return Limits(max_per_user=settings.queue_max_per_user, max_running_per_user=settings.queue_max_running_per_user,
                  max_total=settings.queue_max_total, batch_size=settings.queue_batch_size)


def request_of(job: Job) -> GenerationRequest | None:
    if job.kind == UPSCALE or not job.request_json:
        return None
    return GenerationRequest.from_json(job.request_json)


def batch_key_of(job: Job) -> Hashable:
    """Jobs with equal keys may share one pipeline call; upscales never do."""
    request = request_of(job)
    return None if request is None else ("generate", *request.batch_key())


class EventHub:
    """Subscribers of queue events; sync callbacks run at once, async ones as tasks."""

    def __init__(self) -> None:
        self._callbacks: list[Callback] = []
        self._tasks: set[asyncio.Task] = set()

    def subscribe(self, callback: Callback) -> None:
        self._callbacks.append(callback)

    def emit(self, event: QueueEvent) -> None:
        for callback in list(self._callbacks):
            try:
                result = callback(event)
            except Exception:
                for_job(log, event.job_id).exception("an event subscriber failed on %s", event.kind)
                continue
            if result is not None and inspect.isawaitable(result):
                task = asyncio.ensure_future(result)
                self._tasks.add(task)
                task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("an event subscriber failed", exc_info=task.exception())

    async def drain(self) -> None:
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)


@dataclass
class RunningJob:
    """A job handed to a worker (the thread here, a remote worker in `redis_queue`)."""

    job: Job
    item: WorkItem
    started: float  # monotonic
    user_id: int
    last_progress: float = 0.0
    pending_preview: Any = None


@dataclass
class QueueTiming:
    """Recent wait and run times and counts, for `stats()` (shared by both backends)."""

    waits: deque = field(default_factory=lambda: deque(maxlen=STATS_WINDOW))
    runs: deque = field(default_factory=lambda: deque(maxlen=STATS_WINDOW))
    busy_s: float = 0.0
    since: float = field(default_factory=time.monotonic)
    done: int = 0
    failed: int = 0
    cancelled: int = 0


class QueueCore:
    """What every backend shares: storage state changes, events, results, stats, positions.

    Subclasses decide where batches run (`_dispatch`).
    """

    def __init__(self, storage: Store, *, limits: Limits | None = None, job_timeout_s: float = 600.0,
                 max_attempts: int = 3, writer: ResultWriter | None = None) -> None:
        self.storage = storage
        self.scheduler = Scheduler(limits or Limits())
        self.job_timeout_s = job_timeout_s
        self.max_attempts = max_attempts
        self._pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="tessera-encode")
        self.writer = writer or ResultWriter(storage, self._pool)
        self.events = EventHub()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._running: dict[str, RunningJob] = {}
        self._cancel_requested: set[str] = set()
        self._timed_out: set[str] = set()
        self._stopping = False
        self._wake = asyncio.Event()
        self._finishing: set[asyncio.Task] = set()
        self._published: dict[str, int] = {}
        self._positions_scheduled = False
        # job -> (its request_json, the request parsed from it) from `submit`, reused when it starts
        self._requests: dict[str, tuple[dict | None, GenerationRequest | None]] = {}
        self._timing = QueueTiming()
        self._lock = threading.Lock()  # guards _cancel_requested / _timed_out across threads
        # job -> its failure message, for jobs whose "failed" could not be stored (disk full)
        self._unsettled: dict[str, str] = {}
        self._settler: asyncio.Future | None = None
        self.settle_retry_s = SETTLE_RETRY_S

    # ----- the public interface ---------------------------------------------------------
    def subscribe(self, callback: Callback) -> None:
        self.events.subscribe(callback)

    def check(self, user_id: int, count: int = 1) -> None:
        """Raise `QueueLimitError` before jobs are created if `count` more would not fit."""
        self.scheduler.check(user_id, count)

    def position(self, job_id: str) -> int | None:
        return self.scheduler.position(job_id)

    async def submit(self, job: Job) -> int:
        """Queue a stored job (state queued); return its position. Raises QueueLimitError."""
        request = request_of(job)
        key = None if request is None else ("generate", *request.batch_key())
        position = self.scheduler.add(Entry(job.id, job.user_id, job.priority, key))
        self._requests[job.id] = (job.request_json, request)
        self._published[job.id] = position
        self.events.emit(QueueEvent("queued", job.id, position=position))
        self._queue_moved()
        return position

    async def cancel(self, job_id: str) -> bool:
        """Cancel a waiting job (removed at once) or a running one (stops at its next step)."""
        entry = self.scheduler.remove(job_id)
        if entry is not None:
            self._published.pop(job_id, None)
            self._requests.pop(job_id, None)
            await self.storage.jobs.transition(job_id, JobState.CANCELLED)
            self._timing.cancelled += 1
            self.events.emit(QueueEvent("cancelled", job_id))
            self._queue_moved()
            return True
        if self.scheduler.is_running(job_id):
            with self._lock:
                self._cancel_requested.add(job_id)
            return True
        return False

    def stats(self) -> QueueStats:
        t = self._timing
        elapsed = max(time.monotonic() - t.since, 1e-9)
        busy = t.busy_s + self._busy_now()
        return QueueStats(
            queued=len(self.scheduler), running=len(self.scheduler.running), per_user=self.scheduler.per_user(),
            mean_wait_s=sum(t.waits) / len(t.waits) if t.waits else 0.0,
            mean_run_s=sum(t.runs) / len(t.runs) if t.runs else 0.0,
            busy_fraction=min(1.0, busy / elapsed), workers=self._workers(), model_ready=self._model_ready(),
            done=t.done, failed=t.failed, cancelled=t.cancelled,
        )

    def model_ready(self) -> bool:
        """Whether jobs can run now (the model is loaded / a worker is live); cheap, unlike `stats`."""
        return self._model_ready()

    def model_profile(self, model: str) -> ModelProfile | None:
        """The profile of `model` as a worker elsewhere loaded it; None here (the in-process
        executor's own model says it directly). The Redis queue answers from heartbeats."""
        return None

    # ----- for subclasses ---------------------------------------------------------------
    def _busy_now(self) -> float:
        return 0.0

    def _workers(self) -> int:
        return 1

    def _model_ready(self) -> bool:
        return True

    async def _resume(self) -> None:
        """Re-queue stored waiting jobs in order; re-run interrupted ones or give up on them."""
        for job in await self.storage.jobs.resumable():
            jl = for_job(log, job.id)
            if job.state == "running":
                if job.attempts >= self.max_attempts:
                    message = (f"Gave up on this job after {job.attempts} attempts: the bot stopped each "
                               "time while it was running. Try a smaller image or a lower --quality.")
                    await self.storage.jobs.transition(job.id, JobState.FAILED, error=message)
                    self._timing.failed += 1
                    jl.warning("not resuming job: %d attempts used", job.attempts)
                    self.events.emit(QueueEvent("failed", job.id, error=message))
                    continue
                job = await self.storage.jobs.transition(job.id, JobState.QUEUED)
                jl.info("re-running job interrupted by a stop (attempt %d of %d)", job.attempts + 1, self.max_attempts)
            try:
                key = batch_key_of(job)
            except Exception:
                jl.exception("stored job has an unreadable request")
                await self._fail_stored(job.id, INTERNAL_ERROR.format(job_id=job.id))
                continue
            self.scheduler.add(Entry(job.id, job.user_id, job.priority, key), enforce_limits=False)
        if len(self.scheduler):
            log.info("resumed %d stored jobs", len(self.scheduler))
            self._queue_moved()

    async def _fail_stored(self, job_id: str, message: str) -> None:
        """Mark a job failed and tell its waiters, even when storage cannot record it now.

        On a full or failing disk the write itself fails; the "failed" event still goes out
        (a `tessera imagine` waiting for it must not hang) and the write is retried in the
        background until it lands, so the job ends failed with this reason once there is room.
        """
        try:
            await self.storage.jobs.transition(job_id, JobState.FAILED, error=message)
        except Exception as exc:
            if isinstance(exc, StorageError) and await self._already_finished(job_id):
                raise  # not ours to fail (e.g. cancelled meanwhile): a real refusal, as before
            for_job(log, job_id).error("could not record that the job failed (retrying later): %s", exc)
            self._unsettled[job_id] = message
            self._schedule_settle()
        self._timing.failed += 1
        self.events.emit(QueueEvent("failed", job_id, error=message))

    async def _already_finished(self, job_id: str) -> bool:
        try:
            job = await self.storage.jobs.get(job_id)
        except Exception:
            return False
        return job is None or job.state.finished

    def _schedule_settle(self) -> None:
        if self._settler is None or self._settler.done():
            self._settler = asyncio.ensure_future(self._settle_loop())

    async def _settle_loop(self) -> None:
        """Retry the failed-state writes that could not be made, backing off to `SETTLE_RETRY_MAX_S`."""
        delay = self.settle_retry_s
        while self._unsettled:
            await asyncio.sleep(delay)
            await self._settle_now()
            delay = min(delay * 2, SETTLE_RETRY_MAX_S)

    async def _settle_now(self) -> None:
        for job_id, message in list(self._unsettled.items()):
            try:
                await self.storage.jobs.transition(job_id, JobState.FAILED, error=message)
            except StorageError:
                if not await self._already_finished(job_id):
                    continue  # still failing: next round
            except Exception:
                continue
            for_job(log, job_id).info("recorded that the job failed: %s", message)
            self._unsettled.pop(job_id, None)

    async def _take_batch(self, batch_size: int | None = None) -> list[RunningJob]:
        """Pick the next batch, mark its jobs running in storage, emit `started`.

        The batch's jobs are marked running side by side, so storage writes them in one trip
        and one commit while the GPU waits."""
        while len(self.scheduler):
            entries = self.scheduler.next_batch(batch_size)
            if not entries:
                return []
            for entry in entries:
                self._published.pop(entry.job_id, None)
            if len(entries) == 1:
                started = [await self._start(entries[0])]
            else:
                started = await asyncio.gather(*(self._start(entry) for entry in entries))
            batch = [running for running in started if running is not None]
            for running in batch:
                ignored = tuple(running.item.request.ignored) if running.item.request is not None else ()
                self.events.emit(QueueEvent("started", running.job.id, ignored=ignored))
            self._queue_moved()
            if batch:
                return batch
        return []

    async def _start(self, entry: Entry) -> RunningJob | None:
        """Mark one picked job running; None if it is not to run after all."""
        cached = self._requests.pop(entry.job_id, None)
        try:
            try:
                job = await self.storage.jobs.transition(entry.job_id, JobState.RUNNING)
            except StorageError:  # cancelled or deleted behind our back: not ours to run
                self.scheduler.finish(entry.job_id)
                return None
            # The request parsed at submission, unless the stored one changed since.
            request = cached[1] if cached is not None and cached[0] == job.request_json else request_of(job)
            item = WorkItem(job.id, str(job.kind), request, dict(job.options), job.prompt_text)
        except Exception:
            for_job(log, entry.job_id).exception("could not start job")
            self.scheduler.finish(entry.job_id)
            await self._fail_stored(entry.job_id, INTERNAL_ERROR.format(job_id=entry.job_id))
            return None
        now = time.monotonic()
        self._timing.waits.append(now - entry.enqueued_at)
        running = self._running[job.id] = RunningJob(job, item, now, job.user_id)
        return running

    # ----- worker-thread callbacks (thread-safe) ----------------------------------------
    def should_stop(self, job_id: str) -> bool:
        if self._stopping or job_id in self._cancel_requested:
            return True
        running = self._running.get(job_id)
        if running is not None and time.monotonic() - running.started > self.job_timeout_s:
            with self._lock:
                self._timed_out.add(job_id)
            return True
        return False

    def on_step(self, job_id: str, step: int, total: int, preview: Image | None) -> None:
        """Called on the worker thread each step; forwards a throttled event to the loop."""
        running = self._running.get(job_id)
        if running is None or self._loop is None:
            return
        if preview is not None:
            running.pending_preview = preview
        now = time.monotonic()
        if step not in (1, total) and now - running.last_progress < PROGRESS_INTERVAL_S:
            return
        running.last_progress = now
        preview, running.pending_preview = running.pending_preview, None
        self._loop.call_soon_threadsafe(self._progress, job_id, step, total, preview)

    def _progress(self, job_id: str, step: int, total: int, preview: Image | None) -> None:
        if preview is None:
            self.events.emit(QueueEvent("progress", job_id, step=step, total=total))
            return

        async def encode_then_emit() -> None:
            data = await asyncio.get_running_loop().run_in_executor(self._pool, encode_preview, preview)
            if job_id in self._running:  # not after its done/failed event
                self.events.emit(QueueEvent("progress", job_id, step=step, total=total, preview=data))

        self._track(asyncio.ensure_future(encode_then_emit()))

    def _deliver(self, job_id: str, result: WorkResult) -> None:
        """On the loop: a job's result came back from a worker."""
        self._track(asyncio.ensure_future(self._finish(job_id, result)))

    def _track(self, task: asyncio.Task) -> None:
        self._finishing.add(task)
        task.add_done_callback(self._finishing.discard)

    async def _finish(self, job_id: str, result: WorkResult) -> None:
        running = self._running.get(job_id)
        if running is None:
            return
        self.scheduler.finish(job_id)
        self._timing.runs.append(time.monotonic() - running.started)
        self._wake.set()  # that user's next job may run now
        jl = for_job(log, job_id)
        with self._lock:
            cancel_requested = job_id in self._cancel_requested
            timed_out = job_id in self._timed_out
            self._cancel_requested.discard(job_id)
            self._timed_out.discard(job_id)
        error = result.error
        answers_text = running.job.kind.answers_text
        try:
            if error is None and answers_text and result.data is not None:
                answer = check_answer(running.job.kind, result.data)  # a worker's reply is checked first
                await self.storage.jobs.transition(job_id, JobState.DONE, result=answer)
                self._timing.done += 1
                self.events.emit(QueueEvent("done", job_id, result=answer))
            elif error is None and answers_text:  # a text job cancels with JobCancelled, never in silence
                raise ValueError(f"a {running.job.kind.value} job finished without an answer")
            elif error is None and not answers_text and result.images:
                records, upload = await self.writer.write(running.job, running.item.request, result.images)
                await self.storage.jobs.transition(job_id, JobState.DONE)
                self._timing.done += 1
                ignored = tuple(running.item.request.ignored) if running.item.request is not None else ()
                self.events.emit(QueueEvent("done", job_id, images=records, upload=upload, ignored=ignored,
                                            flagged=tuple(result.flagged)))
            elif isinstance(error, JobCancelled) or error is None:
                if timed_out and not cancel_requested:
                    await self._fail(job_id, f"This job took longer than the {self.job_timeout_s:g} s limit and was stopped.")
                elif self._stopping and not cancel_requested:
                    await self.storage.jobs.transition(job_id, JobState.QUEUED)  # runs again after the restart
                else:
                    await self.storage.jobs.transition(job_id, JobState.CANCELLED)
                    self._timing.cancelled += 1
                    self.events.emit(QueueEvent("cancelled", job_id))
            elif isinstance(error, TesseraError):
                jl.info("job failed: %s", error)
                await self._fail(job_id, str(error))
            else:
                jl.error("job failed", exc_info=error)
                await self._fail(job_id, INTERNAL_ERROR.format(job_id=job_id))
        except Exception as exc:
            if isinstance(exc, TesseraError):  # e.g. DATA_DIR is full: the user gets the reason
                jl.error("could not record the result of job: %s", exc)
                message = str(exc)
            else:
                jl.exception("could not record the result of job")
                message = INTERNAL_ERROR.format(job_id=job_id)
            try:
                await self._fail(job_id, message)
            except Exception:
                jl.exception("could not mark job failed")
                self.events.emit(QueueEvent("failed", job_id, error=message))  # a waiter never hangs
        finally:
            self._running.pop(job_id, None)

    async def _fail(self, job_id: str, message: str) -> None:
        self._running.pop(job_id, None)
        await self._fail_stored(job_id, message)

    # ----- positions --------------------------------------------------------------------
    def _queue_moved(self) -> None:
        """Coalesce position updates: one pass over the queue per debounce interval."""
        self._wake.set()
        if self._positions_scheduled or self._loop is None:
            return
        self._positions_scheduled = True
        self._loop.call_later(POSITION_DEBOUNCE_S, self._publish_positions)

    def _publish_positions(self) -> None:
        self._positions_scheduled = False
        positions = self.scheduler.positions()
        published = self._published
        for job_id, position in positions.items():
            last = published.get(job_id)
            if last == position:
                continue
            # Far back, every move of the queue changes every position: tell those jobs only of
            # moves of a tenth or more (about 30 events from place 1000 to 50, not 950).
            if last is not None and position > POSITION_EXACT_UNTIL and abs(last - position) * 10 < last:
                continue
            published[job_id] = position
            self.events.emit(QueueEvent("position", job_id, position=position))
        for job_id in [j for j in published if j not in positions]:
            del published[job_id]

    async def _stop_settling(self) -> None:
        """One last try at the failed-state writes still owed; then leave them to the next start.

        A bot job left "running" is resumed (and re-run) next time; a CLI job is settled by
        the next CLI run or `tessera doctor --fix`, which see that its command is gone.
        """
        if self._settler is not None:
            self._settler.cancel()
            await asyncio.gather(self._settler, return_exceptions=True)
            self._settler = None
        if self._unsettled:
            await self._settle_now()
        for job_id in self._unsettled:
            for_job(log, job_id).warning("stopping with the job's failure still unrecorded")

    # ----- handing batches to the backend ----------------------------------------------
    async def _dispatch_loop(self) -> None:
        """Take the next batch whenever the backend has room for one and hand it over.

        Sleeps on `_wake` (set by submissions, finished jobs and freed capacity) while there
        is nothing to take: no waiting job, or none that may start (every waiting user at
        their running limit). The backends differ only in `_has_room` and `_dispatch`.
        """
        while not self._stopping:
            if not await self._has_room() or not len(self.scheduler):
                self._wake.clear()
                await self._wake.wait()
                continue
            batch = await self._take_batch()
            if not batch:  # e.g. every waiting user is at their running limit
                self._wake.clear()
                await self._wake.wait()
                continue
            await self._dispatch(batch)

    async def _has_room(self) -> bool:
        """Whether the backend can take a batch now (it may wait here until it can)."""
        raise NotImplementedError

    async def _dispatch(self, batch: list[RunningJob]) -> None:
        """Send a batch whose jobs are already marked running to where it runs."""
        raise NotImplementedError

    async def _drain_finishing(self) -> None:
        while self._finishing:
            await asyncio.gather(*list(self._finishing), return_exceptions=True)
        await self.events.drain()


class _Control:
    """The `BatchControl` one batch gets: indexes map to job ids."""

    def __init__(self, core: QueueCore, job_ids: Sequence[str]) -> None:
        self.core = core
        self.job_ids = list(job_ids)

    def on_step(self, index: int, step: int, total: int, preview: Image | None) -> None:
        self.core.on_step(self.job_ids[index], step, total, preview)

    def should_stop(self, index: int) -> bool:
        return self.core.should_stop(self.job_ids[index])


_STOP = object()


class InProcessQueue(QueueCore):
    """The default backend: one worker thread in this process runs every batch."""

    def __init__(self, storage: Store, executor: Executor, *, owns_executor: bool = True, **kwargs: Any) -> None:
        super().__init__(storage, **kwargs)
        self.executor = executor
        self.owns_executor = owns_executor  # False: stop() leaves the executor (and its model) loaded
        self._work: thread_queue.Queue = thread_queue.Queue()
        self._thread: threading.Thread | None = None
        self._dispatcher: asyncio.Task | None = None
        self._idle = asyncio.Event()
        self._ready = threading.Event()
        self._load_error: BaseException | None = None
        self._busy_since: float | None = None

    async def start(self, *, resume: bool = True) -> None:
        """Resume stored jobs (unless `resume` is False: the CLI runs only its own), start the
        worker thread (it loads the model first)."""
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._timing = QueueTiming()
        if resume:
            await self._resume()
        self._thread = threading.Thread(target=self._worker, name="tessera-gpu", daemon=True)
        self._thread.start()
        self._dispatcher = asyncio.create_task(self._dispatch_loop(), name="tessera-dispatch")

    async def stop(self) -> None:
        """Stop taking jobs; a running batch is stopped at its next step and re-queued in storage.

        Calling it again does nothing."""
        if self._stopping:
            return
        self._stopping = True
        if self._dispatcher is not None:
            self._dispatcher.cancel()
            await asyncio.gather(self._dispatcher, return_exceptions=True)
        self._work.put(_STOP)
        loading = self._thread is not None and not self._ready.is_set()
        if loading:
            # The model is still loading (a first start may be downloading gigabytes): that cannot
            # be interrupted, and waiting would hold Ctrl-C or a failed login for minutes. The thread
            # is a daemon holding no job; it ends after the load (it sees _stopping) or with the process.
            log.info("stopping without waiting for the model to finish loading")
        elif self._thread is not None:
            await asyncio.to_thread(self._thread.join)
        await self._drain_finishing()
        # Anything still marked running (handed over but never reported) waits for the next start.
        for job_id in list(self._running):
            try:
                await self.storage.jobs.transition(job_id, JobState.QUEUED)
            except Exception as exc:  # stays "running": the next start re-queues it all the same
                for_job(log, job_id).error("could not re-queue the job on stop: %s", exc)
            self._running.pop(job_id, None)
        await self._stop_settling()
        if self.owns_executor and not loading:
            self.executor.close()
        self._pool.shutdown(wait=True)

    async def wait_ready(self, timeout: float | None = None) -> bool:
        """Wait until the model has loaded (or failed to); True when it is ready."""
        await asyncio.to_thread(self._ready.wait, timeout)
        return self._ready.is_set() and self._load_error is None

    def _model_ready(self) -> bool:
        return self._ready.is_set() and self._load_error is None

    def _workers(self) -> int:
        return 1 if self._thread is not None and self._thread.is_alive() else 0

    def _busy_now(self) -> float:
        since = self._busy_since
        return 0.0 if since is None else time.monotonic() - since

    async def _has_room(self) -> bool:
        """One batch at a time: wait until the worker thread has finished the last one."""
        await self._idle.wait()
        return True

    async def _dispatch(self, batch: list[RunningJob]) -> None:
        self._idle.clear()
        self._busy_since = time.monotonic()
        self._work.put([r.item for r in batch])

    # ----- the worker thread ------------------------------------------------------------
    def _worker(self) -> None:
        loop = self._loop
        assert loop is not None
        try:
            self.executor.prepare()
        except BaseException as error:  # the jobs report it; the next batch tries again
            self._load_error = error
            log.exception("the model could not be loaded")
        finally:
            self._ready.set()
        if self._stopping:  # stop() left while the model was loading: nothing more to do here
            return
        while True:
            items = self._work.get()
            if items is _STOP:
                return
            try:
                if self._load_error is not None:
                    self._retry_load()
                control = _Control(self, [i.job_id for i in items])
                run_split(self.executor, items, control, self._deliverer(loop, items))
            except BaseException as error:  # never let the worker die
                log.exception("the worker failed on a batch")
                for item in items:
                    loop.call_soon_threadsafe(self._deliver, item.job_id, WorkResult(error=error))
            finally:
                loop.call_soon_threadsafe(self._batch_done)

    def _deliverer(self, loop: asyncio.AbstractEventLoop, items: Sequence[WorkItem]) -> Callable[[int, WorkResult], None]:
        def deliver(index: int, result: WorkResult) -> None:
            loop.call_soon_threadsafe(self._deliver, items[index].job_id, result)

        return deliver

    def _retry_load(self) -> None:
        try:
            self.executor.prepare()
            self._load_error = None
        except BaseException as error:
            self._load_error = error
            raise

    def _batch_done(self) -> None:
        if self._busy_since is not None:
            self._timing.busy_s += time.monotonic() - self._busy_since
            self._busy_since = None
        self._idle.set()

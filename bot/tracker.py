"""Route queue events to the Discord message of each job.

The service calls `on_event` for every `QueueEvent`; this module turns it into a message
update for the job's `ProgressEditor`. It never awaits inside the callback (the queue must not
wait on Discord): updates are handed to the editor, which sends them in its own task.

Jobs the bot did not start in this process — resumed after a restart, or whose events arrive
before the command that made them has learned their id — are "adopted" after a short grace
period: the job is read from storage and its result goes to its stored channel, as a reply to
its stored message. A job with no channel (made from the CLI) is left alone.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

import discord

from bot import render
from bot.progress import EDIT_INTERVAL_S, TOKEN_TTL_S, ProgressEditor, Target, Update
from bot.service import Tessera
from engine.jobs.joblog import for_job
from engine.jobs.model import Job
from engine.jobs.queue import QueueEvent

log = logging.getLogger(__name__)

_TERMINAL = frozenset({"done", "failed", "cancelled"})
_BUFFER_MAX = 2048
ORPHAN_GRACE_S = 5.0
DRAIN_SLICE = 50  # events applied per loop turn
FRESH_JOB_S = 60.0  # a job younger than this with no message yet still belongs to its command


@dataclass
class Tracked:
    job: Job
    editor: ProgressEditor
    position: int | None = None
    ignored: tuple[str, ...] = ()
    flagged: tuple[int, ...] = ()  # images the safety checker hid (said in the result message)
    preview: bytes | None = None
    extra: dict[str, Any] = field(default_factory=dict)


class JobTracker:
    """Which message shows which job, and what it should say next."""

    def __init__(self, client: discord.Client, service: Tessera | None, *,
                 views: Callable[[str, str, tuple[int, int] | None], discord.ui.View],
                 answers: Callable[[Job, dict], Awaitable[tuple[str, discord.ui.View]]] | None = None,
                 interval: float = EDIT_INTERVAL_S,
                 token_ttl: float = TOKEN_TTL_S, clock: Callable[[], float] = time.monotonic,
                 orphan_grace: float = ORPHAN_GRACE_S) -> None:
        self.client = client
        self.service = service
        self.views = views  # a finished job's buttons, by job kind (the features' registry)
        self.answers = answers  # a finished /describe or /shorten: its text and buttons (the features')
        self.interval = interval
        self.token_ttl = token_ttl
        self.clock = clock
        self.orphan_grace = orphan_grace
        self.jobs: dict[str, Tracked] = {}
        self._early: OrderedDict[str, QueueEvent] = OrderedDict()
        self._adopting: set[str] = set()
        self._claimed: set[str] = set()  # made by a command that will track them in a moment
        self._abandoned: OrderedDict[str, None] = OrderedDict()  # their message is gone: ignore them
        self._inbox: OrderedDict[str, QueueEvent] = OrderedDict()  # events not yet applied, newest per job
        self._drainer: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._finished: list[ProgressEditor] = []  # kept for tests and `idle()`

    def _service(self) -> Tessera:
        if self.service is None:  # only `tessera commands` builds a client without one; it tracks nothing
            raise RuntimeError("the job tracker has no job service")
        return self.service

    # -- registering messages ----------------------------------------------------------------

    def claim(self, job_ids: Iterable[str]) -> None:
        """Jobs a command is about to show: hold their events for it, do not adopt them."""
        self._claimed.update(job_ids)

    def known_position(self, job_id: str) -> int | None:
        """The queue position a not-yet-shown job was last reported at (None: unknown).

        The queue reports it when the job is submitted, so asking the queue again (which
        walks the whole queue) is rarely needed."""
        for held in (self._inbox.get(job_id), self._early.get(job_id)):
            if held is not None and held.kind in ("queued", "position"):
                return held.position
        return None

    def release(self, job_id: str) -> None:
        """A claimed job the command could not show after all: let it be adopted."""
        self._claimed.discard(job_id)
        if job_id in self._early and job_id not in self.jobs and job_id not in self._adopting:
            self._adopting.add(job_id)
            self._spawn(self._adopt(job_id))

    def track(self, job: Job, target: Target, *, first: Update | None = None,
              position: int | None = None) -> ProgressEditor:
        """Start following `job` in the message `target`; `first` is shown at once."""
        self._claimed.discard(job.id)
        editor = ProgressEditor(self.client, job.id, target, interval=self.interval, token_ttl=self.token_ttl,
                                clock=self.clock, on_message=self._recorder(job.id), on_finished=self._done_with)
        tracked = Tracked(job=job, editor=editor, position=position)
        self.jobs[job.id] = tracked
        if first is not None:
            editor.push(first)
        early = self._early.pop(job.id, None)
        if early is not None:
            self._apply(tracked, early)
        return editor

    def _recorder(self, job_id: str) -> Callable[[int | None, int], Any]:
        async def record(channel_id: int | None, message_id: int) -> None:
            await self.record_message(job_id, channel_id, message_id)
        return record

    async def record_message(self, job_id: str, channel_id: int | None, message_id: int) -> None:
        """Remember in storage which message shows a job (for ✉️, links, buttons and restarts)."""
        await self._service().record_message(job_id, channel_id, message_id)

    def _done_with(self, editor: ProgressEditor) -> None:
        """The editor sent its final update, or its message is gone (then the job's later
        events are ignored: the result is stored and `/show` can post it)."""
        tracked = self.jobs.get(editor.job_id)
        if tracked is not None and tracked.editor is editor:
            del self.jobs[editor.job_id]
            self._finished.append(editor)
            del self._finished[:-256]
            if editor.broken and not editor.finished:
                self._abandoned[editor.job_id] = None
                while len(self._abandoned) > _BUFFER_MAX:
                    self._abandoned.popitem(last=False)

    # -- events -------------------------------------------------------------------------------

    def on_event(self, event: QueueEvent) -> None:
        """The service's subscriber: must return at once and never raise.

        Events are only noted here (the newest per job, a final one never overwritten) and
        applied by `_drain` in slices, so a queue move that reports hundreds of new positions
        at once never holds the event loop for long."""
        held = self._inbox.get(event.job_id)
        if held is not None and held.kind in _TERMINAL:
            return
        if held is not None and not event.ignored and held.ignored:
            event = replace(event, ignored=held.ignored)
        self._inbox[event.job_id] = event
        if self._drainer is None or self._drainer.done():
            self._drainer = asyncio.get_running_loop().create_task(self._drain(), name="tessera-edit-events")

    async def _drain(self) -> None:
        while self._inbox:
            for _ in range(min(len(self._inbox), DRAIN_SLICE)):
                _, event = self._inbox.popitem(last=False)
                self._route(event)
            await asyncio.sleep(0)

    def _route(self, event: QueueEvent) -> None:
        try:
            if event.job_id in self._abandoned:
                if event.kind in _TERMINAL:
                    del self._abandoned[event.job_id]
                return
            tracked = self.jobs.get(event.job_id)
            if tracked is None:
                self._buffer(event)
            else:
                self._apply(tracked, event)
        except Exception:
            for_job(log, event.job_id).exception("could not handle %s event of job %s", event.kind, event.job_id)

    def _buffer(self, event: QueueEvent) -> None:
        held = self._early.get(event.job_id)
        if held is None or held.kind not in _TERMINAL:
            if held is not None and event.ignored == () and held.ignored:
                event = replace(event, ignored=held.ignored)
            self._early[event.job_id] = event
            self._early.move_to_end(event.job_id)
        while len(self._early) > _BUFFER_MAX:
            self._early.popitem(last=False)
        if event.job_id not in self._adopting:
            self._adopting.add(event.job_id)
            self._spawn(self._adopt(event.job_id))

    def _apply(self, tracked: Tracked, event: QueueEvent) -> None:
        job, editor = tracked.job, tracked.editor
        if event.ignored:
            tracked.ignored = event.ignored
        kind = event.kind
        if kind in ("queued", "position"):
            if event.position is not None and worth_showing(tracked.position, event.position):
                tracked.position = event.position
                warming = is_warming(self.service)
                editor.push(Update(render.queued_text(job, event.position, warming=warming)))
        elif kind == "started":
            editor.push(Update(render.progress_text(job, 0, None, loading=is_warming(self.service))))
        elif kind == "progress":
            if event.preview:
                tracked.preview = event.preview
            file = (tracked.preview, f"preview_{job.id}.jpg") if tracked.preview else None
            editor.push(Update(render.progress_text(job, event.step, event.total), file=file))
        elif kind == "done":
            tracked.flagged = tuple(event.flagged)
            if job.kind.answers_text:
                self._spawn(self._show_answer(tracked, event.result))
            elif event.upload is not None:
                editor.push(self._result(tracked, event.upload))
            else:
                self._spawn(self._done_without_upload(tracked))
        elif kind == "failed":
            editor.push(Update(render.failed_text(job, event.error), final=True, clear_files=True, clear_view=True,
                               moved=render.moved_text(job)))
        elif kind == "cancelled":
            editor.push(Update(render.cancelled_text(job), final=True, clear_files=True, clear_view=True,
                               moved=render.moved_text(job)))

    def _result(self, tracked: Tracked, upload: Any) -> Update:
        job = tracked.job
        suffix = f"_u{(job.parent_index or 0) + 1}" if job.kind.value == "upscale" else ""
        name = render.file_name(job.prompt_text, job.id, upload.mime, suffix=suffix)
        return Update(render.done_text(job, tracked.ignored, tracked.flagged), file=(upload.data, name),
                      view=self.views(render.view_kind(job), job.id, render.picture_size(upload.data)), final=True,
                      moved=render.moved_text(job))

    async def _done_without_upload(self, tracked: Tracked) -> None:
        try:
            upload = await self._service().result_upload(tracked.job.id)
        except Exception:
            for_job(log, tracked.job.id).exception("could not make the result file of job %s", tracked.job.id)
            tracked.editor.push(Update(render.failed_text(tracked.job, render.unexpected_error_text(tracked.job.id)),
                                       final=True, clear_files=True, clear_view=True,
                                       moved=render.moved_text(tracked.job)))
            return
        tracked.editor.push(self._result(tracked, upload))

    async def _show_answer(self, tracked: Tracked, result: dict | None) -> None:
        """A /describe or /shorten answer, in its feature's words (it may keep the suggested
        prompts for its buttons first, hence a task); read back from storage when the event
        carried none (a job finished before this process followed it)."""
        job = tracked.job
        try:
            if result is None:
                stored = await self._service().job(job.id)
                result = stored.result_json if stored is not None else None
            if result is None or self.answers is None:
                raise LookupError(f"job {job.id} finished without an answer to show")
            text, view = await self.answers(job, result)
        except Exception:
            for_job(log, job.id).exception("could not show the answer of job %s", job.id)
            tracked.editor.push(Update(render.failed_text(job, render.unexpected_error_text(job.id)), final=True,
                                       clear_files=True, clear_view=True, moved=render.moved_text(job)))
            return
        tracked.editor.push(Update(text, view=view, final=True, clear_files=True, moved=render.moved_text(job)))

    async def _adopt(self, job_id: str) -> None:
        """A job nobody here is showing: after the grace period, follow it in its stored channel."""
        try:
            while True:
                await asyncio.sleep(self.orphan_grace)
                if job_id in self.jobs or job_id in self._claimed or job_id not in self._early:
                    return  # the command that made it shows it
                job = await self._service().job(job_id)
                if job is None or job.channel_id is None:
                    self._early.pop(job_id, None)
                    return
                if job.message_id is not None or _age_s(job) > FRESH_JOB_S:
                    break
                # A new job without a message yet: its command is still at work (fetching an
                # image prompt, say) and will claim it; look again later.
            self.track(job, Target.channel(job.channel_id, job.message_id, job.guild_id))
        except Exception:
            for_job(log, job_id).exception("could not follow job %s", job_id)
        finally:
            self._adopting.discard(job_id)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- tests and shutdown -----------------------------------------------------------------

    async def idle(self) -> None:
        """Wait until no edit, result or adoption is in progress."""
        while True:
            busy = [t.editor for t in self.jobs.values() if t.editor.busy]
            busy += [e for e in self._finished if e.busy]
            tasks = list(self._tasks)
            if self._drainer is not None and not self._drainer.done():
                tasks.append(self._drainer)
            if not busy and not tasks:
                return
            await asyncio.gather(*(e.wait() for e in busy), *tasks, return_exceptions=True)


_POSITION_MARKS = (1, 2, 3, 5, 10, 20, 50, 100, 200, 500, 1000)


def _bucket(position: int) -> int:
    return sum(1 for mark in _POSITION_MARKS if position > mark)


def worth_showing(shown: int | None, position: int) -> bool:
    """Whether a new queue position deserves an edit.

    Every job moving up one place would mean one edit per waiting message each time the
    queue moves; users only need the rough place while far back. So a waiting message is
    edited when its position crosses one of 1, 2, 3, 5, 10, 20, 50, 100, … (at most a dozen
    edits however long the wait)."""
    if shown is None:
        return True
    return position != shown and _bucket(position) != _bucket(shown)


def _age_s(job: Job) -> float:
    created = job.created_at if job.created_at.tzinfo else job.created_at.replace(tzinfo=UTC)
    return (datetime.now(UTC) - created).total_seconds()


_READY: set[int] = set()  # ids of services whose model has loaded (it never unloads)


def is_warming(service: Tessera | None) -> bool:
    """Whether the model is still loading (jobs queue meanwhile).

    Called for every queued/position event, so it must be cheap (`model_ready`, not the
    queue's full `stats()`, which walks every user's jobs). Once ready, that is remembered."""
    if service is None or id(service) in _READY:
        return False
    try:
        ready = service.model_ready()
    except Exception:
        return False
    if ready:
        _READY.add(id(service))
    return not ready

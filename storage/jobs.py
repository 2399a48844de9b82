"""Jobs: creating them, moving them through their states, and finding them again.

Every state change is one `UPDATE ... WHERE state IN (legal sources) RETURNING *`, so checking
the transition and applying it is a single atomic statement: two coroutines racing to start
the same job cannot both win, and no read-modify-write can lose an update.
"""

from __future__ import annotations

import builtins
import sqlite3
from collections.abc import Awaitable, Callable

from engine.errors import StorageError
from engine.jobs.model import BOT_OWNER, TRANSITIONS, Job, JobOwner, JobState, NewJob
from storage import ids, rows
from storage.owner import is_gone
from storage.sqlite import Database

STUCK_MESSAGE = ("the command that started this job stopped (a `tessera` command that is no longer "
                 "running asked for it, so nobody was waiting for its result)")

_INSERT_COLUMNS = """id, kind, state, user_id, guild_id, channel_id, parent_id, parent_index, prompt_text,
    prompt_json, request_json, options_json, seed, model, priority, created_at, queued_at"""
_INSERT = f"""INSERT INTO jobs ({_INSERT_COLUMNS})
    VALUES (?, ?, 'queued', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING *"""
_INSERT_OWNED = f"""INSERT INTO jobs ({_INSERT_COLUMNS}, requester, owner_host, owner_pid, owner_start)
    VALUES (?, ?, 'queued', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING *"""

_MAX_SQLITE_INT = 2**63 - 1
_ID_ATTEMPTS = 8

# For each target state, the states a job may come from.
_SOURCES: dict[JobState, tuple[str, ...]] = {
    target: tuple(sorted(s.value for s, targets in TRANSITIONS.items() if target in targets))
    for target in JobState
}

_TRANSITION_TEMPLATE = """
UPDATE jobs SET
    state = :to,
    attempts = attempts + (:to = 'running'),
    queued_at = CASE WHEN :to = 'queued' THEN :now ELSE queued_at END,
    started_at = CASE WHEN :to = 'running' THEN :now ELSE started_at END,
    finished_at = CASE WHEN :to IN ('done', 'failed', 'cancelled') THEN :now ELSE finished_at END,
    error = CASE WHEN :to = 'running' THEN NULL ELSE coalesce(:error, error) END{result}
WHERE id = :id AND state IN ({sources})
RETURNING *
"""
_TRANSITION_SQL: dict[JobState, str] = {
    target: _TRANSITION_TEMPLATE.format(sources=", ".join(f"'{s}'" for s in sources), result="")
    for target, sources in _SOURCES.items() if sources
}
# Reaching "done" with a text answer (/describe, /shorten) stores it in the same statement.
_DONE_WITH_RESULT_SQL = _TRANSITION_TEMPLATE.format(
    sources=", ".join(f"'{s}'" for s in _SOURCES[JobState.DONE]), result=",\n    result_json = :result")


def _check_int(name: str, value: int | None) -> None:
    if value is not None and not -_MAX_SQLITE_INT - 1 <= value <= _MAX_SQLITE_INT:
        raise StorageError(f"{name} {value} is out of range: it must fit in a signed 64-bit integer")


class JobRepository:
    """Typed access to the `jobs` table."""

    def __init__(self, db: Database, *, new_id: Callable[[], str] = ids.new_job_id,
                 release_files: Callable[[builtins.list[str]], Awaitable[int]] | None = None) -> None:
        self._db = db
        self._new_id = new_id
        self._release_files = release_files
        # Recorded on every job this repository creates; a CLI command sets its own process
        # (`storage.owner.this_cli()`), so the bot leaves those jobs alone and `tessera doctor`
        # can tell when the command that waits for them is gone.
        self.owner: JobOwner = BOT_OWNER

    async def create(self, new: NewJob) -> Job:
        """Insert a queued job with a fresh short id (durable before it returns)."""
        for value_name in ("seed", "user_id", "guild_id", "channel_id"):
            _check_int(value_name, getattr(new, value_name))
        parent_id = ids.normalise(new.parent_id) if new.parent_id else None
        stamp = rows.now()
        asker = self.owner
        for _attempt in range(_ID_ATTEMPTS):
            job_id = self._new_id()
            try:
                values = (job_id, str(new.kind), new.user_id, new.guild_id, new.channel_id, parent_id,
                          new.parent_index, new.prompt_text, rows.dump_json(new.prompt_json),
                          rows.dump_json(new.request_json), rows.dump_json(new.options or {}), new.seed,
                          new.model, new.priority, stamp, stamp)
                if asker == BOT_OWNER:  # the columns' defaults (and valid on schemas before 3)
                    found = await self._db.write(_INSERT, values)
                else:
                    found = await self._db.write(_INSERT_OWNED, (*values, asker.requester, asker.host,
                                                                 asker.pid, asker.start))
            except sqlite3.IntegrityError as exc:
                message = str(exc)
                if "FOREIGN KEY" in message:
                    raise StorageError(f"no job with id {new.parent_id!r} to derive a new job from") from exc
                if "jobs.id" in message:
                    continue  # id collision: draw another
                raise
            return rows.job(found[0])
        raise RuntimeError(f"could not draw an unused job id in {_ID_ATTEMPTS} attempts")

    async def get(self, job_id: str) -> Job | None:
        row = await self._db.fetchone("SELECT * FROM jobs WHERE id = ?", (ids.normalise(job_id),))
        return rows.job(row) if row else None

    async def require(self, job_id: str) -> Job:
        """The job, or StorageError('no job with id ...').

        Accepts ids in any case with surrounding spaces, and Discord message links to the job's message.
        """
        return await self.resolve_job_ref(job_id)

    async def resolve_job_ref(self, text: str) -> Job:
        """What a user typed to name a job: its id, a link to its message, or a message id."""
        ref = ids.parse_ref(text)
        job: Job | None = None
        if ref is not None and ref.job_id is not None:
            job = await self.get(ref.job_id)
        elif ref is not None and ref.message_id is not None:
            job = await self.find_by_message(ref.message_id)
            if job is None:
                raise StorageError("that message is not one of Tessera's jobs (or its job was deleted); "
                                   "give the job id shown under the image, like `k3m9qra`")
        if job is None:
            shown = text.strip()[:40]
            raise StorageError(f"no job with id {shown!r}: a job id is {ids.ID_LENGTH} letters and digits "
                               "like `k3m9qra` (it is under every result; `/info` lists yours), or a link to the job's message")
        return job

    async def find_by_message(self, message_id: int) -> Job | None:
        """The job whose result was posted as this message (the latest, if several)."""
        row = await self._db.fetchone(
            "SELECT * FROM jobs WHERE message_id = ? ORDER BY created_at DESC, rowid DESC LIMIT 1",
            (message_id,),
        )
        return rows.job(row) if row else None

    async def transition(self, job_id: str, to: JobState, *, error: str | None = None,
                         result: dict | None = None) -> Job:
        """Move a job to `to`, refusing changes `engine.jobs.model.TRANSITIONS` does not allow.
        `result` is the JSON answer of a job that answers text (stored with the change).

        RUNNING increments `attempts`, sets `started_at` and clears a previous error; finished
        states set `finished_at`. Commits reaching a finished state are durable (fsynced).
        """
        to = JobState(to)
        key = ids.normalise(job_id)
        if result is not None and to is not JobState.DONE:
            raise ValueError("only a job becoming done carries an answer")
        sql = _DONE_WITH_RESULT_SQL if result is not None else _TRANSITION_SQL.get(to)
        if sql is not None:
            params: dict[str, object] = {"to": to.value, "now": rows.now(), "error": error, "id": key}
            if result is not None:
                params["result"] = rows.dump_json(result)
            found = await self._db.write(sql, params, durable=to.finished)
            if found:
                return rows.job(found[0])
        current = await self.get(key)
        if current is None:
            raise StorageError(f"no job with id {job_id!r}")
        allowed = ", ".join(sorted(s.value for s in TRANSITIONS[current.state])) or "nothing (it is finished)"
        raise StorageError(f"job {current.id} is {current.state.value} and cannot become {to.value}; "
                           f"from {current.state.value} it can become: {allowed}")

    async def set_request(self, job_id: str, request_json: dict, seed: int, model: str) -> Job:
        """Record the resolved generation request (and its seed and model) of a job."""
        _check_int("seed", seed)
        found = await self._db.write(
            "UPDATE jobs SET request_json = ?, seed = ?, model = ? WHERE id = ? RETURNING *",
            (rows.dump_json(request_json), seed, model, ids.normalise(job_id)),
        )
        if not found:
            raise StorageError(f"no job with id {job_id!r}")
        return rows.job(found[0])

    async def set_message(self, job_id: str, channel_id: int | None, message_id: int) -> Job:
        """Remember the Discord message showing this job (channel kept if `None`)."""
        found = await self._db.write(
            "UPDATE jobs SET channel_id = coalesce(?, channel_id), message_id = ? WHERE id = ? RETURNING *",
            (channel_id, message_id, ids.normalise(job_id)),
        )
        if not found:
            raise StorageError(f"no job with id {job_id!r}")
        return rows.job(found[0])

    async def resumable(self) -> builtins.list[Job]:
        """The bot's jobs left queued or running, in their original (creation) order.

        Jobs a CLI command asked for are not among them: that command waits for them itself,
        and if it is gone nobody would see their result (see `stuck`).
        """
        found = await self._db.fetchall(
            "SELECT * FROM jobs WHERE state IN ('queued', 'running') AND requester = 'bot' ORDER BY created_at, rowid"
        )
        return [rows.job(r) for r in found]

    async def stuck(self) -> builtins.list[Job]:
        """Unfinished jobs whose CLI command is certainly no longer running (`storage.owner.is_gone`)."""
        found = await self._db.fetchall(
            "SELECT * FROM jobs WHERE state IN ('queued', 'running') AND requester = 'cli' ORDER BY created_at, rowid"
        )
        candidates = [rows.job(r) for r in found]
        return [job for job in candidates if is_gone(job.owner)]

    async def settle_stuck(self) -> builtins.list[Job]:
        """Mark every stuck job failed, saying why; return the jobs as they are now."""
        settled = []
        for job in await self.stuck():
            try:
                settled.append(await self.transition(job.id, JobState.FAILED, error=STUCK_MESSAGE))
            except StorageError:
                if (current := await self.get(job.id)) is None or not current.state.finished:
                    raise
                # it finished (or was deleted) since we looked: nothing to settle
        return settled

    async def recent_for_user(self, user_id: int, limit: int = 10) -> builtins.list[Job]:
        return await self.list(user_id=user_id, limit=limit)

    async def last_for_user(self, user_id: int) -> Job | None:
        """The user's most recent job (what `/seed` means with no job given)."""
        found = await self.list(user_id=user_id, limit=1)
        return found[0] if found else None

    async def count_active(self, user_id: int) -> tuple[int, int]:
        """(queued, running) job counts of one user, for the queue's per-user limits."""
        row = await self._db.fetchone(
            """SELECT coalesce(sum(state = 'queued'), 0), coalesce(sum(state = 'running'), 0)
               FROM jobs WHERE user_id = ? AND state IN ('queued', 'running')""",
            (user_id,),
        )
        assert row is not None
        return int(row[0]), int(row[1])

    async def list(self, *, user_id: int | None = None, state: JobState | None = None,
                   limit: int = 50) -> builtins.list[Job]:
        """Newest first, optionally one user's and/or one state's."""
        where: builtins.list[str] = []
        params: builtins.list[object] = []
        if user_id is not None:
            where.append("user_id = ?")
            params.append(user_id)
        if state is not None:
            where.append("state = ?")
            params.append(JobState(state).value)
        clause = f"WHERE {' AND '.join(where)}" if where else ""
        params.append(max(0, int(limit)))
        found = await self._db.fetchall(
            f"SELECT * FROM jobs {clause} ORDER BY created_at DESC, rowid DESC LIMIT ?", params
        )
        return [rows.job(r) for r in found]

    async def children(self, job_id: str) -> builtins.list[Job]:
        """Jobs made from this one (variations, re-rolls, upscales), oldest first."""
        found = await self._db.fetchall(
            "SELECT * FROM jobs WHERE parent_id = ? ORDER BY created_at, rowid", (ids.normalise(job_id),)
        )
        return [rows.job(r) for r in found]

    async def delete(self, job_id: str) -> None:
        """Delete a job with its image rows and gallery entries, then its no longer used files.

        Jobs made from it stay (their `parent_id` becomes empty).
        """
        key = ids.normalise(job_id)
        async with self._db.transaction() as tx:
            paths = [r["path"] for r in await tx.fetchall("SELECT path FROM images WHERE job_id = ?", (key,))]
            await tx.execute("DELETE FROM jobs WHERE id = ?", (key,))
        if paths and self._release_files is not None:
            await self._release_files(paths)

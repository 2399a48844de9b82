"""Turning SQLite rows into the dataclasses of `engine.jobs.model` and `storage.models`
(and values into columns).

Rows never leave the storage package: callers get frozen dataclasses with real types
(datetimes in UTC, enums, dicts from JSON), so a schema change stays a storage-only change.
"""

from __future__ import annotations

import json
import sqlite3
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from engine.jobs.model import BOT_OWNER, ImageRecord, Job, JobKind, JobOwner, JobState
from storage.models import GalleryEntry


def now() -> float:
    """Current time as stored: UNIX seconds (UTC)."""
    return time.time()


def to_datetime(value: float | None) -> datetime | None:
    return None if value is None else datetime.fromtimestamp(value, UTC)


def dump_json(value: Any) -> str | None:
    return None if value is None else json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def load_json(value: str | None) -> Any:
    if value is None:
        return None
    return {} if value == "{}" else json.loads(value)  # the usual options


_KINDS = {kind.value: kind for kind in JobKind}
_STATES = {state.value: state for state in JobState}


def job(row: sqlite3.Row) -> Job:
    # By name through a dict: `sqlite3.Row` looks names up one column at a time, and a job
    # is read back on every state change.
    values = dict(zip(row.keys(), row, strict=True))
    return Job(
        id=values["id"],
        kind=_KINDS[values["kind"]],
        state=_STATES[values["state"]],
        user_id=values["user_id"],
        prompt_text=values["prompt_text"],
        prompt_json=load_json(values["prompt_json"]),
        request_json=load_json(values["request_json"]),
        seed=values["seed"],
        model=values["model"],
        guild_id=values["guild_id"],
        channel_id=values["channel_id"],
        message_id=values["message_id"],
        parent_id=values["parent_id"],
        parent_index=values["parent_index"],
        options=load_json(values["options_json"]) or {},
        priority=values["priority"],
        attempts=values["attempts"],
        error=values["error"],
        created_at=to_datetime(values["created_at"]),  # type: ignore[arg-type]
        queued_at=to_datetime(values["queued_at"]),
        started_at=to_datetime(values["started_at"]),
        finished_at=to_datetime(values["finished_at"]),
        owner=_owner(values),
        result_json=load_json(values.get("result_json")),
    )


def _owner(values: dict[str, Any]) -> JobOwner:
    requester = values.get("requester", "bot")
    if requester == "bot" and values.get("owner_pid") is None:
        return BOT_OWNER
    return JobOwner(requester, values.get("owner_host"), values.get("owner_pid"), values.get("owner_start"))


def image(row: sqlite3.Row, root: Path) -> ImageRecord:
    return ImageRecord(
        job_id=row["job_id"],
        index=row["idx"],
        path=root / row["path"],
        width=row["width"],
        height=row["height"],
        format=row["format"],
        sha256=row["sha256"],
        bytes=row["bytes"],
    )


def gallery_entry(row: sqlite3.Row) -> GalleryEntry:
    return GalleryEntry(
        id=row["id"],
        job_id=row["job_id"],
        index=row["idx"],
        title=row["title"],
        author_id=row["author_id"],
        guild_id=row["guild_id"],
        channel_id=row["channel_id"],
        message_id=row["message_id"],
        prompt_text=row["prompt_text"],
        likes=row["likes"],
        created_at=to_datetime(row["created_at"]),  # type: ignore[arg-type]
        removed=bool(row["removed"]),
    )

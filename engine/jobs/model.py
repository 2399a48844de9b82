"""The job system's domain types: what a job is, its states, and its stored images.

They live in engine because the queue, the workers and the result writer work on them;
storage persists them (`storage.rows` turns rows into these) and the bot renders them.
Plain frozen dataclasses, so they cross every boundary (threads, Redis, SQLite) as values.

CONTRACT: these names and fields are used by engine/jobs, storage, commands and the bot. Add
fields (with defaults) if needed; do not rename or remove.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import Literal


class JobKind(StrEnum):
    IMAGINE = "imagine"
    VARIATION = "variation"
    REROLL = "reroll"
    UPSCALE = "upscale"
    EDIT = "edit"  # zoom out, pan, make square, vary (region): inpainting on a canvas (options["edit"] says which)
    DESCRIBE = "describe"  # /describe: four prompts for a picture (options: source, offset); answers text
    SHORTEN = "shorten"  # /shorten: word weights and shorter prompts (options: words, front, back); answers text

    @property
    def answers_text(self) -> bool:
        """Whether the job's result is a JSON answer (`Job.result_json`) rather than images."""
        return self in (JobKind.DESCRIBE, JobKind.SHORTEN)


class JobState(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def finished(self) -> bool:
        return self in (JobState.DONE, JobState.FAILED, JobState.CANCELLED)


# Legal state changes. RUNNING -> QUEUED is the restart path (a job interrupted by a crash).
TRANSITIONS: dict[JobState, frozenset[JobState]] = {
    JobState.QUEUED: frozenset({JobState.RUNNING, JobState.CANCELLED, JobState.FAILED}),
    JobState.RUNNING: frozenset({JobState.DONE, JobState.FAILED, JobState.CANCELLED, JobState.QUEUED}),
    JobState.DONE: frozenset(),
    JobState.FAILED: frozenset(),
    JobState.CANCELLED: frozenset(),
}


@dataclass(frozen=True)
class JobOwner:
    """Who asked for a job: the bot (resumed after a restart), or one CLI process (never
    resumed by the bot; its jobs are stuck once that process is gone, see `storage.owner`)."""

    requester: Literal["bot", "cli"] = "bot"
    host: str | None = None
    pid: int | None = None
    start: int | None = None  # process start time, clock ticks since boot; None when unknown


BOT_OWNER = JobOwner()


@dataclass(frozen=True)
class NewJob:
    """What a command knows when it creates a job."""

    kind: JobKind
    user_id: int
    prompt_text: str
    prompt_json: dict | None = None  # engine.prompt.Expansion.to_json(), None for upscales
    request_json: dict | None = None  # engine.request.GenerationRequest.to_json() once resolved
    seed: int | None = None
    model: str | None = None
    guild_id: int | None = None
    channel_id: int | None = None
    parent_id: str | None = None
    parent_index: int | None = None  # 0-based image index in the parent's grid
    options: dict = field(default_factory=dict)  # kind-specific: {"scale": 4}, {"strength": "subtle"}
    priority: int = 0  # higher runs first (upscales, priority role)


@dataclass(frozen=True)
class Job:
    id: str  # short, human-friendly, what users type in /seed and /upscale
    kind: JobKind
    state: JobState
    user_id: int
    prompt_text: str
    prompt_json: dict | None
    request_json: dict | None
    seed: int | None
    model: str | None
    guild_id: int | None
    channel_id: int | None
    message_id: int | None
    parent_id: str | None
    parent_index: int | None
    options: dict
    priority: int
    attempts: int
    error: str | None
    created_at: datetime
    queued_at: datetime | None
    started_at: datetime | None
    finished_at: datetime | None
    owner: JobOwner = BOT_OWNER
    result_json: dict | None = None  # the answer of a job that answers text (/describe, /shorten)


@dataclass(frozen=True)
class ImageRecord:
    job_id: str
    index: int  # 0-3 for grid images; 0 for an upscale's single image
    path: Path  # absolute
    width: int
    height: int
    format: str  # "PNG"
    sha256: str
    bytes: int


@dataclass(frozen=True)
class NewImage:
    """One image to store with `images.add_many`: its place in the job and its encoded bytes."""

    index: int  # 0-3 for grid images; 0 for an upscale's single image
    data: bytes
    width: int
    height: int
    format: str = "PNG"

"""What the job system needs of persistence, and nothing more: typed protocols.

The queue and the result writer keep every job's state in SQLite, but engine must not import
storage (storage sits above engine and persists engine's types). So the job system names
here exactly the methods it calls, and `storage.api.Storage` (with its `JobRepository` and
`ImageRepository`) satisfies them structurally, without inheriting from anything. A test
double only needs these methods too.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from engine.jobs.model import ImageRecord, Job, JobState, NewImage

__all__ = ["ImageStore", "JobStore", "Store"]


class JobStore(Protocol):
    """The jobs table as the queue uses it: read one job, resume, change state."""

    async def get(self, job_id: str) -> Job | None: ...

    async def transition(self, job_id: str, to: JobState, *, error: str | None = None,
                         result: dict | None = None) -> Job:
        """Move a job to `to` (only along `engine.jobs.model.TRANSITIONS`); the updated job.
        `result`: the JSON answer of a job that answers text (`JobKind.answers_text`)."""
        ...

    async def resumable(self) -> list[Job]:
        """Jobs left queued or running by the bot, oldest first (re-queued at start)."""
        ...


class ImageStore(Protocol):
    """The stored images of jobs, as the result writer uses them."""

    async def add_many(self, job_id: str, images: Sequence[NewImage]) -> list[ImageRecord]:
        """Store all of one job's images or none; records in `images` order."""
        ...

    async def for_job(self, job_id: str) -> list[ImageRecord]: ...


class Store(Protocol):
    """An open data folder: the two repositories the job system talks to."""

    @property
    def jobs(self) -> JobStore: ...

    @property
    def images(self) -> ImageStore: ...

"""CONTRACT STUB (being implemented): the storage API the rest of Tessera calls.

`Storage.open(data_dir)` opens `data_dir/tessera.sqlite3` (WAL, migrations) and the image
folder `data_dir/images`. Repositories hang off it: `storage.jobs`, `storage.images`,
`storage.settings`, `storage.gallery`. All methods are async and return dataclasses from
`storage.models`. Errors a user can fix raise `engine.errors.StorageError`.
"""

from __future__ import annotations

from pathlib import Path

from storage.models import (
    GalleryEntry,
    GuildSettings,
    ImageRecord,
    Job,
    JobState,
    NewJob,
    UserSettings,
)


class JobRepository:
    async def create(self, new: NewJob) -> Job: ...
    async def get(self, job_id: str) -> Job | None: ...
    async def require(self, job_id: str) -> Job:
        """The job, or StorageError('no job with id ...') (accepts ids case-insensitively)."""
    async def find_by_message(self, message_id: int) -> Job | None: ...
    async def transition(self, job_id: str, to: JobState, *, error: str | None = None) -> Job:
        """Refuses illegal transitions (storage.models.TRANSITIONS) with StorageError.
        RUNNING increments `attempts` and sets started_at."""
    async def set_request(self, job_id: str, request_json: dict, seed: int, model: str) -> Job: ...
    async def set_message(self, job_id: str, channel_id: int | None, message_id: int) -> Job: ...
    async def resumable(self) -> list[Job]:
        """Jobs left queued or running, in their original (creation) order."""
    async def recent_for_user(self, user_id: int, limit: int = 10) -> list[Job]: ...
    async def list(self, *, user_id: int | None = None, state: JobState | None = None,
                   limit: int = 50) -> list[Job]: ...
    async def children(self, job_id: str) -> list[Job]: ...
    async def delete(self, job_id: str) -> None: ...


class ImageRepository:
    async def add(self, job_id: str, index: int, png_bytes: bytes, width: int, height: int,
                  fmt: str = "PNG") -> ImageRecord:
        """Write the file atomically (content-addressed, sharded) and then its row."""
    async def for_job(self, job_id: str) -> list[ImageRecord]: ...
    async def get(self, job_id: str, index: int) -> ImageRecord | None: ...


class SettingsRepository:
    async def user(self, user_id: int) -> UserSettings: ...
    async def save_user(self, settings: UserSettings) -> UserSettings: ...
    async def guild(self, guild_id: int) -> GuildSettings: ...
    async def save_guild(self, settings: GuildSettings) -> GuildSettings: ...


class GalleryRepository:
    async def share(self, job_id: str, index: int, *, author_id: int, title: str | None,
                    guild_id: int | None, prompt_text: str) -> GalleryEntry: ...
    async def set_message(self, entry_id: int, channel_id: int, message_id: int) -> GalleryEntry: ...
    async def find_share(self, job_id: str, index: int) -> GalleryEntry | None: ...
    async def get(self, entry_id: int) -> GalleryEntry | None: ...
    async def find_by_message(self, message_id: int) -> GalleryEntry | None: ...
    async def toggle_like(self, entry_id: int, user_id: int) -> tuple[bool, int]:
        """(liked now, like count)."""
    async def search(self, query: str, *, author_id: int | None = None, sort: str = "relevance",
                     limit: int = 10, offset: int = 0) -> list[GalleryEntry]:
        """FTS5 search; a malformed query raises StorageError with a clear message."""
    async def top(self, *, since_days: int | None, limit: int = 10, offset: int = 0) -> list[GalleryEntry]: ...
    async def remove(self, entry_id: int) -> None: ...
    async def mark_removed_by_message(self, message_id: int) -> bool: ...


class Storage:
    jobs: JobRepository
    images: ImageRepository
    settings: SettingsRepository
    gallery: GalleryRepository

    @classmethod
    async def open(cls, data_dir: Path) -> Storage: ...
    async def close(self) -> None: ...

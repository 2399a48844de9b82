"""The storage API the rest of Tessera calls: `Storage` and its four repositories.

`Storage.open(data_dir)` opens `data_dir/tessera.sqlite3` (WAL, migrations) and the image
folder `data_dir/images`. Repositories hang off it: `storage.jobs`, `storage.images`,
`storage.settings`, `storage.gallery`, `storage.shortcuts`, `storage.suggestions`. All methods are async and return dataclasses from
`engine.jobs.model` (jobs, images) and `storage.models` (settings, gallery). `Storage`
satisfies `engine.jobs.store.Store`, the job system's view of it. Errors a user can fix raise `engine.errors.StorageError`.
"""

from __future__ import annotations

from pathlib import Path

from engine.jobs.model import ImageRecord, Job, JobState, NewJob
from storage import faults
from storage.gallery import GalleryRepository
from storage.images import ImageRepository
from storage.jobs import JobRepository
from storage.models import GalleryEntry, GuildSettings, UserSettings
from storage.settings import SettingsRepository
from storage.shortcuts import ShortcutRepository
from storage.sqlite import Database
from storage.suggestions import SuggestionRepository

DATABASE_NAME = "tessera.sqlite3"
IMAGES_DIR_NAME = "images"

__all__ = [
    "DATABASE_NAME",
    "IMAGES_DIR_NAME",
    "GalleryEntry",
    "GalleryRepository",
    "GuildSettings",
    "ImageRecord",
    "ImageRepository",
    "Job",
    "JobRepository",
    "JobState",
    "NewJob",
    "SettingsRepository",
    "ShortcutRepository",
    "Storage",
    "SuggestionRepository",
    "UserSettings",
]


class Storage:
    """An open data folder: the database and the image files, with one repository per table group."""

    jobs: JobRepository
    images: ImageRepository
    settings: SettingsRepository
    gallery: GalleryRepository
    shortcuts: ShortcutRepository
    suggestions: SuggestionRepository

    def __init__(self, db: Database, data_dir: Path) -> None:
        self.db = db
        self.data_dir = data_dir
        self.images = ImageRepository(db, data_dir / IMAGES_DIR_NAME)
        self.jobs = JobRepository(db, release_files=self.images.release_files)
        self.settings = SettingsRepository(db)
        self.gallery = GalleryRepository(db)
        self.shortcuts = ShortcutRepository(db)
        self.suggestions = SuggestionRepository(db)

    @classmethod
    async def open(cls, data_dir: Path, *, migrate_to: int | None = None) -> Storage:
        """Open (creating and migrating as needed) the database and image folder in `data_dir`.

        Raises StorageError when the database was written by a newer Tessera or is not one, and
        when DATA_DIR cannot be created or written (full, read-only): the message names the
        folder and the cause.
        `migrate_to` stops at an earlier schema version (for tests of upgrades).
        """
        data_dir = Path(data_dir).expanduser().resolve()
        faults.make_data_dir(data_dir)
        try:
            (data_dir / IMAGES_DIR_NAME).mkdir(exist_ok=True)
        except OSError as exc:
            raise (faults.from_oserror(exc, data_dir) or exc) from exc
        db = await Database.open(data_dir / DATABASE_NAME, migrate_to=migrate_to)
        return cls(db, data_dir)

    async def close(self) -> None:
        await self.db.close()

    async def __aenter__(self) -> Storage:
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.close()

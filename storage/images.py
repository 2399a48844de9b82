"""Image rows and the files they point at.

Order is what keeps the two in step: the file is complete and fsynced on disk before its row
is inserted, and a row is deleted (committed) before its file is unlinked. A crash between the
two steps can only leave a file with no row, which `tessera doctor` reports and cleans.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Iterable
from pathlib import Path

from engine.errors import StorageError
from storage import files, ids, rows
from storage.database import Database
from storage.models import ImageRecord

_INSERT = """INSERT INTO images (job_id, idx, path, width, height, format, sha256, bytes, created_at)
              VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"""


def _check_shape(index: int, width: int, height: int) -> None:
    if index < 0:
        raise StorageError(f"image index must be 0 or more, not {index}")
    if width <= 0 or height <= 0:
        raise StorageError(f"image size must be positive, not {width}x{height}")


class ImageRepository:
    """Typed access to the `images` table and the image folder."""

    def __init__(self, db: Database, root: Path) -> None:
        self._db = db
        self.root = root

    async def add(self, job_id: str, index: int, png_bytes: bytes, width: int, height: int,
                  fmt: str = "PNG") -> ImageRecord:
        """Write the file atomically (content-addressed, sharded) and then its row.

        Adding an index the job already has (a job re-run after a crash) replaces the row; the
        old file is deleted if no other row uses it. The row's commit is not fsynced on its
        own: the job's move to "done" (durable) makes it durable, and until then nobody was told.
        """
        _check_shape(index, width, height)
        stored = await self.write_file(png_bytes, fmt)
        return await self.add_file(job_id, index, stored, width, height, _data=png_bytes)

    async def write_file(self, data: bytes, fmt: str = "PNG") -> files.WrittenFile:
        """Only the file half of `add`: store the bytes atomically and durably, no row yet.

        For callers that encode and write on a worker thread and insert rows later.
        """
        try:
            files.extension_for(fmt)
        except ValueError as exc:
            raise StorageError(str(exc)) from None
        return await asyncio.to_thread(files.write_image, self.root, data, fmt)

    async def add_file(self, job_id: str, index: int, stored: files.WrittenFile, width: int,
                       height: int, *, _data: bytes | None = None) -> ImageRecord:
        """Only the row half of `add`, for a file `write_file` stored."""
        _check_shape(index, width, height)
        key = ids.normalise(job_id)
        values = (key, index, stored.relative, width, height, stored.format, stored.sha256, stored.bytes, rows.now())
        try:
            if stored.created:
                # The common case, one statement: a file we just created cannot be another row's
                # file that `release_files` is deleting (that file would have existed, and then
                # `created` would be False).
                found = await self._db.write(_INSERT + " ON CONFLICT (job_id, idx) DO NOTHING RETURNING *",
                                             values, durable=False)
                if found:
                    return rows.image(found[0], self.root)
            return await self._replace(values, stored, _data)
        except sqlite3.IntegrityError as exc:
            if stored.created:
                await self.release_files([stored.relative])
            raise StorageError(f"no job with id {job_id!r} to add an image to") from exc

    async def _replace(self, values: tuple, stored: files.WrittenFile, data: bytes | None) -> ImageRecord:
        """Insert or replace a row, making sure its (shared) file still exists; drop the old file."""
        async with self._db.transaction(durable=False) as tx:
            if not (self.root / stored.relative).is_file():
                if data is not None:
                    # Deleted by `release_files` (same content, another row) since we looked:
                    # write it again while we hold the lock that `release_files` also takes.
                    await asyncio.to_thread(files.write_image, self.root, data, stored.format)
                else:
                    raise StorageError(f"the image file {stored.relative} was deleted before its row was written; "
                                   "write it again")
            old = await tx.fetchone("SELECT path FROM images WHERE job_id = ? AND idx = ?", values[:2])
            row = await tx.fetchone(
                _INSERT + """ ON CONFLICT (job_id, idx) DO UPDATE SET path = excluded.path,
                    width = excluded.width, height = excluded.height, format = excluded.format,
                    sha256 = excluded.sha256, bytes = excluded.bytes, created_at = excluded.created_at
                    RETURNING *""",
                values,
            )
        assert row is not None
        if old is not None and old["path"] != stored.relative:
            await self.release_files([old["path"]])
        return rows.image(row, self.root)

    async def for_job(self, job_id: str) -> list[ImageRecord]:
        found = await self._db.fetchall(
            "SELECT * FROM images WHERE job_id = ? ORDER BY idx", (ids.normalise(job_id),)
        )
        return [rows.image(r, self.root) for r in found]

    async def get(self, job_id: str, index: int) -> ImageRecord | None:
        row = await self._db.fetchone(
            "SELECT * FROM images WHERE job_id = ? AND idx = ?", (ids.normalise(job_id), index)
        )
        return rows.image(row, self.root) if row else None

    async def release_files(self, relatives: Iterable[str]) -> int:
        """Unlink the files that no row points at any more; return the bytes freed.

        Files are shared between rows with identical content, so a file goes only when its last
        row has gone. Call this after the deleting transaction has committed.
        """
        unique = sorted(set(relatives))
        freed = 0
        for start in range(0, len(unique), 500):
            chunk = unique[start:start + 500]
            marks = ", ".join("?" * len(chunk))
            # Check and unlink under the writer lock, so an `add` of the same content cannot
            # insert a row for a file we are about to remove.
            async with self._db.transaction(durable=False) as tx:
                used = {r["path"] for r in await tx.fetchall(
                    f"SELECT DISTINCT path FROM images WHERE path IN ({marks})", chunk)}
                gone = [p for p in chunk if p not in used]
                if gone:
                    freed += await asyncio.to_thread(lambda g=gone: sum(files.remove(self.root, p) for p in g))
        return freed

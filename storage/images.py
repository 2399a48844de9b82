"""Image rows and the files they point at.

Order is what keeps the two in step: the file is complete and fsynced on disk before its row
is inserted, and a row is deleted (committed) before its file is unlinked. A crash between the
two steps can only leave a file with no row, which `tessera doctor` reports and cleans.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import Iterable, Sequence
from pathlib import Path

from engine.errors import StorageError
from engine.jobs.model import ImageRecord, NewImage
from storage import files, ids, rows
from storage.sqlite import Database

log = logging.getLogger(__name__)

_INSERT = """INSERT INTO images (job_id, idx, path, width, height, format, sha256, bytes, created_at)
              VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"""
_INSERT_MANY = """INSERT INTO images (job_id, idx, path, width, height, format, sha256, bytes, created_at)
                   VALUES {rows}"""
_UPSERT = _INSERT + """ ON CONFLICT (job_id, idx) DO UPDATE SET path = excluded.path,
    width = excluded.width, height = excluded.height, format = excluded.format,
    sha256 = excluded.sha256, bytes = excluded.bytes, created_at = excluded.created_at
    RETURNING *"""


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

    async def add_many(self, job_id: str, images: Sequence[NewImage]) -> list[ImageRecord]:
        """`add` for all of a job's images at once: the files side by side, then every row in
        one statement, so the job has all of them or (on any error) none of these.

        Rows the job already has at those indexes (a re-run after a crash) are replaced, in one
        transaction; old files no other row uses are deleted. Records come back in `images` order.
        """
        indexes = [image.index for image in images]
        if len(set(indexes)) != len(indexes):
            raise StorageError(f"each image of a job needs its own index, not {indexes}")
        for image in images:
            _check_shape(image.index, image.width, image.height)
            try:
                files.extension_for(image.format)
            except ValueError as exc:
                raise StorageError(str(exc)) from None
        if not images:
            return []
        # Every write runs to its end before any error is raised: a file written next to a
        # failed one (disk full halfway through) has no row, so it is removed here rather
        # than left for `tessera doctor`.
        outcomes = await asyncio.gather(*(self.write_file(image.data, image.format) for image in images),
                                        return_exceptions=True)
        failures = [outcome for outcome in outcomes if isinstance(outcome, BaseException)]
        if failures:
            written_now = [o.relative for o in outcomes if isinstance(o, files.WrittenFile) and o.created]
            if written_now:
                try:
                    await self.release_files(written_now)
                except Exception:  # the database may be failing for the same reason: doctor cleans up
                    log.warning("could not remove %d image files after a failed write", len(written_now))
            raise failures[0]
        stored = [outcome for outcome in outcomes if isinstance(outcome, files.WrittenFile)]
        key = ids.normalise(job_id)
        stamp = rows.now()
        values = [(key, image.index, written.relative, image.width, image.height, written.format, written.sha256,
                   written.bytes, stamp) for image, written in zip(images, stored, strict=True)]
        try:
            found = None
            if all(written.created for written in stored):
                # The common case, one statement (see `add_file` for why new files are safe).
                try:
                    found = await self._db.write(
                        _INSERT_MANY.format(rows=", ".join(["(?, ?, ?, ?, ?, ?, ?, ?, ?)"] * len(values)))
                        + " RETURNING *", [v for row in values for v in row], durable=False)
                except sqlite3.IntegrityError as exc:
                    if "UNIQUE" not in str(exc):
                        raise
            if found is None:  # some rows exist already, or some files were there before
                found = await self._replace_many(values, stored, [image.data for image in images])
        except Exception as exc:
            created = [written.relative for written in stored if written.created]
            if created:  # no row points at them (nothing was written), so they go
                try:
                    await self.release_files(created)
                except Exception:  # e.g. the database is full too: `tessera doctor` cleans up
                    log.warning("could not remove %d image files after a failed insert", len(created))
            if isinstance(exc, sqlite3.IntegrityError) and "FOREIGN KEY" in str(exc):
                raise StorageError(f"no job with id {job_id!r} to add an image to") from exc
            raise
        by_index = {row["idx"]: row for row in found}
        return [rows.image(by_index[index], self.root) for index in indexes]

    async def _replace(self, values: tuple, stored: files.WrittenFile, data: bytes | None) -> ImageRecord:
        """Insert or replace a row, making sure its (shared) file still exists; drop the old file."""
        (row,) = await self._replace_many([values], [stored], [data])
        return rows.image(row, self.root)

    async def _replace_many(self, values: Sequence[tuple], stored: Sequence[files.WrittenFile],
                            datas: Sequence[bytes | None]) -> list[sqlite3.Row]:
        """Insert or replace rows in one transaction, making sure their (shared) files still
        exist; then drop the old files no row uses any more."""
        found: list[sqlite3.Row] = []
        old_paths: list[str] = []
        async with self._db.transaction(durable=False) as tx:
            for row_values, written, data in zip(values, stored, datas, strict=True):
                if not (self.root / written.relative).is_file():
                    if data is not None:
                        # Deleted by `release_files` (same content, another row) since we looked:
                        # write it again while we hold the lock that `release_files` also takes.
                        await asyncio.to_thread(files.write_image, self.root, data, written.format)
                    else:
                        raise StorageError(f"the image file {written.relative} was deleted before its row was "
                                           "written; write it again")
                old = await tx.fetchone("SELECT path FROM images WHERE job_id = ? AND idx = ?", row_values[:2])
                if old is not None and old["path"] != written.relative:
                    old_paths.append(old["path"])
                row = await tx.fetchone(_UPSERT, row_values)
                assert row is not None
                found.append(row)
        if old_paths:
            await self.release_files(old_paths)
        return found

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
                    freed += await asyncio.to_thread(_remove_all, self.root, gone)
        return freed


def _remove_all(root: Path, relatives: list[str]) -> int:
    """Unlink stored files (on a worker thread: many unlinks would stall the event loop); bytes freed."""
    return sum(files.remove(root, rel) for rel in relatives)

"""The shared-prompt gallery: shares, likes (one per user) and full-text search.

Search runs on an FTS5 index over prompt and title. "relevance" ranks by BM25 nudged by
likes (`bm25 - LIKES_WEIGHT * ln(1 + likes)`, lower is better), so among equally good text
matches the liked ones come first without a popular entry drowning a precise match.

Scoring costs a few microseconds per match, and a common word matches thousands of the
100,000 prompts a busy gallery holds. So relevance ranks the matches in windows of
`RELEVANCE_WINDOW`, newest first: the newest thousand matches in score order, then the next
thousand, and so on. A search with fewer matches (most) is ranked all at once; a word so
common that it has more is ranked among its recent uses, which is what a gallery browser
wants, in constant time. Searches of one author's shares are ranked all at once.
"""

from __future__ import annotations

import sqlite3

from engine.errors import StorageError
from storage import ids, rows
from storage.models import GalleryEntry
from storage.search import to_fts_query
from storage.sqlite import Database

SORTS = ("relevance", "likes", "recent")
LIKES_WEIGHT = 0.5
MAX_PAGE = 100
RELEVANCE_WINDOW = 1000  # matches ranked together (newest first); see the module docstring

_WEIGHTS = "1.0, 2.0"  # BM25 column weights: the prompt counts once, the title twice
_BM25 = f"bm25(gallery_fts, {_WEIGHTS})"
_ORDER = {
    "relevance": f"{_BM25} - {LIKES_WEIGHT} * ln(1 + g.likes), g.id DESC",
    "likes": "g.likes DESC, g.created_at DESC, g.id DESC",
    "recent": "g.created_at DESC, g.id DESC",
}


def search_sql(sort: str, *, by_author: bool) -> str:
    """The search statement. CROSS JOIN makes SQLite drive the loop from the FTS matches:
    left to itself it may walk the whole gallery in likes or date order (an index fits the
    ORDER BY) and test MATCH per row, which takes seconds at 100,000 entries instead of ms.

    Relevance without an author ranks the newest `:window` matches (FTS5 walks its matches
    newest first and stops there); `relevance_windows_sql` continues past them."""
    if sort == "relevance" and not by_author:
        return f"""SELECT g.* FROM (
                       SELECT rowid AS id, {_BM25} AS score FROM gallery_fts
                       WHERE gallery_fts MATCH :match ORDER BY rowid DESC LIMIT :window) AS best
                   CROSS JOIN gallery AS g ON g.id = best.id
                   WHERE g.removed = 0
                   ORDER BY best.score - {LIKES_WEIGHT} * ln(1 + g.likes), g.id DESC LIMIT :limit OFFSET :offset"""
    author = "AND g.author_id = :author" if by_author else ""
    return f"""SELECT g.* FROM gallery_fts CROSS JOIN gallery AS g ON g.id = gallery_fts.rowid
               WHERE gallery_fts MATCH :match AND g.removed = 0 {author}
               ORDER BY {_ORDER[sort]} LIMIT :limit OFFSET :offset"""


def relevance_windows_sql() -> str:
    """Relevance over every match: window by window (each `:window` matches, newest first),
    in score order within a window. Scores every match, so it is only for pages beyond the
    newest window."""
    return f"""SELECT g.* FROM (
                   SELECT rowid AS id, rank AS score,
                          (row_number() OVER (ORDER BY rowid DESC) - 1) / :window AS tier
                   FROM gallery_fts WHERE gallery_fts MATCH :match AND rank MATCH 'bm25({_WEIGHTS})') AS best
               CROSS JOIN gallery AS g ON g.id = best.id
               WHERE g.removed = 0
               ORDER BY best.tier, best.score - {LIKES_WEIGHT} * ln(1 + g.likes), g.id DESC
               LIMIT :limit OFFSET :offset"""


def _page(limit: int, offset: int) -> tuple[int, int]:
    return max(0, min(int(limit), MAX_PAGE)), max(0, int(offset))


class GalleryRepository:
    """Typed access to the `gallery`, `gallery_likes` and `gallery_fts` tables."""

    def __init__(self, db: Database, *, relevance_window: int = RELEVANCE_WINDOW) -> None:
        self._db = db
        self.relevance_window = relevance_window

    async def share(self, job_id: str, index: int, *, author_id: int, title: str | None,
                    guild_id: int | None, prompt_text: str) -> GalleryEntry:
        """Put one image of a job in the gallery (idempotent: sharing again returns the entry).

        A removed entry shared again comes back with the new title and author.
        """
        key = ids.normalise(job_id)
        title = title.strip() or None if title is not None else None
        async with self._db.transaction() as tx:
            if await tx.fetchone("SELECT 1 FROM images WHERE job_id = ? AND idx = ?", (key, index)) is None:
                if await tx.fetchone("SELECT 1 FROM jobs WHERE id = ?", (key,)) is None:
                    raise StorageError(f"no job with id {job_id!r}")
                raise StorageError(f"job {key} has no image {index + 1} to share")
            row = await tx.fetchone("SELECT * FROM gallery WHERE job_id = ? AND idx = ?", (key, index))
            if row is not None and not row["removed"]:
                return rows.gallery_entry(row)
            if row is not None:
                row = await tx.fetchone(
                    """UPDATE gallery SET removed = 0, title = ?, author_id = ?, guild_id = ?, prompt_text = ?,
                           channel_id = NULL, message_id = NULL WHERE id = ? RETURNING *""",
                    (title, author_id, guild_id, prompt_text, row["id"]),
                )
            else:
                row = await tx.fetchone(
                    """INSERT INTO gallery (job_id, idx, title, author_id, guild_id, prompt_text, created_at)
                       VALUES (?, ?, ?, ?, ?, ?, ?) RETURNING *""",
                    (key, index, title, author_id, guild_id, prompt_text, rows.now()),
                )
        assert row is not None
        return rows.gallery_entry(row)

    async def set_message(self, entry_id: int, channel_id: int, message_id: int) -> GalleryEntry:
        found = await self._db.write(
            "UPDATE gallery SET channel_id = ?, message_id = ? WHERE id = ? RETURNING *",
            (channel_id, message_id, entry_id),
        )
        if not found:
            raise StorageError(f"no gallery entry #{entry_id}")
        return rows.gallery_entry(found[0])

    async def find_share(self, job_id: str, index: int) -> GalleryEntry | None:
        """The gallery entry of this image, if it is shared (removed entries are not)."""
        row = await self._db.fetchone(
            "SELECT * FROM gallery WHERE job_id = ? AND idx = ? AND removed = 0", (ids.normalise(job_id), index)
        )
        return rows.gallery_entry(row) if row else None

    async def get(self, entry_id: int) -> GalleryEntry | None:
        row = await self._db.fetchone("SELECT * FROM gallery WHERE id = ?", (entry_id,))
        return rows.gallery_entry(row) if row else None

    async def find_by_message(self, message_id: int) -> GalleryEntry | None:
        row = await self._db.fetchone(
            "SELECT * FROM gallery WHERE message_id = ? ORDER BY id DESC LIMIT 1", (message_id,)
        )
        return rows.gallery_entry(row) if row else None

    async def toggle_like(self, entry_id: int, user_id: int) -> tuple[bool, int]:
        """Like, or take a like back: (liked now, like count). One like per user and entry."""
        async with self._db.transaction() as tx:
            entry = await tx.fetchone("SELECT removed FROM gallery WHERE id = ?", (entry_id,))
            if entry is None or entry["removed"]:
                raise StorageError("this image is no longer in the gallery")
            added = await tx.execute(
                "INSERT INTO gallery_likes (entry_id, user_id, created_at) VALUES (?, ?, ?) "
                "ON CONFLICT DO NOTHING",
                (entry_id, user_id, rows.now()),
            )
            if not added:
                await tx.execute("DELETE FROM gallery_likes WHERE entry_id = ? AND user_id = ?", (entry_id, user_id))
            row = await tx.fetchone(
                "UPDATE gallery SET likes = (SELECT count(*) FROM gallery_likes WHERE entry_id = ?) "
                "WHERE id = ? RETURNING likes",
                (entry_id, entry_id),
            )
        assert row is not None
        return bool(added), int(row["likes"])

    async def search(self, query: str, *, author_id: int | None = None, sort: str = "relevance",
                     limit: int = 10, offset: int = 0) -> list[GalleryEntry]:
        """FTS5 search; a malformed query raises StorageError with a clear message.

        See `storage.search` for what users may type. `sort` is relevance, likes or recent.
        """
        if sort not in SORTS:
            raise StorageError(f"unknown sort {sort!r}; choose one of {', '.join(SORTS)}")
        match = to_fts_query(query)
        limit, offset = _page(limit, offset)
        windowed = sort == "relevance" and author_id is None
        params = {"match": match, "author": author_id, "limit": limit, "offset": offset,
                  "window": self.relevance_window}
        try:
            found = await self._db.fetchall(search_sql(sort, by_author=author_id is not None), params)
            if windowed and len(found) < limit and await self._db.fetchone(
                    "SELECT 1 FROM gallery_fts WHERE gallery_fts MATCH :match ORDER BY rowid DESC "
                    "LIMIT 1 OFFSET :window", params) is not None:
                # A page past the newest window's matches, and older matches exist.
                found = await self._db.fetchall(relevance_windows_sql(), params)
        except sqlite3.OperationalError as exc:
            if "fts5" in str(exc).lower() or "syntax" in str(exc).lower():
                raise StorageError(f"cannot search for {query[:80]!r}: use plain words, \"a phrase\", "
                                   "word*, cat OR dog and -word") from exc
            raise
        return [rows.gallery_entry(r) for r in found]

    async def top(self, *, since_days: int | None, limit: int = 10, offset: int = 0) -> list[GalleryEntry]:
        """Most liked entries (newest first among equals), optionally only the last `since_days` days."""
        limit, offset = _page(limit, offset)
        since = rows.now() - since_days * 86400 if since_days is not None else None
        found = await self._db.fetchall(
            """SELECT * FROM gallery WHERE removed = 0 AND (:since IS NULL OR created_at >= :since)
               ORDER BY likes DESC, created_at DESC, id DESC LIMIT :limit OFFSET :offset""",
            {"since": since, "limit": limit, "offset": offset},
        )
        return [rows.gallery_entry(r) for r in found]

    async def remove(self, entry_id: int) -> None:
        """Take an entry out of the gallery (kept as removed, so its likes survive a re-share)."""
        await self._db.write("UPDATE gallery SET removed = 1 WHERE id = ?", (entry_id,))

    async def mark_removed_by_message(self, message_id: int) -> bool:
        """Called when a gallery message is deleted in Discord; True if it was a gallery entry."""
        found = await self._db.write(
            "UPDATE gallery SET removed = 1 WHERE message_id = ? AND removed = 0 RETURNING id", (message_id,)
        )
        return bool(found)

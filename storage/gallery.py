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
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiosqlite

from engine.errors import StorageError
from engine.jobs.model import ImageRecord, Job
from storage import ids, rows
from storage.models import GalleryEntry
from storage.search import to_fts_query
from storage.sqlite import BUSY_TIMEOUT_MS, Database, schema_version

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


PERIODS: dict[str, int | None] = {"day": 1, "week": 7, "all": None}
ASPECTS = ("square", "landscape", "portrait")
_ASPECT_SQL = {"square": "i.width = i.height", "landscape": "i.width > i.height", "portrait": "i.width < i.height"}
# The model an image was made with: the job's `model` column (`set_request` stores the request's
# model there), else its request's, else (an upscale has no request) its source's. The column
# comes first because it is read without parsing JSON: a model filter tests every row it scans.
_MODEL_SQL = ("coalesce(j.model, json_extract(j.request_json, '$.model'), (SELECT coalesce("
              "p.model, json_extract(p.request_json, '$.model')) FROM jobs AS p WHERE p.id = j.parent_id))")
LINEAGE_DEPTH = 32
FILTER_SCAN = 10_000  # model and shape filters look among this many newest candidates; see `browse_sql`
GALLERY_SCHEMA = 2  # the first schema version with the gallery tables


@dataclass(frozen=True)
class SharedImage:
    """A gallery entry with what a web page shows of its image: size, content hash (the
    thumbnail cache key and ETag) and model reference."""

    entry: GalleryEntry
    width: int
    height: int
    sha256: str
    model: str | None


@dataclass(frozen=True)
class ShareDetails:
    """Everything the web gallery's image page shows: the entry, its image file, and the jobs
    from its own back to the first (`lineage[0]` is the share's job), with the ids of the
    gallery entries of those ancestors' images that are themselves shared."""

    entry: GalleryEntry
    image: ImageRecord
    lineage: tuple[Job, ...]
    shared_ancestors: dict[tuple[str, int], int]


class ReadOnlyDatabase:
    """A read-only SQLite connection for readers beside the bot (the web gallery).

    Why a connection of its own: the bot's one connection serialises every statement behind
    its writes, and `tessera web` may run in another process, even on another machine next
    to a copy of DATA_DIR. Opened with `mode=ro` and `query_only`, it never writes, never
    migrates and never creates a database; WAL lets it read while the bot writes.
    Offers the `fetchone`/`fetchall` of `Database`, so `GalleryRepository` runs on it.
    """

    def __init__(self, conn: aiosqlite.Connection, path: Path) -> None:
        self._conn = conn
        self.path = path

    @classmethod
    async def open(cls, path: Path) -> ReadOnlyDatabase:
        path = Path(path).expanduser().resolve()
        if not path.is_file():
            raise StorageError(f"there is no Tessera database at {str(path)!r}: point DATA_DIR at the bot's "
                               "data folder (or a copy of it)")
        try:
            conn = await aiosqlite.connect(f"{path.as_uri()}?mode=ro", uri=True, timeout=BUSY_TIMEOUT_MS / 1000)
        except sqlite3.DatabaseError as exc:
            raise StorageError(f"cannot open the database {str(path)!r} to read: {exc}") from exc
        conn.row_factory = sqlite3.Row
        try:
            await conn.execute("PRAGMA query_only = ON")
            found = list(await conn.execute_fetchall("PRAGMA user_version"))
            version = int(found[0][0]) if found else 0
        except sqlite3.DatabaseError as exc:
            await conn.close()
            raise StorageError(f"cannot read the database {str(path)!r}: {exc} (is it a Tessera database?)") from exc
        if not GALLERY_SCHEMA <= version <= schema_version():
            await conn.close()
            raise StorageError(f"the database {str(path)!r} has schema version {version}; this Tessera reads "
                               f"versions {GALLERY_SCHEMA} to {schema_version()}: start the bot of this version once "
                               "to upgrade it, or upgrade this Tessera")
        return cls(conn, path)

    async def fetchone(self, sql: str, params: Any = ()) -> sqlite3.Row | None:
        found = list(await self._conn.execute_fetchall(sql, params))
        return found[0] if found else None

    async def fetchall(self, sql: str, params: Any = ()) -> list[sqlite3.Row]:
        return list(await self._conn.execute_fetchall(sql, params))

    async def close(self) -> None:
        await self._conn.close()


def browse_sql(*, sort: str, match: bool, guild: bool, author: bool, model: bool, aspect: str | None,
               since: bool) -> str:
    """The statement of one filtered gallery page. Only fixed fragments are joined; every
    value is a named parameter. Each filter is added only when given, so SQLite plans the
    query it runs (an `:x IS NULL OR` guard would hide the indexes from it). With a search,
    the FTS matches drive the loop (CROSS JOIN, see `search_sql`) and every match is scored:
    filters may drop most of the newest window, so relevance is over all of them.

    Model and shape are tested on the job and image rows, with no index to help: a rare model
    would otherwise make every page a walk through the whole gallery (200 ms at 100,000
    shares). So they look among the newest `:scan` shares that pass the other filters."""
    source = "gallery AS g"
    score = ""
    if match:
        source = (f"(SELECT rowid AS id, {_BM25} AS score FROM gallery_fts WHERE gallery_fts MATCH :match) AS best "
                  "CROSS JOIN gallery AS g ON g.id = best.id")
        score = ", best.score AS score"
    where = ["g.removed = 0"]
    if guild:
        where.append("g.guild_id = :guild")
    if author:
        where.append("g.author_id = :author")
    if since:
        where.append("g.created_at >= :since")
    relevance = sort == "relevance" and match
    if not (model or aspect):
        order = (f"best.score - {LIKES_WEIGHT} * ln(1 + g.likes), g.id DESC" if relevance
                 else _ORDER["recent" if sort == "relevance" else sort])
        return (f"SELECT g.*{score} FROM {source} WHERE {' AND '.join(where)} "
                f"ORDER BY {order} LIMIT :limit OFFSET :offset")
    newest = f"SELECT g.*{score} FROM {source} WHERE {' AND '.join(where)} ORDER BY g.created_at DESC, g.id DESC LIMIT :scan"
    tests = []
    if model:
        tests.append(f"{_MODEL_SQL} = :model")
    if aspect:
        tests.append(_ASPECT_SQL[aspect])
    order = (f"g.score - {LIKES_WEIGHT} * ln(1 + g.likes), g.id DESC" if relevance
             else _ORDER["recent" if sort == "relevance" else sort])
    return (f"SELECT g.* FROM ({newest}) AS g JOIN images AS i ON i.job_id = g.job_id AND i.idx = g.idx "
            f"JOIN jobs AS j ON j.id = g.job_id WHERE {' AND '.join(tests)} "
            f"ORDER BY {order} LIMIT :limit OFFSET :offset")


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
                raise StorageError(f"cannot search for {(query or '')[:80]!r}: use plain words, \"a phrase\", "
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

    # ----- read-only views for the web gallery (they run on a `ReadOnlyDatabase` too) -----

    async def browse(self, *, query: str | None = None, sort: str = "recent", period: str = "all",
                     guild_id: int | None = None, author_id: int | None = None, model: str | None = None,
                     aspect: str | None = None, limit: int = 30, offset: int = 0) -> list[SharedImage]:
        """One page of the shared images, newest or most liked (in `period`), or a search in the
        language of `/prompts search` (same messages for a malformed query), optionally only of
        one server, author, model or aspect. Entries whose image row is gone are skipped.

        A search with no filter is exactly `search` (the same ranking as `/prompts search`)."""
        if sort not in SORTS:
            raise StorageError(f"unknown sort {sort!r}; choose one of {', '.join(SORTS)}")
        if period not in PERIODS:
            raise StorageError(f"unknown period {period!r}; choose one of {', '.join(PERIODS)}")
        if aspect is not None and aspect not in ASPECTS:
            raise StorageError(f"unknown aspect {aspect!r}; choose one of {', '.join(ASPECTS)}")
        query = query.strip() if query else None
        limit, offset = _page(limit, offset)
        days = PERIODS[period]
        if query and guild_id is None and model is None and aspect is None and days is None:
            entries = await self.search(query, author_id=author_id, sort=sort, limit=limit, offset=offset)
        else:
            match = to_fts_query(query) if query else None
            params: dict[str, Any] = {"match": match, "guild": guild_id, "author": author_id, "model": model,
                                      "since": rows.now() - days * 86400 if days is not None else None,
                                      "limit": limit, "offset": offset, "scan": FILTER_SCAN}
            sql = browse_sql(sort=sort, match=match is not None, guild=guild_id is not None,
                             author=author_id is not None, model=model is not None, aspect=aspect,
                             since=days is not None)
            try:
                found = await self._db.fetchall(sql, params)
            except sqlite3.OperationalError as exc:
                if match is not None and ("fts5" in str(exc).lower() or "syntax" in str(exc).lower()):
                    raise StorageError(f"cannot search for {(query or '')[:80]!r}: use plain words, \"a phrase\", "
                                       "word*, cat OR dog and -word") from exc
                raise
            entries = [rows.gallery_entry(r) for r in found]
        return await self._with_images(entries)

    async def _with_images(self, entries: Sequence[GalleryEntry]) -> list[SharedImage]:
        if not entries:
            return []
        marks = ", ".join("?" * len(entries))
        found = await self._db.fetchall(
            f"""SELECT g.id, i.width, i.height, i.sha256, {_MODEL_SQL} AS model FROM gallery AS g
                JOIN images AS i ON i.job_id = g.job_id AND i.idx = g.idx JOIN jobs AS j ON j.id = g.job_id
                WHERE g.id IN ({marks})""", [e.id for e in entries])
        by_id = {r["id"]: r for r in found}
        return [SharedImage(entry=e, width=by_id[e.id]["width"], height=by_id[e.id]["height"],
                            sha256=by_id[e.id]["sha256"], model=by_id[e.id]["model"])
                for e in entries if e.id in by_id]

    async def shared_image(self, entry_id: int, images_root: Path) -> tuple[GalleryEntry, ImageRecord] | None:
        """A share that is in the gallery now and its image record; None for a removed or
        unknown entry (the web gallery serves files only through this lookup)."""
        row = await self._db.fetchone(
            """SELECT g.*, i.path AS i_path, i.width AS i_width, i.height AS i_height, i.format AS i_format,
                      i.sha256 AS i_sha256, i.bytes AS i_bytes
               FROM gallery AS g JOIN images AS i ON i.job_id = g.job_id AND i.idx = g.idx
               WHERE g.id = ? AND g.removed = 0""", (entry_id,))
        if row is None:
            return None
        image = ImageRecord(job_id=row["job_id"], index=row["idx"], path=images_root / row["i_path"],
                            width=row["i_width"], height=row["i_height"], format=row["i_format"],
                            sha256=row["i_sha256"], bytes=row["i_bytes"])
        return rows.gallery_entry(row), image

    async def share_details(self, entry_id: int, images_root: Path) -> ShareDetails | None:
        """The share (if in the gallery now), its image and its lineage: the jobs it was made
        from, nearest first, at most `LINEAGE_DEPTH`, with the gallery ids of those that are shared."""
        found = await self.shared_image(entry_id, images_root)
        if found is None:
            return None
        entry, image = found
        chain = await self._db.fetchall(
            """WITH RECURSIVE chain (id, depth) AS (
                   SELECT ?, 0
                   UNION ALL
                   SELECT j.parent_id, c.depth + 1 FROM chain AS c JOIN jobs AS j ON j.id = c.id
                   WHERE j.parent_id IS NOT NULL AND c.depth < ?)
               SELECT j.* FROM chain AS c JOIN jobs AS j ON j.id = c.id ORDER BY c.depth""",
            (entry.job_id, LINEAGE_DEPTH))
        jobs = tuple(rows.job(r) for r in chain)
        shared: dict[tuple[str, int], int] = {}
        if len(jobs) > 1:
            marks = ", ".join("?" * (len(jobs) - 1))
            for r in await self._db.fetchall(
                    f"SELECT id, job_id, idx FROM gallery WHERE removed = 0 AND job_id IN ({marks})",
                    [j.id for j in jobs[1:]]):
                shared[(r["job_id"], r["idx"])] = r["id"]
        return ShareDetails(entry=entry, image=image, lineage=jobs, shared_ancestors=shared)

    async def models(self, *, guild_id: int | None = None, limit: int = 50) -> list[str]:
        """The model references of the newest shares (at most the newest 2,000), most used first:
        the choices of the web gallery's model filter."""
        guild = "AND g.guild_id = :guild" if guild_id is not None else ""
        found = await self._db.fetchall(
            f"""SELECT model, count(*) AS uses FROM (
                    SELECT {_MODEL_SQL} AS model FROM gallery AS g JOIN jobs AS j ON j.id = g.job_id
                    WHERE g.removed = 0 {guild} ORDER BY g.created_at DESC LIMIT 2000)
                WHERE model IS NOT NULL GROUP BY model ORDER BY uses DESC, model LIMIT :limit""",
            {"guild": guild_id, "limit": limit})
        return [r["model"] for r in found]

"""One server's gallery pages use the server's own index (migration 0008).

The web gallery's server page (/g/<guild> and its /api/shares) calls `GalleryRepository.browse`
with a guild, and its model list `GalleryRepository.models`; both on a `ReadOnlyDatabase`.
Without an index that starts at `guild_id`, SQLite walks every server's shares in date (or
likes) order and drops the other servers' rows one by one: 40-65 ms for a small server's page
in a 100,000-share gallery, against about 1 ms with it.

The plans are taken of the statements the repository really runs: a recording wrapper around
the web gallery's own read-only connection asks SQLite for each statement's plan before running it.
"""

from __future__ import annotations

import re
import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest

from engine.jobs.model import JobKind, JobState, NewJob
from storage import Storage
from storage.gallery import GalleryRepository, ReadOnlyDatabase

GUILD, OTHER = 3, 4
# "SEARCH g USING INDEX gallery_guild_recent (guild_id=? AND removed=?)" and the like
_GUILD_INDEX = re.compile(r"^SEARCH g USING INDEX gallery_guild_(recent|top) \(guild_id=\? AND removed=\?")


class Planned:
    """The web gallery's read-only database, recording the query plan of every statement run on it."""

    def __init__(self, db: ReadOnlyDatabase) -> None:
        self.db = db
        self.plans: list[list[str]] = []

    async def _plan(self, sql: str, params: Any) -> None:
        self.plans.append([row["detail"] for row in await self.db.fetchall("EXPLAIN QUERY PLAN " + sql, params)])

    async def fetchone(self, sql: str, params: Any = ()) -> sqlite3.Row | None:
        await self._plan(sql, params)
        return await self.db.fetchone(sql, params)

    async def fetchall(self, sql: str, params: Any = ()) -> list[sqlite3.Row]:
        await self._plan(sql, params)
        return await self.db.fetchall(sql, params)


@pytest.fixture
async def planned(data_dir: Path) -> Any:
    storage = await Storage.open(data_dir)
    try:
        now = time.time()
        entries = []
        for n in range(10):
            guild = GUILD if n % 2 else OTHER
            job = await storage.jobs.create(NewJob(kind=JobKind.IMAGINE, user_id=n, prompt_text=f"fox {n}"))
            await storage.jobs.transition(job.id, JobState.RUNNING)
            await storage.images.add(job.id, 0, f"{job.id}".encode(), 64, 64)
            await storage.jobs.transition(job.id, JobState.DONE)
            entry = await storage.gallery.share(job.id, 0, author_id=n, title=None, guild_id=guild,
                                                prompt_text=f"fox {n}")
            await storage.db.write("UPDATE gallery SET likes = ?, created_at = ? WHERE id = ?",
                                   (n % 3, now - (10 - n) * 60, entry.id))
            entries.append(entry)
        await storage.gallery.remove(entries[7].id)  # one of GUILD's, taken out of the gallery
    finally:
        await storage.close()
    db = await ReadOnlyDatabase.open(data_dir / "tessera.sqlite3")
    yield Planned(db)
    await db.close()


def assert_uses_the_guild_index(plan: list[str]) -> None:
    assert any(_GUILD_INDEX.match(step) for step in plan), plan
    assert not any(re.search(r"\bINDEX gallery_(recent|top)\b", step) for step in plan), plan
    if "MATERIALIZE g" not in plan:  # else `SCAN g` reads the (already bounded) subquery's rows
        assert not any(step.startswith("SCAN g") for step in plan), plan


@pytest.mark.parametrize(("sort", "period", "aspect"), [
    ("recent", "all", None), ("likes", "all", None), ("recent", "week", None), ("likes", "week", None),
    ("recent", "all", "square"),
])
async def test_a_servers_gallery_page_reads_through_the_guild_index(
        planned: Planned, sort: str, period: str, aspect: str | None) -> None:
    gallery = GalleryRepository(planned)  # type: ignore[arg-type]  # the Database surface it uses
    page = await gallery.browse(sort=sort, period=period, guild_id=GUILD, aspect=aspect, limit=10)
    assert_uses_the_guild_index(planned.plans[0])
    assert [item.entry.guild_id for item in page] == [GUILD] * 4
    if sort == "recent":
        assert [item.entry.prompt_text for item in page] == ["fox 9", "fox 5", "fox 3", "fox 1"]
    else:
        assert [(item.entry.likes, item.entry.prompt_text) for item in page] == \
            [(2, "fox 5"), (1, "fox 1"), (0, "fox 9"), (0, "fox 3")]


async def test_a_servers_model_list_reads_through_the_guild_index(planned: Planned) -> None:
    gallery = GalleryRepository(planned)  # type: ignore[arg-type]
    assert await gallery.models(guild_id=GUILD) == []  # the test's jobs name no model
    (plan,) = planned.plans
    assert_uses_the_guild_index(plan)

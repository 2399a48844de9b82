"""The gallery: shares, one like per user, FTS5 search that never chokes on what users type."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.errors import StorageError
from engine.jobs.model import JobKind, JobState, NewJob
from storage import Storage
from storage.gallery import relevance_windows_sql, search_sql
from storage.search import to_fts_query


@pytest.fixture
async def storage(data_dir: Path):
    opened = await Storage.open(data_dir)
    yield opened
    await opened.close()


async def shared(storage: Storage, prompt: str, *, author: int = 1, title: str | None = None, index: int = 0):
    job = await storage.jobs.create(NewJob(kind=JobKind.IMAGINE, user_id=author, prompt_text=prompt))
    await storage.jobs.transition(job.id, JobState.RUNNING)
    for i in range(index + 1):
        await storage.images.add(job.id, i, f"{job.id}/{i}".encode(), 64, 64)
    await storage.jobs.transition(job.id, JobState.DONE)
    return await storage.gallery.share(job.id, index, author_id=author, title=title, guild_id=3, prompt_text=prompt)


async def test_share_is_idempotent_and_findable(storage: Storage) -> None:
    entry = await shared(storage, "a lighthouse at dusk", title="  Dusk  ", index=2)
    assert (entry.index, entry.title, entry.likes, entry.removed, entry.guild_id) == (2, "Dusk", 0, False, 3)
    again = await storage.gallery.share(entry.job_id, 2, author_id=1, title="other", guild_id=3, prompt_text="x")
    assert again == entry
    assert await storage.gallery.find_share(entry.job_id, 2) == entry
    assert await storage.gallery.find_share(entry.job_id, 0) is None
    placed = await storage.gallery.set_message(entry.id, 11, 22)
    assert (placed.channel_id, placed.message_id) == (11, 22)
    assert await storage.gallery.find_by_message(22) == placed == await storage.gallery.get(entry.id)
    assert await storage.gallery.mark_removed_by_message(22) is True
    assert await storage.gallery.mark_removed_by_message(22) is False
    assert await storage.gallery.find_share(entry.job_id, 2) is None
    assert await storage.gallery.search("lighthouse") == []
    back = await storage.gallery.share(entry.job_id, 2, author_id=5, title="Back", guild_id=3,
                                       prompt_text="a lighthouse at dusk")
    assert (back.id, back.removed, back.author_id, back.title, back.message_id) == (entry.id, False, 5, "Back", None)
    assert [e.id for e in await storage.gallery.search("back")] == [entry.id]  # title indexed after update


async def test_share_needs_an_existing_image(storage: Storage) -> None:
    with pytest.raises(StorageError, match="no job"):
        await storage.gallery.share("zzzzzzz", 0, author_id=1, title=None, guild_id=None, prompt_text="x")
    job = await storage.jobs.create(NewJob(kind=JobKind.IMAGINE, user_id=1, prompt_text="x"))
    with pytest.raises(StorageError, match="has no image 1"):
        await storage.gallery.share(job.id, 0, author_id=1, title=None, guild_id=None, prompt_text="x")


async def test_one_like_per_user_toggles_and_concurrent_likes_all_count(storage: Storage) -> None:
    entry = await shared(storage, "a fox")
    assert await storage.gallery.toggle_like(entry.id, 7) == (True, 1)
    assert await storage.gallery.toggle_like(entry.id, 7) == (False, 0)
    assert await storage.gallery.toggle_like(entry.id, 7) == (True, 1)
    results = await asyncio.gather(*(storage.gallery.toggle_like(entry.id, user) for user in range(100, 150)))
    assert all(liked for liked, _ in results)
    assert sorted(count for _, count in results) == list(range(2, 52))
    assert (await storage.gallery.get(entry.id)).likes == 51
    await storage.gallery.remove(entry.id)
    with pytest.raises(StorageError, match="no longer in the gallery"):
        await storage.gallery.toggle_like(entry.id, 8)
    with pytest.raises(StorageError):
        await storage.gallery.toggle_like(99999, 8)


async def test_search_ranks_text_then_likes_and_sorts(storage: Storage) -> None:
    exact = await shared(storage, "red fox red fox in the snow", author=1)
    loose = await shared(storage, "a dog and a fox on a very long prompt about many other things entirely", author=2)
    popular = await shared(storage, "fox plush toy, product photo", author=2)
    unrelated = await shared(storage, "a lighthouse at dusk", author=3)
    for n in range(12):  # fox must be a rare word for BM25 to tell matches apart
        await shared(storage, f"filler prompt number {n} with a cat", author=4)
    for user in range(30):
        await storage.gallery.toggle_like(popular.id, user)
    await storage.gallery.toggle_like(loose.id, 1)

    relevance = [e.id for e in await storage.gallery.search("fox")]
    assert set(relevance) == {exact.id, loose.id, popular.id} and unrelated.id not in relevance
    assert relevance.index(exact.id) < relevance.index(loose.id)  # term frequency, shorter text
    assert relevance[0] == popular.id  # thirty likes outweigh a small text advantage
    assert [e.id for e in await storage.gallery.search("fox", sort="likes")] == [popular.id, loose.id, exact.id]
    assert [e.id for e in await storage.gallery.search("fox", sort="recent")] == [popular.id, loose.id, exact.id]
    assert [e.id for e in await storage.gallery.search("fox", author_id=2, sort="recent")] == [popular.id, loose.id]
    assert [e.id for e in await storage.gallery.search("fox", sort="recent", limit=1, offset=1)] == [loose.id]
    assert [e.id for e in await storage.gallery.search('"red fox"')] == [exact.id]
    assert [e.id for e in await storage.gallery.search("fox -snow -dog", sort="recent")] == [popular.id]
    assert {e.id for e in await storage.gallery.search("lighthouse OR plush")} == {unrelated.id, popular.id}
    assert [e.id for e in await storage.gallery.search("light*")] == [unrelated.id]
    assert [e.id for e in await storage.gallery.search("FOX SNOW")] == [exact.id]
    with pytest.raises(StorageError, match="unknown sort"):
        await storage.gallery.search("fox", sort="random")


async def test_top_orders_by_likes_and_respects_the_window(storage: Storage) -> None:
    a = await shared(storage, "one")
    b = await shared(storage, "two")
    c = await shared(storage, "three")
    await storage.gallery.toggle_like(b.id, 1)
    await storage.gallery.toggle_like(b.id, 2)
    await storage.gallery.toggle_like(c.id, 1)
    await storage.db.write("UPDATE gallery SET created_at = created_at - 10 * 86400 WHERE id = ?", (b.id,))
    assert [e.id for e in await storage.gallery.top(since_days=None)] == [b.id, c.id, a.id]
    assert [e.id for e in await storage.gallery.top(since_days=7)] == [c.id, a.id]
    assert [e.id for e in await storage.gallery.top(since_days=None, limit=1, offset=1)] == [c.id]
    await storage.gallery.remove(c.id)
    assert [e.id for e in await storage.gallery.top(since_days=None)] == [b.id, a.id]


@pytest.mark.parametrize("prompt", [
    "it's a \"quoted\" prompt; DROP TABLE gallery; --",
    "nul \x00 byte",
    "emoji 🦊🌊 prompt",
    "word " * 1200,
    "NEAR(a b) AND OR NOT ^col: {x} prompt",
])
async def test_untrusted_prompts_are_stored_and_found(storage: Storage, prompt: str) -> None:
    entry = await shared(storage, prompt)
    assert (await storage.gallery.get(entry.id)).prompt_text == prompt
    assert [e.id for e in await storage.gallery.search("prompt OR nul OR word")] == [entry.id]


@pytest.mark.parametrize(("query", "message"), [
    ('"unclosed phrase', "no closing one"),
    ("OR fox", "OR must stand between two words"),
    ("fox OR", "OR must stand between two words"),
    ("fox OR OR dog", "OR must stand between two words"),
    ("-fox", "not only -excluded words"),
    ("", "at least one word"),
    ("   ", "at least one word"),
    ("*", "must follow the start of a word"),
    ("!!! ??? ...", "at least one word"),
    ("fox " * 40, "at most 32 words"),
    ("x" * 600, "at most 500 characters"),
])
async def test_malformed_searches_get_a_clear_error(storage: Storage, query: str, message: str) -> None:
    await shared(storage, "a fox")
    with pytest.raises(StorageError, match=message):
        await storage.gallery.search(query)


@pytest.mark.parametrize("query", [
    "AND", "NOT", "NEAR", "fox AND", "fox NOT", "NEAR(fox", "col:fox", "prompt_text:fox", "^fox", "fox)",
    "(fox", "{fox}", "fox+dog", "'; DROP TABLE gallery; --", "\x00fox", "--ar 16:9", "a*b", "\"\"", "fox -",
])
async def test_fts_syntax_in_ordinary_text_is_just_text(storage: Storage, query: str) -> None:
    entry = await shared(storage, "fox and dog --ar 16:9")
    found = await storage.gallery.search(query) if any(ch.isalnum() for ch in query) else None
    if found is not None:
        assert all(e.id == entry.id for e in found)
    assert (await storage.db.fetchone("SELECT count(*) FROM gallery"))[0] == 1


@pytest.mark.parametrize("sort", ["relevance", "likes", "recent"])
@pytest.mark.parametrize("by_author", [False, True])
async def test_search_is_driven_by_the_text_index(storage: Storage, sort: str, by_author: bool) -> None:
    # Otherwise SQLite may walk the whole gallery in likes/date order testing MATCH on each row.
    for sql in [search_sql(sort, by_author=by_author)] + ([relevance_windows_sql()] if sort == "relevance" else []):
        plan = await storage.db.fetchall(
            "EXPLAIN QUERY PLAN " + sql, {"match": '"fox"', "author": 1, "limit": 10, "offset": 0, "window": 5},
        )
        steps = [row["detail"] for row in plan if row["detail"].startswith(("SCAN", "SEARCH"))]
        assert steps[0].startswith("SCAN gallery_fts VIRTUAL TABLE"), steps
        # The gallery is only looked up by id for each match, never walked.
        assert [s for s in steps if s.split()[1] == "g"] == [steps[-1]], steps
        assert steps[-1].startswith("SEARCH g USING INTEGER PRIMARY KEY"), steps


async def test_relevance_ranks_the_newest_window_first_then_older_ones(storage: Storage) -> None:
    storage.gallery.relevance_window = 3
    # Seven matches, oldest first; likes decide the order within a window (the texts tie).
    likes = [5, 0, 9, 1, 0, 7, 2]
    entries = [await shared(storage, f"a fox number {n}", author=n) for n in range(len(likes))]
    await shared(storage, "a lighthouse at dusk")
    for entry, count in zip(entries, likes, strict=True):
        for user in range(count):
            await storage.gallery.toggle_like(entry.id, user)
    await storage.gallery.remove(entries[3].id)  # removed after windowing: window 2 keeps two

    newest, middle, oldest = entries[6:3:-1], entries[3:0:-1], entries[:1]
    def by_likes(window: list) -> list[int]:
        kept = [e for e in window if e.id != entries[3].id]
        return [e.id for e in sorted(kept, key=lambda e: -likes[entries.index(e)])]
    expected = by_likes(newest) + by_likes(middle) + by_likes(oldest)

    everything = [e.id for e in await storage.gallery.search("fox", limit=50)]
    assert everything == expected
    pages = [[e.id for e in await storage.gallery.search("fox", limit=2, offset=o)] for o in range(0, 8, 2)]
    assert [i for page in pages for i in page] == expected  # pages agree: no repeats, no gaps
    assert pages[0] == [entries[5].id, entries[6].id]  # the fast path: the newest window only
    storage.gallery.relevance_window = 100  # one window: the plain ranking over every match
    assert [e.id for e in await storage.gallery.search("fox", limit=50)] == by_likes(entries[::-1])


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.text(max_size=80))
def test_any_text_gives_a_valid_fts_query_or_a_storage_error(text: str) -> None:
    import sqlite3

    try:
        query = to_fts_query(text)
    except StorageError:
        return
    con = sqlite3.connect(":memory:")
    con.execute("CREATE VIRTUAL TABLE t USING fts5(x, tokenize = 'unicode61 remove_diacritics 2')")
    con.execute("INSERT INTO t VALUES ('some text to match')")
    con.execute("SELECT * FROM t WHERE t MATCH ?", (query,)).fetchall()  # must not raise
    con.close()

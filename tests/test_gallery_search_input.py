"""Gallery search never fails on what people type: any text finds entries or gets a clear refusal.

Fuzzing the search found text that is not valid Unicode (a lone surrogate, "a\\udfffb") making
SQLite's driver raise `UnicodeEncodeError`; these tests feed the real search (a real SQLite
database with an FTS5 index) arbitrary text, surrogates, control characters and FTS5 syntax
included, and accept only results or the project's own user error.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.errors import StorageError
from engine.jobs.model import JobKind, JobState, NewJob
from storage import Storage
from tests.bot_helpers import Bot, start_bot

# Every code point, surrogates (category Cs) and control characters included.
_ANY_CHAR = st.characters(exclude_categories=())
# FTS5's own syntax and this project's operators, so the search reaches the quoting paths.
_SYNTAX = st.sampled_from(['"', "*", "NEAR(", "NEAR", ")", "(", "-", "OR", "AND", "NOT", "^", ":", "col:", "+",
                           "{", "}", " ", "fox", "dog", "a", "\x00", "\udfff", "\ud83e", "🦊", "\u200b", "\t"])
_QUERIES = st.one_of(st.text(_ANY_CHAR, max_size=60), st.lists(_SYNTAX, max_size=24).map("".join))


async def _shared(storage: Storage, prompt: str) -> None:
    job = await storage.jobs.create(NewJob(kind=JobKind.IMAGINE, user_id=1, prompt_text=prompt))
    await storage.jobs.transition(job.id, JobState.RUNNING)
    await storage.images.add(job.id, 0, job.id.encode(), 64, 64)
    await storage.jobs.transition(job.id, JobState.DONE)
    await storage.gallery.share(job.id, 0, author_id=1, title=None, guild_id=3, prompt_text=prompt)


@pytest.mark.parametrize("query", ["a\udfffb", "\ud800", "fox \udc00", '"fox \udfff"', "fox*\ud83e", "-\udfff fox"])
async def test_unencodable_search_text_is_a_clear_user_error(data_dir: Path, query: str) -> None:
    storage = await Storage.open(data_dir)
    try:
        await _shared(storage, "a red fox")
        with pytest.raises(StorageError, match="characters that cannot be searched"):
            await storage.gallery.search(query)
        # the same words without the broken character are found as usual
        assert len(await storage.gallery.search("fox")) == 1
    finally:
        await storage.close()


def test_any_text_finds_entries_or_raises_only_the_user_error(tmp_path: Path) -> None:
    """A property over arbitrary text against the real database: the search returns results
    (only entries that exist) or raises `StorageError`; never another exception."""
    with asyncio.Runner() as runner:
        storage = runner.run(Storage.open(tmp_path / "data"))
        try:
            for prompt in ("a red fox and a dog", "NEAR(a b) AND OR NOT ^col: {x}", "emoji 🦊 prompt --ar 16:9"):
                runner.run(_shared(storage, prompt))
            known = {e.id for e in runner.run(storage.gallery.search("a OR emoji OR NEAR", limit=50))}
            assert len(known) == 3

            @settings(max_examples=300, deadline=None)
            @given(query=_QUERIES, sort=st.sampled_from(["relevance", "likes", "recent"]))
            def search_anything(query: str, sort: str) -> None:
                try:
                    found = runner.run(storage.gallery.search(query, sort=sort))
                except StorageError as refused:
                    assert str(refused)  # every refusal says what to do
                    return
                assert {e.id for e in found} <= known

            search_anything()
        finally:
            runner.run(storage.close())


@pytest.fixture
async def bot(tiny_models: dict[str, Path], data_dir: Path) -> AsyncIterator[Bot]:
    running = await start_bot(tiny_models["sd15"], data_dir)
    yield running
    await running.close()


async def test_prompts_search_with_a_lone_surrogate_answers_what_to_change(bot: Bot) -> None:
    await _shared(bot.service.storage, "a red fox")
    interaction = await bot.h.run_command("prompts", {"query": "red\udfff fox"}, subcommand="search")
    (only,) = bot.http.for_token(interaction.token)
    assert only.ephemeral and "characters that cannot be searched" in (only.content or "")

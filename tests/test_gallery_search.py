"""`/prompts search` and `/prompts top` through real Interactions: ranking, paging, thumbnails, errors."""

from __future__ import annotations

import io
import itertools
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from PIL import Image

from commands.gallery.prompts import PAGE_SIZE, PageRef, decode_ref, encode_ref
from engine.errors import TesseraError
from engine.jobs.model import JobKind, JobState, NewJob
from storage.models import GalleryEntry
from tests.bot_helpers import Bot, start_bot
from tests.discord_harness import GUILD_ID, OTHER_USER_ID, USER_ID, Call, message_with, user_payload

_likers = itertools.count(1000)


@pytest.fixture
async def bot(tiny_models: dict[str, Path], data_dir: Path) -> AsyncIterator[Bot]:
    running = await start_bot(tiny_models["sd15"], data_dir)
    yield running
    await running.close()


def png(colour: tuple[int, int, int]) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (64, 64), colour).save(buffer, format="PNG")
    return buffer.getvalue()


async def shared(bot: Bot, prompt: str, *, likes: int = 0, author: int = USER_ID, seed: int = 7) -> GalleryEntry:
    """A finished job with one stored image, shared to the gallery with `likes` likes."""
    storage = bot.service.storage
    job = await storage.jobs.create(NewJob(kind=JobKind.IMAGINE, user_id=author, prompt_text=prompt, seed=seed,
                                           request_json={"seed": seed, "width": 512, "height": 512, "steps": 30,
                                                         "guidance": 7.5, "sampler": "euler_a", "model": "m"}))
    await storage.jobs.transition(job.id, JobState.RUNNING)
    await storage.images.add(job.id, 0, png((len(prompt) % 255, 80, seed % 255)), 64, 64)
    await storage.jobs.transition(job.id, JobState.DONE)
    entry = await storage.gallery.share(job.id, 0, author_id=author, title=None, guild_id=GUILD_ID,
                                        prompt_text=prompt)
    for _ in range(likes):
        await storage.gallery.toggle_like(entry.id, next(_likers))
    return entry


def titles(call: Call) -> list[str]:
    return [e["title"] for e in call.body.get("embeds") or []]


def listing(bot: Bot, token: str) -> Call:
    """The list the user sees for this interaction (the follow-up with its embeds)."""
    calls = [c for c in bot.http.for_token(token) if c.method in ("POST", "PATCH") and not c.is_callback]
    assert calls, bot.http.for_token(token)
    return calls[-1]


def button(call: Call, label: str) -> dict:
    for row in call.body["components"]:
        for item in row["components"]:
            if item.get("label") == label:
                return item
    raise AssertionError((label, call.body["components"]))


async def search(bot: Bot, query: str, **options: object) -> tuple[str, Call]:
    interaction = await bot.h.run_command("prompts", {"query": query, **options}, subcommand="search")
    return interaction.token, listing(bot, interaction.token)


async def test_liked_matching_prompt_ranks_first(bot: Bot) -> None:
    liked = await shared(bot, "red fox portrait, oil painting", likes=6)
    plain = await shared(bot, "red fox portrait, watercolour")  # newer, equally good text match
    await shared(bot, "blue whale in the deep sea", likes=50)  # popular but not a match
    _token, call = await search(bot, "red fox")
    assert call.ephemeral
    assert titles(call) == [f"1. {liked.prompt_text}", f"2. {plain.prompt_text}"]
    # each entry: the prompt in a code block, likes, a thumbnail, and a Remix button
    first = call.body["embeds"][0]
    assert "```\nred fox portrait, oil painting\n```" in first["description"] and "👍 6" in first["description"]
    assert first["thumbnail"]["url"] == f"attachment://thumb_{liked.id}.jpg"
    assert sorted(name for name, _ in call.files) == sorted([f"thumb_{liked.id}.jpg", f"thumb_{plain.id}.jpg"])
    assert all(data[:2] == b"\xff\xd8" for _, data in call.files)  # small JPEGs
    assert f"tessera-g:remix:{liked.id}" in call.custom_ids and f"tessera-g:remix:{plain.id}" in call.custom_ids
    # sort by recent: the newer first
    _, recent = await search(bot, "red fox", sort="recent")
    assert titles(recent) == [f"1. {plain.prompt_text}", f"2. {liked.prompt_text}"]


async def test_a_precise_match_beats_a_popular_loose_one(bot: Bot) -> None:
    for i in range(8):  # a gallery of other things, so the word is rare (BM25 weighs rare words)
        await shared(bot, f"a bowl of fruit, still life {i}")
    precise = await shared(bot, "lighthouse lighthouse at dusk")
    await shared(bot, "a harbour at dusk with boats, gulls, nets, ropes and a small lighthouse far away", likes=1)
    _, call = await search(bot, "lighthouse")
    assert titles(call)[0] == f"1. {precise.prompt_text}"


async def test_author_filter_through_the_user_option(bot: Bot) -> None:
    await shared(bot, "a castle on a hill", author=USER_ID)
    theirs = await shared(bot, "a castle by the sea", author=OTHER_USER_ID)
    interaction = await bot.h.run_command(
        "prompts", {"query": "castle", "author": str(OTHER_USER_ID)}, subcommand="search",
        resolved={"users": {str(OTHER_USER_ID): user_payload(OTHER_USER_ID)}})
    call = listing(bot, interaction.token)
    assert titles(call) == [f"1. {theirs.prompt_text}"] and f"<@{OTHER_USER_ID}>" in call.content


async def test_paging_forward_and_back(bot: Bot) -> None:
    entries = [await shared(bot, f"a paper lantern number {i}") for i in range(12)]
    newest_first = [e.prompt_text for e in reversed(entries)]
    _token, first = await search(bot, "lantern", sort="recent")
    assert titles(first) == [f"{n}. {p}" for n, p in enumerate(newest_first[:5], start=1)]
    assert button(first, "◀")["disabled"] is True and not button(first, "▶").get("disabled")

    message = message_with(first)
    page2 = await bot.h.press(button(first, "▶")["custom_id"], message)
    (deferred, edit) = bot.http.for_token(page2)
    assert deferred.callback_type == 6 and edit.method == "PATCH"  # the same private message, edited
    assert titles(edit) == [f"{n}. {p}" for n, p in enumerate(newest_first[5:10], start=6)]
    assert len(edit.files) == PAGE_SIZE  # fresh thumbnails for the new page
    assert "6–10" in edit.content

    page3 = await bot.h.press(button(edit, "▶")["custom_id"], message_with(edit))
    last = bot.http.for_token(page3)[-1]
    assert titles(last) == [f"{n}. {p}" for n, p in enumerate(newest_first[10:], start=11)]
    assert button(last, "▶")["disabled"] is True

    back = await bot.h.press(button(last, "◀")["custom_id"], message_with(last))
    assert titles(bot.http.for_token(back)[-1]) == titles(edit)


async def test_long_queries_page_too(bot: Bot) -> None:
    words = "paper lantern glowing softly over a quiet river at night with long reflections in the dark water"
    for i in range(7):
        await shared(bot, f"{words} variant {i}")
    _token, first = await search(bot, words)
    assert len(titles(first)) == 5
    assert all(len(cid) <= 100 for cid in first.custom_ids)
    assert button(first, "▶")["custom_id"].startswith("tessera-g:pg:k:")  # too long to carry: remembered
    page2 = await bot.h.press(button(first, "▶")["custom_id"], message_with(first))
    assert len(titles(bot.http.for_token(page2)[-1])) == 2


def test_page_refs_round_trip_and_fit_discord() -> None:
    refs = [PageRef("search", 10, query="red fox", sort="likes", author_id=USER_ID),
            PageRef("search", 0, query="x" * 400, sort="recent"),
            PageRef("search", 5, query="a:b:c", sort="relevance"),
            PageRef("top", 15, period="week")]
    for ref in refs:
        encoded = encode_ref(ref)
        assert len(f"tessera-g:pg:{encoded}") <= 100
        assert decode_ref(encoded) == ref
    with pytest.raises(TesseraError, match="expired"):
        decode_ref("k:5:unknownkey")


async def test_malformed_query_gets_a_clear_message(bot: Bot) -> None:
    await shared(bot, "a red fox")
    interaction = await bot.h.run_command("prompts", {"query": '"red fox'}, subcommand="search")
    (only,) = bot.http.for_token(interaction.token)
    assert only.ephemeral and only.callback_type == 4 and "quote" in only.content


async def test_no_match_says_so(bot: Bot) -> None:
    await shared(bot, "a red fox")
    _, call = await search(bot, "zebra")
    assert call.ephemeral and "No shared prompt matches" in call.content and not call.body.get("embeds")


async def test_removed_shares_are_not_found(bot: Bot) -> None:
    gone = await shared(bot, "a red fox in snow")
    kept = await shared(bot, "a red fox in grass")
    await bot.service.storage.gallery.remove(gone.id)
    _, call = await search(bot, "fox")
    assert titles(call) == [f"1. {kept.prompt_text}"]


async def test_top_lists_most_liked_and_respects_the_period(bot: Bot) -> None:
    storage = bot.service.storage
    old = await shared(bot, "an old favourite", likes=9)
    await storage.db.write("UPDATE gallery SET created_at = created_at - 10 * 86400 WHERE id = ?", (old.id,))
    mid = await shared(bot, "a weekly pick", likes=4)
    await storage.db.write("UPDATE gallery SET created_at = created_at - 3 * 86400 WHERE id = ?", (mid.id,))
    await shared(bot, "fresh today", likes=1)
    await shared(bot, "nobody liked it")

    everything = await bot.h.run_command("prompts", {}, subcommand="top")
    assert titles(listing(bot, everything.token))[:3] == ["1. an old favourite", "2. a weekly pick", "3. fresh today"]
    week = await bot.h.run_command("prompts", {"period": "week"}, subcommand="top")
    assert titles(listing(bot, week.token))[:2] == ["1. a weekly pick", "2. fresh today"]
    day = await bot.h.run_command("prompts", {"period": "day"}, subcommand="top")
    assert titles(listing(bot, day.token)) == ["1. fresh today", "2. nobody liked it"]


async def test_remix_from_search_results_runs_for_the_searcher(bot: Bot) -> None:
    from tests.test_gallery import submit_modal

    entry = await shared(bot, "a red fox --seed 3")
    _, call = await search(bot, "fox")
    token = await bot.h.press(f"tessera-g:remix:{entry.id}", message_with(call), user_id=OTHER_USER_ID)
    (modal,) = bot.http.for_token(token)
    assert modal.callback_type == 9
    await submit_modal(bot, modal, "a red fox in a blue hat", user_id=OTHER_USER_ID,
                       channel_id=int(message_with(call)["channel_id"]))
    (job,) = await bot.jobs(OTHER_USER_ID)
    assert job.prompt_text == "a red fox in a blue hat"
    await bot.finished(job.id)

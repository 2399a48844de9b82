"""Regression tests from the adversarial review of the hostile-input work (issue 13).

Each test is an attack that got through before its fix; the module docstring of each fix
says why the bound matters.
"""

from __future__ import annotations

import copy
import io
import struct
import time
import zlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from PIL import Image

from bot.service import DEFAULT_BANNED_WORDS, find_banned_word
from commands.admin import MAX_BANNED_WORDS
from commands.gallery.prompts import PAGE_SIZE
from engine.jobs.redis_queue import _decode_result as decode_result
from engine.jobs.redis_wire import PayloadError, ResultPayload
from engine.prompt import PromptError, PromptLimits, parse
from storage.models import GuildSettings
from tests.bot_helpers import Bot, start_bot
from tests.discord_harness import ADMIN_ID, GUILD_ID, MANAGE_GUILD, message_with
from tests.test_gallery_search import button, search, shared

# --- image links: the cap is per prompt, not per {} expansion ---------------------------------


def test_braces_cannot_multiply_the_image_link_cap() -> None:
    """`{url1, url2, ...} cat` made one expansion per link, each under the cap of 10, so one
    prompt made the bot download and decode 40 (or, with 10 links per expansion, 400) images."""
    links = [f"https://img{i}.example.org/a.png" for i in range(11)]
    with pytest.raises(PromptError) as refused:
        parse("{" + ", ".join(links) + "} a cat", PromptLimits())
    assert "11 image downloads" in str(refused.value) and "10" in str(refused.value)


def test_reordered_link_sets_count_every_download() -> None:
    """Three links in six orders and subsets (each set is fetched and blended on its own, within its
    own pixel budget) were 14 downloads under a cap of 10 (40 sets: 40 × the cap)."""
    a, b, c = (f"https://img{i}.example.org/a.png" for i in range(3))
    with pytest.raises(PromptError, match="14 image downloads"):
        parse(f"{{{a} {b}, {b} {c}, {a} {c}, {c} {a} {b}, {b} {a}, {a} {c} {b}}} cat", PromptLimits())


def test_links_shared_by_every_expansion_are_fetched_once_and_stay_allowed() -> None:
    links = [f"https://img{i}.example.org/a.png" for i in range(10)]
    prompt = parse(" ".join(links) + " a {cat, dog, bird, fox}", PromptLimits())
    assert len(prompt.expansions) == 4 and all(len(e.images) == 10 for e in prompt.expansions)
    three = links[:3]
    prompt = parse("{" + ", ".join(three) + "} a {cat, dog}", PromptLimits(max_images=3))
    assert len(prompt.expansions) == 6


# --- banned words: a server's list is bounded, and checking it is one pass ---------------------


def _best_ms(call: Callable[[], object], runs: int = 3) -> float:
    best = float("inf")
    for _ in range(runs):
        started = time.perf_counter()
        call()
        best = min(best, (time.perf_counter() - started) * 1000)
    return best


def test_checking_a_full_banned_list_against_the_longest_prompt_is_quick() -> None:
    """Every /imagine checks its prompt against the server's banned words on the event loop.
    One regex search per word (with a look-behind, so no fast literal scan) cost ≈ 0.2 ms per
    word on a 6,000-character prompt: a manager of any server (anyone can make one and invite
    the bot) who banned a few thousand words stalled the whole bot for seconds per prompt."""
    words = tuple(f"w{n:03d}" + "q" * 95 for n in range(MAX_BANNED_WORDS)) + DEFAULT_BANNED_WORDS
    prompt = ("qqqq " * 1200)[:6000]
    assert find_banned_word(prompt, words) is None
    took = _best_ms(lambda: find_banned_word(prompt, words))
    assert took < 5.0, f"{took:.1f} ms for {len(words)} words"
    assert find_banned_word(prompt + " W199" + "Q" * 95, words) == "w199" + "q" * 95


def test_banned_words_still_match_whole_words_and_phrases_only() -> None:
    words = ["red panda", "red", "c++", "dragon"]
    assert find_banned_word("a dragonfly over a pond", words) is None
    assert find_banned_word("a RED pandas parade", words) == "red"
    assert find_banned_word("Red  Panda", ["red panda"]) is None  # spacing is part of the phrase, as before
    assert find_banned_word("I code c++ daily", words) == "c++"
    assert find_banned_word("nothing here", []) is None
    assert find_banned_word("a cat", ["  ", ""]) is None


@pytest.fixture
async def bot(tiny_models: dict[str, Path], data_dir: Path) -> AsyncIterator[Bot]:
    running = await start_bot(tiny_models["sd15"], data_dir)
    yield running
    await running.close()


async def test_admin_banned_refuses_to_grow_the_list_past_its_cap(bot: Bot) -> None:
    words = tuple(f"word{n}" for n in range(MAX_BANNED_WORDS))
    await bot.service.storage.settings.save_guild(GuildSettings(GUILD_ID, banned_words=words))
    admin = {"user_id": ADMIN_ID, "permissions": MANAGE_GUILD}
    interaction = await bot.h.run_command("admin", {"action": "add", "word": "one more"}, subcommand="banned", **admin)
    answer = bot.http.for_token(interaction.token)[-1]
    assert answer.ephemeral and f"{MAX_BANNED_WORDS}" in answer.content and "remove" in answer.content
    assert (await bot.service.storage.settings.guild(GUILD_ID)).banned_words == words
    # removing (and re-adding a word already there) still works at the cap
    interaction = await bot.h.run_command("admin", {"action": "remove", "word": "word0"}, subcommand="banned", **admin)
    assert "word0" not in (await bot.service.storage.settings.guild(GUILD_ID)).banned_words
    interaction = await bot.h.run_command("admin", {"action": "add", "word": "one more"}, subcommand="banned", **admin)
    assert (await bot.service.storage.settings.guild(GUILD_ID)).banned_words[-1] == "one more"


# --- Redis results: a forged result cannot make the bot hold gigabytes of pixels ---------------


def _png_header_bomb(side: int) -> bytes:
    """A valid 1-bit PNG of side × side zero pixels: tiny on the wire, `side²` pixels decoded."""
    row = b"\x00" + bytes((side + 7) // 8)
    pixels = zlib.compress(row * side, 9)

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")


def test_a_forged_redis_result_with_huge_pngs_is_refused_before_decoding() -> None:
    """Whoever can write to Redis can push a result (the hand-over token is in the batch they
    can read). Its PNGs were opened by every Pillow plugin and loaded up to Pillow's own bomb
    limit (179 M pixels each, 16 images): a 12,000² 1-bit PNG is under 100 KB on the wire, 144 M
    pixels loaded, and half a gigabyte once the bot converts it to RGB to encode it."""
    bomb = _png_header_bomb(12_000)
    assert len(bomb) < 100_000
    raw = ResultPayload("job1", "t1", "w0", "done", images=(bomb,)).to_bytes()
    with pytest.raises(PayloadError, match="pixels"):
        decode_result(raw)
    small = io.BytesIO()
    Image.new("RGB", (64, 64), "red").save(small, format="PNG")
    result, images = decode_result(ResultPayload("job1", "t1", "w0", "done", images=(small.getvalue(),)).to_bytes())
    assert result.job_id == "job1" and images[0].size == (64, 64)


def test_a_forged_redis_result_in_another_format_is_refused_unopened() -> None:
    gif = io.BytesIO()
    Image.new("RGB", (8, 8)).save(gif, format="GIF")
    with pytest.raises(PayloadError, match="PNG"):
        decode_result(ResultPayload("job1", "t1", "w0", "done", images=(gif.getvalue(),)).to_bytes())


# --- page buttons: a forged custom_id is "expired", never an internal error --------------------


@pytest.mark.parametrize("ref", [
    "t:" + "9" * 80 + ":a",  # an offset SQLite cannot hold
    "s:" + "9" * 40 + ":r:-:cat",
    "s:0:r:" + "z" * 30 + ":cat",  # an author id SQLite cannot hold
    "s:0:r:no!t-b36:cat",  # an author that is not base 36
    "t:٣:a",  # a digit Python reads, in another script (harmless, but not what the bot writes)
])
async def test_a_forged_page_button_answers_expired(bot: Bot, ref: str, caplog: pytest.LogCaptureFixture) -> None:
    """Page buttons carry the search in their custom_id; a forged one (any client can send
    one) raised OverflowError or ValueError inside the handler: "something went wrong" and a
    logged traceback per press, instead of the answer any stale list gets."""
    for n in range(PAGE_SIZE + 1):
        await shared(bot, f"a paper lantern number {n}")
    _token, first = await search(bot, "lantern")
    message = copy.deepcopy(message_with(first))
    forged = button(first, "▶")["custom_id"]
    for row in message["components"]:
        for item in row["components"]:
            if item.get("custom_id") == forged:
                item["custom_id"] = f"tessera-g:pg:{ref}"
    caplog.clear()
    token = await bot.h.press(f"tessera-g:pg:{ref}", message)
    answer = bot.http.for_token(token)[-1]
    assert "expired" in (answer.content or ""), answer
    assert not [r for r in caplog.records if r.levelname in ("ERROR", "CRITICAL")]

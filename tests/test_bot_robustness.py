"""Paths where users used to get no proper answer.

Answers stay within Discord's limits (2,000 characters a message, 1,024 an embed field) when
users write long prompts full of markdown, queue many jobs or ban many words: Discord refuses
anything larger, and the user would see a stuck "thinking…" or "something went wrong". And a
🔁 Remix form submitted after a restart still runs ("This interaction failed" before)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bot import render
from commands.admin import listing
from commands.info import fit_lines
from engine.jobs.model import JobState
from storage.models import GuildSettings
from tests.bot_helpers import Bot, start_bot
from tests.discord_harness import (
    ADMIN_ID,
    CHANNEL_ID,
    GUILD_ID,
    MANAGE_GUILD,
    OTHER_USER_ID,
    USER_ID,
    message_with,
)

MESSAGE_LIMIT = 2000


@pytest.fixture
async def bot(tiny_models: dict[str, Path], data_dir: Path) -> AsyncIterator[Bot]:
    running = await start_bot(tiny_models["sd15"], data_dir)
    yield running
    await running.close()


async def test_a_long_prompt_full_of_markdown_keeps_every_message_under_2000(bot: Bot) -> None:
    prompt = " ".join(["snake_case*star*"] * 110)  # 1,869 characters; escaped, about 2,500
    assert len(prompt) < MESSAGE_LIMIT < len(render.discord.utils.escape_markdown(prompt))
    bot.executor.gate.clear()
    interaction = await bot.h.run_command("imagine", {"prompt": prompt})
    job = await bot.only_job()
    bot.executor.gate.set()
    await bot.finished(job.id)
    contents = [c.content for c in bot.http.for_token(interaction.token) if c.content]
    assert len(contents) >= 3  # queued, progress, the grid
    assert all(len(text) <= MESSAGE_LIMIT for text in contents), [len(t) for t in contents]
    assert "snake\\_case\\*star\\*" in contents[-1] and "…" in contents[-1]
    stored = await bot.service.storage.jobs.get(job.id)
    for text in (render.queued_text(stored, 12, warming=True), render.progress_text(stored, 3, 4),
                 render.cancelled_text(stored), render.done_text(stored, ["niji", "turbo"]),
                 render.failed_text(stored, "The model ran out of memory. " * 60)):
        assert len(text) <= MESSAGE_LIMIT and f"job `{job.id}`" in text


def test_shown_prompt_cuts_after_escaping() -> None:
    assert render.shown_prompt("a_b", 10) == "a\\_b"
    shown = render.shown_prompt("x_" * 50, 21)
    assert len(shown) == 21 and shown.endswith("…") and shown.startswith("x\\_x\\_")
    assert render.shown_prompt("   ") == "(no prompt)"


async def test_info_lists_many_long_jobs_within_the_field_limit(bot: Bot) -> None:
    bot.executor.gate.clear()
    await bot.service.imagine(user_id=USER_ID, prompt_text="a_b*c~d|e " * 8 + "--repeat 10",
                              guild_id=GUILD_ID, confirmed=True)
    # the ten arrive together; wait until the first batch is marked running (two per user)
    await bot.until(lambda: _count_running(bot, 2))
    interaction = await bot.h.run_command("info", {})
    embed = bot.http.for_token(interaction.token)[-1].body["embeds"][0]
    (mine,) = [f for f in embed["fields"] if f["name"] == "Your jobs"]
    assert len(mine["value"]) <= 1024
    lines = mine["value"].split("\n")
    assert lines[-1].startswith("… and ") and lines[-1].endswith(" more")
    assert len(lines) >= 5  # as many whole lines as fit
    bot.executor.gate.set()


async def _count_running(bot: Bot, expected: int) -> bool:
    return len([j for j in await bot.jobs(USER_ID) if j.state is JobState.RUNNING]) == expected


def test_fit_lines_counts_what_it_leaves_out() -> None:
    assert fit_lines(["aaaa", "bbbb"], 9) == "aaaa\nbbbb"
    assert fit_lines(["aaaa", "bbbb", "cccc", "dddd", "eeee"], 20) == "aaaa\n… and 4 more"
    assert fit_lines([], 10) == ""


async def test_admin_settings_with_many_banned_words_fit_one_message(bot: Bot) -> None:
    words = tuple(f"{n:02d}-" + "w" * 90 for n in range(40))
    await bot.service.storage.settings.save_guild(GuildSettings(GUILD_ID, banned_words=words,
                                                                allowed_channels=tuple(range(10**17, 10**17 + 60))))
    admin = {"user_id": ADMIN_ID, "permissions": MANAGE_GUILD}
    interaction = await bot.h.run_command("admin", {}, subcommand="show", **admin)
    shown = bot.http.for_token(interaction.token)[-1]
    assert shown.ephemeral and len(shown.content) <= MESSAGE_LIMIT
    assert "`00-www" in shown.content and "more" in shown.content
    interaction = await bot.h.run_command("admin", {"action": "add", "word": "one more " + "z" * 80},
                                          subcommand="banned", **admin)
    added = bot.http.for_token(interaction.token)[-1]
    assert len(added.content) <= MESSAGE_LIMIT and "Banned" in added.content
    assert len((await bot.service.storage.settings.guild(GUILD_ID)).banned_words) == 41  # all kept, some not shown


def test_listing_keeps_whole_items() -> None:
    assert listing(["ab", "cd"], 6) == "ab, cd"
    assert listing(["ab", "cd", "ef", "gh", "ij"], 16) == "ab, … and 4 more"
    assert listing([], 5) == ""


# ----- a Remix form outlives the process that opened it ------------------------------------------------


async def test_remix_form_submitted_after_a_restart_still_runs(tiny_models: dict[str, Path], data_dir: Path) -> None:
    from tests.test_gallery import submit_modal

    first = await start_bot(tiny_models["sd15"], data_dir)
    try:
        await first.h.run_command("imagine", {"prompt": "a lighthouse at dusk"})
        job = await first.only_job()
        await first.finished(job.id)
        entry = await first.service.storage.gallery.share(job.id, 0, author_id=USER_ID, title=None,
                                                          guild_id=GUILD_ID, prompt_text=job.prompt_text)
        post = {**message_with(first.http.calls[-1]), "components": [{"type": 1, "components": [
            {"type": 2, "style": 1, "label": "Remix", "custom_id": f"tessera-g:remix:{entry.id}"}]}]}
        token = await first.h.press(f"tessera-g:remix:{entry.id}", post, user_id=OTHER_USER_ID)
        (modal,) = first.http.for_token(token)
        assert modal.callback_type == 9
    finally:
        await first.close()

    again = await start_bot(tiny_models["sd15"], data_dir)  # a new process: nothing of the form in memory
    try:
        submitted = await submit_modal(again, modal, "a lighthouse at dawn --ar 3:2", user_id=OTHER_USER_ID,
                                       channel_id=CHANNEL_ID)
        (remix,) = await again.jobs(OTHER_USER_ID)
        assert remix.prompt_text == "a lighthouse at dawn --ar 3:2"
        await again.finished(remix.id)
        calls = again.http.for_token(submitted)
        assert calls[0].callback_type == 5 and any(c.files for c in calls)  # "thinking…", then the grid
        empty = await submit_modal(again, modal, "   ", user_id=OTHER_USER_ID)
        (told,) = [c for c in again.http.for_token(empty) if c.content]
        assert told.ephemeral and "empty" in told.content
    finally:
        await again.close()

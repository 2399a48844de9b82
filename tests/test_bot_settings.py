"""`/settings` as users see it: the privacy menu persists, shows in the summary and takes effect."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from engine.jobs.model import JobKind
from storage.models import GuildSettings, UserSettings
from tests.bot_helpers import Bot, start_bot
from tests.discord_harness import (
    CHANNEL_ID,
    GUILD_ID,
    OTHER_CHANNEL_ID,
    OTHER_USER_ID,
    USER_ID,
    Call,
    message_with,
)

GALLERY = OTHER_CHANNEL_ID
COMPONENTS_V2 = 1 << 15
MENUS = ["quality", "aspect", "stylize", "sampler", "model", "private"]


@pytest.fixture
async def bot(tiny_models: dict[str, Path], data_dir: Path) -> AsyncIterator[Bot]:
    running = await start_bot(tiny_models["sd15"], data_dir)
    yield running
    await running.close()


def summary(call: Call) -> str:
    """The text block of a components-v2 settings message."""
    texts = [c["content"] for c in call.body.get("components", []) if c.get("type") == 10]
    assert len(texts) == 1, call.body
    return str(texts[0])


def chosen(call: Call, custom_id: str) -> list[str]:
    """The options shown as picked in one menu."""
    for row in call.body["components"]:
        for item in row.get("components", []):
            if item.get("custom_id") == custom_id:
                return [o["value"] for o in item["options"] if o.get("default")]
    raise AssertionError(custom_id)


async def open_settings(bot: Bot, **kwargs: object) -> Call:
    interaction = await bot.h.run_command("settings", {}, **kwargs)  # type: ignore[arg-type]
    answer = bot.http.for_token(interaction.token)[-1]
    assert answer.ephemeral and answer.flags & COMPONENTS_V2
    return answer


async def pick(bot: Bot, message: dict, field: str, value: str, **kwargs: object) -> Call:
    token = await bot.h.press(f"tessera:set:{field}", message, component_type=3, values=[value],
                              **kwargs)  # type: ignore[arg-type]
    return bot.http.for_token(token)[-1]


async def test_privacy_menu_saves_the_setting_and_the_summary_shows_it(bot: Bot) -> None:
    answer = await open_settings(bot)
    assert answer.custom_ids == [f"tessera:set:{m}" for m in MENUS]  # six menus: more rows than classic messages
    assert "results: public" in summary(answer) and chosen(answer, "tessera:set:private") == ["public"]
    model = bot.service.settings.model_id  # a local folder: shown by its name, its path stays private
    assert "model: sd15 (server default)" in summary(answer) and model not in str(answer.body)
    assert chosen(answer, "tessera:set:model") == ["default"]
    picked = await pick(bot, message_with(answer), "model", "#0")  # the model menu goes by position
    assert "model: **sd15**" in summary(picked) and chosen(picked, "tessera:set:model") == ["#0"]
    assert (await bot.service.storage.settings.user(USER_ID)).model == model

    update = await pick(bot, message_with(answer), "private", "private")
    assert update.callback_type == 7 and update.flags & COMPONENTS_V2  # the menu message changes in place
    assert update.content is None  # components v2: the text is in the layout
    assert "results: **private**" in summary(update) and chosen(update, "tessera:set:private") == ["private"]
    assert (await bot.service.storage.settings.user(USER_ID)).private is True

    # other defaults are kept, and a later /settings (any time later: it is stored) shows it picked
    await pick(bot, message_with(answer), "aspect", "16:9")  # (the harness answers an update without its message)
    stored = await bot.service.storage.settings.user(USER_ID)
    assert stored.private is True and stored.aspect == "16:9"
    again = await open_settings(bot)
    assert chosen(again, "tessera:set:private") == ["private"] and chosen(again, "tessera:set:aspect") == ["16:9"]
    assert "results: **private**" in summary(again) and "aspect: **16:9**" in summary(again)

    back = await pick(bot, message_with(again), "private", "public")
    assert "results: public" in summary(back)
    assert (await bot.service.storage.settings.user(USER_ID)).private is False
    assert (await bot.service.storage.settings.user(OTHER_USER_ID)).private is False  # only the picker's


async def test_an_unknown_privacy_value_is_answered_not_saved(bot: Bot) -> None:
    answer = await open_settings(bot)
    refused = await pick(bot, message_with(answer), "private", "sometimes")
    assert refused.ephemeral and "public or private" in (refused.content or "")
    assert (await bot.service.storage.settings.user(USER_ID)).private is False


async def test_settings_work_in_dms(bot: Bot) -> None:
    answer = await open_settings(bot, guild_id=None)
    update = await pick(bot, message_with(answer), "private", "private", guild_id=None)
    assert "results: **private**" in summary(update)
    assert (await bot.service.storage.settings.user(USER_ID)).private is True


async def test_a_settings_message_from_before_the_layout_still_works(bot: Bot) -> None:
    """An ephemeral /settings message posted by the previous version (classic rows, text in
    `content`) becomes the new layout on its next pick, with content cleared as Discord requires."""
    message = {"id": "123456789012345678", "channel_id": str(CHANNEL_ID), "type": 0, "flags": 64,
               "author": {"id": "2", "username": "Tessera", "discriminator": "0", "avatar": None},
               "content": "**Your defaults**", "timestamp": "2024-01-01T00:00:00+00:00", "edited_timestamp": None,
               "tts": False, "mention_everyone": False, "mentions": [], "mention_roles": [], "attachments": [],
               "embeds": [], "pinned": False,
               "components": [{"type": 1, "components": [
                   {"type": 3, "custom_id": "tessera:set:quality", "placeholder": "Default quality",
                    "min_values": 1, "max_values": 1,
                    "options": [{"label": "quality: server default", "value": "default"},
                                {"label": "quality: 0.5", "value": "0.5"}]}]}]}
    update = await pick(bot, message, "quality", "0.5")
    assert update.callback_type == 7 and update.flags & COMPONENTS_V2
    assert update.json["data"]["content"] is None and update.body["embeds"] == []  # type: ignore[index]
    assert "quality: **0.5**" in summary(update)
    assert (await bot.service.storage.settings.user(USER_ID)).quality == 0.5


# ----- the setting takes effect: a private result is shared by its author only ----------------------------


def gallery_posts(bot: Bot) -> list[Call]:
    return [c for c in bot.http.find("POST", "/channels/{channel_id}/messages", via="http")
            if c.params.get("channel_id") == GALLERY]


def last_words(bot: Bot, token: str) -> str:
    said = [c.content for c in bot.http.for_token(token) if c.content]
    assert said, bot.http.for_token(token)
    return str(said[-1])


async def test_private_chosen_in_settings_keeps_others_from_sharing(bot: Bot) -> None:
    await bot.service.storage.settings.save_guild(GuildSettings(GUILD_ID, gallery_channel_id=GALLERY))
    interaction = await bot.h.run_command("imagine", {"prompt": "a secret garden --seed 5"})
    grid_job = await bot.only_job()
    await bot.finished(grid_job.id)

    answer = await open_settings(bot)
    await pick(bot, message_with(answer), "private", "private")
    assert await bot.service.storage.settings.user(USER_ID) == UserSettings(USER_ID, private=True)

    # someone else may not /share it, nor ❤️ Share their own upscale of it
    refused = await bot.h.run_command("share", {"job": grid_job.id, "index": 2}, user_id=OTHER_USER_ID)
    assert "private" in last_words(bot, refused.token)
    grid = message_with([c for c in bot.http.for_token(interaction.token) if c.files][-1])
    token = await bot.h.press(f"tessera:upscale:{grid_job.id}:1", grid, user_id=OTHER_USER_ID)
    upscale = (await bot.jobs(OTHER_USER_ID))[0]
    assert upscale.kind is JobKind.UPSCALE
    await bot.finished(upscale.id)
    message = message_with([c for c in bot.http.for_token(token) if c.files][-1])
    pressed = await bot.h.press(f"tessera:share:{upscale.id}:0", message, user_id=OTHER_USER_ID)
    assert "private" in last_words(bot, pressed)
    assert gallery_posts(bot) == []
    assert await bot.service.storage.gallery.find_share(grid_job.id, 1) is None

    # the author may share it; after switching back to public, so may others
    shared = await bot.h.run_command("share", {"job": grid_job.id, "index": 1})
    assert "Shared to" in last_words(bot, shared.token) and len(gallery_posts(bot)) == 1
    again = await open_settings(bot)
    await pick(bot, message_with(again), "private", "public")
    pressed = await bot.h.press(f"tessera:share:{upscale.id}:0", message, user_id=OTHER_USER_ID)
    assert "Shared to" in last_words(bot, pressed) and len(gallery_posts(bot)) == 2

"""Slash commands and buttons as users see them, through real Interactions and captured HTTP."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bot.subcommands.commands import command_payloads
from engine.jobs.model import JobKind, JobState
from storage.models import GuildSettings
from tests.bot_helpers import Bot, start_bot
from tests.discord_harness import (
    ADMIN_ID,
    CHANNEL_ID,
    GUILD_ID,
    MANAGE_GUILD,
    OTHER_CHANNEL_ID,
    OTHER_USER_ID,
    USER_ID,
    Call,
    message_with,
)

GRID_BUTTONS = ["upscale:{j}:0", "upscale:{j}:1", "upscale:{j}:2", "upscale:{j}:3", "reroll:{j}:0",
                "vary:{j}:0", "vary:{j}:1", "vary:{j}:2", "vary:{j}:3"]
UPSCALE_BUTTONS = ["vsubtle:{j}:0", "vstrong:{j}:0", "upmore:{j}:0", "share:{j}:0", "delete:{j}:0",
                   "region:{j}:0", "zoom2:{j}:0", "zoom15:{j}:0", "zoomc:{j}:0",  # a square picture: no Make Square
                   "panl:{j}:0", "panr:{j}:0", "panu:{j}:0", "pand:{j}:0"]


def ids(template: list[str], job_id: str) -> list[str]:
    return [f"tessera:{t.format(j=job_id)}" for t in template]


@pytest.fixture
async def bot(tiny_models: dict[str, Path], data_dir: Path) -> AsyncIterator[Bot]:
    running = await start_bot(tiny_models["sd15"], data_dir)
    yield running
    await running.close()


def final_edit(calls: list[Call]) -> Call:
    """The last edit of a message that carries a file (the grid or the upscale)."""
    with_files = [c for c in calls if c.files and c.method == "PATCH"]
    assert with_files, calls
    return with_files[-1]


async def imagine(bot: Bot, prompt: str, **kwargs: object) -> tuple[str, str]:
    """Run /imagine to the end; (interaction token, job id)."""
    interaction = await bot.h.run_command("imagine", {"prompt": prompt}, **kwargs)  # type: ignore[arg-type]
    job = (await bot.jobs())[0]
    await bot.finished(job.id)
    return interaction.token, job.id


# ----- the command list ---------------------------------------------------------------------------


def test_command_list_is_complete_and_valid() -> None:
    payloads = command_payloads()
    names = [p["name"] for p in payloads]
    ours = ["imagine", "upscale", "variation", "seed", "settings", "info", "cancel", "show", "help", "admin"]
    assert [n for n in names if n in ours] == ours and len(set(names)) == len(names)
    for payload in payloads:
        assert 1 <= len(payload["description"]) <= 100, payload["name"]
        for option in payload.get("options", []):
            assert 1 <= len(option["description"]) <= 100, (payload["name"], option["name"])
    options = {p["name"]: {o["name"]: o for o in p.get("options", [])} for p in payloads}
    assert options["imagine"]["prompt"]["required"] is True
    assert options["imagine"]["image"]["type"] == 11  # attachment
    assert options["upscale"]["index"]["min_value"] == 1 and options["upscale"]["index"]["max_value"] == 4
    assert [c["value"] for c in options["upscale"]["scale"]["choices"]] == [2, 4]
    assert options["upscale"]["job"]["autocomplete"] is True
    assert [c["value"] for c in options["variation"]["strength"]["choices"]] == ["subtle", "strong"]
    admin = next(p for p in payloads if p["name"] == "admin")
    assert int(admin["default_member_permissions"]) == MANAGE_GUILD
    assert {o["name"] for o in admin["options"]} >= {"channels", "limit", "banned", "nsfw", "gallery", "priority"}


def test_tessera_commands_prints_json(capsys: pytest.CaptureFixture[str]) -> None:
    from bot.cli import main

    assert main(["commands"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed[0]["name"] == "imagine"
    assert [o["name"] for o in printed[0]["options"]] == ["prompt", "image", "lora", "sref", "cref"]
    assert printed[0]["options"][2]["autocomplete"] is True


# ----- /imagine ---------------------------------------------------------------------------------------


async def test_imagine_defers_then_shows_queue_progress_and_grid(bot: Bot) -> None:
    bot.executor.gate.clear()  # hold the job after its first step
    interaction = await bot.h.run_command("imagine", {"prompt": "a lighthouse at dusk --ar 16:9 --seed 7"})
    job = await bot.only_job(USER_ID)
    await bot.until(lambda: any("%" in (c.content or "") or "starting" in (c.content or "")
                                for c in bot.http.for_token(interaction.token)))
    calls = bot.http.for_token(interaction.token)
    first = calls[0]
    assert first.is_callback and first.callback_type == 5 and not first.ephemeral  # public "thinking…"
    queued = calls[1]
    assert queued.method == "PATCH" and "a lighthouse at dusk --ar 16:9 --seed 7" in queued.content
    assert f"<@{USER_ID}>" in queued.content and job.id in queued.content
    assert "waiting to start" in queued.content or "in line" in queued.content
    bot.executor.gate.set()
    stored = await bot.finished(job.id)
    assert stored.state is JobState.DONE
    calls = bot.http.for_token(interaction.token)
    progress = [c for c in calls if c.content and "%)" in c.content]
    assert progress, calls
    assert any(name.startswith("preview_") for c in progress for name, _ in c.files)  # the blurry preview
    final = final_edit(calls)
    assert final.custom_ids == ids(GRID_BUTTONS, job.id)
    (name, data), = final.files
    assert name.startswith(f"a_lighthouse_at_dusk_{job.id}") and name.endswith((".jpg", ".png", ".webp"))
    assert 0 < len(data) <= 10 * 2**20
    assert "%" not in final.content and f"<@{USER_ID}>" in final.content
    # the message is remembered: a link to it finds the job
    message_id = int(message_with(final)["id"])
    assert (await bot.service.storage.jobs.find_by_message(message_id)).id == job.id


async def test_prompt_error_is_ephemeral_and_nothing_is_queued(bot: Bot) -> None:
    interaction = await bot.h.run_command("imagine", {"prompt": "a cat --ar 16:0"})
    calls = bot.http.for_token(interaction.token)
    assert len(calls) == 1 and calls[0].callback_type == 4 and calls[0].ephemeral
    assert "--ar" in calls[0].content
    assert await bot.jobs() == []


async def test_banned_word_names_the_word_and_removes_the_placeholder(bot: Bot) -> None:
    await bot.service.storage.settings.save_guild(GuildSettings(GUILD_ID, banned_words=("zeppelin",)))
    interaction = await bot.h.run_command("imagine", {"prompt": "a red Zeppelin over the sea"})
    calls = bot.http.for_token(interaction.token)
    assert calls[0].callback_type == 5
    assert [c.method for c in calls[1:]] == ["DELETE", "POST"]  # the public placeholder goes, a private note comes
    assert calls[-1].ephemeral and "zeppelin" in calls[-1].content
    assert await bot.jobs() == []


async def test_default_banned_words_apply_everywhere(bot: Bot) -> None:
    interaction = await bot.h.run_command("imagine", {"prompt": "porn"}, guild_id=None)
    last = bot.http.for_token(interaction.token)[-1]
    assert last.ephemeral and "porn" in last.content
    assert await bot.jobs() == []


async def test_channel_not_allowed(bot: Bot) -> None:
    await bot.service.storage.settings.save_guild(GuildSettings(GUILD_ID, allowed_channels=(OTHER_CHANNEL_ID,)))
    interaction = await bot.h.run_command("imagine", {"prompt": "a cat"})
    last = bot.http.for_token(interaction.token)[-1]
    assert last.ephemeral and f"<#{OTHER_CHANNEL_ID}>" in last.content
    assert await bot.jobs() == []


async def test_queue_limit_is_explained(bot: Bot) -> None:
    await bot.service.storage.settings.save_guild(GuildSettings(GUILD_ID, max_queued_per_user=1))
    bot.executor.gate.clear()
    await bot.h.run_command("imagine", {"prompt": "a cat"})
    await bot.h.run_command("imagine", {"prompt": "a dog"})
    interaction = await bot.h.run_command("imagine", {"prompt": "a bird"})
    last = bot.http.for_token(interaction.token)[-1]
    assert last.ephemeral and "at most 1" in last.content
    assert len(await bot.jobs()) == 2
    bot.executor.gate.set()


async def test_attachment_that_is_not_an_image(bot: Bot) -> None:
    interaction = await bot.h.run_command("imagine", {"prompt": "like this"}, attachments={"image": {
        "filename": "notes.pdf", "size": 1000, "url": "https://cdn.discordapp.com/a/notes.pdf",
        "proxy_url": "https://media.discordapp.net/a/notes.pdf", "content_type": "application/pdf"}})
    last = bot.http.for_token(interaction.token)[-1]
    assert last.ephemeral and "notes.pdf" in last.content and "PNG" in last.content
    assert await bot.jobs() == []


async def test_unexpected_error_names_the_job_and_logs_the_traceback(bot: Bot, monkeypatch: pytest.MonkeyPatch,
                                                                    caplog: pytest.LogCaptureFixture) -> None:
    _, job_id = await imagine(bot, "a cat")

    async def broken(**kwargs: object) -> None:
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(bot.service, "upscale", broken)
    with caplog.at_level(logging.ERROR):
        interaction = await bot.h.run_command("upscale", {"job": job_id, "index": 2})
    last = bot.http.for_token(interaction.token)[-1]
    assert last.ephemeral and job_id in last.content and "went wrong" in last.content
    assert "disk on fire" not in last.content
    record = next(r for r in caplog.records if r.exc_info)
    assert record.job_id == job_id and "disk on fire" in str(record.exc_info[1])  # type: ignore[attr-defined]


async def test_many_jobs_ask_first_then_post_one_message_each(bot: Bot) -> None:
    interaction = await bot.h.run_command("imagine", {"prompt": "a {red, blue, green} car --repeat 2"})
    assert await bot.jobs() == []
    ask = bot.http.for_token(interaction.token)[-1]
    assert ask.ephemeral and "6 jobs" in ask.content
    confirm, dismiss = ask.custom_ids
    assert dismiss.startswith("tessera:dismiss:")
    assert confirm.startswith("tessera:confirm:") and confirm.endswith(":6")
    # someone else cannot confirm it
    other = await bot.h.press(confirm, message_with(ask), user_id=OTHER_USER_ID)
    assert bot.http.for_token(other)[-1].ephemeral and await bot.jobs() == []
    token = await bot.h.press(confirm, message_with(ask))
    jobs = await bot.jobs()
    assert len(jobs) == 6
    for job in jobs:
        await bot.finished(job.id)
    calls = bot.http.for_token(token)
    assert calls[0].callback_type == 5
    followups = [c for c in calls if c.method == "POST" and c.path == "/webhooks/{webhook_id}/{webhook_token}"]
    assert len(followups) == 5  # the first job uses the deferred message, the others a message each
    grids = {cid.split(":")[2] for c in calls for cid in c.custom_ids}
    assert grids == {j.id for j in jobs}
    # the key is used up
    again = await bot.h.press(confirm, message_with(ask))
    assert "expired" in bot.http.for_token(again)[-1].content
    # "Cancel" on another confirmation queues nothing and says so in place
    interaction = await bot.h.run_command("imagine", {"prompt": "a {red, blue, green} boat --repeat 2"})
    ask = bot.http.for_token(interaction.token)[-1]
    dismissed = await bot.h.press(ask.custom_ids[1], message_with(ask))
    (update,) = bot.http.for_token(dismissed)
    assert update.callback_type == 7 and update.content == "Not queued." and update.custom_ids == []
    assert len(await bot.jobs()) == 6


# ----- buttons ------------------------------------------------------------------------------------------


async def test_grid_buttons_upscale_vary_and_reroll(bot: Bot) -> None:
    token, job_id = await imagine(bot, "a lighthouse at dusk")
    grid = message_with(final_edit(bot.http.for_token(token)))

    u2 = await bot.h.press(f"tessera:upscale:{job_id}:1", grid)
    upscale = (await bot.jobs())[0]
    assert upscale.kind is JobKind.UPSCALE and upscale.parent_index == 1 and upscale.options["scale"] == 4
    await bot.finished(upscale.id)
    calls = bot.http.for_token(u2)
    assert calls[0].callback_type == 5
    final = final_edit(calls)
    assert final.custom_ids == ids(UPSCALE_BUTTONS, upscale.id)
    assert "Image #2" in final.content
    assert final.files[0][0].startswith(f"a_lighthouse_at_dusk_{upscale.id}_u2")

    await bot.h.press(f"tessera:vary:{job_id}:3", grid)
    variation = (await bot.jobs())[0]
    assert variation.kind is JobKind.VARIATION and variation.parent_index == 3
    assert variation.options["strength"] == "subtle"
    await bot.finished(variation.id)

    reroll_token = await bot.h.press(f"tessera:reroll:{job_id}:0", grid)
    reroll = (await bot.jobs())[0]
    assert reroll.kind is JobKind.REROLL and reroll.parent_id == job_id
    await bot.finished(reroll.id)
    assert final_edit(bot.http.for_token(reroll_token)).custom_ids == ids(GRID_BUTTONS, reroll.id)


async def test_upscale_buttons(bot: Bot) -> None:
    token, job_id = await imagine(bot, "a lighthouse")
    grid = message_with(final_edit(bot.http.for_token(token)))
    u1 = await bot.h.press(f"tessera:upscale:{job_id}:0", grid)
    upscale = (await bot.jobs())[0]
    await bot.finished(upscale.id)
    message = message_with(final_edit(bot.http.for_token(u1)))

    await bot.h.press(f"tessera:vstrong:{upscale.id}:0", message)
    strong = (await bot.jobs())[0]
    assert strong.kind is JobKind.VARIATION and strong.options["strength"] == "strong"
    assert strong.parent_id == upscale.id
    await bot.finished(strong.id)

    await bot.h.press(f"tessera:vsubtle:{upscale.id}:0", message)
    subtle = (await bot.jobs())[0]
    assert subtle.options["strength"] == "subtle"
    await bot.finished(subtle.id)

    more = await bot.h.press(f"tessera:upmore:{upscale.id}:0", message)
    chained = (await bot.jobs())[0]
    assert chained.kind is JobKind.UPSCALE and chained.parent_id == upscale.id and chained.options["scale"] == 2
    await bot.finished(chained.id)
    assert final_edit(bot.http.for_token(more)).custom_ids == ids(UPSCALE_BUTTONS, chained.id)

    share = await bot.h.press(f"tessera:share:{upscale.id}:0", message)
    answer = bot.http.for_token(share)[-1]
    assert answer.ephemeral and answer.content  # the gallery answers privately (tests/test_gallery*.py)

    refused = await bot.h.press(f"tessera:delete:{upscale.id}:0", message, user_id=OTHER_USER_ID)
    (answer,) = bot.http.for_token(refused)
    assert answer.ephemeral and "Only the person" in answer.content
    deleted = await bot.h.press(f"tessera:delete:{upscale.id}:0", message)
    calls = bot.http.for_token(deleted)
    assert calls[0].callback_type == 6 and calls[1].method == "DELETE"
    by_admin = await bot.h.press(f"tessera:delete:{upscale.id}:0", message, user_id=ADMIN_ID,
                                 permissions=MANAGE_GUILD)
    assert [c.method for c in bot.http.for_token(by_admin)] == ["POST", "DELETE"]


async def test_chained_upscale_past_the_size_limit_is_refused(tiny_models: dict[str, Path], data_dir: Path) -> None:
    bot = await start_bot(tiny_models["sd15"], data_dir, upscale_max_side=256)
    try:
        token, job_id = await imagine(bot, "a lighthouse")
        grid = message_with(final_edit(bot.http.for_token(token)))
        u1 = await bot.h.press(f"tessera:upscale:{job_id}:0", grid)
        upscale = (await bot.jobs())[0]
        await bot.finished(upscale.id)
        message = message_with(final_edit(bot.http.for_token(u1)))
        more = await bot.h.press(f"tessera:upmore:{upscale.id}:0", message)
        last = bot.http.for_token(more)[-1]
        assert last.ephemeral and "256" in last.content
        assert (await bot.jobs())[0].id == upscale.id  # nothing queued
    finally:
        await bot.close()


async def test_button_with_unknown_action_or_job_answers(bot: Bot) -> None:
    message = {"id": "1", "channel_id": str(CHANNEL_ID), "author": {"id": "2", "username": "x", "discriminator": "0",
                                                                    "avatar": None},
               "content": "", "timestamp": "2024-01-01T00:00:00+00:00", "edited_timestamp": None, "tts": False,
               "mention_everyone": False, "mentions": [], "mention_roles": [], "attachments": [], "embeds": [],
               "pinned": False, "type": 0,
               "components": [{"type": 1, "components": [
                   {"type": 2, "style": 2, "label": "U1", "custom_id": "tessera:upscale:nosuchjob:0"},
                   {"type": 2, "style": 2, "label": "?", "custom_id": "tessera:teleport:abc:0"}]}]}
    missing = await bot.h.press("tessera:upscale:nosuchjob:0", message)
    last = bot.http.for_token(missing)[-1]
    assert last.ephemeral and "nosuchjob" in last.content
    stale = await bot.h.press("tessera:teleport:abc:0", message)
    last = bot.http.for_token(stale)[-1]
    assert last.ephemeral and "/show" in last.content


# ----- other commands -----------------------------------------------------------------------------------


async def test_upscale_and_variation_commands(bot: Bot) -> None:
    token, job_id = await imagine(bot, "a lighthouse")
    message_id = int(message_with(final_edit(bot.http.for_token(token)))["id"])
    link = f"https://discord.com/channels/{GUILD_ID}/{CHANNEL_ID}/{message_id}"
    await bot.h.run_command("upscale", {"job": link, "index": 3, "scale": 2})
    upscale = (await bot.jobs())[0]
    assert upscale.kind is JobKind.UPSCALE and upscale.parent_id == job_id
    assert upscale.parent_index == 2 and upscale.options["scale"] == 2
    await bot.finished(upscale.id)

    await bot.h.run_command("variation", {"job": job_id, "index": 1, "strength": "strong",
                                          "prompt": "a lighthouse in the snow"})
    remix = (await bot.jobs())[0]
    assert remix.kind is JobKind.VARIATION and remix.prompt_text == "a lighthouse in the snow"
    assert remix.options["strength"] == "strong" and remix.parent_index == 0
    await bot.finished(remix.id)

    interaction = await bot.h.run_command("variation", {"job": job_id})
    last = bot.http.for_token(interaction.token)[-1]
    assert last.ephemeral and "index" in last.content
    interaction = await bot.h.run_command("variation", {})
    last = bot.http.for_token(interaction.token)[-1]
    assert last.ephemeral and "job" in last.content


async def test_seed_is_private_and_defaults_to_the_last_job(bot: Bot) -> None:
    _, job_id = await imagine(bot, "a lighthouse --seed 1234")
    interaction = await bot.h.run_command("seed", {})
    calls = bot.http.for_token(interaction.token)
    assert calls[0].callback_type == 5 and calls[0].ephemeral
    assert calls[-1].ephemeral and "1234" in calls[-1].content and job_id in calls[-1].content
    assert "steps" in calls[-1].content and "sampler" in calls[-1].content
    model = bot.service.settings.model_id  # a folder on the operator's machine: named, its path kept private
    assert f"model: {Path(model).name}" in calls[-1].content and model not in calls[-1].content
    interaction = await bot.h.run_command("seed", {"job": "nope"}, user_id=OTHER_USER_ID)
    assert "There is no job" in bot.http.for_token(interaction.token)[-1].content
    interaction = await bot.h.run_command("seed", {}, user_id=OTHER_USER_ID)
    assert "no jobs yet" in bot.http.for_token(interaction.token)[-1].content


async def test_settings_menus_save_defaults(bot: Bot) -> None:
    interaction = await bot.h.run_command("settings", {})
    answer = bot.http.for_token(interaction.token)[-1]
    assert answer.ephemeral
    assert answer.custom_ids == [f"tessera:set:{f}"
                                 for f in ("quality", "aspect", "stylize", "sampler", "model", "private")]
    message = message_with(answer)
    token = await bot.h.press("tessera:set:aspect", message, component_type=3, values=["16:9"])
    assert bot.http.for_token(token)[0].callback_type == 7  # the menu message is updated in place
    await bot.h.press("tessera:set:quality", message, component_type=3, values=["0.5"])
    saved = await bot.service.storage.settings.user(USER_ID)
    assert saved.aspect == "16:9" and saved.quality == 0.5
    await bot.h.press("tessera:set:aspect", message, component_type=3, values=["default"])
    assert (await bot.service.storage.settings.user(USER_ID)).aspect is None
    bad = await bot.h.press("tessera:set:aspect", message, component_type=3, values=["7:1"])
    assert bot.http.for_token(bad)[-1].ephemeral
    # the saved default is used by the next /imagine
    await bot.h.press("tessera:set:aspect", message, component_type=3, values=["16:9"])
    _, job_id = await imagine(bot, "a wide sea")
    request = (await bot.service.storage.jobs.get(job_id)).request_json
    assert request["width"] > request["height"]


async def test_info_cancel_show_help(bot: Bot) -> None:
    bot.executor.gate.clear()
    await bot.h.run_command("imagine", {"prompt": "a slow cat"})
    await bot.h.run_command("imagine", {"prompt": "a waiting dog"})
    interaction = await bot.h.run_command("info", {})
    embed = bot.http.for_token(interaction.token)[-1].body["embeds"][0]
    text = json.dumps(embed)
    assert "Your jobs" in text and "a waiting dog" in text and "running" in text

    waiting = (await bot.jobs())[0]
    interaction = await bot.h.run_command("cancel", {})
    last = bot.http.for_token(interaction.token)[-1]
    assert last.ephemeral and waiting.id in last.content
    assert (await bot.service.storage.jobs.get(waiting.id)).state is JobState.CANCELLED
    interaction = await bot.h.run_command("cancel", {"job": (await bot.jobs())[1].id}, user_id=OTHER_USER_ID)
    assert "not yours" in bot.http.for_token(interaction.token)[-1].content
    bot.executor.gate.set()
    running = (await bot.jobs())[1]
    await bot.finished(running.id)

    interaction = await bot.h.run_command("show", {"job": running.id})
    final = final_edit(bot.http.for_token(interaction.token))
    assert final.custom_ids == ids(GRID_BUTTONS, running.id) and final.files
    new_id = int(message_with(final)["id"])
    assert (await bot.service.storage.jobs.find_by_message(new_id)).id == running.id
    interaction = await bot.h.run_command("show", {"job": waiting.id})
    assert "cancelled" in bot.http.for_token(interaction.token)[-1].content

    interaction = await bot.h.run_command("help", {})
    (answer,) = bot.http.for_token(interaction.token)
    assert answer.ephemeral and "--ar" in answer.body["embeds"][0]["description"]


async def test_job_autocomplete_lists_your_jobs(bot: Bot) -> None:
    from bot.interactions import job_choices

    _, job_id = await imagine(bot, "a lighthouse")
    interaction = bot.h.interaction(bot.h.command_payload("upscale", {"job": ""}))
    choices = await job_choices(interaction, "light")
    assert [c.value for c in choices] == [job_id] and "a lighthouse" in choices[0].name
    assert await job_choices(interaction, "zebra") == []


# ----- admin -----------------------------------------------------------------------------------------------


async def test_admin_commands_are_refused_to_others(bot: Bot) -> None:
    interaction = await bot.h.run_command("admin", {"action": "add", "word": "zeppelin"}, subcommand="banned")
    (answer,) = bot.http.for_token(interaction.token)
    assert answer.callback_type == 4 and answer.ephemeral and "Manage Server" in answer.content
    assert (await bot.service.storage.settings.guild(GUILD_ID)).banned_words == ()
    interaction = await bot.h.run_command("admin", {}, subcommand="show", guild_id=None)
    assert "server" in bot.http.for_token(interaction.token)[-1].content


async def test_admin_sets_server_rules(bot: Bot) -> None:
    admin = {"user_id": ADMIN_ID, "permissions": MANAGE_GUILD}
    await bot.h.run_command("admin", {"action": "add", "word": "Zeppelin"}, subcommand="banned", **admin)
    await bot.h.run_command("admin", {"waiting": 3}, subcommand="limit", **admin)
    await bot.h.run_command("admin", {"filter": True}, subcommand="nsfw", **admin)
    channel = {"id": str(OTHER_CHANNEL_ID), "type": 0, "name": "art", "guild_id": str(GUILD_ID), "position": 1,
               "permission_overwrites": [], "nsfw": False, "parent_id": None, "permissions": "0"}
    interaction = await bot.h.run_command("admin", {"action": "add", "channel": str(OTHER_CHANNEL_ID)},
                                          subcommand="channels", resolved={"channels": {str(OTHER_CHANNEL_ID): channel}},
                                          **admin)
    last = bot.http.for_token(interaction.token)[-1]
    assert last.ephemeral and f"<#{OTHER_CHANNEL_ID}>" in last.content
    settings = await bot.service.storage.settings.guild(GUILD_ID)
    assert settings.banned_words == ("zeppelin",) and settings.max_queued_per_user == 3
    assert settings.safety_checker is True and settings.allowed_channels == (OTHER_CHANNEL_ID,)
    # the rules apply: wrong channel, then the banned word in the right one
    interaction = await bot.h.run_command("imagine", {"prompt": "a cat"})
    assert f"<#{OTHER_CHANNEL_ID}>" in bot.http.for_token(interaction.token)[-1].content
    interaction = await bot.h.run_command("imagine", {"prompt": "a zeppelin"}, channel_id=OTHER_CHANNEL_ID)
    assert "zeppelin" in bot.http.for_token(interaction.token)[-1].content
    assert await bot.jobs() == []


async def test_priority_role_raises_priority(bot: Bot) -> None:
    role = 900_000_000_000_000_555
    await bot.service.storage.settings.save_guild(GuildSettings(GUILD_ID, priority_role_id=role))
    await bot.h.run_command("imagine", {"prompt": "a cat"}, roles=[role], resolved=None)
    await bot.h.run_command("imagine", {"prompt": "a dog"}, user_id=OTHER_USER_ID)
    dog, cat = await bot.jobs()
    assert cat.priority > dog.priority
    for job in (cat, dog):
        await bot.finished(job.id)



async def test_variation_of_an_uploaded_image(bot: Bot, monkeypatch: pytest.MonkeyPatch) -> None:
    import io

    from PIL import Image

    png = io.BytesIO()
    Image.new("RGB", (96, 64), (120, 30, 200)).save(png, format="PNG")
    fetched: list[str] = []

    async def from_cdn(url: str) -> bytes:  # attachments are downloaded from Discord's CDN
        fetched.append(url)
        return png.getvalue()

    monkeypatch.setattr(bot.h.client.http, "get_from_cdn", from_cdn)
    attachment = {"filename": "mine.png", "size": len(png.getvalue()), "content_type": "image/png",
                  "url": "https://cdn.discordapp.com/attachments/1/2/mine.png",
                  "proxy_url": "https://media.discordapp.net/attachments/1/2/mine.png"}
    interaction = await bot.h.run_command("variation", {"strength": "strong", "prompt": "in purple"},
                                          attachments={"image": attachment})
    job = await bot.only_job()
    assert fetched == [attachment["url"]]
    assert job.kind is JobKind.VARIATION and job.options["strength"] == "strong" and job.prompt_text == "in purple"
    await bot.finished(job.id)
    assert final_edit(bot.http.for_token(interaction.token)).custom_ids == ids(GRID_BUTTONS, job.id)
    both = await bot.h.run_command("variation", {"job": job.id, "index": 1}, attachments={"image": attachment})
    assert "not both" in bot.http.for_token(both.token)[-1].content

"""`/prefer`, `/admin style`, `/loras`, the `lora` option, drafts and ✨ Enhance, through raw
Interaction payloads against the real service (GPU work faked, as in the other bot tests)."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import discord
import pytest

from bot.interactions import lora_choices
from engine.jobs.model import JobKind
from engine.request import GenerationRequest
from tests.bot_helpers import Bot, start_bot
from tests.discord_harness import ADMIN_ID, GUILD_ID, MANAGE_GUILD, OTHER_USER_ID, USER_ID, message_with
from tests.test_bot import final_edit, imagine
from tests.test_bot_buttons import old_message


@pytest.fixture
def lora_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "loras"
    folder.mkdir()
    for i in range(12):
        (folder / f"style{i:02d}.safetensors").write_bytes(b"x" * (1000 + i))
    (folder / "style00.png").write_bytes(b"\x89PNG preview")
    (folder / "style01.png").write_bytes(b"x" * 2_000_000)  # too large to attach
    return folder


async def start(tiny_models: dict[str, Path], data_dir: Path, lora_dir: Path) -> Bot:
    model = tiny_models["sd15"]
    return await start_bot(model, data_dir, lora_dir=lora_dir, draft_model_id=str(model), draft_steps=2,
                           prompt_max_length=600)


@pytest.fixture
async def bot(tiny_models: dict[str, Path], data_dir: Path, lora_dir: Path) -> AsyncIterator[Bot]:
    running = await start(tiny_models, data_dir, lora_dir)
    yield running
    await running.close()


ANY_SUB = {"prefer": "suffix", "admin": "show"}  # a plain subcommand, for the payload's frame


async def run_nested(bot: Bot, name: str, group: str, sub: str, options: dict[str, Any] | None = None,
                     **kwargs: Any) -> discord.Interaction:
    """`/name group sub options…` (a subcommand in a subcommand group), as Discord sends it."""
    payload = bot.h.command_payload(name, None, subcommand=ANY_SUB[name], **kwargs)
    raw = [{"name": key, "type": 3, "value": value} for key, value in (options or {}).items()]
    payload["data"]["options"] = [{"name": group, "type": 2, "options": [{"name": sub, "type": 1, "options": raw}]}]
    interaction = bot.h.interaction(payload)
    tree = bot.h.client.tree  # type: ignore[attr-defined]
    try:
        await tree._call(interaction)
    except discord.app_commands.AppCommandError as error:
        await tree._dispatch_error(interaction, error)
    await bot.h.settle()
    return interaction


def button_message(custom_id: str) -> dict[str, Any]:
    """A message carrying one button (discord.py hands a press to an item found in its message)."""
    return old_message([{"type": 1, "components": [{"type": 2, "style": 2, "label": "x", "custom_id": custom_id}]}])


def said(bot: Bot, interaction: discord.Interaction) -> str:
    return "\n".join(c.content or "" for c in bot.http.for_token(interaction.token))


async def test_prefer_shortcuts_expand_in_imagine_and_survive_a_restart(
        tiny_models: dict[str, Path], data_dir: Path, lora_dir: Path) -> None:
    bot = await start(tiny_models, data_dir, lora_dir)
    try:
        done = await bot.h.run_command("prefer", {"text": "--ar 16:9"}, subcommand="suffix")
        assert "suffix is now `--ar 16:9`" in said(bot, done)
        done = await run_nested(bot, "prefer", "option", "set", {"name": "moody", "value": "dark fog --no sun"})
        assert "`--moody` now stands for `dark fog --no sun`" in said(bot, done)
        refused = await run_nested(bot, "prefer", "option", "set", {"name": "bad", "value": "x --sparkle"})
        answer = bot.http.for_token(refused.token)[-1]
        assert answer.ephemeral and "unknown parameter --sparkle" in (answer.content or "")
    finally:
        await bot.close()
    bot = await start(tiny_models, data_dir, lora_dir)  # restart: read back from SQLite
    try:
        listed = await run_nested(bot, "prefer", "option", "list")
        assert "`--moody` → `dark fog --no sun`" in said(bot, listed) and "suffix: `--ar 16:9`" in said(bot, listed)
        _, job_id = await imagine(bot, "a cat --moody")
        job = await bot.service.require_job(job_id)
        assert job.prompt_text == "a cat dark fog --no sun --ar 16:9"
        assert GenerationRequest.from_json(job.request_json or {}).negative == ("sun",)
        deleted = await run_nested(bot, "prefer", "option", "delete", {"name": "moody"})
        assert "Deleted `--moody`" in said(bot, deleted)
        refused = await bot.h.run_command("imagine", {"prompt": "a cat --moody"})
        assert "unknown parameter --moody" in said(bot, refused)
    finally:
        await bot.close()


async def test_admin_style_is_for_managers_of_the_server_and_expands_there(bot: Bot) -> None:
    refused = await run_nested(bot, "admin", "style", "add", {"name": "neon", "text": "neon lights --s 500"})
    assert "Manage Server" in said(bot, refused) and await bot.service.list_styles(GUILD_ID) == {}
    admin = {"user_id": ADMIN_ID, "permissions": MANAGE_GUILD}
    added = await run_nested(bot, "admin", "style", "add", {"name": "neon", "text": "neon lights --s 500"}, **admin)
    assert "`--style neon` now stands for" in said(bot, added)
    looping = await run_nested(bot, "admin", "style", "add", {"name": "loop", "text": "--style loop"}, **admin)
    assert "levels deep" in said(bot, looping)
    listed = await run_nested(bot, "admin", "style", "list", **admin)
    assert "`--style neon` → `neon lights --s 500`" in said(bot, listed) and "loop" not in said(bot, listed)
    _, job_id = await imagine(bot, "a city --style neon")
    assert (await bot.service.require_job(job_id)).prompt_text == "a city neon lights --s 500"
    await run_nested(bot, "admin", "style", "delete", {"name": "neon"}, **admin)
    assert await bot.service.list_styles(GUILD_ID) == {}


async def test_imagine_lora_option_and_settings_default_lora(bot: Bot) -> None:
    await bot.h.run_command("imagine", {"prompt": "a fox", "lora": "style03"})
    job_id = (await bot.jobs())[0].id
    await bot.finished(job_id)
    request = GenerationRequest.from_json((await bot.service.require_job(job_id)).request_json or {})
    assert request.loras == (("style03", 1.0),)
    refused = await bot.h.run_command("imagine", {"prompt": "a fox", "lora": "nope"})
    assert "no LoRA named nope" in said(bot, refused)
    saved = await bot.h.run_command("settings", {"lora": "style05"})
    assert "LoRA: **style05**" in json.dumps([c.body for c in bot.http.for_token(saved.token)])
    assert (await bot.service.user_settings(USER_ID)).lora == "style05"
    bad = await bot.h.run_command("settings", {"lora": "style5"})
    assert "no LoRA named `style5`" in said(bot, bad)
    bot.http.clear()
    _, job_id = await imagine(bot, "a fox")
    request = GenerationRequest.from_json((await bot.service.require_job(job_id)).request_json or {})
    assert request.loras == (("style05", 1.0),)
    seed = await bot.h.run_command("seed", {"job": job_id})
    assert "LoRAs: style05:1" in said(bot, seed)


async def test_lora_autocomplete_answers_in_time_with_1000_files(bot: Bot, lora_dir: Path) -> None:
    for i in range(1000):
        (lora_dir / f"bulk_{i:04d}.safetensors").write_bytes(b"")
    interaction = bot.h.interaction(bot.h.command_payload("imagine", {"prompt": "x"}))
    started = time.perf_counter()
    choices = await lora_choices(interaction, "BULK_01")  # first call lists the changed folder
    first = time.perf_counter() - started
    assert [c.value for c in choices] == [f"bulk_{i:04d}" for i in range(100, 125)]
    started = time.perf_counter()
    assert len(await lora_choices(interaction, "")) == 25
    again = time.perf_counter() - started
    assert first < 1.0 and again < 0.5, (first, again)  # Discord's window is 3 s
    assert [c.value for c in await lora_choices(interaction, "e0")] == [f"style{i:02d}" for i in range(10)]


async def test_loras_pages_with_previews_and_its_buttons_work_after_a_restart(
        tiny_models: dict[str, Path], data_dir: Path, lora_dir: Path) -> None:
    bot = await start(tiny_models, data_dir, lora_dir)
    try:
        shown = await bot.h.run_command("loras", {"query": "style"})
        (page,) = [c for c in bot.http.for_token(shown.token) if c.body.get("embeds")]
        assert page.ephemeral and "**12 LoRAs** matching `style` · page 1 of 3" in (page.content or "")
        titles = [e["title"] for e in page.body["embeds"]]
        assert titles == ["style00", "style01", "style02", "style03", "style04"]
        assert [name for name, _ in page.files] == ["preview_style00.png"]  # style01's is too large
        assert page.body["embeds"][0]["thumbnail"]["url"] == "attachment://preview_style00.png"
        assert page.custom_ids == ["tessera-l:0:style", "tessera-l:1:style"]
        message = message_with(page)
    finally:
        await bot.close()
    bot = await start(tiny_models, data_dir, lora_dir)
    try:
        token = await bot.h.press("tessera-l:1:style", message)
        (edit,) = [c for c in bot.http.for_token(token) if c.is_callback]
        assert "page 2 of 3" in (edit.content or "")
        token = await bot.h.press("tessera-l:2:style", button_message("tessera-l:2:style"))
        (edit,) = [c for c in bot.http.for_token(token) if c.is_callback]
        assert edit.callback_type == 7 and "page 3 of 3" in (edit.content or "")
        assert [e["title"] for e in edit.body["embeds"]] == ["style10", "style11"]
        assert edit.custom_ids == ["tessera-l:1:style", "tessera-l:2:style"]  # ◀ to page 2, ▶ (off) names page 3
        token = await bot.h.press("tessera-l:9999:zzz", button_message("tessera-l:9999:zzz"))  # a query nothing matches any more
        assert "No LoRA matches `zzz`" in "".join(c.content or "" for c in bot.http.for_token(token))
    finally:
        await bot.close()


async def test_draft_grid_says_draft_and_enhance_reruns_its_seeds_after_a_restart(
        tiny_models: dict[str, Path], data_dir: Path, lora_dir: Path) -> None:
    bot = await start(tiny_models, data_dir, lora_dir)
    try:
        token, plain_id = await imagine(bot, "a plain fox")
        plain = final_edit(bot.http.for_token(token))
        assert "Draft" not in (plain.content or "") and not any("enhance" in c for c in plain.custom_ids)
        token, draft_id = await imagine(bot, "a fox --draft --seed 5")
        grid = final_edit(bot.http.for_token(token))
        assert "**Draft**" in (grid.content or "")
        assert grid.custom_ids[-1] == f"tessera:enhance:{draft_id}:0" and len(grid.custom_ids) == 10
        draft = GenerationRequest.from_json((await bot.service.require_job(draft_id)).request_json or {})
        assert draft.draft and draft.steps == 2
        message = message_with(grid)
    finally:
        await bot.close()
    bot = await start(tiny_models, data_dir, lora_dir)
    try:
        await bot.h.press(f"tessera:enhance:{draft_id}:0", message, user_id=OTHER_USER_ID)  # a member uses it
        enhanced = (await bot.jobs())[0]
        assert enhanced.kind is JobKind.REROLL and enhanced.parent_id == draft_id and enhanced.user_id == OTHER_USER_ID
        full = GenerationRequest.from_json(enhanced.request_json or {})
        assert not full.draft and full.seed == 5 and full.steps > draft.steps
        await bot.finished(enhanced.id)
        # someone in another server may not use this job
        token = await bot.h.press(f"tessera:enhance:{draft_id}:0", message, user_id=OTHER_USER_ID,
                                  guild_id=GUILD_ID + 1)
        assert "not made in this server" in "".join(c.content or "" for c in bot.http.for_token(token))
        # a press on a grid that is not a draft (an id typed by hand) is refused in words
        token = await bot.h.press(f"tessera:enhance:{plain_id}:0", button_message(f"tessera:enhance:{plain_id}:0"))
        assert "only a draft" in "".join(c.content or "" for c in bot.http.for_token(token)).lower()
    finally:
        await bot.close()

"""`/help` lists every slash command within Discord's limits; `tessera commands` lists them all."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from pathlib import Path

import discord
import pytest

from bot.subcommands.commands import command_payloads
from commands import help as help_module
from engine.prompt import SYNTAX_HELP
from tests.bot_helpers import Bot, start_bot
from tests.discord_harness import ADMIN_ID, MANAGE_GUILD

SUBCOMMAND = 1


def invocations() -> list[str]:
    """Every slash command as users type it: `/name`, or `/group sub` for each subcommand."""
    found = []
    for payload in command_payloads():
        subs = [o["name"] for o in payload.get("options", []) if o["type"] == SUBCOMMAND]
        found.extend([f"/{payload['name']} {sub}" for sub in subs] or [f"/{payload['name']}"])
    return found


def text_of(messages: list[list[discord.Embed]]) -> str:
    return "\n".join(f"{e.title}\n{e.description}" for embeds in messages for e in embeds)


def assert_within_limits(messages: list[list[discord.Embed]]) -> None:
    assert messages and all(messages)
    for embeds in messages:
        assert len(embeds) <= 10
        assert sum(len(e) for e in embeds) <= 6000
        for embed in embeds:
            assert embed.title and len(embed.title) <= 256
            assert embed.description and len(embed.description) <= 4096


@pytest.fixture
async def bot(tiny_models: dict[str, Path], data_dir: Path) -> AsyncIterator[Bot]:
    running = await start_bot(tiny_models["sd15"], data_dir)
    yield running
    await running.close()


# ----- the text ----------------------------------------------------------------------------------


def test_help_lists_every_command_and_the_prompt_syntax() -> None:
    everything = invocations()
    assert {"/share", "/prompts search", "/prompts top", "/admin channels", "/help"} <= set(everything)
    for_admins = text_of(help_module.help_messages(admin=True))
    for_members = text_of(help_module.help_messages(admin=False))
    for command in everything:
        assert f"`{command}" in for_admins, command
        if not command.startswith("/admin"):
            assert f"`{command}" in for_members, command
    assert "/admin" not in for_members
    assert SYNTAX_HELP in for_members and SYNTAX_HELP in for_admins


@pytest.mark.parametrize("admin", [False, True])
def test_help_fits_in_one_message_within_discord_limits(admin: bool) -> None:
    messages = help_module.help_messages(admin=admin)
    assert len(messages) == 1
    assert_within_limits(messages)


def test_a_long_syntax_text_is_split_across_embeds_and_messages(monkeypatch: pytest.MonkeyPatch) -> None:
    long_text = "\n".join(f"line {n}: " + "x" * 90 for n in range(120))  # ~12,000 characters
    monkeypatch.setattr(help_module, "syntax_help", lambda: long_text)
    messages = help_module.help_messages(admin=True)
    assert len(messages) >= 2
    assert_within_limits(messages)
    pieces = [e.description for embeds in messages for e in embeds if e.title.startswith("How to write")]
    assert len(pieces) >= 3 and "\n".join(pieces) == long_text  # cut at line ends, nothing lost
    assert "`/admin show`" in text_of(messages)


def test_split_text_cuts_at_line_ends_and_cuts_an_overlong_line_hard() -> None:
    assert help_module.split_text("ab\ncd\nef", limit=5) == ["ab\ncd", "ef"]
    assert help_module.split_text("a" * 12, limit=5) == ["aaaaa", "aaaaa", "aa"]
    assert help_module.split_text("x\n" + "a" * 7 + "\ny", limit=5) == ["x", "aaaaa", "aa\ny"]
    assert help_module.split_text("short", limit=5) == ["short"]


# ----- through Discord -------------------------------------------------------------------------------


async def test_help_command_answers_privately_admins_see_admin_commands(bot: Bot) -> None:
    interaction = await bot.h.run_command("help", {})
    (answer,) = bot.http.for_token(interaction.token)
    assert answer.callback_type == 4 and answer.ephemeral
    shown = "\n".join(e["description"] for e in answer.body["embeds"])
    assert "--ar" in shown and "`/share" in shown and "`/prompts search" in shown and "/admin" not in shown

    interaction = await bot.h.run_command("help", {}, user_id=ADMIN_ID, permissions=MANAGE_GUILD)
    (answer,) = bot.http.for_token(interaction.token)
    shown = "\n".join(e["description"] for e in answer.body["embeds"])
    assert "`/admin channels" in shown and "`/admin gallery" in shown

    interaction = await bot.h.run_command("help", {}, guild_id=None)  # in DMs nobody is a server manager
    (answer,) = bot.http.for_token(interaction.token)
    assert "/admin" not in json.dumps(answer.body["embeds"], ensure_ascii=False)


async def test_help_too_big_for_one_message_continues_in_followups(bot: Bot, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(help_module, "syntax_help", lambda: "\n".join("y" * 100 for _ in range(100)))
    interaction = await bot.h.run_command("help", {})
    calls = bot.http.for_token(interaction.token)
    assert calls[0].callback_type == 4 and len(calls) >= 2
    assert all(c.ephemeral for c in calls)
    for call in calls:
        embeds = call.body["embeds"]
        assert len(embeds) <= 10 and all(len(e["description"]) <= 4096 for e in embeds)
        assert sum(len(e.get("title", "")) + len(e["description"]) for e in embeds) <= 6000


# ----- `tessera commands` -----------------------------------------------------------------------------


def test_tessera_commands_prints_every_command_with_share_and_prompts(capsys: pytest.CaptureFixture[str]) -> None:
    from bot.cli import main

    assert main(["commands", "--compact"]) == 0
    printed = json.loads(capsys.readouterr().out)
    names = [c["name"] for c in printed]
    assert names == ["imagine", "upscale", "variation", "edit", "seed", "settings", "info", "cancel", "show", "help",
                     "admin", "share", "prompts", "prefer", "loras", "blend", "describe", "shorten"]
    by_name = {c["name"]: c for c in printed}
    assert [o["name"] for o in by_name["prompts"]["options"]] == ["search", "top"]
    assert [o["name"] for o in by_name["edit"]["options"]] == ["zoom", "pan", "square", "region"]
    assert {o["name"] for o in by_name["share"]["options"]} == {"job", "index", "title"}
    assert [(o["name"], o["type"]) for o in by_name["blend"]["options"][:5]] == [(f"image{i}", 11) for i in range(1, 6)]
    for command in printed:
        assert re.fullmatch(r"[a-z]{1,32}", command["name"]) and 1 <= len(command["description"]) <= 100

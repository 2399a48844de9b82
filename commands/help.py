"""`/help`: the prompt syntax with examples, and what each command and button does.

The answer is private and made of embeds, packed to Discord's limits (4,096 characters per
embed description, 6,000 per message, 10 embeds per message): a section too long for one
embed is split at line ends, and a message that would be too big becomes two. Server
managers also see the `/admin` commands. `tests/test_bot_help.py` checks that every
registered slash command is listed here. Each feature writes its own lines (its module's `HELP`).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass

import discord
from discord import app_commands

from bot.client import FEATURES, TesseraClient
from bot.interactions import guarded, is_admin
from engine.prompt import SYNTAX_HELP

EMBED_DESCRIPTION_LIMIT = 4096
MESSAGE_EMBEDS_LIMIT = 6000  # all titles, descriptions, fields and footers of one message together
EMBEDS_PER_MESSAGE = 10
COLOUR = discord.Colour.blurple()

HELP = {"commands": "`/help` — this page"}
JOB_NOTE = "-# `job` is a job id (shown under each result) or a link to the result message; most commands take your latest job."
PARTS = ("commands", "buttons", "admin")


def feature_help(part: str) -> str:
    """Every feature's lines for one part of `/help`, in the order the client loads them.

    Each feature keeps its own help beside its commands (its module's `HELP`); the features are
    found by name, as the client loads them, so this module imports none of them."""
    lines: list[str] = []
    for name in FEATURES:
        text = getattr(importlib.import_module(name), "HELP", {}).get(part)
        if text:
            lines.append(text)
    return "\n".join(lines)


@dataclass(frozen=True)
class Section:
    title: str
    text: str


def syntax_help() -> str:
    return str(SYNTAX_HELP)


def sections(*, admin: bool) -> list[Section]:
    """What `/help` shows, in order; the `/admin` part only to server managers."""
    out = [Section("How to write a prompt", syntax_help()),
           Section("Commands", f"{feature_help('commands')}\n{JOB_NOTE}"),
           Section("Buttons", feature_help("buttons"))]
    if admin:
        out.append(Section("Server settings (`/admin`)", feature_help("admin")))
    return out


def split_text(text: str, limit: int = EMBED_DESCRIPTION_LIMIT) -> list[str]:
    """`text` in pieces of at most `limit` characters, cut at line ends where possible."""
    pieces: list[str] = []
    current = ""
    for line in text.split("\n"):
        while len(line) > limit:  # a single line longer than an embed: cut it hard
            if current:
                pieces.append(current)
                current = ""
            pieces.append(line[:limit])
            line = line[limit:]
        candidate = f"{current}\n{line}" if current else line
        if len(candidate) > limit:
            pieces.append(current)
            current = line
        else:
            current = candidate
    if current:
        pieces.append(current)
    return pieces


def help_messages(*, admin: bool) -> list[list[discord.Embed]]:
    """The embeds of each message `/help` sends (usually one message)."""
    embeds: list[discord.Embed] = []
    for section in sections(admin=admin):
        for number, piece in enumerate(split_text(section.text)):
            title = section.title if number == 0 else f"{section.title} (continued)"
            embeds.append(discord.Embed(title=title[:256], description=piece, colour=COLOUR))
    messages: list[list[discord.Embed]] = [[]]
    for embed in embeds:
        current = messages[-1]
        if current and (len(current) >= EMBEDS_PER_MESSAGE
                        or sum(map(len, current)) + len(embed) > MESSAGE_EMBEDS_LIMIT):
            messages.append([])
        messages[-1].append(embed)
    return messages


@app_commands.command(name="help", description="How to write prompts, with examples, and what each command does")
async def help_command(interaction: discord.Interaction) -> None:
    async with guarded(interaction):
        messages = help_messages(admin=is_admin(interaction))
        await interaction.response.send_message(embeds=messages[0], ephemeral=True)
        for embeds in messages[1:]:
            await interaction.followup.send(embeds=embeds, ephemeral=True)


def setup(client: TesseraClient) -> None:
    client.tree.add_command(help_command)

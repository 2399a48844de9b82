"""`/help`: the prompt syntax with examples, and what each command and button does.

The answer is private and made of embeds, packed to Discord's limits (4,096 characters per
embed description, 6,000 per message, 10 embeds per message): a section too long for one
embed is split at line ends, and a message that would be too big becomes two. Server
managers also see the `/admin` commands. `tests/test_bot_help.py` checks that every
registered slash command is listed here.
"""

from __future__ import annotations

from dataclasses import dataclass

import discord
from discord import app_commands

from commands.common import guarded, is_admin
from engine.prompt import SYNTAX_HELP

EMBED_DESCRIPTION_LIMIT = 4096
MESSAGE_EMBEDS_LIMIT = 6000  # all titles, descriptions, fields and footers of one message together
EMBEDS_PER_MESSAGE = 10
COLOUR = discord.Colour.blurple()

COMMANDS_HELP = """\
`/imagine prompt [image]` — four images from a prompt (an attached image starts them)
`/upscale job index [scale]` — one image, larger (U1–U4 do the same)
`/variation job index [strength] [prompt]` — four variations (V1–V4); with `prompt:` it remixes
`/variation image:` — variations of a picture you upload
`/seed [job]` — the seed and every parameter of a job (or react ✉️ to a result)
`/share job index [title]` — post one image to this server's gallery channel (❤️ Share does the same)
`/prompts search query [author] [sort]` — search the shared prompts: words, "a phrase", word*, a OR b, -word
`/prompts top [period]` — the most liked shared images today, this week or of all time
`/settings` — your defaults (quality, aspect, stylize, sampler, model) and whether your results are private
`/info` — the queue and your jobs · `/cancel [job]` — stop a waiting or running job
`/show job` — post a finished result again, with its buttons · `/help` — this page
-# `job` is a job id (shown under each result) or a link to the result message; most commands take your latest job."""

BUTTONS_HELP = """\
**Under a grid** U1–U4 upscale · V1–V4 vary (subtle) · 🔄 re-roll with a new seed
**Under an upscale** 🪄 Vary (Subtle) / Vary (Strong) · 🔍 Upscale ×2 · ❤️ Share · 🗑️ Delete (yours only)
**On a gallery post** 🔁 Remix (edit the prompt) · 🎲 Same prompt · 📋 Prompt · 👍 Like · 🗑️ Remove"""

ADMIN_HELP = """\
Only members with the Manage Server permission see and use these.
`/admin show` — this server's Tessera settings
`/admin channels add|remove|clear [channel]` — where Tessera may make images (none listed: everywhere)
`/admin limit waiting` — how many waiting jobs one person may have
`/admin banned add|remove|clear [word]` — words refused in prompts, on top of the built-in list
`/admin nsfw filter` — run the safety checker on images made here
`/admin gallery [channel]` — the channel ❤️ Share and `/share` post to (empty: sharing off)
`/admin priority [role]` — members with this role go ahead in the queue
`/admin web` — the link to this server's page of the web gallery (when the operator turned it on)"""


@dataclass(frozen=True)
class Section:
    title: str
    text: str


def syntax_help() -> str:
    return str(SYNTAX_HELP)


def sections(*, admin: bool) -> list[Section]:
    """What `/help` shows, in order; the `/admin` part only to server managers."""
    out = [Section("How to write a prompt", syntax_help()), Section("Commands", COMMANDS_HELP),
           Section("Buttons", BUTTONS_HELP)]
    if admin:
        out.append(Section("Server settings (`/admin`)", ADMIN_HELP))
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


def embed_size(embed: discord.Embed) -> int:
    """The characters Discord counts towards a message's 6,000 (what `len(embed)` counts)."""
    return len(embed)


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
                        or sum(map(embed_size, current)) + embed_size(embed) > MESSAGE_EMBEDS_LIMIT):
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


def setup(tree: app_commands.CommandTree) -> None:
    tree.add_command(help_command)

"""`/help`: the prompt syntax with examples, and what each command and button does."""

from __future__ import annotations

import discord
from discord import app_commands

from commands.common import guarded, reply

COMMANDS_HELP = """\
**Commands**
`/imagine prompt [image]` — four images from a prompt
`/upscale job index [scale]` — one image, larger (U1–U4 do the same)
`/variation job index [strength] [prompt]` — four variations (V1–V4); with `prompt:` it remixes
`/variation image:` — variations of a picture you upload
`/seed [job]` — the seed and parameters (or react ✉️ to a result)
`/settings` — your default quality, aspect, stylize, sampler and model
`/info` — the queue and your jobs · `/cancel [job]` — stop a job · `/show job` — post a result again

**Buttons** U1–U4 upscale · V1–V4 vary · 🔄 re-roll · under an upscale: Vary (Subtle/Strong), Upscale ×2, ❤️ Share, 🗑 Delete"""

FALLBACK_SYNTAX = """\
**Prompt syntax** (Midjourney's)
`a lighthouse at dusk --ar 16:9 --no fog --seed 7 --q 2`
• `--ar W:H` aspect ratio · `--no a, b` leave out · `--seed N` repeatable noise · `--q .25-2` quality
• `--stylize N` (`--s`) · `--chaos 0-100` · `--tile` seamless · `--repeat N` several jobs · `--stop 10-100`
• `cat::2 dog::1` weights · `{red, blue} car` makes one job per choice"""


def syntax_help() -> str:
    try:
        from engine.prompt import SYNTAX_HELP
    except ImportError:
        return FALLBACK_SYNTAX
    return str(SYNTAX_HELP)


@app_commands.command(name="help", description="How to write prompts, with examples, and what each command does")
async def help_command(interaction: discord.Interaction) -> None:
    async with guarded(interaction):
        text = f"{syntax_help()}\n\n{COMMANDS_HELP}"
        embed = discord.Embed(title="Tessera", description=text[:4096], colour=discord.Colour.blurple())
        await reply(interaction, embed=embed, ephemeral=True)


def setup(tree: app_commands.CommandTree) -> None:
    tree.add_command(help_command)

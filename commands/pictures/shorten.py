"""`/shorten prompt`: which words of a prompt matter to the model (weighed by its own text
encoder, shown with weights) and up to five shorter prompts, each with a button that opens it
in an editable form and runs /imagine.

Each /shorten is a queue job (`JobKind.SHORTEN`) run where the model is (the GPU thread or a
Redis worker): its message shows the queue position, and the job tracker shows its answer
through `show_answer` once it is done, also after a restart.

Restart-proof: five prompts do not fit in a 100-character custom_id, so they are kept in
SQLite under a 16-hex key (`Tessera.keep_shortened`) and the buttons carry the key:
`tessera:shorten:run:<key>:<1-5>`.
"""

from __future__ import annotations

import re
from typing import Any

import discord
from discord import app_commands

from bot.buttons import GREY, PREFIX
from bot.interactions import (
    check_channel,
    defer_public,
    guarded,
    member_priority,
    post_jobs,
    quick_parse,
    service_of,
)
from bot.render import escape, mention
from bot.service import Tessera
from commands.pictures.forms import open_form
from engine.diffusion.shorten import Shortening
from engine.jobs.model import Job

RUN = "run"
KEY = r"[0-9a-f]{16}"
BAR = 10  # characters of a weight bar


def shorten_id(key: str, number: int) -> str:
    return f"{PREFIX}:shorten:{RUN}:{key}:{number}"


def weight_bar(weight: float) -> str:
    filled = max(0, min(BAR, round(weight * BAR)))
    return "█" * filled + "░" * (BAR - filled)


def shortening_text(shortening: Shortening, job: Job) -> str:
    """Words heaviest first with their weights, then the shorter prompts, within 2000 characters."""
    lines = [f"**What matters in this prompt** - {mention(job.user_id)} (1.00 = the word that changes the picture most)"]
    ranked = sorted(shortening.words, key=lambda w: -w.weight)
    for word in ranked[:20]:
        lines.append(f"`{weight_bar(word.weight)}` {word.weight:.2f} {escape(word.word[:40])}")
    if len(ranked) > 20:
        lines.append(f"…and {len(ranked) - 20} lighter words")
    if shortening.prompts:
        lines.append("**Shorter prompts** (press a number to edit and imagine it)")
        room = (2000 - 40 - sum(len(line) + 1 for line in lines)) // len(shortening.prompts) - 8
        for number, prompt in enumerate(shortening.prompts, start=1):
            shown = prompt if len(prompt) <= room else prompt[:max(room - 1, 0)] + "…"
            lines.append(f"**{number}.** {escape(shown)}")
    else:
        lines.append("This prompt is already as short as it can be.")
    lines.append(f"-# job `{job.id}`")
    return "\n".join(lines)[:2000]


async def show_answer(service: Tessera, job: Job, result: dict) -> tuple[str, discord.ui.View]:
    """A finished shorten job's message: word weights, the shorter prompts (kept for their
    buttons first) and buttons 1-5."""
    shortening = Shortening.from_json(result)
    view = discord.ui.View(timeout=None)
    if shortening.prompts:
        key = await service.keep_shortened(shortening)
        for number in range(1, len(shortening.prompts[:5]) + 1):
            view.add_item(ShortenButton(key, number))
    return shortening_text(shortening, job), view


@app_commands.command(name="shorten", description="Which words of a prompt matter, and shorter prompts to try")
@app_commands.describe(prompt="The prompt to analyse (parameters such as --ar are kept)")
async def shorten(interaction: discord.Interaction, prompt: str) -> None:
    async with guarded(interaction):
        await quick_parse(interaction, prompt)  # a malformed prompt is refused before anything is shown
        await defer_public(interaction)
        await check_channel(interaction)
        job = await service_of(interaction).shorten(user_id=interaction.user.id, prompt_text=prompt,
                                                    guild_id=interaction.guild_id, channel_id=interaction.channel_id,
                                                    priority=await member_priority(interaction))
        await post_jobs(interaction, [job])


class ShortenButton(discord.ui.DynamicItem[discord.ui.Button[Any]],
                    template=rf"{PREFIX}:shorten:{RUN}:(?P<key>{KEY}):(?P<number>[1-5])"):
    """1-5 under a /shorten answer: open that shorter prompt in a form (anyone may: the
    prompt is public text, and the job made is the presser's own)."""

    def __init__(self, key: str, number: int) -> None:
        super().__init__(discord.ui.Button(label=str(number), style=GREY, custom_id=shorten_id(key, number)))
        self.key, self.number = key, number

    @classmethod
    async def from_custom_id(cls, interaction: discord.Interaction, item: discord.ui.Item[Any],
                             match: re.Match[str], /) -> ShortenButton:
        return cls(match["key"], int(match["number"]))

    async def callback(self, interaction: discord.Interaction) -> None:
        async with guarded(interaction):
            await open_form(interaction, f"s:{self.key}", self.number)


"""`/upscale job index [scale]` and the U1–U4 / Upscale ×2 buttons: one image, made larger
with Real-ESRGAN (×4 by default, ×2 on request or when chaining an upscale again)."""

from __future__ import annotations

from typing import ClassVar, Literal

import discord
from discord import app_commands

from bot.buttons import GREY, JobButton, Look, job_template
from bot.client import TesseraClient
from bot.interactions import (
    actor_of,
    check_channel,
    defer_public,
    find_job,
    guarded,
    job_choices,
    member_priority,
    post_jobs,
    require_done,
    require_grid,
    service_of,
)
from engine.jobs.model import JobKind

UPSCALE = "upscale"  # U1–U4 on a grid
UPSCALE_MORE = "upmore"  # Upscale ×2 on an upscale (chained)

HELP = {"commands": "`/upscale job index [scale]` — one image, larger (U1–U4 do the same)",
        "buttons": "**U1–U4** under a grid: upscale that image ×4 · **🔍 Upscale ×2** under an upscale: again, larger"}


async def run_upscale(interaction: discord.Interaction, job_id: str, index: int, scale: int) -> None:
    await defer_public(interaction)
    await check_channel(interaction)
    job = await service_of(interaction).upscale(user_id=interaction.user.id, job_id=job_id, index=index, scale=scale,
                                                guild_id=interaction.guild_id, channel_id=interaction.channel_id,
                                                priority=await member_priority(interaction), actor=actor_of(interaction))
    await post_jobs(interaction, [job])


@app_commands.command(name="upscale", description="Upscale one image of a grid with Real-ESRGAN")
@app_commands.describe(job="Job id or a link to the result message", index="Which image: 1-4, left to right, top to bottom",
                       scale="How much larger (default ×4)")
@app_commands.autocomplete(job=job_choices)
async def upscale(interaction: discord.Interaction, job: str, index: app_commands.Range[int, 1, 4],
                  scale: Literal[2, 4] = 4) -> None:
    async with guarded(interaction) as guard:
        await defer_public(interaction)
        found = await find_job(interaction, job)
        guard.job_id = found.id
        require_done(found, "upscaling")
        if found.kind is JobKind.UPSCALE:
            await run_upscale(interaction, found.id, 0, scale)  # chain: upscale the upscale
            return
        require_grid(found, index - 1)
        await run_upscale(interaction, found.id, index - 1, scale)


class UpscaleButton(JobButton, template=job_template(UPSCALE, UPSCALE_MORE)):
    """U1–U4 under a grid (×4), and 🔍 Upscale ×2 under an upscale (chained, within UPSCALE_MAX_SIDE)."""

    actions: ClassVar[tuple[str, ...]] = (UPSCALE, UPSCALE_MORE)

    @classmethod
    def look(cls, action: str, index: int) -> Look:
        return Look(f"U{index + 1}") if action == UPSCALE else Look("Upscale ×2", "🔍", GREY)

    async def press(self, interaction: discord.Interaction) -> None:
        if self.action == UPSCALE:
            await run_upscale(interaction, self.job_id, self.index, 4)
        else:
            await run_upscale(interaction, self.job_id, 0, 2)


def setup(client: TesseraClient) -> None:
    client.tree.add_command(upscale)
    client.buttons.add(UpscaleButton)
    client.buttons.place("grid", row=0, order=0,
                         make=lambda job_id, _: [UpscaleButton(UPSCALE, job_id, i) for i in range(4)])
    client.buttons.place("upscale", row=0, order=2, make=lambda job_id, _: [UpscaleButton(UPSCALE_MORE, job_id, 0)])

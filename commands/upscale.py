"""`/upscale job index [scale]` and the U1–U4 / Upscale ×2 buttons: one image, made larger
with Real-ESRGAN (×4 by default, ×2 on request or when chaining an upscale again)."""

from __future__ import annotations

from typing import Literal

import discord
from discord import app_commands

from commands.common import (
    actor_of,
    check_channel,
    defer_public,
    find_job,
    guarded,
    job_choices,
    post_jobs,
    require_done,
    require_grid,
    service_of,
)
from commands.imagine import member_priority
from engine.jobs.model import JobKind


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


async def press_upscale(interaction: discord.Interaction, job_id: str, index: int) -> None:
    """U1–U4."""
    await run_upscale(interaction, job_id, index, 4)


async def press_upscale_more(interaction: discord.Interaction, job_id: str, index: int) -> None:
    """Upscale ×2 under an upscaled image: chain, within UPSCALE_MAX_SIDE."""
    await run_upscale(interaction, job_id, 0, 2)


def setup(tree: app_commands.CommandTree) -> None:
    tree.add_command(upscale)

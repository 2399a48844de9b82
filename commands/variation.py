"""`/variation`: four new takes on one image — of a grid (V1–V4), of an upscale (Vary buttons),
or of a picture you upload. With `prompt:` it is Midjourney's remix: vary with an edited prompt."""

from __future__ import annotations

from typing import ClassVar, Literal

import discord
from discord import app_commands

from bot.buttons import JobButton, Look, job_template
from bot.client import TesseraClient
from bot.interactions import (
    actor_of,
    check_channel,
    check_upload,
    defer_public,
    download_uploads,
    find_job,
    guarded,
    job_choices,
    member_priority,
    post_jobs,
    require_done,
    require_grid,
    service_of,
)
from engine.errors import TesseraError
from engine.jobs.model import JobKind

VARY = "vary"  # V1–V4 on a grid (subtle)
VARY_SUBTLE = "vsubtle"  # 🪄 on an upscale
VARY_STRONG = "vstrong"  # 🪄 on an upscale

HELP = {"commands": "`/variation job index [strength] [prompt]` — four variations (V1–V4); with `prompt:` it remixes\n"
                    "`/variation image:` — variations of a picture you upload",
        "buttons": "**V1–V4** under a grid: subtle variations · **🪄 Vary (Subtle) / Vary (Strong)** under an upscale"}

Strength = Literal["subtle", "strong"]


async def run_vary(interaction: discord.Interaction, job_id: str, index: int, strength: Strength,
                   prompt: str | None = None) -> None:
    await defer_public(interaction)
    await check_channel(interaction)
    job = await service_of(interaction).vary(user_id=interaction.user.id, job_id=job_id, index=index,
                                             strength=strength, prompt_text=prompt or None,
                                             guild_id=interaction.guild_id, channel_id=interaction.channel_id,
                                             priority=await member_priority(interaction), actor=actor_of(interaction))
    await post_jobs(interaction, [job])


@app_commands.command(name="variation", description="Variations of one image: from a job, or of an image you upload")
@app_commands.describe(job="Job id or a link to the result message", index="Which image: 1-4 (not needed for an upscale)",
                       strength="Subtle keeps the composition; strong changes more", prompt="Remix: vary with this prompt instead",
                       image="Or: an image of your own to vary")
@app_commands.autocomplete(job=job_choices)
async def variation(interaction: discord.Interaction, job: str | None = None,
                    index: app_commands.Range[int, 1, 4] | None = None, strength: Strength = "subtle",
                    prompt: str | None = None, image: discord.Attachment | None = None) -> None:
    async with guarded(interaction) as guard:
        if image is not None and job:
            raise TesseraError("Give either a job or an image, not both.")
        if image is None and not job:
            raise TesseraError("Say what to vary: `job:` and `index:` for one of your images, or attach `image:`.")
        service = service_of(interaction)
        if image is not None:
            check_upload(image, service.settings.image_prompt_max_bytes)  # a wrong file: refused before anything
        await defer_public(interaction)
        if image is not None:
            await check_channel(interaction)
            (data,) = await download_uploads(interaction, [image])
            made = await service.vary_upload(user_id=interaction.user.id, image_bytes=data, prompt_text=prompt or "",
                                             strength=strength, guild_id=interaction.guild_id,
                                             channel_id=interaction.channel_id,
                                             priority=await member_priority(interaction))
            await post_jobs(interaction, [made])
            return
        found = await find_job(interaction, job)
        guard.job_id = found.id
        require_done(found, "a variation")
        if found.kind is JobKind.UPSCALE:
            await run_vary(interaction, found.id, 0, strength, prompt)
            return
        if index is None:
            raise TesseraError("Which image of the grid? Add `index:` 1-4 (left to right, top to bottom).")
        require_grid(found, index - 1)
        await run_vary(interaction, found.id, index - 1, strength, prompt)


class VaryButton(JobButton, template=job_template(VARY, VARY_SUBTLE, VARY_STRONG)):
    """V1–V4 under a grid (subtle), 🪄 Vary (Subtle) / Vary (Strong) under an upscale."""

    actions: ClassVar[tuple[str, ...]] = (VARY, VARY_SUBTLE, VARY_STRONG)

    @classmethod
    def look(cls, action: str, index: int) -> Look:
        if action == VARY:
            return Look(f"V{index + 1}")
        return Look("Vary (Subtle)" if action == VARY_SUBTLE else "Vary (Strong)", "🪄")

    async def press(self, interaction: discord.Interaction) -> None:
        if self.action == VARY:
            await run_vary(interaction, self.job_id, self.index, "subtle")
        else:
            await run_vary(interaction, self.job_id, 0, "strong" if self.action == VARY_STRONG else "subtle")


def setup(client: TesseraClient) -> None:
    client.tree.add_command(variation)
    client.buttons.add(VaryButton)
    client.buttons.place("grid", row=1, order=0, make=lambda job_id, _: [VaryButton(VARY, job_id, i) for i in range(4)])
    client.buttons.place("upscale", row=0, order=0, make=lambda job_id, _: [VaryButton(VARY_SUBTLE, job_id, 0),
                                                                           VaryButton(VARY_STRONG, job_id, 0)])

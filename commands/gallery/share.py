"""`/share job index [title]` and ❤️ Share under an upscale: post one image to this server's
gallery channel.

`/share` does the same as the button, for any finished image (a grid image by its number,
or an upscale). The gallery channel is the server's (`/admin gallery #channel`), else
`GALLERY_CHANNEL_ID`. See `bot.gallery` for the rules (once per image, private results).
"""

from __future__ import annotations

from typing import ClassVar

import discord
from discord import app_commands

from bot import gallery
from bot.buttons import JobButton, Look, job_template
from bot.interactions import (
    client_of,
    defer_private,
    find_job,
    guarded,
    job_choices,
    reply,
    require_done,
    service_of,
)
from engine.errors import TesseraError
from engine.jobs.model import JobKind

SHARE = "share"  # ❤️ Share on an upscale


@app_commands.command(name="share", description="Post one of your images to this server's gallery channel")
@app_commands.describe(job="Job id or a link to the result message",
                       index="Which image: 1-4, left to right, top to bottom (an upscale has one)",
                       title="A title for the gallery post")
@app_commands.autocomplete(job=job_choices)
async def share(interaction: discord.Interaction, job: str, index: app_commands.Range[int, 1, 4],
                title: app_commands.Range[str, 1, 100] | None = None) -> None:
    async with guarded(interaction) as guard:
        service = service_of(interaction)
        channel_id = await gallery.gallery_channel_for(service, interaction.guild_id)
        await defer_private(interaction)
        found = await find_job(interaction, job)
        guard.job_id = found.id
        require_done(found, "sharing")
        image_index = 0 if found.kind is JobKind.UPSCALE else index - 1
        post = await gallery.share_image(client_of(interaction), service, job=found, index=image_index,
                                         sharer_id=interaction.user.id, channel_id=channel_id,
                                         guild_id=interaction.guild_id, title=title,
                                         source_url=gallery.job_link(found))
        await reply(interaction, f"Shared to <#{channel_id}>: {post.url}", ephemeral=True)



async def press_share(interaction: discord.Interaction, job_id: str, index: int) -> None:
    """❤️ Share under an upscale: post it to the gallery and tell the presser where."""
    service = service_of(interaction)
    channel_id = await gallery.gallery_channel_for(service, interaction.guild_id)  # before deferring: one quick answer
    await defer_private(interaction)
    job = await service.job(job_id)
    if job is None:
        raise TesseraError(f"There is no job `{job_id}` any more, so there is nothing to share.")
    source = interaction.message.jump_url if interaction.message is not None else gallery.job_link(job)
    post = await gallery.share_image(client_of(interaction), service, job=job, index=index,
                                     sharer_id=interaction.user.id, channel_id=channel_id,
                                     guild_id=interaction.guild_id, source_url=source)
    await reply(interaction, f"Shared to <#{channel_id}>: {post.url}", ephemeral=True)


class ShareButton(JobButton, template=job_template(SHARE)):
    """❤️ Share under an upscale."""

    actions: ClassVar[tuple[str, ...]] = (SHARE,)

    @classmethod
    def look(cls, action: str, index: int) -> Look:
        return Look("Share", "❤️")

    async def press(self, interaction: discord.Interaction) -> None:
        await press_share(interaction, self.job_id, self.index)

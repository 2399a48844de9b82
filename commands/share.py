"""`/share job index [title]`: post one image to this server's gallery channel.

The same as ❤️ Share under an upscale, for any finished image (a grid image by its number,
or an upscale). The gallery channel is the server's (`/admin gallery #channel`), else
`GALLERY_CHANNEL_ID`. See `bot.gallery` for the rules (once per image, private results).
"""

from __future__ import annotations

import discord
from discord import app_commands

from bot import gallery
from commands.common import defer_private, find_job, guarded, job_choices, reply, require_done, service_of
from engine.jobs.model import JobKind


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
        post = await gallery.share_image(interaction.client, service, job=found, index=image_index,
                                         sharer_id=interaction.user.id, channel_id=channel_id,
                                         guild_id=interaction.guild_id, title=title,
                                         source_url=gallery.job_link(found))
        await reply(interaction, f"Shared to <#{channel_id}>: {post.url}", ephemeral=True)


def setup(tree: app_commands.CommandTree) -> None:
    tree.add_command(share)

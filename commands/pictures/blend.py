"""`/blend image1 image2 [image3 image4 image5] [dimensions]`: a grid whose images mix 2-5
pictures (their IP-Adapter embeddings averaged), with no text needed."""

from __future__ import annotations

from typing import Literal

import discord
from discord import app_commands

from bot.interactions import (
    check_channel,
    check_upload,
    defer_public,
    download_uploads,
    guarded,
    member_priority,
    post_jobs,
    service_of,
)
from engine.errors import TesseraError

BLEND_MIN, BLEND_MAX = 2, 5  # Midjourney's /blend; the service refuses any other count too

Dimensions = Literal["portrait", "square", "landscape"]


@app_commands.command(name="blend", description="Mix 2-5 pictures into four new images (no prompt needed)")
@app_commands.describe(image1="A picture", image2="Another picture", image3="Optional: a third picture",
                       image4="Optional: a fourth picture", image5="Optional: a fifth picture",
                       dimensions="Shape of the results: portrait 2:3, square 1:1 or landscape 3:2")
async def blend(interaction: discord.Interaction, image1: discord.Attachment, image2: discord.Attachment | None = None,
                image3: discord.Attachment | None = None, image4: discord.Attachment | None = None,
                image5: discord.Attachment | None = None, dimensions: Dimensions = "square") -> None:
    async with guarded(interaction):
        pictures = [a for a in (image1, image2, image3, image4, image5) if a is not None]
        if not BLEND_MIN <= len(pictures) <= BLEND_MAX:
            raise TesseraError(f"/blend mixes {BLEND_MIN} to {BLEND_MAX} pictures; you attached {len(pictures)}. "
                               "Attach at least `image1` and `image2`.")
        service = service_of(interaction)
        max_bytes = service.settings.image_prompt_max_bytes
        for picture in pictures:  # every free check before any download or deferral
            check_upload(picture, max_bytes)
        await defer_public(interaction)
        await check_channel(interaction)
        data = await download_uploads(interaction, pictures)
        job = await service.blend(user_id=interaction.user.id, images=data, dimensions=dimensions,
                                  guild_id=interaction.guild_id, channel_id=interaction.channel_id,
                                  priority=await member_priority(interaction))
        await post_jobs(interaction, [job])

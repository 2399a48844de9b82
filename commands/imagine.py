"""`/imagine prompt [image]`: make a 2×2 grid from a prompt — and 🔄, which makes it again.

The answer comes at once: a prompt error is answered before anything else (parsing is pure
and takes well under a millisecond), everything else after a deferral. A prompt that makes
more than four jobs (permutations, `--repeat`) first asks its author to confirm.
"""

from __future__ import annotations

import time

import discord
from discord import app_commands

from bot.client import PendingPrompt
from bot.service import PRIORITY_ROLE_BOOST, NeedsConfirmation
from bot.views import confirm_view
from commands.common import (
    actor_of,
    check_channel,
    client_of,
    defer_public,
    guarded,
    guild_rules,
    post_jobs,
    remove_placeholder,
    service_of,
)
from engine.errors import TesseraError
from engine.imaging.decode import ALLOWED_CONTENT_TYPES, check_attachment
from engine.prompt import parse

IMAGE_TYPES = ALLOWED_CONTENT_TYPES  # the decoder's rule; kept under this name for feature modules


async def member_priority(interaction: discord.Interaction) -> int:
    """A boost for members holding the server's priority role (0 for everyone else)."""
    guild = await guild_rules(interaction)
    if guild is None or not isinstance(interaction.user, discord.Member):
        return 0
    role = guild.priority_role_id
    # `_roles` holds every role id of the member, even roles not in the cache (a partial guild).
    held = set(getattr(interaction.user, "_roles", ())) | {r.id for r in interaction.user.roles}
    if role is None or role not in held:
        return 0

    return PRIORITY_ROLE_BOOST


def check_image(image: discord.Attachment | None, max_bytes: int) -> str | None:
    """The URL of an attached image prompt, after the checks Discord lets us make for free
    (declared type and size, the same rule and words as uploads); the fetch decodes it with
    the one checked decoder."""
    if image is None:
        return None
    check_attachment(image.filename, image.content_type, image.size, max_bytes)
    return image.url


def quick_parse(interaction: discord.Interaction, text: str) -> None:
    """Refuse a malformed prompt before deferring (the service parses it again, authoritatively)."""

    settings = service_of(interaction).settings
    parse(text, settings.prompt_limits)


@app_commands.command(name="imagine", description="Make four images from a prompt (Midjourney syntax: --ar, --no, --seed, …)")
@app_commands.describe(prompt="What to draw, with optional parameters like --ar 16:9 --no text --seed 7",
                       image="An image to start from (image prompt)")
async def imagine(interaction: discord.Interaction, prompt: str, image: discord.Attachment | None = None) -> None:
    async with guarded(interaction):
        quick_parse(interaction, prompt)
        await defer_public(interaction)
        await start(interaction, prompt, image_url=check_image(image, service_of(interaction).settings.image_prompt_max_bytes))


async def start(interaction: discord.Interaction, prompt: str, *, image_url: str | None, confirmed: bool = False) -> None:
    """Queue a prompt for the interaction's user and show its jobs (or ask to confirm)."""

    await check_channel(interaction)
    service = service_of(interaction)
    try:
        jobs = await service.imagine(user_id=interaction.user.id, prompt_text=prompt, guild_id=interaction.guild_id,
                                     channel_id=interaction.channel_id, image_url=image_url, confirmed=confirmed,
                                     priority=await member_priority(interaction))
    except NeedsConfirmation as ask:
        key = client_of(interaction).pending.put(PendingPrompt(
            user_id=interaction.user.id, prompt_text=prompt, guild_id=interaction.guild_id,
            channel_id=interaction.channel_id, image_url=image_url, count=ask.count, created=time.monotonic()))
        await remove_placeholder(interaction)
        await interaction.followup.send(
            f"This prompt makes **{ask.count} jobs** (one message each). Run them all?",
            view=confirm_view(key, ask.count), ephemeral=True)
        return
    await post_jobs(interaction, jobs)


async def press_confirm(interaction: discord.Interaction, key: str, count: int) -> None:
    """"Run all N jobs" under a confirmation."""
    pending = client_of(interaction).pending
    held = pending.peek(key)
    if held is not None and held.user_id != interaction.user.id:
        raise TesseraError("Only the person who wrote this prompt can confirm it.")
    prompt = pending.pop(key)
    if prompt is None:
        raise TesseraError("This confirmation has expired or was already used. Run `/imagine` again.")
    await defer_public(interaction)
    await start(interaction, prompt.prompt_text, image_url=prompt.image_url, confirmed=True)


async def press_dismiss(interaction: discord.Interaction, key: str, index: int) -> None:
    held = client_of(interaction).pending.peek(key)
    if held is not None and held.user_id == interaction.user.id:
        client_of(interaction).pending.pop(key)
    await interaction.response.edit_message(content="Not queued.", view=None)


async def press_reroll(interaction: discord.Interaction, job_id: str, index: int) -> None:
    """🔄: the same prompt and parameters with a new seed, for whoever pressed it."""
    await defer_public(interaction)
    await check_channel(interaction)
    job = await service_of(interaction).reroll(user_id=interaction.user.id, job_id=job_id,
                                               guild_id=interaction.guild_id, channel_id=interaction.channel_id,
                                               priority=await member_priority(interaction), actor=actor_of(interaction))
    await post_jobs(interaction, [job])


def setup(tree: app_commands.CommandTree) -> None:
    tree.add_command(imagine)

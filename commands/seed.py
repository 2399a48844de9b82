"""`/seed [job]` and the ✉️ reaction: the seed and every parameter of a job.

`/seed` answers privately (ephemeral). Reacting ✉️ to a result sends the same text by DM,
as Midjourney does; when the user's DMs are closed, a short notice in the channel (deleted
after a few seconds) says so, since a reaction has no interaction to answer privately.
"""

from __future__ import annotations

import logging

import discord
from discord import app_commands

from bot import render
from bot.authorization import Act, Actor
from bot.client import TesseraClient
from bot.interactions import actor_of, defer_private, find_job, guarded, job_choices, reply, service_of
from engine.errors import TesseraError

log = logging.getLogger(__name__)

ENVELOPES = frozenset({"✉️", "✉", "📩", "📨"})
NOTICE_SECONDS = 15
_DMS_CLOSED = 50007  # "Cannot send messages to this user"

HELP = {"commands": "`/seed [job]` — the seed and every parameter of a job (or react ✉️ to a result)"}


@app_commands.command(name="seed", description="The seed and all parameters of a job (default: your last one)")
@app_commands.describe(job="Job id or a link to the result message")
@app_commands.autocomplete(job=job_choices)
async def seed(interaction: discord.Interaction, job: str | None = None) -> None:
    async with guarded(interaction) as guard:
        await defer_private(interaction)
        found = await find_job(interaction, job)
        guard.job_id = found.id
        await service_of(interaction).authorize(actor_of(interaction), found, Act.SEED)
        await reply(interaction, render.seed_text(found), ephemeral=True)


async def on_envelope_reaction(client: TesseraClient, payload: discord.RawReactionActionEvent) -> None:
    """✉️ on a result message: DM the reacting user that job's seed and parameters."""
    if payload.emoji.is_custom_emoji() or payload.emoji.name not in ENVELOPES:
        return
    if client.user is not None and payload.user_id == client.user.id:
        return
    service = client.service
    if service is None:
        return
    job = await service.job_for_message(payload.message_id)
    if job is None:
        return
    try:  # a reaction carries no permissions: whoever reacts is a member of the message's server
        await service.authorize(Actor(user_id=payload.user_id, guild_id=payload.guild_id), job, Act.SEED)
    except TesseraError as refused:  # no interaction to answer privately, and a notice would be public
        log.info("not sending the seed of job %s to user %s: %s", job.id, payload.user_id, refused)
        return
    try:
        dm = await client.create_dm(discord.Object(id=payload.user_id))
        await dm.send(render.seed_text(job))
    except discord.Forbidden as exc:
        if exc.code != _DMS_CLOSED:
            log.warning("could not DM user %s the seed of job %s: %s", payload.user_id, job.id, exc)
        channel = client.get_partial_messageable(payload.channel_id, guild_id=payload.guild_id)
        try:
            await channel.send(f"<@{payload.user_id}> I can't send you DMs, so here's how to see the seed: "
                               f"`/seed job:{job.id}` (it answers only you). To get DMs from me, allow direct "
                               f"messages from server members in this server's privacy settings.",
                               delete_after=NOTICE_SECONDS,
                               allowed_mentions=discord.AllowedMentions(users=[discord.Object(payload.user_id)]))
        except discord.HTTPException as notice_error:
            log.warning("could not tell user %s that their DMs are closed: %s", payload.user_id, notice_error)


def setup(client: TesseraClient) -> None:
    client.tree.add_command(seed)
    client.reaction_handlers.append(on_envelope_reaction)

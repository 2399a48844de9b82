"""`/cancel [job]`: stop a waiting job at once, or a running one at its next step.

Without a job it cancels your most recent waiting or running one. A server's managers may
cancel any job made in that server (and only there: see `bot.authorization`).
"""

from __future__ import annotations

import discord
from discord import app_commands

from bot.client import TesseraClient
from bot.interactions import actor_of, defer_private, find_job, guarded, job_choices, reply, service_of
from engine.errors import TesseraError
from engine.jobs.model import JobState

HELP = {"commands": "`/cancel [job]` — stop a waiting or running job"}


@app_commands.command(name="cancel", description="Cancel a waiting or running job (default: your latest)")
@app_commands.describe(job="Job id or a link to its message")
@app_commands.autocomplete(job=job_choices)
async def cancel(interaction: discord.Interaction, job: str | None = None) -> None:
    async with guarded(interaction) as guard:
        await defer_private(interaction)
        service = service_of(interaction)
        if job:
            found = await find_job(interaction, job)
        else:
            active = [j for j in await service.recent_jobs(interaction.user.id, limit=50)
                      if not j.state.finished]
            if not active:
                raise TesseraError("You have no waiting or running jobs to cancel.")
            found = active[0]
        guard.job_id = found.id
        cancelled = await service.cancel(actor=actor_of(interaction), job_id=found.id)
        if cancelled.state is JobState.CANCELLED:
            text = f"Cancelled job `{cancelled.id}`."
        else:
            text = f"Job `{cancelled.id}` will stop at its next step."
        await reply(interaction, text, ephemeral=True)


def setup(client: TesseraClient) -> None:
    client.tree.add_command(cancel)

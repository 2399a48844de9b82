"""`/info`: the queue, your waiting and running jobs, and whether the GPU worker is ready."""

from __future__ import annotations

import discord
from discord import app_commands

from bot.client import TesseraClient
from bot.interactions import defer_private, guarded, reply, service_of
from engine.jobs.model import JobState

_MAX_LISTED = 10
FIELD_LIMIT = 1024  # Discord's limit for one embed field's value


HELP = {"commands": "`/info` — the queue and your jobs"}


def fit_lines(lines: list[str], limit: int) -> str:
    """As many whole lines as fit in `limit` characters, then how many did not (Discord refuses
    an embed field over 1,024 characters, and ten jobs with long prompts reach that)."""
    if len("\n".join(lines)) <= limit:
        return "\n".join(lines)
    shown: list[str] = []
    for number, line in enumerate(lines):
        rest = len(lines) - number - 1
        more = f"\n… and {rest} more" if rest else ""
        if len("\n".join([*shown, line])) + len(more) > limit:
            shown.append(f"… and {len(lines) - number} more")
            break
        shown.append(line)
    return "\n".join(shown)


def _seconds(value: float) -> str:
    if value <= 0:
        return "—"
    return f"{value:.0f} s" if value < 120 else f"{value / 60:.1f} min"


@app_commands.command(name="info", description="The queue, your jobs and the GPU worker's status")
async def info(interaction: discord.Interaction) -> None:
    async with guarded(interaction):
        await defer_private(interaction)
        service = service_of(interaction)
        stats = service.queue_stats()
        mine = await service.active_jobs(interaction.user.id, limit=_MAX_LISTED)
        embed = discord.Embed(title="Tessera", colour=discord.Colour.blurple())
        worker = ("ready" if stats.model_ready else "warming up (jobs queue meanwhile)") if stats.workers or not stats.model_ready \
            else "no GPU worker connected"
        embed.add_field(name="GPU", value=f"{worker}\nworkers: {stats.workers} · busy {stats.busy_fraction:.0%}", inline=False)
        embed.add_field(name="Queue", value=(f"{stats.queued} waiting · {stats.running} running\n"
                                             f"mean wait {_seconds(stats.mean_wait_s)} · mean run {_seconds(stats.mean_run_s)}"),
                        inline=False)
        lines = []
        for job in mine[:_MAX_LISTED]:
            where = "running" if job.state is JobState.RUNNING else f"#{service.queue_position(job.id) or '?'} in line"
            prompt = " ".join(job.prompt_text.split())[:60]
            lines.append(f"`{job.id}` {job.kind.value} — {where} — {discord.utils.escape_markdown(prompt)}")
        embed.add_field(name="Your jobs", value=fit_lines(lines, FIELD_LIMIT) or "none waiting or running",
                        inline=False)
        await reply(interaction, embed=embed, ephemeral=True)


def setup(client: TesseraClient) -> None:
    client.tree.add_command(info)

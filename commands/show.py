"""`/show job`: post a finished job's result again, with working buttons — and 🗑 Delete.

Useful when the original message was deleted, its channel is gone, or the job finished while
the bot could not post. The new message becomes the job's message (for ✉️ and links).
"""

from __future__ import annotations

import contextlib
import io
from typing import ClassVar

import discord
from discord import app_commands

from bot import render
from bot.authorization import Act
from bot.buttons import RED, JobButton, Look, job_template
from bot.client import TesseraClient
from bot.interactions import (
    actor_of,
    check_channel,
    client_of,
    defer_public,
    find_job,
    guarded,
    job_choices,
    require_done,
    service_of,
    tracker_of,
)
from engine.errors import TesseraError
from engine.jobs.model import JobKind

DELETE = "delete"  # 🗑 Delete on an upscale

HELP = {"commands": "`/show job` — post a finished result again, with its buttons",
        "buttons": "**🗑️ Delete** under an upscale: remove the message (yours, or a server manager's)"}


@app_commands.command(name="show", description="Post a finished job's result again, with its buttons")
@app_commands.describe(job="Job id or a link to the result message")
@app_commands.autocomplete(job=job_choices)
async def show(interaction: discord.Interaction, job: str) -> None:
    async with guarded(interaction) as guard:
        await defer_public(interaction)
        await check_channel(interaction)
        found = await find_job(interaction, job)
        guard.job_id = found.id
        service = service_of(interaction)
        await service.authorize(actor_of(interaction), found, Act.SHOW)
        require_done(found, "showing a result")
        if found.kind.answers_text and found.result_json is not None:  # /describe, /shorten: their answer again
            text, view = await client_of(interaction).buttons.render_answer(found, found.result_json)
            message = await interaction.edit_original_response(content=text, view=view)
            await tracker_of(interaction).record_message(found.id, interaction.channel_id, message.id)
            return
        upload = await service.result_upload(found.id)
        suffix = f"_u{(found.parent_index or 0) + 1}" if found.kind is JobKind.UPSCALE else ""
        name = render.file_name(found.prompt_text, found.id, upload.mime, suffix=suffix)
        message = await interaction.edit_original_response(
            content=render.done_text(found), attachments=[discord.File(io.BytesIO(upload.data), filename=name)],
            view=client_of(interaction).buttons.result_view(render.view_kind(found), found.id,
                                                             render.picture_size(upload.data)))
        await tracker_of(interaction).record_message(found.id, interaction.channel_id, message.id)


async def press_delete(interaction: discord.Interaction, job_id: str) -> None:
    """🗑 under an upscale: remove the message (its owner, or a manager of the job's own server).

    The stored job and its files stay (the gallery and `/show` may still use them)."""
    service = service_of(interaction)
    job = await service.job(job_id)
    if job is None:
        raise TesseraError("This image's job is gone; a moderator can delete the message.")
    await service.authorize(actor_of(interaction), job, Act.DELETE)
    await interaction.response.defer()
    with contextlib.suppress(discord.NotFound):  # already gone: that is what was asked
        await interaction.delete_original_response()


class DeleteButton(JobButton, template=job_template(DELETE)):
    """🗑 Delete under an upscale (it still removes a message whose job is gone, so no job check)."""

    actions: ClassVar[tuple[str, ...]] = (DELETE,)
    needs_job: ClassVar[bool] = False

    @classmethod
    def look(cls, action: str, index: int) -> Look:
        return Look("Delete", "🗑️", RED)

    async def press(self, interaction: discord.Interaction) -> None:
        await press_delete(interaction, self.job_id)


def setup(client: TesseraClient) -> None:
    client.tree.add_command(show)
    client.buttons.add(DeleteButton)
    client.buttons.place("upscale", row=1, order=10, make=lambda job_id, _: [DeleteButton(DELETE, job_id, 0)])

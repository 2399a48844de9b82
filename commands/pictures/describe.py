"""`/describe image`: four prompts for a picture in Midjourney's style, each ending with the
picture's own `--ar`. Buttons 1-4 under the answer open the prompt in an editable form that
runs /imagine; 🔄 describes the same picture again with the next-best phrases.

Each describe is a queue job (`JobKind.DESCRIBE`): its message shows the queue position like
any job's, and the job tracker shows its answer through `show_answer` once it is done, also
after a restart. Restart-proof: the upload is stored content-addressed under DATA_DIR/inputs and the buttons
carry its sha256 and the 🔄 count (`tessera:describe:use:<sha256>:<offset>:<1-4>`,
`tessera:describe:again:<sha256>:<offset>`); the four prompts of each answer are kept in
SQLite (`Tessera.suggested`), so a press after any restart finds its prompt.
"""

from __future__ import annotations

import re
from typing import Any

import discord
from discord import app_commands

from bot.buttons import GREY, PREFIX
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
from bot.render import escape, mention
from bot.service import Tessera
from commands.pictures.forms import open_form
from engine.errors import TesseraError
from engine.jobs.answers import DESCRIBE_AGAIN_MAX
from engine.jobs.model import Job
from engine.vision.describe import Description

USE, AGAIN = "use", "again"
DIGEST = r"[0-9a-f]{64}"
NUMBERS = ("1️⃣", "2️⃣", "3️⃣", "4️⃣")


def describe_id(action: str, digest: str, offset: int, number: int = 0) -> str:
    tail = f":{number}" if action == USE else ""
    return f"{PREFIX}:describe:{action}:{digest}:{offset}{tail}"


def description_text(description: Description, offset: int, job: Job) -> str:
    again = f" (🔄 {offset})" if offset else ""
    lines = [f"**Four prompts for this picture**{again} - {mention(job.user_id)} · `--ar {description.aspect}`"]
    # A caption is the captioner's (or a Redis worker's) text: shown escaped, never as a ping or a masked link.
    lines += [f"{NUMBERS[i]} {escape(prompt[:400])}" for i, prompt in enumerate(description.prompts[:4])]
    lines.append(f"-# Press 1-4 to edit a prompt and imagine it, 🔄 for four more · job `{job.id}`")
    return "\n".join(lines)[:2000]


def description_view(digest: str, offset: int, count: int) -> discord.ui.View:
    view = discord.ui.View(timeout=None)
    for number in range(1, min(count, 4) + 1):
        view.add_item(DescribeButton(USE, digest, offset, number))
    if offset < DESCRIBE_AGAIN_MAX:  # the jobs' own bound on 🔄; no button past it
        view.add_item(DescribeButton(AGAIN, digest, offset + 1))
    return view


async def show_answer(service: Tessera, job: Job, result: dict) -> tuple[str, discord.ui.View]:
    """A finished describe job's message: its four prompts (kept for the 1-4 buttons first, so
    no button is ever shown before its prompt can be found) and its buttons."""
    description = Description.from_json(result)
    digest, offset = str(job.options.get("digest", "")), int(job.options.get("offset", 0))
    await service.keep_description(digest, offset, description)
    return description_text(description, offset, job), description_view(digest, offset, len(description.prompts))


async def describe_again(interaction: discord.Interaction, digest: str, offset: int) -> None:
    """Queue a describe of the kept picture for the presser and show it like any job."""
    await defer_public(interaction)
    await check_channel(interaction)
    job = await service_of(interaction).describe_kept(
        digest, offset, user_id=interaction.user.id, guild_id=interaction.guild_id,
        channel_id=interaction.channel_id, priority=await member_priority(interaction))
    await post_jobs(interaction, [job])


@app_commands.command(name="describe", description="Four prompts for a picture, in Midjourney's style")
@app_commands.describe(image="The picture to describe (PNG, JPEG, GIF or WebP)")
async def describe(interaction: discord.Interaction, image: discord.Attachment) -> None:
    async with guarded(interaction):
        service = service_of(interaction)
        max_bytes = service.settings.image_prompt_max_bytes
        check_upload(image, max_bytes)  # a wrong file is refused before anything is shown
        await defer_public(interaction)
        await check_channel(interaction)
        (data,) = await download_uploads(interaction, [image])
        job = await service.describe(user_id=interaction.user.id, image_bytes=data,
                                     guild_id=interaction.guild_id, channel_id=interaction.channel_id,
                                     priority=await member_priority(interaction))
        await post_jobs(interaction, [job])


class DescribeButton(discord.ui.DynamicItem[discord.ui.Button[Any]],
                     template=rf"{PREFIX}:describe:(?P<action>{USE}|{AGAIN}):(?P<digest>{DIGEST}):"
                              rf"(?P<offset>\d{{1,4}})(?::(?P<number>[1-4]))?"):
    """1-4 (open the prompt in a form) and 🔄 (describe again) under a /describe answer.
    Anyone may press them: the prompts are public text, and the job made is the presser's own."""

    def __init__(self, action: str, digest: str, offset: int, number: int = 0) -> None:
        label, emoji = (str(number), None) if action == USE else (None, "🔄")
        super().__init__(discord.ui.Button(label=label, emoji=emoji, style=GREY,
                                           custom_id=describe_id(action, digest, offset, number)))
        self.action, self.digest, self.offset, self.number = action, digest, offset, number

    @classmethod
    async def from_custom_id(cls, interaction: discord.Interaction, item: discord.ui.Item[Any],
                             match: re.Match[str], /) -> DescribeButton:
        return cls(match["action"], match["digest"], int(match["offset"]), int(match["number"] or 0))

    async def callback(self, interaction: discord.Interaction) -> None:
        async with guarded(interaction):
            service = service_of(interaction)
            if self.action == USE and self.number:
                service.kept_picture(self.digest)  # a pruned picture: say so, not "no prompts"
                await open_form(interaction, f"d:{self.digest}:{self.offset}", self.number)
            elif self.action == AGAIN and not self.number:
                await describe_again(interaction, self.digest, self.offset)
            else:  # a hand-made id: "use" without a number or "again" with one
                raise TesseraError("This button no longer does anything; run `/describe` again.")

"""`/imagine prompt [image] [lora] [sref] [cref]`: make a 2×2 grid from a prompt — and 🔄, which makes it again.

The answer comes at once: a prompt error is answered before anything else (parsing is pure
and takes well under a millisecond), everything else after a deferral. A prompt that makes
more than four jobs (permutations, `--repeat`) first asks its author to confirm.
"""

from __future__ import annotations

from typing import ClassVar

import discord
from discord import app_commands

from bot.buttons import BLURPLE, GREEN, JobButton, Look, job_template
from bot.client import TesseraClient
from bot.interactions import (
    actor_of,
    check_channel,
    check_upload,
    client_of,
    defer_public,
    guarded,
    lora_choices,
    member_priority,
    post_jobs,
    quick_parse,
    service_of,
    start_prompt,
)
from engine.errors import TesseraError

REROLL = "reroll"  # 🔄 on a grid
CONFIRM = "confirm"  # run a prompt that makes more than 4 jobs; "job" is a confirmation key, index the count
DISMISS = "dismiss"  # do not run it
ENHANCE = "enhance"  # ✨ Enhance under a draft grid: the same seeds at full quality

HELP = {"commands": "`/imagine prompt [image] [lora] [sref] [cref]` — four images from a prompt (an attached "
                    "`image` starts them; an attached `sref` or `cref` picture works like a `--sref` or `--cref` "
                    "link; `lora` adds `--lora name:1`, see `/loras`; `--draft` draws a fast few-step draft)",
        "buttons": "**🔄** under a grid: the same prompt again with a new seed · **✨ Enhance** under a draft: the "
                   "same seeds at full quality"}


@app_commands.command(name="imagine", description="Make four images from a prompt (Midjourney syntax: --ar, --no, --seed, …)")
@app_commands.describe(prompt="What to draw, with optional parameters like --ar 16:9 --no text --seed 7",
                       image="An image to start from (image prompt)",
                       lora="A LoRA from /loras (adds --lora name:1 to the prompt)",
                       sref="A style reference picture (like --sref)",
                       cref="A character reference picture (like --cref)")
@app_commands.autocomplete(lora=lora_choices)
async def imagine(interaction: discord.Interaction, prompt: str, image: discord.Attachment | None = None,
                  lora: app_commands.Range[str, 1, 64] | None = None, sref: discord.Attachment | None = None,
                  cref: discord.Attachment | None = None) -> None:
    async with guarded(interaction):
        if lora:
            prompt = with_lora(prompt, lora)
        max_bytes = service_of(interaction).settings.image_prompt_max_bytes
        # Every attachment's free checks (declared type and size) before any deferral or work;
        # the service counts the pictures against the prompt's caps and fetches them like links.
        for attached in (image, sref, cref):
            if attached is not None:
                check_upload(attached, max_bytes)
        await quick_parse(interaction, prompt)
        await defer_public(interaction)
        await start_prompt(interaction, prompt, image_url=image.url if image else None,
                           style_urls=(sref.url,) if sref else (), character_urls=(cref.url,) if cref else ())


def with_lora(prompt: str, name: str) -> str:
    """The prompt with `--lora name:1` added among its parameters (the parser checks the name
    against LORA_DIR, and an odd one is refused with the usual message)."""
    return f"{prompt.rstrip()} --lora {name.strip()}:1"


async def press_enhance(interaction: discord.Interaction, job_id: str) -> None:
    """✨ Enhance: the draft's seeds, prompt and size at full quality, for whoever pressed it."""
    await defer_public(interaction)
    await check_channel(interaction)
    job = await service_of(interaction).enhance(user_id=interaction.user.id, job_id=job_id,
                                                guild_id=interaction.guild_id, channel_id=interaction.channel_id,
                                                priority=await member_priority(interaction),
                                                actor=actor_of(interaction))
    await post_jobs(interaction, [job])


async def press_confirm(interaction: discord.Interaction, key: str) -> None:
    """"Run all N jobs" under a confirmation."""
    pending = client_of(interaction).pending
    held = pending.peek(key)
    if held is not None and held.user_id != interaction.user.id:
        raise TesseraError("Only the person who wrote this prompt can confirm it.")
    prompt = pending.pop(key)
    if prompt is None:
        raise TesseraError("This confirmation has expired or was already used. Run `/imagine` again.")
    await defer_public(interaction)
    await start_prompt(interaction, prompt.prompt_text, image_url=prompt.image_url, style_urls=prompt.style_urls,
                       character_urls=prompt.character_urls, confirmed=True)


async def press_dismiss(interaction: discord.Interaction, key: str) -> None:
    held = client_of(interaction).pending.peek(key)
    if held is not None and held.user_id == interaction.user.id:
        client_of(interaction).pending.pop(key)
    await interaction.response.edit_message(content="Not queued.", view=None)


async def press_reroll(interaction: discord.Interaction, job_id: str) -> None:
    """🔄: the same prompt and parameters with a new seed, for whoever pressed it."""
    await defer_public(interaction)
    await check_channel(interaction)
    job = await service_of(interaction).reroll(user_id=interaction.user.id, job_id=job_id,
                                               guild_id=interaction.guild_id, channel_id=interaction.channel_id,
                                               priority=await member_priority(interaction), actor=actor_of(interaction))
    await post_jobs(interaction, [job])


class RerollButton(JobButton, template=job_template(REROLL)):
    """🔄 under a grid."""

    actions: ClassVar[tuple[str, ...]] = (REROLL,)

    @classmethod
    def look(cls, action: str, index: int) -> Look:
        return Look(None, "🔄")

    async def press(self, interaction: discord.Interaction) -> None:
        await press_reroll(interaction, self.job_id)


class EnhanceButton(JobButton, template=job_template(ENHANCE)):
    """✨ Enhance under a draft grid (`tessera:enhance:<job>:0`)."""

    actions: ClassVar[tuple[str, ...]] = (ENHANCE,)

    @classmethod
    def look(cls, action: str, index: int) -> Look:
        return Look("Enhance", "✨", BLURPLE)

    async def press(self, interaction: discord.Interaction) -> None:
        await press_enhance(interaction, self.job_id)


class ConfirmButton(JobButton, template=job_template(CONFIRM, DISMISS)):
    """"Run all N jobs" / "Cancel" under a prompt that makes many jobs; the `job` part of the
    custom_id is the confirmation's key (kept in memory: a press after a restart is told so)."""

    actions: ClassVar[tuple[str, ...]] = (CONFIRM, DISMISS)
    names_job: ClassVar[bool] = False
    needs_job: ClassVar[bool] = False

    @classmethod
    def look(cls, action: str, index: int) -> Look:
        return Look(f"Run all {index} jobs", None, GREEN) if action == CONFIRM else Look("Cancel")

    async def press(self, interaction: discord.Interaction) -> None:
        if self.action == CONFIRM:
            await press_confirm(interaction, self.job_id)
        else:
            await press_dismiss(interaction, self.job_id)


def setup(client: TesseraClient) -> None:
    client.tree.add_command(imagine)
    client.buttons.add(RerollButton, EnhanceButton, ConfirmButton)
    client.buttons.place("grid", row=0, order=10, make=lambda job_id, _: [RerollButton(REROLL, job_id, 0)])
    client.buttons.place("draft", row=2, order=0, make=lambda job_id, _: [EnhanceButton(ENHANCE, job_id, 0)])
    client.buttons.place("confirm", row=0, order=0, make=lambda key, count: [ConfirmButton(CONFIRM, key, count),
                                                                            ConfirmButton(DISMISS, key, 0)])

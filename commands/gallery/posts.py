"""The buttons on a gallery post and the 🔁 Remix modal; every meaning lives in the `custom_id`.

Gallery post buttons are `tessera-g:<action>:<entry id>` (🔁 Remix, 🎲 Same prompt, 📋 Prompt,
👍 Like, 🗑 Remove); search and top lists page with `tessera-g:pg:<page ref>` (see
`commands.gallery.prompts.PageRef`). The prefix is not `tessera:` so these never match a job
button's template (`bot.buttons`). Like the job buttons they are `DynamicItem`s registered by
the feature's `setup`, so a post from last month still works after any restart.
"""

from __future__ import annotations

import logging
import re
import secrets
from collections.abc import Awaitable, Callable
from enum import StrEnum
from typing import Any

import discord

from bot.authorization import Act
from bot.gallery import MESSAGE_LIMIT, image_facts, paste_text, prompt_with_seed, remove_share
from bot.interactions import (
    Guard,
    PromptForm,
    actor_of,
    check_channel,
    defer_public,
    guarded,
    member_priority,
    post_jobs,
    reply,
    service_of,
    submit_prompt_form,
)
from bot.service import Tessera
from engine.errors import TesseraError
from storage.models import GalleryEntry

log = logging.getLogger(__name__)

PREFIX = "tessera-g"
REMIX_MODAL = f"{PREFIX}:remixmodal:"  # + entry id and a random tag
REMIX_PROMPT = f"{PREFIX}:remixprompt"


class GalleryAction(StrEnum):
    REMIX = "remix"  # open the remix modal; the edited prompt runs as the presser's job
    SAME = "same"  # the same request, a new seed, for the presser
    PROMPT = "prompt"  # the prompt and parameters, ephemeral, ready to paste
    LIKE = "like"  # toggle the presser's like; the count is on the button
    DELETE = "delete"  # the author or a server manager removes the share


_LOOKS: dict[str, tuple[str | None, str, discord.ButtonStyle]] = {
    GalleryAction.REMIX: ("Remix", "🔁", discord.ButtonStyle.primary),
    GalleryAction.SAME: ("Same prompt", "🎲", discord.ButtonStyle.secondary),
    GalleryAction.PROMPT: ("Prompt", "📋", discord.ButtonStyle.secondary),
    GalleryAction.LIKE: ("0", "👍", discord.ButtonStyle.success),
    GalleryAction.DELETE: (None, "🗑️", discord.ButtonStyle.danger),
}


def gallery_id(action: str, entry_id: int) -> str:
    return f"{PREFIX}:{action}:{entry_id}"


class GalleryButton(discord.ui.DynamicItem[discord.ui.Button[Any]],
                    template=rf"{PREFIX}:(?P<action>[a-z]{{1,12}}):(?P<entry>\d{{1,19}})"):
    """A button on a gallery post (or a search result's Remix)."""

    def __init__(self, action: str, entry_id: int, *, label: str | None = None, row: int | None = None,
                 disabled: bool = False) -> None:
        default_label, emoji, style = _LOOKS.get(action, ("?", "❔", discord.ButtonStyle.secondary))
        super().__init__(discord.ui.Button(label=label if label is not None else default_label, emoji=emoji,
                                           style=style, custom_id=gallery_id(action, entry_id), row=row,
                                           disabled=disabled))
        self.action = action
        self.entry_id = entry_id

    @classmethod
    async def from_custom_id(cls, interaction: discord.Interaction, item: discord.ui.Item[Any],
                             match: re.Match[str], /) -> GalleryButton:
        return cls(match["action"], int(match["entry"]), label=getattr(item, "label", None), row=item.row)

    async def callback(self, interaction: discord.Interaction) -> None:
        async with guarded(interaction) as guard:
            handler = _HANDLERS.get(self.action)
            if handler is None:
                raise TesseraError("This button no longer does anything; run `/prompts search` for a fresh list.")
            await handler(interaction, self.entry_id, guard)


def like_label(likes: int) -> str:
    return str(max(0, likes))


def post_buttons(entry_id: int, likes: int = 0) -> list[discord.ui.Item[Any]]:
    """The buttons under a gallery post (placed on "gallery" messages by the feature's setup)."""
    return [GalleryButton(GalleryAction.REMIX, entry_id, row=0), GalleryButton(GalleryAction.SAME, entry_id, row=0),
            GalleryButton(GalleryAction.PROMPT, entry_id, row=0),
            GalleryButton(GalleryAction.LIKE, entry_id, label=like_label(likes), row=0),
            GalleryButton(GalleryAction.DELETE, entry_id, row=0)]


def gallery_view(entry_id: int, likes: int = 0) -> discord.ui.View:
    view = discord.ui.View(timeout=None)
    for item in post_buttons(entry_id, likes):
        view.add_item(item)
    return view


# ----- the actions ---------------------------------------------------------------------------------


async def live_entry(service: Tessera, entry_id: int) -> GalleryEntry:
    """The gallery entry, or TesseraError if it was removed (by its author, an admin or a moderator)."""
    entry = await service.gallery_entry(entry_id)
    if entry is None or entry.removed:
        raise TesseraError("This image is no longer in the gallery.")
    return entry


async def _remix(interaction: discord.Interaction, entry_id: int, guard: Guard) -> None:
    entry = await live_entry(service_of(interaction), entry_id)
    guard.job_id = entry.job_id
    modal = remix_form(entry.id, entry.prompt_text)
    await interaction.response.send_modal(modal)
    modal.stop()  # not kept in memory: `on_remix_submit` takes the form by its custom_id, after any wait or restart


async def _same(interaction: discord.Interaction, entry_id: int, guard: Guard) -> None:
    """🎲: the shared request again with a new seed, as the presser's job, posted where pressed."""
    service = service_of(interaction)
    entry = await live_entry(service, entry_id)
    guard.job_id = entry.job_id
    await defer_public(interaction)
    await check_channel(interaction)
    job = await service.reroll(user_id=interaction.user.id, job_id=entry.job_id, guild_id=interaction.guild_id,
                               channel_id=interaction.channel_id, priority=await member_priority(interaction))
    await post_jobs(interaction, [job])


async def _prompt(interaction: discord.Interaction, entry_id: int, guard: Guard) -> None:
    """📋: the prompt and parameters, only for the presser; a very long one comes as a file."""
    import io

    service = service_of(interaction)
    entry = await live_entry(service, entry_id)
    guard.job_id = entry.job_id
    job = await service.require_job(entry.job_id)
    facts = await image_facts(service, job, entry.index)
    text = paste_text(entry, facts)
    if len(text) <= MESSAGE_LIMIT:
        await interaction.response.send_message(text, ephemeral=True)
        return
    full = prompt_with_seed(entry.prompt_text, facts.seed).encode("utf-8")
    await interaction.response.send_message(
        f"The prompt of gallery #{entry.id} is {len(entry.prompt_text)} characters long; here it is as a file.",
        file=discord.File(io.BytesIO(full), filename=f"prompt_{entry.id}.txt"), ephemeral=True)


async def _like(interaction: discord.Interaction, entry_id: int, guard: Guard) -> None:
    """👍: one like per person; pressing again takes it back. The post shows the new count."""
    service = service_of(interaction)
    entry = await live_entry(service, entry_id)
    guard.job_id = entry.job_id
    _liked, likes = await service.toggle_like(entry.id, interaction.user.id)
    await interaction.response.edit_message(view=gallery_view(entry.id, likes))


async def _delete(interaction: discord.Interaction, entry_id: int, guard: Guard) -> None:
    """🗑: the share's author, or a manager of the server it was shared in, takes it out of the
    gallery (the image stays)."""
    service = service_of(interaction)
    entry = await live_entry(service, entry_id)
    guard.job_id = entry.job_id
    await service.authorize(actor_of(interaction), entry, Act.REMOVE_SHARE)
    await interaction.response.defer(ephemeral=True, thinking=True)
    deleted = await remove_share(interaction.client, service, entry)
    text = "Removed from the gallery; the image is still kept with its job." if deleted else (
        "Removed from the gallery, but I may not delete the post itself: a moderator can delete it.")
    await reply(interaction, text, ephemeral=True)


_HANDLERS: dict[str, Callable[[discord.Interaction, int, Guard], Awaitable[None]]] = {
    GalleryAction.REMIX: _remix,
    GalleryAction.SAME: _same,
    GalleryAction.PROMPT: _prompt,
    GalleryAction.LIKE: _like,
    GalleryAction.DELETE: _delete,
}


# ----- the remix modal -------------------------------------------------------------------------------


def remix_form(entry_id: int, prompt_text: str) -> PromptForm:
    """🔁 Remix: the shared prompt, editable; Submit runs it as the submitter's own job. Its
    submission is handled by `on_remix_submit` from its custom_id, like the buttons, so a form
    submitted after a restart (or after discord.py's modal timeout) still works."""
    return PromptForm(prompt_text, title="Remix this prompt", custom_id=f"{REMIX_MODAL}{entry_id}:{secrets.token_hex(4)}",
                      field_id=REMIX_PROMPT, description="Change anything, then Submit to make your own grid")


async def on_remix_submit(interaction: discord.Interaction) -> None:
    """A submitted 🔁 Remix form (the client routes forms whose custom_id starts with
    `REMIX_MODAL` here): run the edited prompt as the submitter's job."""
    await submit_prompt_form(interaction, REMIX_PROMPT)

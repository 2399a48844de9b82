"""The gallery's buttons and the 🔁 Remix modal; every meaning lives in the `custom_id`.

Gallery post buttons are `tessera-g:<action>:<entry id>` (🔁 Remix, 🎲 Same prompt, 📋 Prompt,
👍 Like, 🗑 Remove); search and top lists page with `tessera-g:pg:<page ref>` (see
`commands.prompts.PageRef`). The prefix is not `tessera:` so these never match the job
buttons' template in `bot.views`. Like the job buttons they are `DynamicItem`s the client
registers at start, so a post from last month still works after any restart.
"""

from __future__ import annotations

import logging
import re
import secrets
from enum import StrEnum
from typing import Any

import discord

from bot.authorization import Act
from bot.gallery import MESSAGE_LIMIT, image_facts, paste_text, prompt_with_seed, remove_share
from engine.errors import TesseraError

log = logging.getLogger(__name__)

PREFIX = "tessera-g"
REMIX_MODAL_TIMEOUT_S = 15 * 60
TEXT_INPUT_MAX = 4000  # Discord's longest text input
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


class GalleryButton(discord.ui.DynamicItem[discord.ui.Button],
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
    async def from_custom_id(cls, interaction: discord.Interaction, item: discord.ui.Button,
                             match: re.Match[str], /) -> GalleryButton:
        return cls(match["action"], int(match["entry"]), label=item.label, row=item.row)

    async def callback(self, interaction: discord.Interaction) -> None:  # type: ignore[override]
        from commands.common import guarded  # cycle: bot -> commands; phase 2 removes it

        async with guarded(interaction) as guard:
            handler = _HANDLERS.get(self.action)
            if handler is None:
                raise TesseraError("This button no longer does anything; run `/prompts search` for a fresh list.")
            await handler(interaction, self.entry_id, guard)


def like_label(likes: int) -> str:
    return str(max(0, likes))


def gallery_view(entry_id: int, likes: int = 0) -> discord.ui.View:
    """The buttons under a gallery post."""
    view = discord.ui.View(timeout=None)
    view.add_item(GalleryButton(GalleryAction.REMIX, entry_id, row=0))
    view.add_item(GalleryButton(GalleryAction.SAME, entry_id, row=0))
    view.add_item(GalleryButton(GalleryAction.PROMPT, entry_id, row=0))
    view.add_item(GalleryButton(GalleryAction.LIKE, entry_id, label=like_label(likes), row=0))
    view.add_item(GalleryButton(GalleryAction.DELETE, entry_id, row=0))
    return view


# ----- the actions ---------------------------------------------------------------------------------


async def live_entry(service: Any, entry_id: int) -> Any:
    """The gallery entry, or TesseraError if it was removed (by its author, an admin or a moderator)."""
    entry = await service.storage.gallery.get(entry_id)
    if entry is None or entry.removed:
        raise TesseraError("This image is no longer in the gallery.")
    return entry


async def _remix(interaction: discord.Interaction, entry_id: int, guard: Any) -> None:
    from commands.common import service_of  # cycle: bot -> commands; phase 2 removes it

    entry = await live_entry(service_of(interaction), entry_id)
    guard.job_id = entry.job_id
    modal = RemixModal(entry.id, entry.prompt_text)
    await interaction.response.send_modal(modal)
    modal.stop()  # not kept in memory: `on_modal_submit` takes the form by its custom_id, after any wait or restart


async def _same(interaction: discord.Interaction, entry_id: int, guard: Any) -> None:
    """🎲: the shared request again with a new seed, as the presser's job, posted where pressed."""
    from commands.common import (  # cycle: bot -> commands; phase 2 removes it
        check_channel,
        defer_public,
        post_jobs,
        service_of,
    )
    from commands.imagine import member_priority  # cycle: bot -> commands; phase 2 removes it

    service = service_of(interaction)
    entry = await live_entry(service, entry_id)
    guard.job_id = entry.job_id
    await defer_public(interaction)
    await check_channel(interaction)
    job = await service.reroll(user_id=interaction.user.id, job_id=entry.job_id, guild_id=interaction.guild_id,
                               channel_id=interaction.channel_id, priority=await member_priority(interaction))
    await post_jobs(interaction, [job])


async def _prompt(interaction: discord.Interaction, entry_id: int, guard: Any) -> None:
    """📋: the prompt and parameters, only for the presser; a very long one comes as a file."""
    import io

    from commands.common import service_of  # cycle: bot -> commands; phase 2 removes it

    service = service_of(interaction)
    entry = await live_entry(service, entry_id)
    guard.job_id = entry.job_id
    job = await service.storage.jobs.require(entry.job_id)
    facts = await image_facts(service.storage, job, entry.index)
    text = paste_text(entry, facts)
    if len(text) <= MESSAGE_LIMIT:
        await interaction.response.send_message(text, ephemeral=True)
        return
    full = prompt_with_seed(entry.prompt_text, facts.seed).encode("utf-8")
    await interaction.response.send_message(
        f"The prompt of gallery #{entry.id} is {len(entry.prompt_text)} characters long; here it is as a file.",
        file=discord.File(io.BytesIO(full), filename=f"prompt_{entry.id}.txt"), ephemeral=True)


async def _like(interaction: discord.Interaction, entry_id: int, guard: Any) -> None:
    """👍: one like per person; pressing again takes it back. The post shows the new count."""
    from commands.common import service_of  # cycle: bot -> commands; phase 2 removes it

    service = service_of(interaction)
    entry = await live_entry(service, entry_id)
    guard.job_id = entry.job_id
    _liked, likes = await service.storage.gallery.toggle_like(entry.id, interaction.user.id)
    await interaction.response.edit_message(view=gallery_view(entry.id, likes))


async def _delete(interaction: discord.Interaction, entry_id: int, guard: Any) -> None:
    """🗑: the share's author, or a manager of the server it was shared in, takes it out of the
    gallery (the image stays)."""
    from commands.common import actor_of, reply, service_of  # cycle: bot -> commands; phase 2 removes it

    service = service_of(interaction)
    entry = await live_entry(service, entry_id)
    guard.job_id = entry.job_id
    await service.authorize(actor_of(interaction), entry, Act.REMOVE_SHARE)
    await interaction.response.defer(ephemeral=True, thinking=True)
    deleted = await remove_share(interaction.client, service, entry)
    text = "Removed from the gallery; the image is still kept with its job." if deleted else (
        "Removed from the gallery, but I may not delete the post itself: a moderator can delete it.")
    await reply(interaction, text, ephemeral=True)


_HANDLERS = {
    GalleryAction.REMIX: _remix,
    GalleryAction.SAME: _same,
    GalleryAction.PROMPT: _prompt,
    GalleryAction.LIKE: _like,
    GalleryAction.DELETE: _delete,
}


# ----- the remix modal -------------------------------------------------------------------------------


class RemixModal(discord.ui.Modal, title="Remix this prompt"):
    """The shared prompt, editable; Submit runs the edited prompt as the submitter's own job.

    Only the form: the submission is handled by `on_modal_submit` from its custom_id, like the
    buttons, so a form submitted after a restart (or after discord.py's modal timeout) still
    works instead of showing "This interaction failed"."""

    def __init__(self, entry_id: int, prompt_text: str) -> None:
        super().__init__(timeout=REMIX_MODAL_TIMEOUT_S, custom_id=f"{REMIX_MODAL}{entry_id}:{secrets.token_hex(4)}")
        self.entry_id = entry_id
        self.prompt = discord.ui.TextInput(style=discord.TextStyle.paragraph, default=prompt_text[:TEXT_INPUT_MAX],
                                           max_length=TEXT_INPUT_MAX, required=True, custom_id=REMIX_PROMPT)
        self.add_item(discord.ui.Label(text="Prompt", description="Change anything, then Submit to make your own grid",
                                       component=self.prompt))


def submitted_value(components: Any, custom_id: str) -> str | None:
    """The value of the text input `custom_id` in a modal submission (labels and rows nest it)."""
    for component in components or []:
        if not isinstance(component, dict):
            continue
        if component.get("custom_id") == custom_id and "value" in component:
            return str(component["value"])
        inner = [component["component"]] if isinstance(component.get("component"), dict) else []
        found = submitted_value([*inner, *(component.get("components") or [])], custom_id)
        if found is not None:
            return found
    return None


async def on_modal_submit(interaction: discord.Interaction) -> bool:
    """A submitted 🔁 Remix form: run the edited prompt as the submitter's job. False (and
    nothing done) for any other interaction."""
    from commands.common import defer_public, guarded  # cycle: bot -> commands; phase 2 removes it
    from commands.imagine import quick_parse, start  # cycle: bot -> commands; phase 2 removes it

    if interaction.type is not discord.InteractionType.modal_submit:
        return False
    data: Any = interaction.data or {}
    if not str(data.get("custom_id", "")).startswith(REMIX_MODAL):
        return False
    async with guarded(interaction):
        text = (submitted_value(data.get("components"), REMIX_PROMPT) or "").strip()
        if not text:
            raise TesseraError("The prompt is empty; write what to draw.")
        quick_parse(interaction, text)
        await defer_public(interaction)
        await start(interaction, text, image_url=None)
    return True


# ----- paging search and top lists -------------------------------------------------------------------


class PageButton(discord.ui.DynamicItem[discord.ui.Button], template=rf"{PREFIX}:pg:(?P<ref>[\s\S]{{1,90}})"):
    """◀ / ▶ under a `/prompts search` or `/prompts top` list."""

    def __init__(self, ref: str, *, label: str, disabled: bool = False, row: int | None = None) -> None:
        super().__init__(discord.ui.Button(label=label, style=discord.ButtonStyle.secondary,
                                           custom_id=f"{PREFIX}:pg:{ref}", disabled=disabled, row=row))
        self.ref = ref

    @classmethod
    async def from_custom_id(cls, interaction: discord.Interaction, item: discord.ui.Button,
                             match: re.Match[str], /) -> PageButton:
        return cls(match["ref"], label=item.label or "·", row=item.row)

    async def callback(self, interaction: discord.Interaction) -> None:  # type: ignore[override]
        from commands.common import guarded  # cycle: bot -> commands; phase 2 removes it
        from commands.prompts import show_page  # cycle: bot -> commands; phase 2 removes it

        async with guarded(interaction):
            await show_page(interaction, self.ref)


GALLERY_ITEMS: tuple[type[discord.ui.DynamicItem[Any]], ...] = (GalleryButton, PageButton)

"""Buttons that survive restarts: every meaning lives in the `custom_id`.

A button's `custom_id` is `tessera:<action>:<job>:<index>` (index 0-based). The client
registers `JobButton` as a `DynamicItem` in `setup_hook`, so a press on a message posted last
month, by a process that has since restarted, is parsed back into (action, job, index) and the
job is read from SQLite. Nothing about a button is kept in memory.

Actions route to the command modules that do the same thing as a slash command (U1 is
`/upscale`, V1 is `/variation`), imported lazily because those modules import this one.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import discord

from bot import gallery
from engine.errors import TesseraError

log = logging.getLogger(__name__)

PREFIX = "tessera"
_JOB = r"[A-Za-z0-9_-]{1,40}"


class Action(StrEnum):
    UPSCALE = "upscale"  # U1-U4 on a grid
    VARY = "vary"  # V1-V4 on a grid (subtle)
    REROLL = "reroll"  # 🔄 on a grid
    VARY_SUBTLE = "vsubtle"  # on an upscale
    VARY_STRONG = "vstrong"  # on an upscale
    UPSCALE_MORE = "upmore"  # Upscale ×2 on an upscale (chained)
    SHARE = "share"  # ❤️ Share on an upscale (the gallery)
    DELETE = "delete"  # 🗑 Delete on an upscale
    CONFIRM = "confirm"  # run a prompt that makes more than 4 jobs; "job" is a confirmation key
    DISMISS = "dismiss"  # do not run it


@dataclass(frozen=True)
class _Look:
    label: str | None
    emoji: str | None
    style: discord.ButtonStyle


_GREY, _RED, _GREEN = discord.ButtonStyle.secondary, discord.ButtonStyle.danger, discord.ButtonStyle.success
_LOOKS: dict[str, _Look] = {
    Action.REROLL: _Look(None, "🔄", _GREY),
    Action.VARY_SUBTLE: _Look("Vary (Subtle)", "🪄", _GREY),
    Action.VARY_STRONG: _Look("Vary (Strong)", "🪄", _GREY),
    Action.UPSCALE_MORE: _Look("Upscale ×2", "🔍", _GREY),
    Action.SHARE: _Look("Share", "❤️", _GREY),
    Action.DELETE: _Look("Delete", "🗑️", _RED),
    Action.DISMISS: _Look("Cancel", None, _GREY),
}


def _look(action: str, index: int) -> _Look:
    if action == Action.UPSCALE:
        return _Look(f"U{index + 1}", None, _GREY)
    if action == Action.VARY:
        return _Look(f"V{index + 1}", None, _GREY)
    if action == Action.CONFIRM:
        return _Look(f"Run all {index} jobs", None, _GREEN)
    return _LOOKS.get(action, _Look("?", None, _GREY))


def custom_id(action: str, job_id: str, index: int) -> str:
    return f"{PREFIX}:{action}:{job_id}:{index}"


class JobButton(discord.ui.DynamicItem[discord.ui.Button], template=rf"{PREFIX}:(?P<action>[a-z0-9_]{{1,16}}):(?P<job>{_JOB}):(?P<index>\d{{1,3}})"):
    """One button of a result message; the press is handled by the matching command module."""

    def __init__(self, action: str, job_id: str, index: int, *, row: int | None = None) -> None:
        look = _look(action, index)
        super().__init__(
            discord.ui.Button(label=look.label, emoji=look.emoji, style=look.style,
                              custom_id=custom_id(action, job_id, index), row=row)
        )
        self.action = action
        self.job_id = job_id
        self.index = index

    @classmethod
    async def from_custom_id(cls, interaction: discord.Interaction, item: discord.ui.Button,
                             match: re.Match[str], /) -> JobButton:
        return cls(match["action"], match["job"], int(match["index"]), row=item.row)

    async def callback(self, interaction: discord.Interaction) -> None:  # type: ignore[override]
        await handle_press(interaction, self.action, self.job_id, self.index)


async def handle_press(interaction: discord.Interaction, action: str, job_id: str, index: int) -> None:
    """Run a button's action; every failure becomes a message, never "This interaction failed"."""
    from commands.common import guarded  # cycle: bot -> commands; phase 2 removes it

    names_job = action not in (Action.CONFIRM, Action.DISMISS)
    async with guarded(interaction, job_id=job_id if names_job else None):
        handler = _handler(action)
        if handler is None:
            raise _stale(job_id)
        if names_job and action != Action.DELETE and await interaction.client.service.storage.jobs.get(job_id) is None:  # type: ignore[attr-defined]
            raise _gone(job_id)
        await handler(interaction, job_id, index)


def _gone(job_id: str) -> Exception:
    """The job a button names was deleted (`tessera prune`, a database reset): say so in words
    for a button press; the storage's own message is for someone who typed an id. (🗑 still
    removes a message whose job is gone, so it is not checked.)"""

    return TesseraError(f"The job behind this button (`{job_id}`) no longer exists on this bot (it was deleted). "
                        "Run `/imagine` to make new images.")


def _stale(job_id: str) -> Exception:
    return TesseraError(f"This button no longer does anything. Use `/show job:{job_id}` to get a fresh copy.")


def _handler(action: str) -> Callable[[discord.Interaction, str, int], Awaitable[Any]] | None:
    from commands import imagine, show, upscale, variation  # cycle: bot -> commands; phase 2 removes it

    handlers: dict[str, Callable[[discord.Interaction, str, int], Awaitable[Any]]] = {
        Action.UPSCALE: upscale.press_upscale,
        Action.UPSCALE_MORE: upscale.press_upscale_more,
        Action.VARY: variation.press_vary,
        Action.VARY_SUBTLE: variation.press_vary_subtle,
        Action.VARY_STRONG: variation.press_vary_strong,
        Action.REROLL: imagine.press_reroll,
        Action.CONFIRM: imagine.press_confirm,
        Action.DISMISS: imagine.press_dismiss,
        Action.SHARE: _share,
        Action.DELETE: show.press_delete,
    }
    return handlers.get(action)


async def _share(interaction: discord.Interaction, job_id: str, index: int) -> None:
    await gallery.share_from_button(interaction, interaction.client.service, job_id, index)  # type: ignore[attr-defined]


def grid_view(job_id: str) -> discord.ui.View:
    """U1–U4 and 🔄 on the first row, V1–V4 on the second (Midjourney's layout)."""
    view = discord.ui.View(timeout=None)
    for i in range(4):
        view.add_item(JobButton(Action.UPSCALE, job_id, i, row=0))
    view.add_item(JobButton(Action.REROLL, job_id, 0, row=0))
    for i in range(4):
        view.add_item(JobButton(Action.VARY, job_id, i, row=1))
    return view


def upscale_view(job_id: str) -> discord.ui.View:
    """The buttons under one upscaled image."""
    view = discord.ui.View(timeout=None)
    view.add_item(JobButton(Action.VARY_SUBTLE, job_id, 0, row=0))
    view.add_item(JobButton(Action.VARY_STRONG, job_id, 0, row=0))
    view.add_item(JobButton(Action.UPSCALE_MORE, job_id, 0, row=0))
    view.add_item(JobButton(Action.SHARE, job_id, 0, row=1))
    view.add_item(JobButton(Action.DELETE, job_id, 0, row=1))
    return view


def confirm_view(key: str, count: int) -> discord.ui.View:
    view = discord.ui.View(timeout=None)
    view.add_item(JobButton(Action.CONFIRM, key, count))
    view.add_item(JobButton(Action.DISMISS, key, 0))
    return view


def result_view(kind: str, job_id: str) -> discord.ui.View:
    """The view a finished job's message carries, by job kind."""
    return upscale_view(job_id) if kind == "upscale" else grid_view(job_id)


# ----- /settings select menus -----------------------------------------------------------------


class SettingSelect(discord.ui.DynamicItem[discord.ui.Select], template=rf"{PREFIX}:set:(?P<field>[a-z]{{1,16}})"):
    """A `/settings` menu; the chosen value is saved for the user who picks it."""

    def __init__(self, field: str, options: list[discord.SelectOption] | None = None,
                 *, placeholder: str | None = None, row: int | None = None) -> None:
        super().__init__(
            discord.ui.Select(custom_id=f"{PREFIX}:set:{field}",
                              options=options or [discord.SelectOption(label="default")],
                              placeholder=placeholder, row=row, min_values=1, max_values=1)
        )
        self.field = field

    @classmethod
    async def from_custom_id(cls, interaction: discord.Interaction, item: discord.ui.Select,
                             match: re.Match[str], /) -> SettingSelect:
        select = cls(match["field"], list(item.options) or None, placeholder=item.placeholder, row=item.row)
        return select

    async def callback(self, interaction: discord.Interaction) -> None:  # type: ignore[override]
        from commands import settings  # cycle: bot -> commands; phase 2 removes it
        from commands.common import guarded  # cycle: bot -> commands; phase 2 removes it

        async with guarded(interaction):
            values = (interaction.data or {}).get("values") or []  # type: ignore[union-attr]
            await settings.choose(interaction, self.field, str(values[0]) if values else "default")


DYNAMIC_ITEMS: tuple[type[discord.ui.DynamicItem[Any]], ...] = (JobButton, SettingSelect)

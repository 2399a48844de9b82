"""Buttons that survive restarts, and where each feature's buttons sit on a result message.

A job button's `custom_id` is `tessera:<action>:<job>:<index>` (index 0-based), and every
meaning lives in it: a press on a message posted last month, by a process that has since
restarted, is parsed back into (action, job, index) and the job is read from SQLite.

The bot owns the format and the message layout, never the actions: each feature (a module in
`commands/`) subclasses `JobButton` with a template that matches only its own actions and a
`press` that does the work, and in its `setup()` registers the class and its place on result
messages (`ButtonRegistry.add` / `ButtonRegistry.place`). The bot then builds a grid's or an
upscale's buttons by asking the registry (`result_view`), so it imports no feature. Jobs that
answer text (/describe, /shorten) are shown the same way: their feature registers how its
answer reads and which buttons it carries (`ButtonRegistry.answer`). A press
whose action no feature claims (a button from an older Tessera) is answered by a fallback
built from the registered actions, with a pointer to `/show`.
"""

from __future__ import annotations

import re
import types
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import discord

from bot.interactions import guarded, service_of
from engine.errors import TesseraError
from engine.jobs.model import Job

PREFIX = "tessera"
JOB_REF = r"[A-Za-z0-9_-]{1,40}"
_ACTION = r"[a-z0-9_]{1,16}"
_TAIL = rf"(?P<job>{JOB_REF}):(?P<index>\d{{1,3}})"

GREY, RED, GREEN = discord.ButtonStyle.secondary, discord.ButtonStyle.danger, discord.ButtonStyle.success
BLURPLE = discord.ButtonStyle.primary


def custom_id(action: str, job_id: str, index: int) -> str:
    """The byte-for-byte format of every job button since the first release."""
    return f"{PREFIX}:{action}:{job_id}:{index}"


def job_template(*actions: str) -> str:
    """A `DynamicItem` template matching `tessera:<one of actions>:<job>:<index>` only, so each
    feature's class receives its own presses and no other (escaped literals: no backtracking)."""
    return rf"{PREFIX}:(?P<action>{'|'.join(re.escape(a) for a in actions)}):{_TAIL}"


@dataclass(frozen=True)
class Look:
    label: str | None
    emoji: str | None = None
    style: discord.ButtonStyle = GREY


class JobButton(discord.ui.DynamicItem[discord.ui.Button[Any]], template=rf"{PREFIX}:(?P<action>{_ACTION}):{_TAIL}"):
    """One button of a job's message. Features subclass it with `template=job_template(...)`,
    list the same `actions`, and implement `look` and `press`; this class is never registered
    itself (the registry's fallback answers actions nobody claims).

    A press runs inside `guarded` (every failure becomes a message) and, unless `needs_job` is
    False, first checks that the job still exists, so a press on a pruned job says so in words."""

    actions: ClassVar[tuple[str, ...]] = ()
    names_job: ClassVar[bool] = True  # the `job` part is a job id (not a confirmation key)
    needs_job: ClassVar[bool] = True  # refuse at once when the job was deleted

    def __init__(self, action: str, job_id: str, index: int, *, row: int | None = None) -> None:
        look = self.look(action, index)
        super().__init__(discord.ui.Button(label=look.label, emoji=look.emoji, style=look.style,
                                           custom_id=custom_id(action, job_id, index)), row=row)
        self.action = action
        self.job_id = job_id
        self.index = index

    @classmethod
    def look(cls, action: str, index: int) -> Look:
        return Look("?")

    @classmethod
    async def from_custom_id(cls, interaction: discord.Interaction, item: discord.ui.Item[Any],
                             match: re.Match[str], /) -> JobButton:
        return cls(match["action"], match["job"], int(match["index"]), row=item.row)

    async def callback(self, interaction: discord.Interaction) -> None:
        async with guarded(interaction, job_id=self.job_id if self.names_job else None):
            if self.needs_job and await service_of(interaction).job(self.job_id) is None:
                raise gone(self.job_id)
            await self.press(interaction)

    async def press(self, interaction: discord.Interaction) -> None:
        raise stale(self.job_id)


def gone(job_id: str) -> TesseraError:
    """The job a button names was deleted (`tessera prune`, a database reset): say so in words
    for a button press; the storage's own message is for someone who typed an id."""
    return TesseraError(f"The job behind this button (`{job_id}`) no longer exists on this bot (it was deleted). "
                        "Run `/imagine` to make new images.")


def stale(job_id: str) -> TesseraError:
    return TesseraError(f"This button no longer does anything. Use `/show job:{job_id}` to get a fresh copy.")


# ----- the registry -----------------------------------------------------------------------------

Make = Callable[[str, int], Sequence[discord.ui.Item[Any]]]
"""A placement's buttons for one message: (ref, count) -> items. `ref` is a job id, a gallery
entry id or a confirmation key; `count` a number the buttons show (likes, jobs to confirm)."""

FormHandler = Callable[[discord.Interaction], Awaitable[None]]

Size = tuple[int, int]
AnswerRenderer = Callable[[Job, dict], Awaitable[tuple[str, discord.ui.View]]]
"""A finished text-answer job and its answer -> the message's text and buttons."""

When = Callable[[Size | None], bool]
"""Whether a placement's buttons suit a picture of this (width, height); None: size unknown
(`bot.render.picture_size` reads it from the posted file)."""


@dataclass(frozen=True)
class Placement:
    kind: str  # "grid", "upscale", "gallery", "confirm": which messages carry these buttons
    row: int
    order: int  # left to right within the row, across features
    make: Make
    when: When | None = None  # None: on every `kind` message


class ButtonRegistry:
    """The client's buttons, menus and forms, as features registered them (one per client)."""

    def __init__(self, client: discord.Client) -> None:
        self._client = client
        self._places: list[Placement] = []
        self._actions: set[str] = set()
        self._forms: dict[str, FormHandler] = {}
        self._answers: dict[str, AnswerRenderer] = {}

    def add(self, *items: type[discord.ui.DynamicItem[Any]]) -> None:
        """Register restart-proof items (discord.py routes presses to them by template)."""
        for item in items:
            if issubclass(item, JobButton):
                taken = self._actions & set(item.actions)
                if taken:
                    raise ValueError(f"job button actions registered twice: {sorted(taken)}")
                self._actions.update(item.actions)
        self._client.add_dynamic_items(*items)

    def place(self, kind: str, *, row: int, order: int, make: Make, when: When | None = None) -> None:
        """Put buttons on every `kind` message: row 0-4, `order` sorts within the row; `when`
        (given the picture's size, or None when unknown) may leave them off some messages."""
        self._places.append(Placement(kind, row, order, make, when))

    def form(self, prefix: str, handler: FormHandler) -> None:
        """Handle submitted modal forms whose custom_id starts with `prefix`, after any restart."""
        self._forms[prefix] = handler

    def answer(self, kind: str, render: AnswerRenderer) -> None:
        """Show finished `kind` jobs (a `JobKind` that answers text) with `render`."""
        self._answers[kind] = render

    async def render_answer(self, job: Job, result: dict) -> tuple[str, discord.ui.View]:
        """The text and buttons of a finished job that answers text (by its kind's feature)."""
        render = self._answers.get(job.kind.value)
        if render is None:
            raise LookupError(f"no feature shows {job.kind.value} answers")
        return await render(job, result)

    def view(self, kind: str, ref: str, *, count: int = 0, size: Size | None = None) -> discord.ui.View:
        """The buttons of one `kind` message, in the registered rows and order."""
        view = discord.ui.View(timeout=None)
        for placement in sorted((p for p in self._places if p.kind == kind), key=lambda p: (p.row, p.order)):
            if placement.when is not None and not placement.when(size):
                continue
            for item in placement.make(ref, count):
                item.row = placement.row
                view.add_item(item)
        return view

    def result_view(self, kind: str, job_id: str, size: Size | None = None) -> discord.ui.View:
        """The view a finished job's message carries, by job kind (U1–U4 / 🔄 / V1–V4 on grids);
        `size` is the posted picture's (see `bot.render.picture_size`); `kind` "draft"
        (`render.view_kind`) is a grid's buttons plus those placed on "draft"."""
        if kind == "upscale":
            return self.view("upscale", job_id, size=size)
        view = self.view("grid", job_id, size=size)
        if kind == "draft":
            for item in self.view("draft", job_id, size=size).children:
                view.add_item(item)
        return view

    def fallback(self) -> type[JobButton]:
        """A `JobButton` for every `tessera:<action>:…` no feature claims (an action an older
        Tessera had): the negative look-ahead keeps it from also taking a claimed press."""
        claimed = "|".join(re.escape(a) for a in sorted(self._actions))
        template = rf"{PREFIX}:(?!(?:{claimed}):)" if claimed else rf"{PREFIX}:"
        template += rf"(?P<action>{_ACTION}):{_TAIL}"
        namespace = {"needs_job": False, "__doc__": "A button from an older Tessera: says to use /show."}
        return types.new_class("StaleJobButton", (JobButton,), {"template": template},
                               lambda ns: ns.update(namespace))

    async def submit_form(self, interaction: discord.Interaction) -> bool:
        """Hand a modal submission to the feature that registered its prefix (False: none did)."""
        if interaction.type is not discord.InteractionType.modal_submit:
            return False
        data: Any = interaction.data or {}
        name = str(data.get("custom_id", ""))
        for prefix, handler in self._forms.items():
            if name.startswith(prefix):
                await handler(interaction)
                return True
        return False

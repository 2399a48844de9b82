"""What the edit buttons, forms and `/edit` commands share: starting an edit job, and the forms.

Every edit (Zoom Out, Pan, Make Square, Vary (Region)) is one call of the typed service
(`Tessera.zoom/pan/square/region`) with the pressing member as `actor`, so the service's
`authorize` decides, against the job's own owner and server, whether they may build on it
(`Act.USE`). The result is a new job whose 2×2 grid is posted like any other.

Forms (Discord modals) are handled by their custom_id, `tessera-e:<what>:<job>:<index>[:<cells>]`,
not by a `Modal` object kept in memory, so a form opened before a restart still submits.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from typing import Any

import discord

from bot.authorization import Act
from bot.buttons import JOB_REF
from bot.interactions import actor_of, check_channel, defer_public, member_priority, post_jobs, service_of
from engine.errors import TesseraError
from engine.jobs.model import Job

FORM_PREFIX = "tessera-e:"
PROMPT_FIELD = "prompt"
ZOOM_FIELD = "zoom"
WHERE_FIELD = "where"
PROMPT_INPUT_MAX = 1000  # the edited prompt in a form (Discord allows 4000; prompts are shorter)
WHERE_INPUT_MAX = 200  # = engine.diffusion.segment.MAX_REGION_TEXT, checked again by the service
ZOOM_INPUT_MAX = 4  # "1.75"
CELLS_CODE = r"(?:[abc][123]){1,9}"  # "a1b2": the chosen cells, in a custom_id without commas
FORM_ID = re.compile(rf"{re.escape(FORM_PREFIX)}(?P<what>zoom|region|where):(?P<job>{JOB_REF}):(?P<index>\d{{1,3}})"
                     rf"(?::(?P<cells>{CELLS_CODE}))?")


async def run_edit(interaction: discord.Interaction, edit: str, job_id: str, index: int, **details: Any) -> None:
    """Start one edit of image `index` (0-based) of `job_id` for the interaction's member and post
    its job: the public "thinking…" first (Discord allows 3 s), the grid when it is done."""
    await defer_public(interaction)
    await check_channel(interaction)
    service = service_of(interaction)
    methods: dict[str, Callable[..., Awaitable[Job]]] = {
        "zoom": service.zoom, "pan": service.pan, "square": service.square, "region": service.region}
    method = methods[edit]
    job = await method(user_id=interaction.user.id, job_id=job_id, index=index, guild_id=interaction.guild_id,
                       channel_id=interaction.channel_id, priority=await member_priority(interaction),
                       actor=actor_of(interaction), **details)
    await post_jobs(interaction, [job])


async def usable_job(interaction: discord.Interaction, job_id: str) -> Job:
    """The job, once the member may build on it (before showing them a form or a picker: the
    service checks again when the edit starts)."""
    service = service_of(interaction)
    job = await service.job(job_id)
    if job is None:
        raise TesseraError(f"The job behind this button (`{job_id}`) no longer exists on this bot.")
    await service.authorize(actor_of(interaction), job, Act.USE)
    return job


def cells_code(cells: list[str] | tuple[str, ...]) -> str:
    """("a1", "b2") -> "a1b2" (for custom_ids); `cells_text` undoes it."""
    return "".join(cells)


def cells_text(code: str) -> str:
    """"a1b2" -> "a1,b2" (what the service's `parse_cells` reads)."""
    return ",".join(code[i:i + 2] for i in range(0, len(code), 2))


def new_prompt(job: Job, text: str | None) -> str | None:
    """The edited prompt from a form, or None when it is empty or unchanged (the job's own)."""
    text = " ".join((text or "").split())
    if not text or text == " ".join(job.prompt_text.split()):
        return None
    return text


def prompt_input(job: Job, *, required: bool) -> discord.ui.TextInput[Any]:
    """The job's prompt, prefilled and editable (an `--ar` in it reshapes a zoom's canvas)."""
    return discord.ui.TextInput(style=discord.TextStyle.paragraph, default=job.prompt_text[:PROMPT_INPUT_MAX],
                                max_length=PROMPT_INPUT_MAX, required=required, custom_id=PROMPT_FIELD)


def form_id(what: str, job_id: str, index: int, cells: str = "") -> str:
    return f"{FORM_PREFIX}{what}:{job_id}:{index}" + (f":{cells}" if cells else "")


def parse_zoom(text: str | None) -> float:
    """The Custom Zoom field: a number from 1.0 to 2.0, in a few characters (bounded, no regex)."""
    text = (text or "").strip().replace(",", ".").rstrip("x×")
    try:
        if len(text) > 8:
            raise ValueError
        value = float(text)
    except ValueError:
        raise TesseraError(f"Zoom must be a number from 1.0 to 2.0, like 1.5; got `{text[:8]}`.") from None
    if not 1.0 <= value <= 2.0:
        raise TesseraError(f"Zoom must be from 1.0 to 2.0 (1 keeps the size, 2 shows twice as much); got {value:g}.")
    return value

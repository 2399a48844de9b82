"""`/edit zoom|pan|square|region`: the editing buttons as slash commands, by job id or link,
for any image of a grid or an upscale; `/edit region mask:` takes an uploaded black-and-white
mask (white = repaint), which no button can."""

from __future__ import annotations

from typing import Literal

import discord
from discord import app_commands

from bot.authorization import Act
from bot.interactions import (
    actor_of,
    check_upload,
    defer_public,
    download_uploads,
    find_job,
    guarded,
    job_choices,
    require_done,
    require_grid,
    service_of,
)
from commands.edit.common import run_edit
from engine.errors import TesseraError
from engine.jobs.model import Job, JobKind

edit = app_commands.Group(name="edit", description="Zoom out, pan, make square or repaint part of an image")

JOB_HELP = "Job id or a link to the result message (default: your latest)"
INDEX_HELP = "Which image of a grid: 1-4 (not needed for an upscale)"
PROMPT_HELP = "A new prompt (optional): what to paint in the new part"


async def _target(interaction: discord.Interaction, job: str | None, index: int | None) -> tuple[Job, int]:
    """The job and 0-based image the command names (an upscale has one image)."""
    await defer_public(interaction)
    found = await find_job(interaction, job)
    # Who may use this job first: a stranger learns nothing of its state, and sends no mask for it.
    await service_of(interaction).authorize(actor_of(interaction), found, Act.USE)
    require_done(found, "an edit")
    if found.kind is JobKind.UPSCALE:
        return found, 0
    if index is None:
        raise TesseraError("Which image of the grid? Add `index:` 1-4 (left to right, top to bottom).")
    require_grid(found, index - 1)
    return found, index - 1


@edit.command(name="zoom", description="Zoom Out: the picture smaller in the middle, new surroundings painted")
@app_commands.describe(job=JOB_HELP, index=INDEX_HELP, factor="How far out: 1.0 to 2.0 (default 2)",
                       prompt="A new prompt (optional); --ar in it changes the shape")
@app_commands.autocomplete(job=job_choices)
async def zoom(interaction: discord.Interaction, job: str | None = None,
               index: app_commands.Range[int, 1, 4] | None = None,
               factor: app_commands.Range[float, 1.0, 2.0] = 2.0, prompt: str | None = None) -> None:
    async with guarded(interaction) as guard:
        found, image = await _target(interaction, job, index)
        guard.job_id = found.id
        await run_edit(interaction, "zoom", found.id, image, factor=factor, prompt_text=prompt or None)


@edit.command(name="pan", description="Pan: the picture grows by half towards one side, the rest kept")
@app_commands.describe(job=JOB_HELP, index=INDEX_HELP, direction="Which way to extend it", prompt=PROMPT_HELP)
@app_commands.autocomplete(job=job_choices)
async def pan(interaction: discord.Interaction, direction: Literal["left", "right", "up", "down"],
              job: str | None = None, index: app_commands.Range[int, 1, 4] | None = None,
              prompt: str | None = None) -> None:
    async with guarded(interaction) as guard:
        found, image = await _target(interaction, job, index)
        guard.job_id = found.id
        await run_edit(interaction, "pan", found.id, image, direction=direction, prompt_text=prompt or None)


@edit.command(name="square", description="Make Square: a wide or tall picture extended to a square")
@app_commands.describe(job=JOB_HELP, index=INDEX_HELP, prompt=PROMPT_HELP)
@app_commands.autocomplete(job=job_choices)
async def square(interaction: discord.Interaction, job: str | None = None,
                 index: app_commands.Range[int, 1, 4] | None = None, prompt: str | None = None) -> None:
    async with guarded(interaction) as guard:
        found, image = await _target(interaction, job, index)
        guard.job_id = found.id
        await run_edit(interaction, "square", found.id, image, prompt_text=prompt or None)


@edit.command(name="region", description="Vary (Region): repaint part of a picture, keep the rest")
@app_commands.describe(job=JOB_HELP, index=INDEX_HELP, cells="Cells of a 3x3 grid, like a1,b2 (a-c left to right, "
                       "1-3 top to bottom)", where="Or: the region in words, like “the sky”",
                       mask="Or: a black-and-white mask of the picture's size (white = repaint)",
                       prompt="What to paint there (optional; default: the same prompt)")
@app_commands.autocomplete(job=job_choices)
async def region(interaction: discord.Interaction, job: str | None = None,
                 index: app_commands.Range[int, 1, 4] | None = None,
                 cells: app_commands.Range[str, 1, 64] | None = None,
                 where: app_commands.Range[str, 1, 200] | None = None,
                 mask: discord.Attachment | None = None, prompt: str | None = None) -> None:
    async with guarded(interaction) as guard:
        if sum(value is not None for value in (cells, where, mask)) != 1:
            raise TesseraError("Say which part to repaint in exactly one way: `cells:` (like a1,b2), `where:` "
                               "(like “the sky”) or `mask:` (a black-and-white image).")
        if mask is not None:  # a wrong file: refused before anything is shown
            check_upload(mask, service_of(interaction).settings.image_prompt_max_bytes)
        found, image = await _target(interaction, job, index)
        guard.job_id = found.id
        mask_bytes = (await download_uploads(interaction, [mask]))[0] if mask is not None else None
        await run_edit(interaction, "region", found.id, image, cells=cells, where=where, mask_bytes=mask_bytes,
                       prompt_text=prompt or None)



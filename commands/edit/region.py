"""🖌️ Vary (Region): pick the part of a picture to repaint, privately, then repaint it.

Pressing Vary (Region) answers only the presser with a small preview of the picture with its
3×3 grid of cells drawn and labelled (a1 top left … c3 bottom right), and:

- a menu of the nine cells (several may be picked);
- **Repaint** (the picked cells, with the same prompt) and **Repaint with a prompt…** (a form
  with the prompt, editable: Midjourney's Remix — what to paint there); both are greyed out
  until a cell is picked;
- **Describe the region…**: a form for a description ("the sky", "her hat", at most 200
  characters, found by SEGMENT_MODEL_ID) and the optional new prompt.

Nothing of a pending choice is kept in memory: picking cells re-draws the picker with the cells
written into the buttons' custom_ids (`tessera-r:go:<job>:<index>:a1b2`), so the picker and its
forms keep working after a restart. An uploaded black-and-white mask is `/edit region mask:`.
"""

from __future__ import annotations

import asyncio
import io
import re
from pathlib import Path
from typing import Any, ClassVar

import discord
from PIL import Image, ImageDraw, ImageFont

from bot.buttons import GREY, JOB_REF
from bot.interactions import defer_private, guarded, service_of, submitted_value
from commands.edit.common import (
    CELLS_CODE,
    PROMPT_INPUT_MAX,
    WHERE_FIELD,
    WHERE_INPUT_MAX,
    cells_code,
    cells_text,
    form_id,
    prompt_input,
    run_edit,
    usable_job,
)
from engine.errors import TesseraError
from engine.imaging.canvas import CELL_COLUMNS, CELL_ROWS, parse_cells
from engine.jobs.model import Job

PREFIX = "tessera-r"
PREVIEW_SIDE = 384  # the labelled preview's longer side, in pixels (a small JPEG)
CELLS = tuple(f"{column}{row}" for row in CELL_ROWS for column in CELL_COLUMNS)  # a1 b1 c1 a2 …
_PLACES = {"1": "top", "2": "middle", "3": "bottom", "a": "left", "b": "centre", "c": "right"}
_TAIL = rf"(?P<job>{JOB_REF}):(?P<index>\d{{1,3}})"
SELECT_TEMPLATE = rf"{PREFIX}:cells:{_TAIL}"
BUTTON_TEMPLATE = rf"{PREFIX}:(?P<act>go|ask|where):{_TAIL}(?::(?P<cells>{CELLS_CODE}))?"
FORM_TIMEOUT_S = 15 * 60


def cell_name(cell: str) -> str:
    """"a1" -> "a1 · top left" (what the menu shows)."""
    row, column = _PLACES[cell[1]], _PLACES[cell[0]]
    where = "centre" if (row, column) == ("middle", "centre") else f"{row} {column}"
    return f"{cell} · {where}"


def labelled_preview(path: Path) -> bytes:
    """A small JPEG of the picture with its 3×3 cells outlined and named (run off the event loop).

    The lines fall where `engine.imaging.canvas.cell_mask` splits the picture, so what the user
    picks is what gets repainted."""
    with Image.open(path) as opened:
        opened.draft("RGB", (PREVIEW_SIDE, PREVIEW_SIDE))  # a JPEG decodes at a reduced size
        picture = opened.convert("RGB")
    picture.thumbnail((PREVIEW_SIDE, PREVIEW_SIDE), Image.Resampling.LANCZOS)
    width, height = picture.size
    draw = ImageDraw.Draw(picture)
    xs = [round(width * k / 3) for k in range(4)]
    ys = [round(height * k / 3) for k in range(4)]
    for x in xs[1:3]:
        draw.line([(x, 0), (x, height)], fill=(0, 0, 0), width=3)
        draw.line([(x, 0), (x, height)], fill=(255, 255, 255), width=1)
    for y in ys[1:3]:
        draw.line([(0, y), (width, y)], fill=(0, 0, 0), width=3)
        draw.line([(0, y), (width, y)], fill=(255, 255, 255), width=1)
    font = ImageFont.load_default(size=max(10, min(width, height) // 9))
    for column, letter in enumerate(CELL_COLUMNS):
        for row, digit in enumerate(CELL_ROWS):
            centre = ((xs[column] + xs[column + 1]) / 2, (ys[row] + ys[row + 1]) / 2)
            draw.text(centre, f"{letter}{digit}", fill=(255, 255, 255), font=font, anchor="mm",
                      stroke_width=2, stroke_fill=(0, 0, 0))
    out = io.BytesIO()
    picture.save(out, "JPEG", quality=80)
    return out.getvalue()


def picker(job_id: str, index: int, chosen: tuple[str, ...] = ()) -> discord.ui.View:
    """The cells menu and the three buttons; `chosen` cells are shown picked and travel in the
    Repaint buttons' custom_ids."""
    view = discord.ui.View(timeout=None)
    view.add_item(CellSelect(job_id, index, chosen))
    code = cells_code(chosen)
    view.add_item(RegionButton("go", job_id, index, code))
    view.add_item(RegionButton("ask", job_id, index, code))
    view.add_item(RegionButton("where", job_id, index))
    return view


async def open_picker(interaction: discord.Interaction, job: Job, index: int) -> None:
    """Answer a Vary (Region) press, privately, with the labelled preview and the picker."""
    await defer_private(interaction)
    record = await service_of(interaction).image(job.id, index)
    if record is None:
        raise TesseraError(f"Job `{job.id}` has no image {index + 1} any more.")
    try:
        preview = await asyncio.to_thread(labelled_preview, record.path)
    except FileNotFoundError:
        raise TesseraError(f"Image {index + 1} of job `{job.id}` is no longer on disk (it may have been pruned).") from None
    await interaction.followup.send(
        "**Vary (Region)**: pick the cells to repaint (a1 is top left, c3 bottom right), then **Repaint**. "
        "Or **Describe the region…** in words (like “the sky”). **Repaint with a prompt…** says what to paint "
        "there. To use a black-and-white mask of your own: `/edit region mask:`.",
        file=discord.File(io.BytesIO(preview), filename="cells.jpg"), view=picker(job.id, index), ephemeral=True)


class CellSelect(discord.ui.DynamicItem[discord.ui.Select[Any]], template=SELECT_TEMPLATE):
    """The nine cells; picking re-draws the picker with the choice in the buttons' custom_ids."""

    def __init__(self, job_id: str, index: int, chosen: tuple[str, ...] = ()) -> None:
        options = [discord.SelectOption(label=cell_name(cell), value=cell, default=cell in chosen) for cell in CELLS]
        super().__init__(discord.ui.Select(custom_id=f"{PREFIX}:cells:{job_id}:{index}", options=options,
                                           placeholder="Cells to repaint (several may be picked)",
                                           min_values=1, max_values=len(CELLS)), row=0)
        self.job_id = job_id
        self.index = index

    @classmethod
    async def from_custom_id(cls, interaction: discord.Interaction, item: discord.ui.Item[Any],
                             match: re.Match[str], /) -> CellSelect:
        return cls(match["job"], int(match["index"]))

    async def callback(self, interaction: discord.Interaction) -> None:
        async with guarded(interaction, job_id=self.job_id):
            values = list(self.item.values)
            if not 1 <= len(values) <= len(CELLS):  # a client could send anything
                raise TesseraError("Pick one to nine cells (a1 to c3).")
            chosen = tuple(cell for cell in CELLS if cell in parse_cells(",".join(values)))
            await interaction.response.edit_message(view=picker(self.job_id, self.index, chosen))


class RegionButton(discord.ui.DynamicItem[discord.ui.Button[Any]], template=BUTTON_TEMPLATE):
    """Repaint (the picked cells), Repaint with a prompt… (a form), Describe the region… (a form)."""

    LOOKS: ClassVar[dict[str, tuple[str, discord.ButtonStyle]]] = {
        "go": ("Repaint", discord.ButtonStyle.success), "ask": ("Repaint with a prompt…", GREY),
        "where": ("Describe the region…", GREY)}

    def __init__(self, act: str, job_id: str, index: int, cells: str = "") -> None:
        label, style = self.LOOKS[act]
        custom_id = f"{PREFIX}:{act}:{job_id}:{index}" + (f":{cells}" if cells else "")
        super().__init__(discord.ui.Button(label=label, style=style, custom_id=custom_id,
                                           disabled=act != "where" and not cells), row=1)
        self.act, self.job_id, self.index, self.cells = act, job_id, index, cells

    @classmethod
    async def from_custom_id(cls, interaction: discord.Interaction, item: discord.ui.Item[Any],
                             match: re.Match[str], /) -> RegionButton:
        return cls(match["act"], match["job"], int(match["index"]), match["cells"] or "")

    async def callback(self, interaction: discord.Interaction) -> None:
        async with guarded(interaction, job_id=self.job_id):
            if self.act != "where" and not self.cells:
                raise TesseraError("Pick the cells to repaint in the menu first.")
            if self.act == "go":
                await run_edit(interaction, "region", self.job_id, self.index, cells=cells_text(self.cells))
                return
            job = await usable_job(interaction, self.job_id)
            await interaction.response.send_modal(RegionForm(job, self.index, self.act, self.cells))


class RegionForm(discord.ui.Modal):
    """What to paint (the prompt, editable) and, for "where", the region in words."""

    def __init__(self, job: Job, index: int, act: str, cells: str) -> None:
        describe = act == "where"
        title = "Vary (Region): describe it" if describe else f"Repaint {cells_text(cells)}"
        super().__init__(title=title[:45], timeout=FORM_TIMEOUT_S,
                         custom_id=form_id("where" if describe else "region", job.id, index, "" if describe else cells))
        if describe:
            self.where: discord.ui.TextInput[Any] = discord.ui.TextInput(
                max_length=WHERE_INPUT_MAX, required=True, custom_id=WHERE_FIELD, placeholder="the sky")
            self.add_item(discord.ui.Label(text="Region to repaint", description="A few words, like “the sky” or "
                                           "“her hat”", component=self.where))
        self.prompt = prompt_input(job, required=not describe)
        self.add_item(discord.ui.Label(text="Prompt", description=f"What to paint there (at most {PROMPT_INPUT_MAX} "
                                       "characters); leave it to keep the prompt", component=self.prompt))


async def submit(interaction: discord.Interaction, what: str, job_id: str, index: int, cells: str | None,
                 prompt: str | None, fields: Any) -> None:
    """A submitted Repaint-with-a-prompt or Describe-the-region form (`commands.edit.buttons.on_form`)."""
    if what == "where":
        where = " ".join((submitted_value(fields, WHERE_FIELD) or "").split())
        if not where:
            raise TesseraError("Describe the region to repaint in a few words, like “the sky”.")
        if len(where) > WHERE_INPUT_MAX:
            raise TesseraError(f"The region description is {len(where)} characters; at most {WHERE_INPUT_MAX}.")
        await run_edit(interaction, "region", job_id, index, where=where, prompt_text=prompt)
        return
    if not cells:
        raise TesseraError("Pick the cells to repaint in the menu first.")
    await run_edit(interaction, "region", job_id, index, cells=cells_text(cells), prompt_text=prompt)

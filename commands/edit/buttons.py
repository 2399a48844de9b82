"""The editing buttons under an upscale, Midjourney's set: 🪄 Vary (Region), 🔍 Zoom Out 2× /
1.5×, 🔍 Custom Zoom, ↔️ Make Square (only under a wide or tall picture), and ⬅️ ➡️ ⬆️ ⬇️ Pan.

Each is `tessera:<action>:<job>:<index>` like U1–U4, so a press on a message from before a
restart still works (the job is read back from SQLite). Custom Zoom opens a form (the prompt,
editable, and the zoom); Vary (Region) opens its private picker (`commands.edit.region`).
"""

from __future__ import annotations

from typing import Any, ClassVar

import discord

from bot.buttons import JobButton, Look, job_template
from bot.interactions import guarded, submitted_value
from commands.edit import region
from commands.edit.common import (
    FORM_ID,
    PROMPT_FIELD,
    ZOOM_FIELD,
    ZOOM_INPUT_MAX,
    form_id,
    new_prompt,
    parse_zoom,
    prompt_input,
    run_edit,
    usable_job,
)
from engine.errors import TesseraError
from engine.jobs.model import Job

ZOOM_2 = "zoom2"
ZOOM_15 = "zoom15"
ZOOM_CUSTOM = "zoomc"
SQUARE = "square"
REGION = "region"
PANS = {"panl": "left", "panr": "right", "panu": "up", "pand": "down"}
_ARROWS = {"left": "⬅️", "right": "➡️", "up": "⬆️", "down": "⬇️"}
FORM_TIMEOUT_S = 15 * 60


class EditButton(JobButton, template=job_template(ZOOM_2, ZOOM_15, ZOOM_CUSTOM, SQUARE, REGION, *PANS)):
    """One editing button under an upscale (index 0: the upscale's one picture)."""

    actions: ClassVar[tuple[str, ...]] = (ZOOM_2, ZOOM_15, ZOOM_CUSTOM, SQUARE, REGION, *PANS)

    @classmethod
    def look(cls, action: str, index: int) -> Look:
        if action in PANS:
            return Look(None, _ARROWS[PANS[action]])
        return {ZOOM_2: Look("Zoom Out 2×", "🔍"), ZOOM_15: Look("Zoom Out 1.5×", "🔍"),
                ZOOM_CUSTOM: Look("Custom Zoom", "🔍"), SQUARE: Look("Make Square", "↔️"),
                REGION: Look("Vary (Region)", "🖌️")}[action]

    async def press(self, interaction: discord.Interaction) -> None:
        if self.action in PANS:
            await run_edit(interaction, "pan", self.job_id, self.index, direction=PANS[self.action])
        elif self.action in (ZOOM_2, ZOOM_15):
            await run_edit(interaction, "zoom", self.job_id, self.index, factor=2.0 if self.action == ZOOM_2 else 1.5)
        elif self.action == SQUARE:
            await run_edit(interaction, "square", self.job_id, self.index)
        elif self.action == ZOOM_CUSTOM:
            job = await usable_job(interaction, self.job_id)
            await interaction.response.send_modal(CustomZoomForm(job, self.index))
        else:
            await region.open_picker(interaction, await usable_job(interaction, self.job_id), self.index)


class CustomZoomForm(discord.ui.Modal, title="Custom Zoom"):
    """The prompt (editable: an `--ar` in it changes the canvas's shape) and a zoom of 1.0-2.0.

    Only the form: its submission is handled by `on_form` from the custom_id, after any restart."""

    def __init__(self, job: Job, index: int) -> None:
        super().__init__(timeout=FORM_TIMEOUT_S, custom_id=form_id("zoom", job.id, index))
        self.prompt = prompt_input(job, required=True)
        self.zoom: discord.ui.TextInput[Any] = discord.ui.TextInput(
            default="2", max_length=ZOOM_INPUT_MAX, required=True, custom_id=ZOOM_FIELD)
        self.add_item(discord.ui.Label(text="Prompt", description="Edit it to change what fills the new border; "
                                       "--ar 16:9 changes the shape", component=self.prompt))
        self.add_item(discord.ui.Label(text="Zoom (1.0 to 2.0)", description="How much farther out: 2 shows twice "
                                       "as much around the picture", component=self.zoom))


async def on_form(interaction: discord.Interaction) -> None:
    """A submitted edit form (Custom Zoom, or the Vary (Region) forms): start its edit."""
    data: Any = interaction.data or {}
    async with guarded(interaction) as guard:
        match = FORM_ID.fullmatch(str(data.get("custom_id", "")))
        if match is None:
            raise TesseraError("This form is from an older Tessera; press the button under the image again.")
        guard.job_id = job_id = match["job"]
        job = await usable_job(interaction, job_id)
        fields = data.get("components")
        prompt = new_prompt(job, submitted_value(fields, PROMPT_FIELD))
        index = int(match["index"])
        if match["what"] == "zoom":
            factor = parse_zoom(submitted_value(fields, ZOOM_FIELD))
            await run_edit(interaction, "zoom", job_id, index, factor=factor, prompt_text=prompt)
        else:
            await region.submit(interaction, match["what"], job_id, index, match["cells"], prompt, fields)

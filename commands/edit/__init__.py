"""Editing an image, Midjourney's way: Zoom Out, Pan, Make Square and Vary (Region).

One feature in four modules: `buttons` (the buttons under an upscale and the Custom Zoom
form), `region` (the Vary (Region) picker: a labelled 3×3 preview, a cells menu and its
forms), `slash` (`/edit zoom|pan|square|region`), `common` (starting an edit, the forms'
fields). Each edit makes a new job with a 2×2 grid of four candidates (U1–U4 / V1–V4 / 🔄
like any grid); the service (`Tessera.zoom/pan/square/region`) builds the canvas and mask.
"""

from __future__ import annotations

from bot.client import TesseraClient
from commands.edit.buttons import PANS, REGION, SQUARE, ZOOM_2, ZOOM_15, ZOOM_CUSTOM, EditButton, on_form
from commands.edit.common import FORM_PREFIX
from commands.edit.region import CellSelect, RegionButton
from commands.edit.slash import edit

HELP = {
    "commands": "`/edit zoom job [index] [factor] [prompt]` — zoom out 1-2×, new surroundings painted "
                "(`--ar` in the prompt changes the shape)\n"
                "`/edit pan job [index] direction [prompt]` — extend the picture by half towards one side\n"
                "`/edit square job [index] [prompt]` — extend a wide or tall picture to a square\n"
                "`/edit region job [index] cells|where|mask [prompt]` — repaint part of a picture: cells like a1,b2, "
                "a description like “the sky”, or a black-and-white mask",
    "buttons": "**Under an upscale** 🖌️ Vary (Region): pick cells or describe the part to repaint · "
               "🔍 Zoom Out 2× / 1.5× / Custom Zoom · ↔️ Make Square (wide or tall pictures) · ⬅️ ➡️ ⬆️ ⬇️ Pan. "
               "Each makes a new grid of four.",
}


def not_square(size: tuple[int, int] | None) -> bool:
    """Make Square only under a wide or tall picture (an unknown size: shown; a press on a
    square one says it is square already)."""
    return size is None or size[0] != size[1]


def setup(client: TesseraClient) -> None:
    client.tree.add_command(edit)
    client.buttons.add(EditButton, CellSelect, RegionButton)
    client.buttons.place("upscale", row=2, order=0, make=lambda job_id, _: [
        EditButton(REGION, job_id, 0), EditButton(ZOOM_2, job_id, 0), EditButton(ZOOM_15, job_id, 0),
        EditButton(ZOOM_CUSTOM, job_id, 0)])
    client.buttons.place("upscale", row=2, order=1, make=lambda job_id, _: [EditButton(SQUARE, job_id, 0)],
                         when=not_square)
    client.buttons.place("upscale", row=3, order=0,
                         make=lambda job_id, _: [EditButton(action, job_id, 0) for action in PANS])
    client.buttons.form(FORM_PREFIX, on_form)

"""Pictures as prompts, and prompts from pictures (issue 17): `/blend` mixes 2-5 pictures,
`/describe` writes four prompts for a picture, `/shorten` weighs a prompt's words and offers
shorter prompts. Their buttons open an editable prompt form (Midjourney's Remix) that runs
/imagine; `--sref`/`--cref` links are part of the prompt language itself (`/imagine`).

One feature in four modules: `blend`, `describe`, `shorten`, and `forms` (uploads and the
prompt form they share). Every button keeps its meaning in its custom_id and its state in
SQLite or DATA_DIR/inputs, so it works after a restart.
"""

from __future__ import annotations

import discord

from bot.client import TesseraClient
from bot.service import Tessera
from commands.pictures import describe as describing
from commands.pictures import shorten as shortening
from commands.pictures.blend import blend
from commands.pictures.forms import FORM, on_form_submit
from engine.jobs.model import Job, JobKind

HELP = {
    "commands": "`/blend image1 image2 [image3-5] [dimensions]` — four images mixing 2-5 pictures, no prompt needed\n"
                "`/describe image` — four prompts for a picture (with its `--ar`)\n"
                "`/shorten prompt` — which words matter to the model, and up to five shorter prompts",
    "buttons": "**1-4** under /describe and **1-5** under /shorten: edit that prompt and imagine it · "
               "**🔄** under /describe: four more prompts",
}


def setup(client: TesseraClient) -> None:
    client.tree.add_command(blend)
    client.tree.add_command(describing.describe)
    client.tree.add_command(shortening.shorten)
    client.buttons.add(describing.DescribeButton, shortening.ShortenButton)
    client.buttons.form(FORM, on_form_submit)

    async def show_description(job: Job, result: dict) -> tuple[str, discord.ui.View]:
        return await describing.show_answer(_service(client), job, result)

    async def show_shortening(job: Job, result: dict) -> tuple[str, discord.ui.View]:
        return await shortening.show_answer(_service(client), job, result)

    client.buttons.answer(JobKind.DESCRIBE.value, show_description)
    client.buttons.answer(JobKind.SHORTEN.value, show_shortening)


def _service(client: TesseraClient) -> Tessera:
    """The client's service: present whenever a job finishes (only `tessera commands` has none)."""
    if client.service is None:
        raise RuntimeError("no job service: `tessera commands` shows no answers")
    return client.service

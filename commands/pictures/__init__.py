"""Pictures as prompts, and prompts from pictures (issue 17): `/blend` mixes 2-5 pictures,
`/describe` writes four prompts for a picture, `/shorten` weighs a prompt's words and offers
shorter prompts. Their buttons open an editable prompt form (Midjourney's Remix) that runs
/imagine; `--sref`/`--cref` links are part of the prompt language itself (`/imagine`).

One feature in four modules: `blend`, `describe`, `shorten`, and `forms` (uploads and the
prompt form they share). Every button keeps its meaning in its custom_id and its state in
SQLite or DATA_DIR/inputs, so it works after a restart.
"""

from __future__ import annotations

from bot.client import TesseraClient
from commands.pictures.blend import blend
from commands.pictures.describe import DescribeButton, describe
from commands.pictures.forms import FORM, on_form_submit
from commands.pictures.shorten import ShortenButton, shorten

HELP = {
    "commands": "`/blend image1 image2 [image3-5] [dimensions]` — four images mixing 2-5 pictures, no prompt needed\n"
                "`/describe image` — four prompts for a picture (with its `--ar`)\n"
                "`/shorten prompt` — which words matter to the model, and up to five shorter prompts",
    "buttons": "**1-4** under /describe and **1-5** under /shorten: edit that prompt and imagine it · "
               "**🔄** under /describe: four more prompts",
}


def setup(client: TesseraClient) -> None:
    client.tree.add_command(blend)
    client.tree.add_command(describe)
    client.tree.add_command(shorten)
    client.buttons.add(DescribeButton, ShortenButton)
    client.buttons.form(FORM, on_form_submit)

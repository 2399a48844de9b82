"""Four Midjourney-style prompts for a picture, as /describe gives (needs CAPTION_MODEL).

The file is checked like an upload (at most IMAGE_PROMPT_MAX_BYTES, an allowed image type,
the pixel limits). Prints {"prompts": [four prompts, each ending with --ar W:H], "aspect"}.
`--again N` gives what the 🔄 button gives after N presses: the next-best phrases.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from bot.config import load_settings
from bot.subcommands._submit import run_command
from bot.subcommands.blend import read_picture


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", metavar="FILE", type=Path, help="a picture (PNG, JPEG, WebP, GIF)")
    parser.add_argument("--again", type=int, default=0, metavar="N", help="describe again: the Nth other answer")


def main(args: argparse.Namespace) -> int:
    return run_command("describe", lambda: _describe(args))


async def _describe(args: argparse.Namespace) -> int:
    import asyncio

    from bot.service import Tessera  # heavy for the CLI: aiosqlite, PIL

    settings = load_settings()
    data = await asyncio.to_thread(read_picture, args.file, settings.image_prompt_max_bytes)
    service = await Tessera.start(settings, resume=False, requester="cli")
    try:
        description = await service.describe(image_bytes=data, offset=args.again)
    finally:
        await service.close()
    print(json.dumps(description.to_json(), ensure_ascii=False))
    return 0

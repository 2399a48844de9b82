"""Four Midjourney-style prompts for a picture, as /describe gives (needs CAPTION_MODEL).

The file is checked like an upload (at most IMAGE_PROMPT_MAX_BYTES, an allowed image type,
the pixel limits), then described by a queue job, as the bot's /describe is: on this
machine's GPU thread, or on a GPU worker with QUEUE_URL=redis://…. Prints {"prompts": [four prompts, each ending with --ar W:H], "aspect"}.
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
    parser.add_argument("--user", type=int, default=0, help="user id to record the job under (default 0)")


def main(args: argparse.Namespace) -> int:
    return run_command("describe", lambda: _describe(args))


async def _describe(args: argparse.Namespace) -> int:
    import asyncio

    from bot.service import Tessera  # heavy for the CLI: aiosqlite, PIL

    settings = load_settings()
    data = await asyncio.to_thread(read_picture, args.file, settings.image_prompt_max_bytes)
    service = await Tessera.start(settings, resume=False, requester="cli")
    try:
        job = await service.describe(user_id=args.user, image_bytes=data, offset=args.again)
        answer = await service.answer_of(job)
    finally:
        await service.close()
    print(json.dumps(answer, ensure_ascii=False))
    return 0

"""Which words of a prompt matter to the model, and up to five shorter prompts, as /shorten.

Each word's weight (0-1) is how far leaving it out moves the prompt's embedding in the
model's own text encoder (MODEL_ID), measured by a queue job where the model runs (this
machine's GPU thread, or a GPU worker with QUEUE_URL=redis://…). Prints {"words": [{"word", "weight"}...], "prompts": [...]}.
"""

from __future__ import annotations

import argparse
import json

from bot.config import load_settings
from bot.subcommands._submit import run_command


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("prompt", metavar="PROMPT", help='the prompt, e.g. "a very beautiful red lighthouse --ar 16:9"')
    parser.add_argument("--user", type=int, default=0, help="user id to record the job under (default 0)")


def main(args: argparse.Namespace) -> int:
    return run_command("shorten", lambda: _shorten(args))


async def _shorten(args: argparse.Namespace) -> int:
    from bot.service import Tessera  # heavy for the CLI: aiosqlite, PIL

    service = await Tessera.start(load_settings(), resume=False, requester="cli")
    try:
        job = await service.shorten(user_id=args.user, prompt_text=args.prompt)
        answer = await service.answer_of(job)
    finally:
        await service.close()
    print(json.dumps(answer, ensure_ascii=False))
    return 0

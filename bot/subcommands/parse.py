"""Parse a prompt and print it as JSON.

Prints one JSON object, {"expansions": [...]}, one entry per {a, b} permutation, and exits 0;
an invalid prompt prints the message users would see on stderr and exits 1. The length and
job limits come from PROMPT_MAX_LENGTH and PROMPT_MAX_JOBS. Use `-` to read the prompt from
standard input, and `tessera parse -- "--ar 16:9 ..."` for a prompt that starts with `--`.

`--lora` names are checked against LORA_DIR (any well-formed name when it is not set) and
embeddings in EMBEDDINGS_DIR are marked. With `--user ID` (and `--guild ID`) the user's
`/prefer` suffix and options (and the server's styles) from DATA_DIR are expanded first.
When the text that runs differs from the one given, the object also has "expanded": that text.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from dataclasses import replace
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bot.config import Settings
    from engine.prompt import PromptContext


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("prompt", help='the prompt, quoted: "a cat --ar 16:9" (or - to read standard input)')
    parser.add_argument("--user", type=int, metavar="ID", help="expand this user's /prefer suffix and options")
    parser.add_argument("--guild", type=int, metavar="ID", help="expand this server's styles (with --user)")


async def _stored_context(settings: Settings, user_id: int | None, guild_id: int | None) -> PromptContext:
    from bot.shortcuts import Shortcuts, folder_context  # heavy for the CLI: pydantic (bot.config)
    from storage.api import Storage  # heavy for the CLI: aiosqlite

    async with await Storage.open(settings.data_dir) as storage:
        context = await Shortcuts(settings, storage).context(user_id, guild_id)
    return replace(context, lora_check=folder_context(settings).lora_check)


def main(args: argparse.Namespace) -> int:
    from bot.config import load_settings  # heavy for the CLI: pydantic
    from bot.shortcuts import folder_context  # heavy for the CLI: pydantic (bot.config)
    from engine.prompt import PromptError, parse  # kept with the settings it needs

    settings = load_settings()
    text = sys.stdin.read().rstrip("\n") if args.prompt == "-" else args.prompt
    limits = settings.prompt_limits
    if args.user is not None or args.guild is not None:
        context = asyncio.run(_stored_context(settings, args.user, args.guild))
    else:
        context = folder_context(settings)
    try:
        prompt = parse(text, limits, context=context)
    except PromptError as exc:
        print(exc.message, file=sys.stderr)
        return 1
    out = prompt.to_json()
    if prompt.raw != text:
        out["expanded"] = prompt.raw
    print(json.dumps(out, indent=2))
    return 0

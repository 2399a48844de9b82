"""Parse a prompt and print it as JSON.

Prints one JSON object, {"expansions": [...]}, one entry per {a, b} permutation, and exits 0;
an invalid prompt prints the message users would see on stderr and exits 1. The length and
job limits come from PROMPT_MAX_LENGTH and PROMPT_MAX_JOBS. Use `-` to read the prompt from
standard input, and `tessera parse -- "--ar 16:9 ..."` for a prompt that starts with `--`.
"""

from __future__ import annotations

import argparse
import json
import sys


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("prompt", help='the prompt, quoted: "a cat --ar 16:9" (or - to read standard input)')


def main(args: argparse.Namespace) -> int:
    from bot.config import load_settings  # heavy for the CLI: pydantic
    from engine.prompt import PromptError, parse  # kept with the settings it needs

    settings = load_settings()
    text = sys.stdin.read().rstrip("\n") if args.prompt == "-" else args.prompt
    limits = settings.prompt_limits
    try:
        prompt = parse(text, limits)
    except PromptError as exc:
        print(exc.message, file=sys.stderr)
        return 1
    print(json.dumps(prompt.to_json(), indent=2))
    return 0

"""Print the slash commands the bot would sync, as JSON, to check them before syncing.

Each entry is the payload Discord receives: name, description, options (with their types,
choices and limits) and default permissions. No token or connection is needed.
"""

from __future__ import annotations

import argparse
import json


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--compact", action="store_true", help="one line instead of indented JSON")


def command_payloads() -> list[dict]:
    """The sync payload of every slash command, in the order they are registered."""
    from bot.client import TesseraClient  # heavy for the CLI: discord, aiosqlite, PIL

    client = TesseraClient(None, sync_commands=False)
    return [command.to_dict(client.tree) for command in client.tree.get_commands()]


def main(args: argparse.Namespace) -> int:
    payloads = command_payloads()
    print(json.dumps(payloads, ensure_ascii=False, indent=None if args.compact else 2))
    return 0

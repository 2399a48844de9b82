"""Set a user's personal shortcuts, as `/prefer` does in Discord, on DATA_DIR's database.

  tessera prefer --user ID suffix "--ar 16:9 --s 250"   (or: suffix clear)
  tessera prefer --user ID suffix                        (print the suffix)
  tessera prefer --user ID option set moody "dark fog --no sun"
  tessera prefer --user ID option list
  tessera prefer --user ID option delete moody

A suffix is appended to every prompt of the user; an option `--moody` stands for its text.
Both are checked as the bot checks them (a value that would break prompts is refused, with
the reason, exit status 1). `--guild ID` checks against that server's `/admin style`s.
"""

from __future__ import annotations

import argparse
import asyncio


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--user", type=int, required=True, metavar="ID", help="the Discord user id")
    parser.add_argument("--guild", type=int, metavar="ID", help="the server whose styles the check may use")
    sub = parser.add_subparsers(dest="what", metavar="suffix|option", required=True)
    suffix = sub.add_parser("suffix", help="show, set or clear the text appended to every prompt")
    suffix.add_argument("text", nargs="?", help='the suffix, or "clear"')
    option = sub.add_parser("option", help="custom --options: set, list, delete")
    actions = option.add_subparsers(dest="action", metavar="set|list|delete", required=True)
    setting = actions.add_parser("set", help="--NAME stands for VALUE")
    setting.add_argument("name")
    setting.add_argument("value")
    actions.add_parser("list", help="the user's options")
    deleting = actions.add_parser("delete", help="forget --NAME")
    deleting.add_argument("name")


async def _run(args: argparse.Namespace) -> int:
    from bot.config import load_settings  # heavy for the CLI: pydantic
    from bot.shortcuts import Shortcuts  # heavy for the CLI: pydantic (bot.config)
    from storage.api import Storage  # heavy for the CLI: aiosqlite

    settings = load_settings()
    async with await Storage.open(settings.data_dir) as storage:
        shortcuts = Shortcuts(settings, storage)
        if args.what == "suffix":
            if args.text is None:
                print(await shortcuts.suffix(args.user))
            else:
                saved = await shortcuts.set_suffix(args.user, args.text, guild_id=args.guild)
                print(f"suffix: {saved}" if saved else "suffix cleared")
        elif args.action == "set":
            await shortcuts.set_option(args.user, args.name, args.value, guild_id=args.guild)
            print(f"--{args.name.strip().lower().removeprefix('--')} saved")
        elif args.action == "list":
            for name, value in (await shortcuts.list_options(args.user)).items():
                print(f"--{name}\t{value}")
        else:
            await shortcuts.delete_option(args.user, args.name, guild_id=args.guild)
            print(f"--{args.name.strip().lower().removeprefix('--')} deleted")
    return 0


def main(args: argparse.Namespace) -> int:
    return asyncio.run(_run(args))  # a refusal (TesseraError) is one line from `bot.cli.run_guarded`

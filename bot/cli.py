"""The `tessera` command: one entry point for operators, scripts and benchmarks.

Each subcommand lives in `bot/subcommands/<name>.py` with `configure(parser)` and
`main(args) -> exit status`, imported only when chosen so `tessera parse` never loads torch.
"""

from __future__ import annotations

import argparse
import errno
import importlib
import sys
from collections.abc import Sequence

from bot.config import ConfigError
from engine.errors import TesseraError

_DISK_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EACCES, errno.EPERM})

# name -> one-line help; the module bot.subcommands.<name> implements it.
SUBCOMMANDS: dict[str, str] = {
    "run": "run the Discord bot (same as `python -m bot`)",
    "parse": "parse a prompt and print it as JSON",
    "imagine": "generate a 2x2 grid from a prompt, as the bot would",
    "upscale": "upscale one image of a job with Real-ESRGAN",
    "vary": "make four variations of one image of a job",
    "reroll": "run a job's prompt again with a new seed",
    "blend": "blend 2 to 5 pictures into a grid (IP-Adapter), as /blend does",
    "describe": "four Midjourney-style prompts for a picture, as /describe gives",
    "shorten": "weigh a prompt's words with the model's text encoder; five shorter prompts",
    "jobs": "list stored jobs",
    "seed": "print the seed of a job",
    "worker": "run a GPU worker that takes jobs from Redis",
    "doctor": "check the database and image folder for problems",
    "prune": "delete old unshared images and their rows",
    "commands": "print the slash commands the bot would sync, as JSON",
    "invite": "print the link that adds the bot to a server, with the permissions it needs",
    "models": "download models and upscaler weights (pull), show what is here (list)",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tessera",
        description="Tessera: a self-hosted, Midjourney-style image bot for Discord.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, help_text in SUBCOMMANDS.items():
        module = importlib.import_module(f"bot.subcommands.{name}")
        child = sub.add_parser(name, help=help_text, description=(module.__doc__ or help_text).strip())
        module.configure(child)
        child.set_defaults(_module=module)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args._module.main(args) or 0)
    except ConfigError as exc:
        print(f"tessera: {exc}", file=sys.stderr)
        return 2
    except TesseraError as exc:  # a subcommand that did not catch it: still one line, no traceback
        print(f"tessera {args.command}: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        # A full or read-only disk outside DATA_DIR (--out, the model cache): one line naming
        # the file and the cause. Anything else is a bug and keeps its traceback.
        if exc.errno not in _DISK_ERRNOS:
            raise
        where = f" {exc.filename}" if exc.filename else ""
        print(f"tessera {args.command}: cannot write{where}: {exc.strerror}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())

"""The `tessera` command: one entry point for operators, scripts and benchmarks.

Each subcommand lives in `bot/subcommands/<name>.py` with `configure(parser)` and
`main(args) -> exit status`, imported only when chosen so `tessera parse` never loads torch.
"""

from __future__ import annotations

import argparse
import asyncio
import errno
import importlib
import sys
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

from bot.config import ConfigError
from engine.errors import JobCancelled, TesseraError

_DISK_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EACCES, errno.EPERM})

# name -> one-line help; the module bot.subcommands.<name> implements it.
SUBCOMMANDS: dict[str, str] = {
    "run": "run the Discord bot (same as `python -m bot`)",
    "parse": "parse a prompt and print it as JSON",
    "imagine": "generate a 2x2 grid from a prompt, as the bot would",
    "upscale": "upscale one image of a job with Real-ESRGAN",
    "vary": "make four variations of one image of a job",
    "reroll": "run a job's prompt again with a new seed",
    "zoom": "zoom out of one image of a job (factor 1-2): a new grid with the border painted",
    "pan": "extend one image of a job left, right, up or down: a new grid",
    "square": "make one wide or tall image of a job square: a new grid",
    "region": "repaint part of one image of a job (cells, a description or a mask): a new grid",
    "blend": "blend 2 to 5 pictures into a grid (IP-Adapter), as /blend does",
    "describe": "four Midjourney-style prompts for a picture, as /describe gives",
    "shorten": "weigh a prompt's words with the model's text encoder; five shorter prompts",
    "jobs": "list stored jobs",
    "seed": "print the seed of a job",
    "worker": "run a GPU worker that takes jobs from Redis",
    "doctor": "check the database and image folder for problems",
    "prune": "delete old unshared images and old /describe and /shorten suggestions",
    "commands": "print the slash commands the bot would sync, as JSON",
    "invite": "print the link that adds the bot to a server, with the permissions it needs",
    "web": "serve the web gallery of DATA_DIR alone (read-only)",
    "models": "download models and upscaler weights (pull), show what is here (list)",
    "loras": "list the LoRAs in LORA_DIR (names, sizes, previews)",
    "prefer": "set a user's suffix and custom --options, as /prefer does",
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


def report(command: str, message: object) -> int:
    """One line on stderr naming the subcommand; exit status 1."""
    print(f"tessera {command}: {message}", file=sys.stderr)
    return 1


def run_guarded(command: str, body: Callable[[], int | None], *, cancellable: bool = False) -> int:
    """Run a subcommand's body with the CLI's one error policy (the only copy of it).

    A bad setting is exit status 2; a user-fixable `TesseraError` (storage, prompt, queue) and a
    full or read-only disk outside DATA_DIR (--out, the model cache) are one line and status 1.
    With `cancellable` (subcommands that wait for jobs) Ctrl-C or a cancelled job is "cancelled".
    Anything else is a bug and keeps its traceback."""
    try:
        return int(body() or 0)
    except ConfigError as exc:
        print(f"tessera: {exc}", file=sys.stderr)
        return 2
    except TesseraError as exc:
        return report(command, exc)
    except (JobCancelled, KeyboardInterrupt):
        if not cancellable:
            raise
        return report(command, "cancelled")
    except OSError as exc:
        if exc.errno not in _DISK_ERRNOS:
            raise
        where = f" {exc.filename}" if exc.filename else ""
        return report(command, f"cannot write{where}: {exc.strerror}")


def run_async(command: str, main: Callable[[], Coroutine[Any, Any, int | None]]) -> int:
    """`asyncio.run(main())` under `run_guarded`, for subcommands that wait for jobs."""
    return run_guarded(command, lambda: asyncio.run(main()), cancellable=True)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    return run_guarded(args.command, lambda: args._module.main(args))


if __name__ == "__main__":
    sys.exit(main())

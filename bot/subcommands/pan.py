"""Pan one image of a job: the canvas grows by half its side in a direction, painted new.

The picture keeps its pixels; repeated pans keep growing it up to PAN_MAX_SIDE pixels.
Prints the same JSON object as `tessera imagine`.
"""

from __future__ import annotations

import argparse

from bot.subcommands._edit import add_edit_options, run_edit


def configure(parser: argparse.ArgumentParser) -> None:
    # No argparse `choices`: the service refuses an unknown direction with the bot's own message.
    parser.add_argument("--direction", required=True, help="left, right, up or down")
    add_edit_options(parser)


def main(args: argparse.Namespace) -> int:
    return run_edit("pan", args, lambda service, common: service.pan(direction=args.direction, **common))

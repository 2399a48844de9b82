"""Make one wide or tall image of a job square: the short side is extended and painted new.

Prints the same JSON object as `tessera imagine`.
"""

from __future__ import annotations

import argparse

from bot.subcommands._edit import add_edit_options, run_edit


def configure(parser: argparse.ArgumentParser) -> None:
    add_edit_options(parser)


def main(args: argparse.Namespace) -> int:
    return run_edit("square", args, lambda service, common: service.square(**common))

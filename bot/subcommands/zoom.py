"""Zoom out of one image of a job: the picture shrunk into the centre, the border painted new.

`--factor` is 1 to 2 (Midjourney's Zoom Out 2x, 1.5x and Custom Zoom); a `--ar W:H` in
`--prompt` changes the canvas shape. Prints the same JSON object as `tessera imagine`.
"""

from __future__ import annotations

import argparse

from bot.subcommands._edit import add_edit_options, run_edit


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--factor", type=float, default=2.0, help="how far to zoom out, 1 to 2 (default 2)")
    add_edit_options(parser)


def main(args: argparse.Namespace) -> int:
    return run_edit("zoom", args, lambda service, common: service.zoom(factor=args.factor, **common))

"""Vary (Region): repaint part of one image of a job and keep the rest.

The part is exactly one of `--cells a1,b2` (a 3x3 grid: columns a-c from the left, rows 1-3
from the top), `--where "the sky"` (found by SEGMENT_MODEL_ID) or `--mask FILE` (black and
white, the picture's size, white = repaint). `--prompt` says what to paint there. Prints the
same JSON object as `tessera imagine`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from bot.subcommands._edit import add_edit_options, run_edit
from engine.errors import TesseraError


def configure(parser: argparse.ArgumentParser) -> None:
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--cells", default=None, help="cells of a 3x3 grid, like a1,b2")
    which.add_argument("--where", default=None, help="a description of the part, like 'the sky'")
    which.add_argument("--mask", type=Path, default=None, help="a black-and-white PNG, white = repaint")
    add_edit_options(parser)


def main(args: argparse.Namespace) -> int:
    mask_bytes = None
    if args.mask is not None:
        try:
            with args.mask.open("rb") as handle:
                mask_bytes = handle.read(64 * 1024 * 1024 + 1)  # the service refuses past IMAGE_PROMPT_MAX_BYTES
        except OSError as exc:
            raise TesseraError(f"cannot read the mask {str(args.mask)!r}: {exc.strerror}") from None
    return run_edit("region", args, lambda service, common: service.region(
        cells=args.cells, where=args.where, mask_bytes=mask_bytes, **common))

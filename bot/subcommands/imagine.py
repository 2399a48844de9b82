"""Generate a 2x2 grid from a prompt, as the bot would."""

from __future__ import annotations

import argparse
import sys


def configure(parser: argparse.ArgumentParser) -> None:
    pass


def main(args: argparse.Namespace) -> int:
    print("tessera imagine: not available yet", file=sys.stderr)
    return 3

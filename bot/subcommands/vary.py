"""Make four variations of one image of a job."""

from __future__ import annotations

import argparse
import sys


def configure(parser: argparse.ArgumentParser) -> None:
    pass


def main(args: argparse.Namespace) -> int:
    print("tessera vary: not available yet", file=sys.stderr)
    return 3

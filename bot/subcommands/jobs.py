"""List stored jobs."""

from __future__ import annotations

import argparse
import sys


def configure(parser: argparse.ArgumentParser) -> None:
    pass


def main(args: argparse.Namespace) -> int:
    print("tessera jobs: not available yet", file=sys.stderr)
    return 3

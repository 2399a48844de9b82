"""Run a GPU worker that takes jobs from Redis."""

from __future__ import annotations

import argparse
import sys


def configure(parser: argparse.ArgumentParser) -> None:
    pass


def main(args: argparse.Namespace) -> int:
    print("tessera worker: not available yet", file=sys.stderr)
    return 3

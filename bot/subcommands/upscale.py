"""Upscale one image of a job with Real-ESRGAN."""

from __future__ import annotations

import argparse
import sys


def configure(parser: argparse.ArgumentParser) -> None:
    pass


def main(args: argparse.Namespace) -> int:
    print("tessera upscale: not available yet", file=sys.stderr)
    return 3

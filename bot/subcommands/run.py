"""Run the Discord bot, configured from the environment and `.env`."""

from __future__ import annotations

import argparse


def configure(parser: argparse.ArgumentParser) -> None:
    pass


def main(args: argparse.Namespace) -> int:
    from bot.__main__ import run

    return run()

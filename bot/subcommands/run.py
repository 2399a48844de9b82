"""Run the Discord bot, configured from the environment and `.env`."""

from __future__ import annotations

import argparse

from bot.__main__ import run


def configure(parser: argparse.ArgumentParser) -> None:
    pass


def main(args: argparse.Namespace) -> int:
    return run()

"""Tessera's slash commands: one module per command, each with its own help text.

Every module exposes `setup(tree)`, which adds its command(s) to the tree. Commands reach the
job service through `interaction.client.service`, so the same command objects serve the
real bot, the tests' harness and `tessera commands` (which only lists them).
"""

from __future__ import annotations

import importlib

from discord import app_commands

COMMAND_MODULES: tuple[str, ...] = (
    "imagine", "upscale", "variation", "seed", "settings", "info", "cancel", "show", "help", "admin",
    "share", "prompts",
)


def setup_commands(tree: app_commands.CommandTree) -> None:
    """Add every command module's commands to `tree`."""
    for name in COMMAND_MODULES:
        importlib.import_module(f"commands.{name}").setup(tree)

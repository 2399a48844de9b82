"""Tessera's storage: SQLite (jobs, settings, gallery) and the image folder.

Storage persists engine's types (`engine.jobs.model`) and its own (`storage.models`); it
imports engine, never the bot or commands. `from storage import Storage` is the entry point.
"""

from __future__ import annotations

from storage.api import Storage

__all__ = ["Storage"]

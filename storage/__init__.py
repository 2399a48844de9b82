"""Tessera's storage: SQLite (jobs, settings, gallery) and the image folder.

`from storage import Storage` works, but lazily: `storage.models` is imported by engine code
that must not load aiosqlite, and importing a submodule runs this file first.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from storage.api import Storage

__all__ = ["Storage"]


def __getattr__(name: str) -> Any:
    if name == "Storage":
        from storage.api import Storage

        return Storage
    raise AttributeError(f"module 'storage' has no attribute {name!r}")

"""Prompts the bot suggested under a /describe or /shorten answer, by key.

The buttons under those answers carry only a short key (Discord's custom_id holds 100
characters, the prompts do not fit); the prompts live here so a press after a restart still
finds its prompt. Content-addressed: a key is written once and never changes.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from storage import rows
from storage.sqlite import Database

MAX_PROMPTS = 5
MAX_PROMPT_CHARS = 6000  # longer than any prompt the parser accepts: a bound, not a rule


class SuggestionRepository:
    """Typed access to the `suggested_prompts` table."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def save(self, key: str, prompts: Sequence[str]) -> None:
        """Keep `prompts` under `key` (a second save of the same key keeps the first)."""
        if not 0 < len(prompts) <= MAX_PROMPTS or any(len(p) > MAX_PROMPT_CHARS for p in prompts):
            raise ValueError(f"1 to {MAX_PROMPTS} prompts of at most {MAX_PROMPT_CHARS} characters")
        await self._db.write("INSERT OR IGNORE INTO suggested_prompts (key, prompts, created_at) VALUES (?, ?, ?)",
                             (key, json.dumps(list(prompts), ensure_ascii=False), rows.now()))

    async def get(self, key: str) -> tuple[str, ...] | None:
        row = await self._db.fetchone("SELECT prompts FROM suggested_prompts WHERE key = ?", (key,))
        if row is None:
            return None
        return tuple(str(p) for p in json.loads(row["prompts"]))

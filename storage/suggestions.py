"""Prompts the bot suggested under a /describe or /shorten answer, by key.

The buttons under those answers carry only a short key (Discord's custom_id holds 100
characters, the prompts do not fit); the prompts live here so a press after a restart still
finds its prompt. Content-addressed: a key's prompts are written once and never change.

Rows are pruned by age with `tessera prune` (`prune`): a button whose prompts are gone says
so and names the command to run again (commands/pictures/forms.py). So `created_at` is when
the prompts were last *offered*: the same /shorten or /describe answer given again (same key)
refreshes it, or a prune could take the prompts of a button posted a minute ago.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from storage import rows
from storage.sqlite import Database

MAX_PROMPTS = 5
MAX_PROMPT_CHARS = 6000  # longer than any prompt the parser accepts: a bound, not a rule
PRUNE_CHUNK = 500  # rows deleted per transaction, so a big prune never holds the write lock for long


class SuggestionRepository:
    """Typed access to the `suggested_prompts` table."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def save(self, key: str, prompts: Sequence[str]) -> None:
        """Keep `prompts` under `key` (a second save of the same key keeps the first prompts
        and refreshes the time, since the answer was just offered again)."""
        if not 0 < len(prompts) <= MAX_PROMPTS or any(len(p) > MAX_PROMPT_CHARS for p in prompts):
            raise ValueError(f"1 to {MAX_PROMPTS} prompts of at most {MAX_PROMPT_CHARS} characters")
        await self._db.write("INSERT INTO suggested_prompts (key, prompts, created_at) VALUES (?, ?, ?) "
                             "ON CONFLICT (key) DO UPDATE SET created_at = max(created_at, excluded.created_at)",
                             (key, json.dumps(list(prompts), ensure_ascii=False), rows.now()))

    async def get(self, key: str) -> tuple[str, ...] | None:
        row = await self._db.fetchone("SELECT prompts FROM suggested_prompts WHERE key = ?", (key,))
        if row is None:
            return None
        return tuple(str(p) for p in json.loads(row["prompts"]))

    async def count_older_than(self, cutoff: float) -> int:
        """How many kept suggestions were last offered before `cutoff` (UNIX seconds)."""
        row = await self._db.fetchone("SELECT count(*) FROM suggested_prompts WHERE created_at < ?", (cutoff,))
        return int(row[0]) if row else 0

    async def prune(self, cutoff: float) -> int:
        """Delete the suggestions last offered before `cutoff`; return how many went.

        In chunks of `PRUNE_CHUNK`, each its own transaction (on the `created_at` index), so a
        running bot's writes wait at most one chunk. Each chunk re-tests the age under the write
        lock: a suggestion offered again meanwhile is young again and stays."""
        deleted = 0
        while True:
            async with self._db.transaction(durable=False) as tx:
                count = await tx.execute(
                    "DELETE FROM suggested_prompts WHERE rowid IN (SELECT rowid FROM suggested_prompts "
                    "WHERE created_at < ? ORDER BY created_at LIMIT ?)", (cutoff, PRUNE_CHUNK))
            deleted += count
            if count < PRUNE_CHUNK:
                return deleted

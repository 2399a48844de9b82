"""Prompts waiting for their author to confirm that they may make many jobs.

A prompt with permutations or `--repeat` that makes more than `CONFIRM_ABOVE_JOBS` jobs is held
here behind a short random key, which the "Run all N jobs" button carries in its custom_id.
"""

from __future__ import annotations

import secrets
import time
from collections import OrderedDict
from dataclasses import dataclass

CONFIRM_TTL_S = 15 * 60


@dataclass(frozen=True)
class PendingPrompt:
    """A prompt waiting for its author to confirm that it may make many jobs."""

    user_id: int
    prompt_text: str
    guild_id: int | None
    channel_id: int | None
    image_url: str | None
    count: int
    created: float
    style_urls: tuple[str, ...] = ()  # `/imagine`'s `sref` attachment, kept for "Run all N jobs"
    character_urls: tuple[str, ...] = ()  # its `cref` attachment


class PendingPrompts:
    """Prompts behind a "Run all N jobs" button, by a short random key (kept in memory only:
    a press after a restart is answered with "run /imagine again")."""

    def __init__(self, ttl: float = CONFIRM_TTL_S, size: int = 1000) -> None:
        self.ttl = ttl
        self.size = size
        self._items: OrderedDict[str, PendingPrompt] = OrderedDict()

    def put(self, prompt: PendingPrompt) -> str:
        key = secrets.token_urlsafe(9)
        self._items[key] = prompt
        while len(self._items) > self.size:
            self._items.popitem(last=False)
        return key

    def pop(self, key: str) -> PendingPrompt | None:
        prompt = self._items.pop(key, None)
        if prompt is None or time.monotonic() - prompt.created > self.ttl:
            return None
        return prompt

    def peek(self, key: str) -> PendingPrompt | None:
        return self._items.get(key)

"""Values only storage and its callers use: per-user and per-server settings, gallery entries.

The job system's types (`Job`, `JobState`, `ImageRecord`, ...) are engine's, in
`engine.jobs.model`; storage persists them. Plain dataclasses, never rows or dicts.

CONTRACT: these names and fields are used by commands and the bot. Add fields (with
defaults) if needed; do not rename or remove.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True)
class UserSettings:
    user_id: int
    quality: float | None = None
    aspect: str | None = None
    stylize: int | None = None
    sampler: str | None = None
    model: str | None = None
    private: bool = False
    lora: str | None = None  # a default LoRA (a name in LORA_DIR), used when a prompt names none


@dataclass(frozen=True)
class GuildSettings:
    guild_id: int
    allowed_channels: tuple[int, ...] = ()  # empty = everywhere
    max_queued_per_user: int | None = None
    banned_words: tuple[str, ...] = ()
    safety_checker: bool = False
    gallery_channel_id: int | None = None
    priority_role_id: int | None = None


@dataclass(frozen=True)
class GalleryEntry:
    id: int
    job_id: str
    index: int
    title: str | None
    author_id: int
    guild_id: int | None
    channel_id: int | None
    message_id: int | None
    prompt_text: str
    likes: int
    created_at: datetime
    removed: bool = False

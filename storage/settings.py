"""Per-user and per-guild settings, with get-or-default semantics.

Nothing is stored until someone changes a setting: reading an unknown user or guild returns
the dataclass defaults, so commands never have to create rows first.
"""

from __future__ import annotations

import json

from storage import rows
from storage.models import GuildSettings, UserSettings
from storage.sqlite import Database


class SettingsRepository:
    """Typed access to the `user_settings` and `guild_settings` tables."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def user(self, user_id: int) -> UserSettings:
        row = await self._db.fetchone("SELECT * FROM user_settings WHERE user_id = ?", (user_id,))
        if row is None:
            return UserSettings(user_id=user_id)
        return UserSettings(
            user_id=row["user_id"],
            quality=row["quality"],
            aspect=row["aspect"],
            stylize=row["stylize"],
            sampler=row["sampler"],
            model=row["model"],
            private=bool(row["private"]),
            lora=row["lora"],
        )

    async def save_user(self, settings: UserSettings) -> UserSettings:
        await self._db.write(
            """INSERT INTO user_settings (user_id, quality, aspect, stylize, sampler, model, private, lora, updated_at)
               VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
               ON CONFLICT (user_id) DO UPDATE SET quality = excluded.quality, aspect = excluded.aspect,
                   stylize = excluded.stylize, sampler = excluded.sampler, model = excluded.model,
                   private = excluded.private, lora = excluded.lora, updated_at = excluded.updated_at""",
            (settings.user_id, settings.quality, settings.aspect, settings.stylize, settings.sampler,
             settings.model, int(settings.private), settings.lora, rows.now()),
        )
        return await self.user(settings.user_id)

    async def guild(self, guild_id: int) -> GuildSettings:
        row = await self._db.fetchone("SELECT * FROM guild_settings WHERE guild_id = ?", (guild_id,))
        if row is None:
            return GuildSettings(guild_id=guild_id)
        return GuildSettings(
            guild_id=row["guild_id"],
            allowed_channels=tuple(json.loads(row["allowed_channels"])),
            max_queued_per_user=row["max_queued_per_user"],
            banned_words=tuple(json.loads(row["banned_words"])),
            safety_checker=bool(row["safety_checker"]),
            gallery_channel_id=row["gallery_channel_id"],
            priority_role_id=row["priority_role_id"],
        )

    async def save_guild(self, settings: GuildSettings) -> GuildSettings:
        await self._db.write(
            """INSERT INTO guild_settings (guild_id, allowed_channels, max_queued_per_user, banned_words,
                   safety_checker, gallery_channel_id, priority_role_id, updated_at)
               VALUES (?, ?, ?, ?, ?, ?, ?, ?)
               ON CONFLICT (guild_id) DO UPDATE SET allowed_channels = excluded.allowed_channels,
                   max_queued_per_user = excluded.max_queued_per_user, banned_words = excluded.banned_words,
                   safety_checker = excluded.safety_checker, gallery_channel_id = excluded.gallery_channel_id,
                   priority_role_id = excluded.priority_role_id, updated_at = excluded.updated_at""",
            (settings.guild_id, json.dumps([int(c) for c in settings.allowed_channels]),
             settings.max_queued_per_user, json.dumps(list(settings.banned_words), ensure_ascii=False),
             int(settings.safety_checker), settings.gallery_channel_id, settings.priority_role_id, rows.now()),
        )
        return await self.guild(settings.guild_id)

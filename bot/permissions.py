"""The Discord permissions Tessera needs, in one list, and what uses it.

`tessera invite` builds the OAuth2 URL from this list, and the bot checks it at start in every
channel it is configured to use (`GALLERY_CHANNEL_ID`, each server's `/admin gallery` and
`/admin channels`), warning by name about each one missing. One list means the invite link, the
README and the check can never disagree about what the bot asks for.

Slash-command answers and edits of them within 15 minutes go through the interaction webhook
and need none of these; the list is what the bot does with its own account: results that come
after the interaction token expired (posted as replies, in threads too), gallery posts (an embed
with a file), and the DM-closed notice of the ✉️ reaction.
"""

from __future__ import annotations

import base64
import binascii
import logging
from collections.abc import Iterable
from typing import Any

import discord

log = logging.getLogger(__name__)

# (discord.Permissions flag, why Tessera needs it). Nothing here is privileged or moderating.
REQUIRED: tuple[tuple[str, str], ...] = (
    ("view_channel", "see the channels it answers in and the gallery channel"),
    ("send_messages", "post results that arrive after the 15-minute interaction window, and gallery posts"),
    ("send_messages_in_threads", "do the same when /imagine was used in a thread"),
    ("embed_links", "gallery posts are embeds"),
    ("attach_files", "results and gallery posts carry the image as a file"),
    ("read_message_history", "late results are posted as replies to the job's message"),
)
SCOPES: tuple[str, ...] = ("bot", "applications.commands")


def required_permissions() -> discord.Permissions:
    """The bitfield of `REQUIRED`."""
    return discord.Permissions(**{name: True for name, _ in REQUIRED})


def permission_label(name: str) -> str:
    """'read_message_history' -> 'Read Message History', as Discord's settings name it."""
    return name.replace("_", " ").title()


def missing_permissions(granted: discord.Permissions) -> list[str]:
    """The names (flags) in `REQUIRED` that `granted` lacks, in list order."""
    return [name for name, _ in REQUIRED if not getattr(granted, name)]


def application_id_from_token(token: str) -> int | None:
    """The application (client) id a bot token starts with, or None if it does not look like one.

    A bot token is `base64(application id).timestamp.hmac`; only the first part is decoded,
    the token itself is never printed.
    """
    first = token.strip().split(".", 1)[0]
    if not first or len(first) > 40:
        return None
    try:
        decoded = base64.b64decode(first + "=" * (-len(first) % 4), altchars=b"-_", validate=True)
    except (binascii.Error, ValueError):
        return None
    text = decoded.decode("ascii", errors="replace")
    return int(text) if text.isdigit() and 15 <= len(text) <= 21 else None


def invite_url(client_id: int) -> str:
    """The OAuth2 URL that adds the bot with exactly `REQUIRED` and the slash-command scope."""
    return discord.utils.oauth_url(client_id, permissions=required_permissions(), scopes=SCOPES)


async def configured_channels(client: Any, gallery_channel_id: int | None) -> list[tuple[Any, str]]:
    """(channel, why it is configured) for every channel of a joined server Tessera is set to use."""
    found: list[tuple[Any, str]] = []
    seen: set[int] = set()

    def add(channel_id: int | None, why: str) -> None:
        channel = client.get_channel(channel_id) if channel_id else None
        if channel is not None and channel.id not in seen and getattr(channel, "guild", None) is not None:
            seen.add(channel.id)
            found.append((channel, why))

    add(gallery_channel_id, "GALLERY_CHANNEL_ID")
    service = getattr(client, "service", None)
    for guild in list(getattr(client, "guilds", [])):
        if service is None:
            break
        try:
            rules = await service.guild_settings(guild.id)
        except Exception:
            log.debug("could not read the settings of server %s", guild.id, exc_info=True)
            continue
        add(rules.gallery_channel_id, "its gallery channel (/admin gallery)")
        for channel_id in rules.allowed_channels:
            add(channel_id, "a channel allowed with /admin channels")
    return found


def warn_missing(channels: Iterable[tuple[Any, str]]) -> list[str]:
    """Log one warning per configured channel where the bot lacks a needed permission; the lines."""
    lines: list[str] = []
    for channel, why in channels:
        me = channel.guild.me
        if me is None:
            continue
        missing = missing_permissions(channel.permissions_for(me))
        if missing:
            names = ", ".join(permission_label(name) for name in missing)
            line = (f"missing permission in #{channel.name} ({channel.id}, {why}) of server {channel.guild.name!r}: "
                    f"{names}; grant it to the bot's role there, or invite it again with `tessera invite`")
            log.warning("%s", line)
            lines.append(line)
    return lines


async def check_at_start(client: Any, gallery_channel_id: int | None) -> None:
    """On ready: the invite URL when the bot is in no server yet, else warnings per missing permission."""
    if not client.guilds:
        app_id = getattr(client, "application_id", None) or getattr(client.user, "id", None)
        if app_id:
            log.info("the bot is in no server yet; invite it with %s", invite_url(int(app_id)))
        return
    warn_missing(await configured_channels(client, gallery_channel_id))

"""`/admin …`: per-server rules, for members with the Manage Server permission.

Allowed channels, a per-user queue limit, banned words, the NSFW policy (the diffusers safety
checker), the gallery channel and a priority role, all stored in SQLite per server; `/admin
web` prints the link to the server's page of the web gallery. Discord
hides the group from others (`default_permissions`), and each subcommand checks again,
because server owners can override what Discord shows.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Literal

import discord
from discord import app_commands

from bot.client import TesseraClient
from bot.interactions import defer_private, guarded, is_admin, reply, service_of
from engine.errors import TesseraError
from storage.models import GuildSettings

MAX_BANNED_WORD = 100
# Words per server. Every prompt made in the server is checked against all of them on the
# event loop, and any stranger can make a server and manage it, so the list is bounded.
MAX_BANNED_WORDS = 200
CHANNELS_ROOM = 500
WORDS_ROOM = 900  # with the other lines and a one-line note, well under Discord's 2,000

_ADMIN_HELP = """\
Only members with the Manage Server permission see and use these.
`/admin show` — this server's Tessera settings
`/admin channels add|remove|clear [channel]` — where Tessera may make images (none listed: everywhere)
`/admin limit waiting` — how many waiting jobs one person may have
`/admin banned add|remove|clear [word]` — words refused in prompts, on top of the built-in list
`/admin nsfw filter` — run the safety checker on images made here
`/admin gallery [channel]` — the channel ❤️ Share and `/share` post to (empty: sharing off)
`/admin priority [role]` — members with this role go ahead in the queue
`/admin web` — the link to this server's page of the web gallery (when the operator turned it on)
`/admin style add <name> <text>|delete <name>|list` — `--style name` stands for the text in prompts made here"""
HELP = {"admin": _ADMIN_HELP}


class NotAdmin(app_commands.CheckFailure):
    def __init__(self) -> None:
        super().__init__("Only members with the Manage Server permission can change Tessera's server settings.")


def _admin_only(interaction: discord.Interaction) -> bool:
    if interaction.guild_id is None:
        raise app_commands.NoPrivateMessage()
    if not is_admin(interaction):
        raise NotAdmin()
    return True


admin = app_commands.Group(name="admin", description="Tessera's rules for this server (Manage Server only)",
                           guild_only=True, default_permissions=discord.Permissions(manage_guild=True))


async def _load(interaction: discord.Interaction) -> GuildSettings:
    assert interaction.guild_id is not None
    return await service_of(interaction).guild_settings(interaction.guild_id)


async def _save(interaction: discord.Interaction, settings: GuildSettings, message: str) -> None:
    saved = await service_of(interaction).save_guild_settings(settings)
    await reply(interaction, f"{message}\n\n{describe(saved)}", ephemeral=True)


def listing(items: list[str], room: int) -> str:
    """`items` joined by commas, cut to whole items within `room` characters ("… and N more")."""
    if len(", ".join(items)) <= room:
        return ", ".join(items)
    shown: list[str] = []
    for number, item in enumerate(items):
        rest = len(items) - number  # this item and those after it
        more = f", … and {rest - 1} more" if rest > 1 else ""
        if len(", ".join([*shown, item])) + len(more) > room:
            return ", ".join([*shown, f"… and {rest} more"])
        shown.append(item)
    return ", ".join(shown)


def describe(settings: GuildSettings) -> str:
    """The server's rules; long lists are shortened so the answer stays one message (2,000)."""
    channels = listing([f"<#{c}>" for c in settings.allowed_channels], CHANNELS_ROOM) or "every channel"
    words = (listing([f"`{w}`" for w in settings.banned_words], WORDS_ROOM)
             or "none (the built-in list still applies)")
    return "\n".join([
        "**Tessera on this server**",
        f"• channels: {channels}",
        f"• waiting jobs per person: {settings.max_queued_per_user or 'the bot-wide limit'}",
        f"• banned words: {words}",
        f"• NSFW filter (safety checker): {'on' if settings.safety_checker else 'off'}",
        f"• gallery channel: {f'<#{settings.gallery_channel_id}>' if settings.gallery_channel_id else 'not set'}",
        f"• priority role: {f'<@&{settings.priority_role_id}>' if settings.priority_role_id else 'none'}",
    ])


@admin.command(name="show", description="Show this server's Tessera settings")
@app_commands.check(_admin_only)
async def show(interaction: discord.Interaction) -> None:
    async with guarded(interaction):
        await defer_private(interaction)
        await reply(interaction, describe(await _load(interaction)), ephemeral=True)


@admin.command(name="channels", description="Where Tessera may make images (none listed: everywhere)")
@app_commands.describe(action="add or remove a channel, or clear the list", channel="The channel")
@app_commands.check(_admin_only)
async def channels(interaction: discord.Interaction, action: Literal["add", "remove", "clear"],
                   channel: discord.TextChannel | None = None) -> None:
    async with guarded(interaction):
        await defer_private(interaction)
        current = await _load(interaction)
        allowed = list(current.allowed_channels)
        if action == "clear":
            allowed = []
            message = "Tessera may now make images in every channel."
        else:
            if channel is None:
                raise TesseraError(f"Pick the channel to {action}.")
            if action == "add" and channel.id not in allowed:
                allowed.append(channel.id)
            elif action == "remove":
                allowed = [c for c in allowed if c != channel.id]
            message = f"{'Added' if action == 'add' else 'Removed'} {channel.mention}."
        await _save(interaction, replace(current, allowed_channels=tuple(allowed)), message)


@admin.command(name="limit", description="How many waiting jobs one person may have (0: the bot-wide limit)")
@app_commands.describe(waiting="Most waiting jobs per person; 0 removes this server's limit")
@app_commands.check(_admin_only)
async def limit(interaction: discord.Interaction, waiting: app_commands.Range[int, 0, 1000]) -> None:
    async with guarded(interaction):
        await defer_private(interaction)
        current = await _load(interaction)
        await _save(interaction, replace(current, max_queued_per_user=waiting or None),
                    f"Each person may now have {waiting or 'the bot-wide number of'} waiting jobs.")


@admin.command(name="banned", description="Words refused in prompts on this server (on top of the built-in list)")
@app_commands.describe(action="add or remove a word, or clear the list", word="The word or phrase")
@app_commands.check(_admin_only)
async def banned(interaction: discord.Interaction, action: Literal["add", "remove", "clear"],
                 word: str | None = None) -> None:
    async with guarded(interaction):
        await defer_private(interaction)
        current = await _load(interaction)
        words = list(current.banned_words)
        if action == "clear":
            words = []
            message = "Cleared this server's banned words."
        else:
            cleaned = " ".join((word or "").lower().split())
            if not cleaned or len(cleaned) > MAX_BANNED_WORD:
                raise TesseraError(f"Give a word or phrase of 1 to {MAX_BANNED_WORD} characters.")
            if action == "add" and cleaned not in words:
                if len(words) >= MAX_BANNED_WORDS:
                    raise TesseraError(f"This server already bans {len(words)} words or phrases, the most it can; "
                                       "remove one first (`/admin banned remove`) or `clear` the list.")
                words.append(cleaned)
            elif action == "remove":
                words = [w for w in words if w != cleaned]
            message = f"{'Banned' if action == 'add' else 'Allowed again'}: `{cleaned}`."
        await _save(interaction, replace(current, banned_words=tuple(words)), message)


@admin.command(name="nsfw", description="Run the safety checker on images made here (flagged images are replaced)")
@app_commands.describe(filter="on: check every image and replace flagged ones with a notice")
@app_commands.check(_admin_only)
async def nsfw(interaction: discord.Interaction, filter: bool) -> None:
    async with guarded(interaction):
        await defer_private(interaction)
        current = await _load(interaction)
        await _save(interaction, replace(current, safety_checker=filter),
                    f"The NSFW filter is now {'on' if filter else 'off'}.")


@admin.command(name="gallery", description="The channel where ❤️ Share posts images (empty: sharing off)")
@app_commands.describe(channel="The gallery channel; leave empty to turn sharing off")
@app_commands.check(_admin_only)
async def gallery(interaction: discord.Interaction, channel: discord.TextChannel | None = None) -> None:
    async with guarded(interaction):
        await defer_private(interaction)
        current = await _load(interaction)
        await _save(interaction, replace(current, gallery_channel_id=channel.id if channel else None),
                    f"Shared images now go to {channel.mention}." if channel else "Sharing is now off.")


@admin.command(name="priority", description="Members with this role go ahead in the queue (empty: none)")
@app_commands.describe(role="The priority role; leave empty for none")
@app_commands.check(_admin_only)
async def priority(interaction: discord.Interaction, role: discord.Role | None = None) -> None:
    async with guarded(interaction):
        await defer_private(interaction)
        current = await _load(interaction)
        await _save(interaction, replace(current, priority_role_id=role.id if role else None),
                    f"Members with {role.mention} now go ahead in the queue." if role else "No priority role.")


@admin.command(name="web", description="The link to this server's page of the web gallery")
@app_commands.check(_admin_only)
async def web(interaction: discord.Interaction) -> None:
    async with guarded(interaction):
        await defer_private(interaction)
        base = service_of(interaction).settings.web_url
        if base is None:
            raise TesseraError("The web gallery is off: the bot's operator can turn it on with WEB_PORT "
                               "(and WEB_BASE_URL, the address people open), see the README.")
        await reply(interaction, f"This server's web gallery: {base}/g/{interaction.guild_id}\n"
                                 "-# It shows what members shared with ❤️ Share; a removed share disappears at once.",
                    ephemeral=True)


style = app_commands.Group(name="style", description="Server styles: --style name stands for a text here",
                           parent=admin)
STYLE_TEXT_MAX = 1500  # the service applies PROMPT_MAX_LENGTH // 4
STYLES_ROOM = 1800


def _code(text: str) -> str:
    return text.replace("`", "ˋ")


@style.command(name="add", description="Make --style name stand for a text in prompts made on this server")
@app_commands.describe(name="The style's name, like neon (used as --style neon)", text="What it stands for")
@app_commands.check(_admin_only)
async def style_add(interaction: discord.Interaction, name: app_commands.Range[str, 1, 40],
                    text: app_commands.Range[str, 1, STYLE_TEXT_MAX]) -> None:
    async with guarded(interaction):
        await defer_private(interaction)
        assert interaction.guild_id is not None
        await service_of(interaction).add_style(interaction.guild_id, name, text)
        await reply(interaction, f"Saved: `--style {_code(name.strip().lower())}` now stands for "
                                 f"`{_code(' '.join(text.split()))}` on this server.", ephemeral=True)


@style.command(name="delete", description="Remove one of this server's styles")
@app_commands.describe(name="The style's name")
@app_commands.check(_admin_only)
async def style_delete(interaction: discord.Interaction, name: app_commands.Range[str, 1, 40]) -> None:
    async with guarded(interaction):
        await defer_private(interaction)
        assert interaction.guild_id is not None
        await service_of(interaction).delete_style(interaction.guild_id, name)
        await reply(interaction, f"Deleted `--style {_code(name.strip().lower())}`.", ephemeral=True)


@style.command(name="list", description="This server's styles")
@app_commands.check(_admin_only)
async def style_list(interaction: discord.Interaction) -> None:
    async with guarded(interaction):
        await defer_private(interaction)
        assert interaction.guild_id is not None
        styles = await service_of(interaction).list_styles(interaction.guild_id)
        lines = [f"`--style {key}` → `{_code(value if len(value) <= 120 else value[:119] + '…')}`"
                 for key, value in styles.items()]
        text = "\n".join(lines) if lines else "This server has no styles yet: `/admin style add name text`."
        if len(text) > STYLES_ROOM:
            text = text[:STYLES_ROOM].rsplit("\n", 1)[0] + f"\n… ({len(styles)} styles in all)"
        await reply(interaction, text, ephemeral=True)


def setup(client: TesseraClient) -> None:
    client.tree.add_command(admin)

"""The Discord client: slash commands, restart-proof buttons, queue events and ✉️ reactions.

`TesseraClient` is an `AutoShardedClient`: on a small bot Discord recommends one shard and
that is what it gets; in thousands of guilds it shards by itself. Only non-privileged intents
are used (guilds, reactions, and guild messages only to see gallery posts deleted); Tessera never
reads message content.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import discord
from discord import app_commands

from bot.gallery import forget_deleted_posts
from bot.gallery_views import GALLERY_ITEMS, on_modal_submit
from bot.progress import EDIT_INTERVAL_S, TOKEN_TTL_S
from bot.tracker import ORPHAN_GRACE_S, JobTracker
from bot.views import DYNAMIC_ITEMS

log = logging.getLogger(__name__)

CONFIRM_TTL_S = 15 * 60
# How long a press that one of our items claims may go unanswered before the client answers it
# itself: Discord shows "This interaction failed" after 3 s, and every handler defers at once.
UNANSWERED_GRACE_S = 2.5
_POLL_S = 0.05


class TesseraTree(app_commands.CommandTree):
    """The command tree; errors discord.py raises around commands become user messages."""

    async def on_error(self, interaction: discord.Interaction, error: app_commands.AppCommandError) -> None:
        from commands.common import on_tree_error  # cycle: bot -> commands; phase 2 removes it

        await on_tree_error(interaction, error)


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


def default_intents() -> discord.Intents:
    intents = discord.Intents.none()
    intents.guilds = True
    intents.guild_reactions = True
    intents.dm_reactions = True
    intents.guild_messages = True  # MESSAGE_DELETE: a moderator deleting a gallery post (no content intent)
    return intents


class TesseraClient(discord.AutoShardedClient):
    """Tessera's bot. `service` is a `bot.service.Tessera` (or anything with its methods)."""

    def __init__(self, service: Any, *, dev_guild_id: int | None = None, sync_commands: bool = True,
                 edit_interval: float = EDIT_INTERVAL_S, token_ttl: float = TOKEN_TTL_S,
                 clock: Callable[[], float] = time.monotonic, orphan_grace: float = ORPHAN_GRACE_S,
                 unanswered_grace: float = UNANSWERED_GRACE_S, **options: Any) -> None:
        options.setdefault("intents", default_intents())
        options.setdefault("allowed_mentions", discord.AllowedMentions(everyone=False, roles=False, users=True,
                                                                       replied_user=False))
        super().__init__(**options)
        from commands import setup_commands  # cycle: bot -> commands; phase 2 removes it

        self.service = service
        self.dev_guild_id = dev_guild_id
        self.sync_on_start = sync_commands
        self.tree = TesseraTree(self)
        setup_commands(self.tree)
        self.tracker = JobTracker(self, service, interval=edit_interval, token_ttl=token_ttl, clock=clock,
                                  orphan_grace=orphan_grace)
        self.pending = PendingPrompts()
        self.unanswered_grace = unanswered_grace
        self._prepared = False

    async def setup_hook(self) -> None:
        await self.prepare()
        if self.sync_on_start:
            await self.sync_commands()

    async def prepare(self) -> None:
        """Everything `setup_hook` does except syncing: buttons and queue events."""
        if self._prepared:
            return
        self._prepared = True
        self.add_dynamic_items(*DYNAMIC_ITEMS, *GALLERY_ITEMS)
        if self.service is not None:
            self.service.subscribe(self.tracker.on_event)

    async def sync_commands(self) -> list[app_commands.AppCommand]:
        """To `DEV_GUILD_ID` at once when set (for development), else globally (up to an hour)."""
        if self.dev_guild_id:
            guild = discord.Object(id=self.dev_guild_id)
            self.tree.copy_global_to(guild=guild)
            synced = await self.tree.sync(guild=guild)
            log.info("synced %d slash commands to guild %s", len(synced), self.dev_guild_id)
        else:
            synced = await self.tree.sync()
            log.info("synced %d slash commands globally (Discord may take up to an hour to show them)", len(synced))
        return synced

    async def on_interaction(self, interaction: discord.Interaction) -> None:
        """Every button press and form submission gets an answer.

        discord.py has already handed the interaction to the stored views and `DynamicItem`s
        (`ViewStore.dispatch_view`) when this runs. Modal forms kept by custom_id rather than in
        memory (the gallery's 🔁 Remix) are handled here. Anything no item of ours claims (a
        button from an older version of Tessera, or another app's custom_id format) is answered
        at once; a claimed one that still has no answer after `unanswered_grace` seconds (its
        item refused it, or its message no longer carries it) is answered then."""

        if interaction.type not in (discord.InteractionType.component, discord.InteractionType.modal_submit):
            return
        try:
            if await on_modal_submit(interaction):
                return
        except Exception:
            log.exception("could not handle a form submission")
        if self._claimed(interaction):
            loop = asyncio.get_running_loop()
            deadline = loop.time() + self.unanswered_grace
            while not interaction.response.is_done() and loop.time() < deadline:
                await asyncio.sleep(_POLL_S)
            if interaction.response.is_done():
                return
            log.warning("nothing answered %s %r in %.1f s; answering it as stale", interaction.type.name,
                        _custom_id(interaction), self.unanswered_grace)
        await answer_unknown(interaction)

    def _claimed(self, interaction: discord.Interaction) -> bool:
        """Whether a live view, a `DynamicItem` or a modal of this process takes `interaction`.

        Mirrors the look-ups of discord.py's `ViewStore.dispatch_view` / `dispatch_modal`."""
        custom_id = _custom_id(interaction)
        store = self._connection._view_store
        if interaction.type is discord.InteractionType.modal_submit:
            return custom_id in getattr(store, "_modals", {})
        if any(pattern.fullmatch(custom_id) for pattern in getattr(store, "_dynamic_items", {})):
            return True
        key = ((interaction.data or {}).get("component_type"), custom_id)
        views = getattr(store, "_views", {})
        message_id = interaction.message.id if interaction.message is not None else None
        return key in views.get(message_id, {}) or key in views.get(None, {})

    async def on_ready(self) -> None:
        log.info("logged in as %s (%s) in %d guilds", self.user, getattr(self.user, "id", "?"), len(self.guilds))

    async def on_raw_reaction_add(self, payload: discord.RawReactionActionEvent) -> None:
        from commands.seed import on_envelope_reaction  # cycle: bot -> commands; phase 2 removes it

        try:
            await on_envelope_reaction(self, payload)
        except Exception:
            log.exception("could not handle a reaction on message %s", payload.message_id)

    async def on_raw_message_delete(self, payload: discord.RawMessageDeleteEvent) -> None:
        await forget_deleted_posts(self.service, (payload.message_id,))

    async def on_raw_bulk_message_delete(self, payload: discord.RawBulkMessageDeleteEvent) -> None:
        await forget_deleted_posts(self.service, payload.message_ids)


def _custom_id(interaction: discord.Interaction) -> str:
    return str((interaction.data or {}).get("custom_id", ""))[:100]


def unknown_text(interaction: discord.Interaction) -> str:
    """What a press on a component Tessera does not know is told (words for what was pressed)."""
    if interaction.type is discord.InteractionType.modal_submit:
        what = "form"
    elif (interaction.data or {}).get("component_type") == discord.ComponentType.button.value:
        what = "button"
    else:
        what = "menu"
    return (f"This {what} is from an older version of Tessera or from another app, so it does nothing now. "
            "Run the command again (for example `/imagine` or `/settings`) to get a fresh one.")


async def answer_unknown(interaction: discord.Interaction) -> None:
    """Answer privately so Discord never shows "This interaction failed" (see `on_interaction`)."""
    try:
        if not interaction.response.is_done():
            await interaction.response.send_message(unknown_text(interaction), ephemeral=True)
    except (discord.HTTPException, discord.InteractionResponded) as exc:
        log.info("could not answer %s %r (%s)", interaction.type.name, _custom_id(interaction), exc)

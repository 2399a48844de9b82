"""The Discord client: slash commands, restart-proof buttons, queue events and ✉️ reactions.

`TesseraClient` is an `AutoShardedClient`: on a small bot Discord recommends one shard and
that is what it gets; in thousands of guilds it shards by itself. Only non-privileged intents
are used (guilds, reactions, and guild messages only to see gallery posts deleted); Tessera never
reads message content.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import discord
from discord import app_commands

from bot.buttons import ButtonRegistry
from bot.gallery import forget_deleted_posts
from bot.interactions import on_tree_error
from bot.pending import PendingPrompts
from bot.progress import EDIT_INTERVAL_S, TOKEN_TTL_S
from bot.service import Tessera
from bot.tracker import ORPHAN_GRACE_S, JobTracker

log = logging.getLogger(__name__)

# How long a press that one of our items claims may go unanswered before the client answers it
# itself: Discord shows "This interaction failed" after 3 s, and every handler defers at once.
UNANSWERED_GRACE_S = 2.5
_POLL_S = 0.05

# The features, loaded by name like discord.py extensions: each module's `setup(client)` adds its
# slash commands, its buttons and their places on result messages, its forms and listeners, and
# its listeners; its module-level `HELP` is its part of `/help`. Nothing in bot/ imports a
# feature; the code map in README.md says which file owns what.
FEATURES: tuple[str, ...] = (
    "commands.imagine", "commands.upscale", "commands.variation", "commands.edit", "commands.seed", "commands.settings",
    "commands.info", "commands.cancel", "commands.show", "commands.help", "commands.admin", "commands.gallery",
    "commands.prefer", "commands.loras",
    "commands.pictures",
)

ReactionHandler = Callable[["TesseraClient", discord.RawReactionActionEvent], Awaitable[None]]


class TesseraTree(app_commands.CommandTree):
    """The command tree; errors discord.py raises around commands become user messages."""

    async def on_error(self, interaction: discord.Interaction, error: app_commands.AppCommandError) -> None:
        await on_tree_error(interaction, error)


def default_intents() -> discord.Intents:
    intents = discord.Intents.none()
    intents.guilds = True
    intents.guild_reactions = True
    intents.dm_reactions = True
    intents.guild_messages = True  # MESSAGE_DELETE: a moderator deleting a gallery post (no content intent)
    return intents


class TesseraClient(discord.AutoShardedClient):
    """Tessera's bot. `service` is None only for `tessera commands`, which lists the commands
    and never runs one."""

    def __init__(self, service: Tessera | None, *, dev_guild_id: int | None = None, sync_commands: bool = True,
                 edit_interval: float = EDIT_INTERVAL_S, token_ttl: float = TOKEN_TTL_S,
                 clock: Callable[[], float] = time.monotonic, orphan_grace: float = ORPHAN_GRACE_S,
                 unanswered_grace: float = UNANSWERED_GRACE_S, **options: Any) -> None:
        options.setdefault("intents", default_intents())
        options.setdefault("allowed_mentions", discord.AllowedMentions(everyone=False, roles=False, users=True,
                                                                       replied_user=False))
        super().__init__(**options)
        self.service = service
        self.dev_guild_id = dev_guild_id
        self.sync_on_start = sync_commands
        self.tree = TesseraTree(self)
        self.buttons = ButtonRegistry(self)
        self.reaction_handlers: list[ReactionHandler] = []
        self.tracker = JobTracker(self, service, views=self.buttons.result_view, answers=self.buttons.render_answer,
                                  interval=edit_interval,
                                  token_ttl=token_ttl, clock=clock, orphan_grace=orphan_grace)
        self.pending = PendingPrompts()
        self.unanswered_grace = unanswered_grace
        self._prepared = False
        for name in FEATURES:
            load_feature(self, name)

    async def setup_hook(self) -> None:
        await self.prepare()
        if self.sync_on_start:
            await self.sync_commands()

    async def prepare(self) -> None:
        """Everything `setup_hook` does except syncing: buttons and queue events."""
        if self._prepared:
            return
        self._prepared = True
        self.add_dynamic_items(self.buttons.fallback())  # after every feature registered its actions
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
            if await self.buttons.submit_form(interaction):
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
        data: Any = interaction.data or {}
        key = (data.get("component_type"), custom_id)
        views = getattr(store, "_views", {})
        message_id = interaction.message.id if interaction.message is not None else None
        return key in views.get(message_id, {}) or key in views.get(None, {})

    async def on_ready(self) -> None:
        log.info("logged in as %s (%s) in %d guilds", self.user, getattr(self.user, "id", "?"), len(self.guilds))

    async def on_raw_reaction_add(self, payload: discord.RawReactionActionEvent) -> None:
        for handler in self.reaction_handlers:
            try:
                await handler(self, payload)
            except Exception:
                log.exception("could not handle a reaction on message %s", payload.message_id)

    async def on_raw_message_delete(self, payload: discord.RawMessageDeleteEvent) -> None:
        await forget_deleted_posts(self.service, (payload.message_id,))

    async def on_raw_bulk_message_delete(self, payload: discord.RawBulkMessageDeleteEvent) -> None:
        await forget_deleted_posts(self.service, payload.message_ids)


def load_feature(client: TesseraClient, name: str) -> None:
    """Import a feature module by name and let it register itself (discord.py's extension pattern)."""
    module = importlib.import_module(name)
    setup = getattr(module, "setup", None)
    if setup is None:
        raise ImportError(f"feature {name} has no setup(client)")
    setup(client)


def _custom_id(interaction: discord.Interaction) -> str:
    data: Any = interaction.data or {}  # a union of TypedDicts: only component payloads have custom_id
    return str(data.get("custom_id", ""))[:100]


def _component_type(interaction: discord.Interaction) -> int | None:
    data: Any = interaction.data or {}
    return data.get("component_type")


def unknown_text(interaction: discord.Interaction) -> str:
    """What a press on a component Tessera does not know is told (words for what was pressed)."""
    if interaction.type is discord.InteractionType.modal_submit:
        what = "form"
    elif _component_type(interaction) == discord.ComponentType.button.value:
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

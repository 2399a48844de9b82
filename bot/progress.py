"""One job's Discord message, kept up to date without flooding Discord.

A job reports progress every few steps; Discord allows a handful of edits per message per few
seconds. `ProgressEditor` keeps only the newest update: while an edit is in flight, or less
than `interval` seconds after the last one, a new update replaces the waiting one instead of
queueing behind it (intermediate percentages are dropped, never delayed). The final update
(the grid, or the failure) is never dropped and goes out as soon as the edit in flight ends.

Interaction tokens die after 15 minutes. Until then the message is edited through the
interaction webhook; after that, progress edits go through the channel and the result is
posted as a new channel message replying to the original. A deleted message, a vanished
channel or lost permissions are logged once; the job itself is untouched (it is already
stored, and `/show` can post it again).
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import discord

from engine.jobs.joblog import for_job

log = logging.getLogger(__name__)

# Discord's interaction tokens last 15 minutes; stop using them a little before.
TOKEN_TTL_S = 15 * 60 - 30
EDIT_INTERVAL_S = 2.0
# Webhook errors that mean "the token is no longer valid": go through the channel instead.
_TOKEN_GONE_CODES = {10015, 50027}


@dataclass
class Target:
    """Where a job's message is, and how it may be edited."""

    channel_id: int | None
    message_id: int | None = None
    interaction: discord.Interaction | None = None  # its token edits the message until it expires
    followup: bool = False  # the message is a follow-up of `interaction`, not its @original
    issued_at: float = 0.0  # clock() when the interaction arrived
    guild_id: int | None = None  # for links to the message (None: a DM); the interaction's by default

    def __post_init__(self) -> None:
        if self.guild_id is None and self.interaction is not None:
            self.guild_id = self.interaction.guild_id

    @classmethod
    def original(cls, interaction: discord.Interaction, issued_at: float) -> Target:
        return cls(channel_id=interaction.channel_id, interaction=interaction, issued_at=issued_at)

    @classmethod
    def channel(cls, channel_id: int | None, message_id: int | None, guild_id: int | None = None) -> Target:
        return cls(channel_id=channel_id, message_id=message_id, guild_id=guild_id)


def message_link(guild_id: int | None, channel_id: int, message_id: int) -> str:
    return f"https://discord.com/channels/{guild_id or '@me'}/{channel_id}/{message_id}"


MOVED_TEXT = "Finished below ↓ {link}"


@dataclass
class Update:
    """What a message should show. `file=None` leaves the attachments as they are unless
    `clear_files` is set; `view=None` leaves the buttons (`clear_view` removes them)."""

    content: str
    file: tuple[bytes, str] | None = None  # (data, file name)
    view: discord.ui.View | None = None
    final: bool = False
    clear_files: bool = False
    clear_view: bool = False
    # A final update posted as a new message (after the token) leaves this in the old message,
    # `{link}` replaced by the new message's link, so it does not show "93%" forever.
    moved: str = MOVED_TEXT

    def discord_file(self) -> discord.File | None:
        if self.file is None:
            return None
        data, name = self.file
        return discord.File(io.BytesIO(data), filename=name)


@dataclass
class EditorStats:
    sent: int = 0
    dropped: int = 0
    failures: int = 0
    history: list[str] = field(default_factory=list)  # kinds of edits sent, for tests and logs


MessageSeen = Callable[[int | None, int], Awaitable[None]]


class ProgressEditor:
    """Throttled edits of one job's message (see the module docstring)."""

    def __init__(self, client: discord.Client, job_id: str, target: Target, *,
                 interval: float = EDIT_INTERVAL_S, token_ttl: float = TOKEN_TTL_S,
                 clock: Callable[[], float] = time.monotonic,
                 on_message: MessageSeen | None = None,
                 on_finished: Callable[[ProgressEditor], None] | None = None) -> None:
        self.client = client
        self.job_id = job_id
        self.target = target
        self.interval = interval
        self.token_ttl = token_ttl
        self.clock = clock
        self.on_message = on_message
        self.on_finished = on_finished
        self.stats = EditorStats()
        self.broken = False  # the message cannot be reached any more: stop trying
        self.finished = False  # the final update was accepted
        self._pending: Update | None = None
        self._last_sent = float("-inf")
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._log = for_job(log, job_id)
        self._warned = False

    # -- accepting updates (synchronous: called from queue events) --------------------------

    def push(self, update: Update) -> None:
        """Show `update` as soon as allowed, replacing any update still waiting."""
        if self.broken or self.finished:
            return
        if self._pending is not None:
            self.stats.dropped += 1
        self._pending = update
        if update.final:
            self.finished = True
            self._wake.set()
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run(), name=f"tessera-edit-{self.job_id}")

    @property
    def busy(self) -> bool:
        return self._task is not None and not self._task.done()

    async def wait(self) -> None:
        """Until every accepted update is sent (or dropped)."""
        while self._task is not None and not self._task.done():
            await asyncio.shield(self._task)

    # -- sending ----------------------------------------------------------------------------

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while self._pending is not None and not self.broken:
            update = self._pending
            if not update.final:
                delay = self._last_sent + self.interval - loop.time()
                if delay > 0:
                    self._wake.clear()
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._wake.wait(), delay)
                    continue  # the newest update may have changed while waiting
            self._pending = None
            try:
                await self._send(update)
            except Exception:  # never let an edit take anything down
                self.stats.failures += 1
                self._log.exception("could not update the message of job %s", self.job_id)
            self._last_sent = loop.time()
        if self.finished and self._pending is None and self.on_finished is not None:
            self.on_finished(self)

    def token_alive(self) -> bool:
        t = self.target
        return t.interaction is not None and self.clock() - t.issued_at < self.token_ttl

    async def _send(self, update: Update) -> None:
        if self.token_alive():
            try:
                message = await self._edit_via_token(update)
            except discord.NotFound as exc:
                if exc.code not in _TOKEN_GONE_CODES:
                    self._gone(exc)
                    return
                self.target.interaction = None  # expired early: fall through to the channel
            except discord.Forbidden as exc:
                self._gone(exc)
                return
            except discord.HTTPException as exc:
                self._failed(exc, update)
                return
            else:
                self.stats.sent += 1
                self.stats.history.append("final" if update.final else "edit")
                await self._seen(self.target.channel_id, message.id)
                return
        await self._send_via_channel(update)

    async def _edit_via_token(self, update: Update) -> discord.Message:
        interaction = self.target.interaction
        assert interaction is not None
        kwargs = self._edit_kwargs(update)
        if self.target.followup and self.target.message_id is not None:
            return await interaction.followup.edit_message(self.target.message_id, **kwargs)
        return await interaction.edit_original_response(**kwargs)

    @staticmethod
    def _edit_kwargs(update: Update) -> dict:
        kwargs: dict = {"content": update.content}
        file = update.discord_file()
        if file is not None:
            kwargs["attachments"] = [file]
        elif update.clear_files:
            kwargs["attachments"] = []
        if update.view is not None:
            kwargs["view"] = update.view
        elif update.clear_view:
            kwargs["view"] = None
        return kwargs

    async def _send_via_channel(self, update: Update) -> None:
        """After the token: edit progress in place, post the result as a reply."""
        t = self.target
        if t.channel_id is None:
            self._gone(None)
            return
        channel = self.client.get_partial_messageable(t.channel_id)
        try:
            if update.final:
                reference = (discord.MessageReference(message_id=t.message_id, channel_id=t.channel_id,
                                                      fail_if_not_exists=False)
                             if t.message_id is not None else None)
                file = update.discord_file()
                kwargs: dict = {"content": update.content}
                if file is not None:
                    kwargs["file"] = file
                if update.view is not None:
                    kwargs["view"] = update.view
                if reference is not None:
                    kwargs["reference"] = reference
                    kwargs["mention_author"] = False
                original = t.message_id
                message = await channel.send(**kwargs)
                self.stats.sent += 1
                self.stats.history.append("reply")
                await self._seen(t.channel_id, message.id)
                if original is not None and original != message.id:
                    await self._point_to(channel, original, update.moved.replace(
                        "{link}", message_link(t.guild_id, t.channel_id, message.id)))
            elif t.message_id is not None:
                await channel.get_partial_message(t.message_id).edit(**self._edit_kwargs(update))
                self.stats.sent += 1
                self.stats.history.append("channel-edit")
        except (discord.NotFound, discord.Forbidden) as exc:
            self._gone(exc)
        except discord.HTTPException as exc:
            self._failed(exc, update)

    async def _point_to(self, channel: discord.PartialMessageable, message_id: int, text: str) -> None:
        """Turn the old progress message into a pointer to the result (no preview, no buttons)."""
        try:
            await channel.get_partial_message(message_id).edit(content=text, attachments=[], view=None)
            self.stats.history.append("pointer")
        except discord.HTTPException as exc:  # deleted meanwhile, or no permission: the result is out anyway
            self._log.info("job %s: could not point message %s to the result (%s)", self.job_id, message_id, exc)

    async def _seen(self, channel_id: int | None, message_id: int) -> None:
        if self.target.message_id == message_id:
            return
        self.target.message_id = message_id
        if self.on_message is not None:
            try:
                await self.on_message(channel_id, message_id)
            except Exception:
                self._log.exception("could not record the message of job %s", self.job_id)

    def _gone(self, exc: Exception | None) -> None:
        """The message, channel or permission is gone: say so once, then stay quiet."""
        self.broken = True
        self._pending = None
        self.stats.failures += 1
        reason = f"{type(exc).__name__}: {exc}" if exc is not None else "no channel to post in"
        self._log.warning("job %s: its Discord message can no longer be updated (%s); the result stays stored "
                          "and /show can post it again", self.job_id, reason)
        if self.on_finished is not None:
            self.on_finished(self)

    def _failed(self, exc: discord.HTTPException, update: Update) -> None:
        """Any other HTTP error: drop this update (a later one will carry newer state)."""
        self.stats.failures += 1
        if not self._warned or update.final:
            self._warned = True
            self._log.warning("job %s: a message edit failed (%s %s)%s", self.job_id, exc.status, exc.text,
                              "; the result stays stored and /show can post it" if update.final else "")

"""What every feature's commands and buttons share: answering, errors, job references, channel rules.

These are the bot's interaction helpers (features import them; nothing here imports a feature).

The rule the whole bot keeps: the user always gets an answer. A `TesseraError` (something
the user can fix) becomes an ephemeral message with its text; anything else is logged with its
traceback and the job id, and the user is told the job id to quote. Discord's own "This
interaction failed" must never show, so every handler runs inside `guarded`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import discord
from discord import app_commands

from bot import render
from bot.authorization import Actor
from bot.pending import PendingPrompt
from bot.progress import Target, Update
from bot.service import PRIORITY_ROLE_BOOST, NeedsConfirmation, Tessera
from bot.tracker import JobTracker, is_warming
from engine.errors import ImageFetchError, StorageError, TesseraError
from engine.imaging.decode import check_attachment
from engine.jobs.joblog import for_job
from engine.jobs.model import Job, JobKind, JobState
from storage.models import GuildSettings

if TYPE_CHECKING:  # the client imports this module for its error handler
    from bot.client import TesseraClient

log = logging.getLogger("commands")

_PUBLIC_DEFER = "tessera_public_defer"
_GUILD_RULES = "tessera_guild_rules"


@dataclass
class Guard:
    """Set `job_id` as soon as it is known, so an unexpected error can name it."""

    job_id: str | None = None


def client_of(interaction: discord.Interaction) -> TesseraClient:
    return interaction.client  # type: ignore[return-value]


def service_of(interaction: discord.Interaction) -> Tessera:
    service = client_of(interaction).service
    if service is None:  # `tessera commands` builds a client without one; it never runs a command
        raise TesseraError("Tessera is not running its job service right now; try again in a minute.")
    return service


def tracker_of(interaction: discord.Interaction) -> JobTracker:
    return client_of(interaction).tracker


def is_admin(interaction: discord.Interaction) -> bool:
    """Server managers (and, in DMs, nobody) may use admin commands and delete any result."""
    perms = interaction.permissions
    return interaction.guild_id is not None and (perms.manage_guild or perms.administrator)


def actor_of(interaction: discord.Interaction) -> Actor:
    """Who is acting and where, for `Tessera.authorize`: Discord's permissions are those of
    the server the interaction came from, so `manages_guild` speaks for that server only."""
    return Actor(user_id=interaction.user.id, guild_id=interaction.guild_id, manages_guild=is_admin(interaction))


async def defer_public(interaction: discord.Interaction) -> None:
    """Answer at once with "Tessera is thinking…"; the job's message replaces it."""
    if not interaction.response.is_done():
        await interaction.response.defer(thinking=True)
        interaction.extras[_PUBLIC_DEFER] = True


async def defer_private(interaction: discord.Interaction) -> None:
    if not interaction.response.is_done():
        await interaction.response.defer(thinking=True, ephemeral=True)


async def reply(interaction: discord.Interaction, content: str | None = None, *, ephemeral: bool = True,
                embed: discord.Embed | None = None,
                view: discord.ui.View | discord.ui.LayoutView | None = None) -> None:
    """Send `content` as the response, or as a follow-up once the interaction is answered.

    No `content` sends none at all (a components-v2 `LayoutView` carries its own text)."""
    kwargs: dict[str, Any] = {"ephemeral": ephemeral}
    if content is not None:
        kwargs["content"] = content
    if embed is not None:
        kwargs["embed"] = embed
    if view is not None:
        kwargs["view"] = view
    if not interaction.response.is_done():
        await interaction.response.send_message(**kwargs)
    else:
        await interaction.followup.send(**kwargs)


async def remove_placeholder(interaction: discord.Interaction) -> None:
    """Delete the public "Tessera is thinking…" message when nothing public will replace it."""
    if interaction.response.is_done() and interaction.extras.pop(_PUBLIC_DEFER, False):
        with contextlib.suppress(discord.HTTPException):
            await interaction.delete_original_response()


async def answer_error(interaction: discord.Interaction, message: str) -> None:
    """Tell only the user what to change; remove a public "thinking…" placeholder first."""
    try:
        await remove_placeholder(interaction)
        await reply(interaction, message[:2000], ephemeral=True)
    except discord.HTTPException as exc:
        log.warning("could not tell user %s about an error (%s): %s", interaction.user.id, exc, message)


@asynccontextmanager
async def guarded(interaction: discord.Interaction, *, job_id: str | None = None) -> AsyncIterator[Guard]:
    """Turn every failure inside into a message to the user (see the module docstring)."""
    guard = Guard(job_id)
    try:
        yield guard
    except TesseraError as exc:
        await answer_error(interaction, str(exc))
    except Exception:
        for_job(log, guard.job_id).exception("unexpected error in %s (job %s, user %s)",
                                             _what(interaction), guard.job_id, interaction.user.id)
        await answer_error(interaction, render.unexpected_error_text(guard.job_id))


def _what(interaction: discord.Interaction) -> str:
    if interaction.command is not None:
        return f"/{interaction.command.qualified_name}"
    data: Any = interaction.data or {}  # a union of TypedDicts: only component payloads have custom_id
    return str(data.get("custom_id", "interaction"))


async def on_tree_error(interaction: discord.Interaction, error: app_commands.AppCommandError) -> None:
    """Errors discord.py raises before or around a command: options, checks, permissions."""
    if isinstance(error, app_commands.CommandInvokeError) and isinstance(error.original, TesseraError):
        await answer_error(interaction, str(error.original))
    elif isinstance(error, app_commands.MissingPermissions):
        await answer_error(interaction, "Only members with the Manage Server permission can use this command.")
    elif isinstance(error, app_commands.NoPrivateMessage):
        await answer_error(interaction, "This command works only in a server, not in DMs.")
    elif isinstance(error, app_commands.TransformerError):
        await answer_error(interaction, f"`{error.value}` is not a valid value here; pick one from the list.")
    elif isinstance(error, app_commands.CheckFailure):
        await answer_error(interaction, str(error) or "You cannot use this command here.")
    elif isinstance(error, app_commands.CommandNotFound):
        await answer_error(interaction, "This command no longer exists; Discord will refresh the list soon.")
    else:
        original = getattr(error, "original", error)
        log.error("unexpected error in %s", _what(interaction), exc_info=original)
        await answer_error(interaction, render.unexpected_error_text(None))


# ----- where commands may be used -------------------------------------------------------------


async def guild_rules(interaction: discord.Interaction) -> GuildSettings | None:
    """This server's Tessera settings, read once per interaction (None in DMs)."""
    if interaction.guild_id is None:
        return None
    held = interaction.extras.get(_GUILD_RULES)
    if held is None:
        held = await service_of(interaction).guild_settings(interaction.guild_id)
        interaction.extras[_GUILD_RULES] = held
    return held


async def check_channel(interaction: discord.Interaction) -> None:
    """Refuse image commands outside the channels an admin allowed (none set: everywhere)."""
    guild = await guild_rules(interaction)
    if guild is None:
        return
    allowed = set(guild.allowed_channels)
    if not allowed:
        return
    channel = interaction.channel
    ids = {interaction.channel_id, getattr(channel, "parent_id", None)}
    if ids & allowed:
        return
    where = ", ".join(f"<#{c}>" for c in sorted(allowed))
    raise TesseraError(f"Tessera makes images only in {where} on this server. Try again there.")


async def member_priority(interaction: discord.Interaction) -> int:
    """A boost for members holding the server's priority role (0 for everyone else)."""
    guild = await guild_rules(interaction)
    if guild is None or not isinstance(interaction.user, discord.Member):
        return 0
    role = guild.priority_role_id
    # `_roles` holds every role id of the member, even roles not in the cache (a partial guild).
    held = set(getattr(interaction.user, "_roles", ())) | {r.id for r in interaction.user.roles}
    if role is None or role not in held:
        return 0

    return PRIORITY_ROLE_BOOST


# ----- job references ---------------------------------------------------------------------------


async def find_job(interaction: discord.Interaction, ref: str | None) -> Job:
    """A job from an id or a message link; without one, the user's most recent job."""
    service = service_of(interaction)
    if not ref or not ref.strip():
        recent = await service.recent_jobs(interaction.user.id, limit=1)
        if not recent:
            raise TesseraError("You have no jobs yet. Start one with `/imagine`.")
        return recent[0]
    ref = ref.strip()
    link = render.parse_message_link(ref)
    if link is not None:
        job = await service.job_for_message(link[1])
        if job is None:
            raise TesseraError("That message is not a Tessera result. Give a job id or a link to a result message.")
        return job
    if ref.isdigit() and len(ref) >= 17:  # a bare message id
        job = await service.job_for_message(int(ref))
        if job is not None:
            return job
    try:
        return await service.require_job(ref.split()[0])
    except StorageError:
        raise TesseraError(f"There is no job `{ref[:40]}`. Use the id shown under a result, or a link to the message.") from None


def require_done(job: Job, what: str) -> None:
    if job.state is not JobState.DONE:
        state = {JobState.QUEUED: "still queued", JobState.RUNNING: "still running",
                 JobState.FAILED: "a failed job", JobState.CANCELLED: "cancelled"}.get(job.state, job.state.value)
        raise TesseraError(f"Job `{job.id}` is {state}; {what} needs a finished job.")


def require_grid(job: Job, index: int) -> None:
    if job.kind is JobKind.UPSCALE:
        raise TesseraError(f"Job `{job.id}` is an upscale (one image); use its buttons or pick the grid job it came from.")
    if not 0 <= index <= 3:
        raise TesseraError("The image number must be 1, 2, 3 or 4 (left to right, top to bottom).")


async def job_choices(interaction: discord.Interaction, current: str) -> list[app_commands.Choice[str]]:
    """Autocomplete: the user's recent jobs, newest first, matching what they typed."""
    try:
        jobs = await service_of(interaction).recent_jobs(interaction.user.id, limit=25)
    except Exception:
        log.exception("job autocomplete failed")
        return []
    current = current.strip().lower()
    choices = []
    for job in jobs:
        label = f"{job.id} · {job.kind.value} · {' '.join(job.prompt_text.split())}"
        if current and current not in label.lower():
            continue
        choices.append(app_commands.Choice(name=label[:100], value=job.id))
    return choices


AUTOCOMPLETE_BUDGET_S = 2.0  # Discord drops an autocomplete answer after 3 s


async def lora_choices(interaction: discord.Interaction, current: str) -> list[app_commands.Choice[str]]:
    """Autocomplete: LoRA names in LORA_DIR starting with (then containing) what was typed, at
    most 25. Listing a changed folder runs off the loop and is given up on (no choices) past
    `AUTOCOMPLETE_BUDGET_S`, so the answer always comes in time."""
    try:
        names = await asyncio.wait_for(service_of(interaction).search_loras(current[:100], 25),
                                       AUTOCOMPLETE_BUDGET_S)
    except (TimeoutError, TesseraError):
        return []
    except Exception:
        log.exception("LoRA autocomplete failed")
        return []
    return [app_commands.Choice(name=name, value=name) for name in names]


# ----- starting prompts and posting jobs --------------------------------------------------------------------------------


def warming(interaction: discord.Interaction) -> bool:
    """Whether the model is still loading (jobs queue meanwhile)."""

    return is_warming(service_of(interaction))


async def post_jobs(interaction: discord.Interaction, jobs: Sequence[Job]) -> None:
    """Show each new job in its own message and keep it updated until its result is in.

    The first job takes the deferred response; the others are follow-ups of the same
    interaction. The tracker learns each job before anything is awaited, so an event that
    arrives during an edit is applied after it, not lost.
    """
    tracker = tracker_of(interaction)
    service = service_of(interaction)
    tracker.claim(job.id for job in jobs)
    is_warming = warming(interaction)
    issued = tracker.clock()
    shown = 0
    try:
        for job in jobs:
            position = tracker.known_position(job.id)
            if position is None:
                position = service.queue_position(job.id)
            text = render.queued_text(job, position, warming=is_warming)
            if shown == 0:
                interaction.extras.pop(_PUBLIC_DEFER, None)
                tracker.track(job, Target.original(interaction, issued), first=Update(text), position=position)
            else:
                message = await interaction.followup.send(text, wait=True)
                target = Target(channel_id=interaction.channel_id, message_id=message.id, interaction=interaction,
                                followup=True, issued_at=issued)
                tracker.track(job, target, position=position)
                await tracker.record_message(job.id, interaction.channel_id, message.id)
            shown += 1
    finally:
        for job in jobs[shown:]:
            tracker.release(job.id)  # results still reach the channel, by adoption


async def quick_parse(interaction: discord.Interaction, text: str) -> None:
    """Refuse a malformed prompt before deferring (the service parses it again, authoritatively),
    with the user's suffix and options, the server's styles and the LoRA folder: a few SQLite
    reads and a folder stat, well inside Discord's 3 seconds."""

    await service_of(interaction).parse_prompt(text, user_id=interaction.user.id, guild_id=interaction.guild_id)


async def start_prompt(interaction: discord.Interaction, prompt: str, *, image_url: str | None,
                       style_urls: tuple[str, ...] = (), character_urls: tuple[str, ...] = (),
                       confirmed: bool = False) -> None:
    """Queue a prompt for the interaction's user and show its jobs (or ask to confirm).

    `/imagine`, its confirmation and the gallery's 🔁 Remix form all start prompts here; the
    confirmation's buttons are whatever the features placed on "confirm" messages, and the
    held prompt keeps the attachments (`image_url`, `style_urls`, `character_urls`)."""

    await check_channel(interaction)
    service = service_of(interaction)
    try:
        jobs = await service.imagine(user_id=interaction.user.id, prompt_text=prompt, guild_id=interaction.guild_id,
                                     channel_id=interaction.channel_id, image_url=image_url, style_urls=style_urls,
                                     character_urls=character_urls, confirmed=confirmed,
                                     priority=await member_priority(interaction))
    except NeedsConfirmation as ask:
        key = client_of(interaction).pending.put(PendingPrompt(
            user_id=interaction.user.id, prompt_text=prompt, guild_id=interaction.guild_id,
            channel_id=interaction.channel_id, image_url=image_url, count=ask.count, created=time.monotonic(),
            style_urls=style_urls, character_urls=character_urls))
        await remove_placeholder(interaction)
        await interaction.followup.send(
            f"This prompt makes **{ask.count} jobs** (one message each). Run them all?",
            view=client_of(interaction).buttons.view("confirm", key, count=ask.count), ephemeral=True)
        return
    await post_jobs(interaction, jobs)


PROMPT_FORM_TIMEOUT_S = 15 * 60
PROMPT_INPUT_MAX = 4000  # Discord's longest text input (the prompt parser's own limit applies on submit)


class PromptForm(discord.ui.Modal):
    """A prompt, editable, that Submit runs as the submitter's own /imagine (Midjourney's
    Remix): the gallery's 🔁 and the numbered buttons under /describe and /shorten open one.

    Only the form: its submission is handled by `submit_prompt_form`, which the feature
    registers for its custom_id prefix, so a form submitted after a restart still works."""

    def __init__(self, prompt_text: str, *, title: str, custom_id: str, field_id: str, description: str) -> None:
        super().__init__(title=title, timeout=PROMPT_FORM_TIMEOUT_S, custom_id=custom_id)
        self.prompt: discord.ui.TextInput[Any] = discord.ui.TextInput(
            style=discord.TextStyle.paragraph, default=prompt_text[:PROMPT_INPUT_MAX], max_length=PROMPT_INPUT_MAX,
            required=True, custom_id=field_id)
        self.add_item(discord.ui.Label(text="Prompt", description=description, component=self.prompt))


async def submit_prompt_form(interaction: discord.Interaction, field_id: str) -> None:
    """A submitted `PromptForm`: run its (edited) prompt, the text input `field_id`, as the
    submitter's own /imagine."""
    data: Any = interaction.data or {}
    async with guarded(interaction):
        text = (submitted_value(data.get("components"), field_id) or "").strip()
        if not text:
            raise TesseraError("The prompt is empty; write what to draw.")
        await quick_parse(interaction, text)
        await defer_public(interaction)
        await start_prompt(interaction, text, image_url=None)


def submitted_value(components: Any, custom_id: str) -> str | None:
    """The value of the text input `custom_id` in a modal submission (labels and rows nest it)."""
    for component in components or []:
        if not isinstance(component, dict):
            continue
        if component.get("custom_id") == custom_id and "value" in component:
            return str(component["value"])
        inner = [component["component"]] if isinstance(component.get("component"), dict) else []
        found = submitted_value([*inner, *(component.get("components") or [])], custom_id)
        if found is not None:
            return found
    return None


def check_upload(upload: discord.Attachment, max_bytes: int) -> None:
    """An attachment's declared name, type and size: free to check before deferring or
    downloading, so a wrong file is refused at once (the rule image prompts follow)."""
    check_attachment(upload.filename, upload.content_type, upload.size, max_bytes)


async def download_uploads(interaction: discord.Interaction, uploads: Sequence[discord.Attachment]) -> list[bytes]:
    """The bytes of a command's pictures, downloaded only once the member has room in the queue
    (a member at their limit makes the bot fetch nothing); each is checked by `read_upload`."""
    service = service_of(interaction)
    await service.check_room(interaction.user.id, interaction.guild_id)
    return [await read_upload(upload, service.settings.image_prompt_max_bytes) for upload in uploads]


async def read_upload(upload: discord.Attachment, max_bytes: int) -> bytes:
    """An uploaded picture's (or mask's) bytes after the free checks, measured again once
    downloaded; the service decodes them with the one checked decoder."""
    check_upload(upload, max_bytes)
    try:
        data = await upload.read()
    except discord.HTTPException:
        raise ImageFetchError(f"Could not download `{upload.filename}` from Discord; try attaching it again.") from None
    check_attachment(upload.filename, upload.content_type, len(data), max_bytes)
    return data

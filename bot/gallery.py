"""Sharing results to a server's gallery channel, and keeping the gallery in step with Discord.

A share is one image (a grid image or an upscale) posted as an embed in the gallery channel:
the image, the full prompt in a code block (copyable as it is), seed, size, model, author and
a link back to the original message, with the gallery buttons (`commands.gallery.posts`, placed
through the client's button registry). The
row is stored before the post is made, so the post's buttons can carry the entry id; if
Discord refuses the post, the row is taken back out.

Rules: an image is shared once (a second try answers with a link to the first share); who may
share or remove a share is `Tessera.authorize`'s to say (`bot.authorization`: a result whose
author keeps results private is shared by that author only; a share is removed by its author
or a manager of the server it was shared in). Removing deletes the post and takes the row out
of the gallery, while the image stays with its job. A gallery post deleted by a moderator is
marked removed when Discord tells us (`forget_deleted_posts`, from the client's raw
message-delete events).
"""

from __future__ import annotations

import asyncio
import io
import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import discord

from bot import render
from bot.authorization import Act, Actor
from bot.service import Tessera
from engine.errors import TesseraError
from engine.imaging.encoding import EncodedImage, encode_for_discord, filename_stem
from engine.imaging.metadata import model_label
from engine.jobs.joblog import for_job
from engine.jobs.model import ImageRecord, Job, JobKind, JobState
from storage.models import GalleryEntry

if TYPE_CHECKING:  # types only: the client imports this module (deleted gallery posts)
    from bot.client import TesseraClient

log = logging.getLogger(__name__)

SEED_MODULUS = 2**32
EMBED_TITLE_ROOM = 200
EMBED_PROMPT_ROOM = 3900  # an embed description holds 4096 characters
MESSAGE_LIMIT = 2000
NOT_SET_UP = ("Sharing is not set up on this server yet: a server manager can choose a gallery channel "
              "with `/admin gallery #channel`.")

# Images being posted right now, so two quick presses cannot post the same image twice.
_posting: set[tuple[str, int]] = set()


@dataclass(frozen=True)
class ImageFacts:
    """What a gallery post and the 📋 answer show about one image, read from storage."""

    job: Job
    index: int
    image: ImageRecord | None
    seed: int | None  # the image's own seed: `--seed` of it makes it again as image 1
    request: dict  # the generation request behind it (an upscale's is its source's)
    model: str | None
    author_id: int  # who wrote the prompt: the owner of the job that made the pixels (not an upscale's)


@dataclass(frozen=True)
class SharedPost:
    entry: GalleryEntry
    url: str


def message_link(guild_id: int | None, channel_id: int | None, message_id: int | None) -> str | None:
    if not channel_id or not message_id:
        return None
    return f"https://discord.com/channels/{guild_id or '@me'}/{channel_id}/{message_id}"


def entry_link(entry: GalleryEntry) -> str | None:
    return message_link(entry.guild_id, entry.channel_id, entry.message_id)


def web_page(service: Any, entry: GalleryEntry) -> str | None:
    """The share's page in the web gallery (`bot.web`), or None while the web gallery is off."""
    base = getattr(getattr(service, "settings", None), "web_url", None)
    return f"{base}/s/{entry.id}" if isinstance(base, str) and base else None


def model_name(model: str | None) -> str:
    """A model as users know it (`engine.imaging.metadata.model_label`: a local path by its
    file name only; the server's paths are nobody's business)."""
    return model_label(model) if model else "unknown"


async def image_facts(service: Tessera, job: Job, index: int) -> ImageFacts:
    """Seed, request and model of image `index` of `job`, following upscales to their source."""
    image = await service.image(job.id, index)
    source, source_index = job, index
    for _ in range(32):
        if source.kind is not JobKind.UPSCALE or not source.parent_id:
            break
        parent = await service.job(source.parent_id)
        if parent is None:
            break
        source, source_index = parent, source.parent_index or 0
    request = dict(source.request_json or {})
    base = request.get("seed", source.seed)
    seed = (int(base) + source_index) % SEED_MODULUS if base is not None else None
    return ImageFacts(job=job, index=index, image=image, seed=seed, request=request,
                      model=request.get("model") or source.model or job.model, author_id=source.user_id)


# ----- what users read -------------------------------------------------------------------------


def code_block(text: str) -> str:
    """`text` in a code block that nothing in it can close early."""
    return "```\n" + text.replace("```", "`\u200b`\u200b`") + "\n```"


def _cut(text: str, room: int) -> str:
    return text if len(text) <= room else text[: room - 1].rstrip() + "…"


# A `--parameter` and everything after it. `.` stops at a newline, so only a match on the last
# line can reach `$`: searching that line alone is linear, where searching the whole text ran
# every ` --x` to its line's end and failed there (quadratic for many ` --x` on one line).
_PARAMETERS = re.compile(r"\s(?:--|—)[A-Za-z].*$")


def _without_parameters(text: str) -> str:
    """`text` less the `--parameters` at its end, for a title (the same result as one re.sub)."""
    body = text[:-1] if text.endswith("\n") else text
    cut = max(body.rfind("\n"), 0)
    return text[:cut] + _PARAMETERS.sub("", text[cut:])


def post_title(entry: GalleryEntry) -> str:
    if entry.title:
        return _cut(entry.title, EMBED_TITLE_ROOM)
    text = " ".join(_without_parameters(" " + entry.prompt_text).split())
    return _cut(text or "Untitled", 80)


def size_text(facts: ImageFacts) -> str:
    if facts.image is not None:
        return f"{facts.image.width}×{facts.image.height}"
    if facts.request.get("width"):
        return f"{facts.request['width']}×{facts.request['height']}"
    return "unknown"


def post_embed(entry: GalleryEntry, facts: ImageFacts, *, sharer_id: int | None, filename: str | None,
               source_url: str | None, web_url: str | None = None) -> discord.Embed:
    """The gallery post: image, prompt (copyable), seed, size, model, author, original message."""
    prompt = entry.prompt_text
    note = ""
    if len(prompt) > EMBED_PROMPT_ROOM:
        prompt, note = prompt[:EMBED_PROMPT_ROOM], "\n-# the prompt is longer; press 📋 Prompt for all of it"
    embed = discord.Embed(title=post_title(entry), description=code_block(prompt) + note,
                          colour=discord.Colour.from_rgb(235, 69, 158), timestamp=entry.created_at)
    embed.add_field(name="Seed", value=f"`{facts.seed}`" if facts.seed is not None else "unknown")
    embed.add_field(name="Size", value=size_text(facts))
    embed.add_field(name="Model", value=_cut(model_name(facts.model), 1000))
    embed.add_field(name="Author", value=render.mention(entry.author_id))
    if sharer_id is not None and sharer_id != entry.author_id:
        embed.add_field(name="Shared by", value=render.mention(sharer_id))
    if source_url:
        embed.add_field(name="Original", value=f"[Jump to the message]({source_url})")
    if web_url:
        embed.add_field(name="Web", value=f"[Open in the web gallery]({web_url})")
    if filename:
        embed.set_image(url=f"attachment://{filename}")
    embed.set_footer(text=f"gallery #{entry.id} · job {facts.job.id} · image {facts.index + 1}")
    return embed


def prompt_with_seed(prompt_text: str, seed: int | None) -> str:
    """The prompt with the image's own `--seed` (replacing one already there)."""
    text = re.sub(r"(?:^|\s)(?:--|—)seed\s+\S+", "", prompt_text, flags=re.IGNORECASE).rstrip()
    return f"{text} --seed {seed}" if seed is not None else text


def paste_text(entry: GalleryEntry, facts: ImageFacts) -> str:
    """📋: the prompt and its parameters, ready to paste into `/imagine`."""
    request = facts.request
    details = [f"seed {facts.seed}" if facts.seed is not None else None, size_text(facts),
               f"{request['steps']} steps" if request.get("steps") else None,
               f"guidance {request['guidance']:g}" if isinstance(request.get("guidance"), int | float) else None,
               f"sampler {request['sampler']}" if request.get("sampler") else None,
               f"model {model_name(facts.model)}"]
    head = f"**{post_title(entry)}** by {render.mention(entry.author_id)} (gallery #{entry.id})"
    tail = ("\n" + " · ".join(d for d in details if d)
            + "\n-# paste it into `/imagine`: with this `--seed` the first image starts from the same noise")
    body = code_block(prompt_with_seed(entry.prompt_text, facts.seed))
    return f"{head}\n{body}{tail}"


# ----- sharing -----------------------------------------------------------------------------------


async def gallery_channel_for(service: Tessera, guild_id: int | None) -> int:
    """The server's gallery channel (`/admin gallery`), else GALLERY_CHANNEL_ID; TesseraError if none."""
    if guild_id is not None:
        chosen = (await service.guild_settings(guild_id)).gallery_channel_id
        if chosen:
            return int(chosen)
    fallback = service.settings.gallery_channel_id
    if fallback:
        return int(fallback)
    raise TesseraError(NOT_SET_UP)


def _encode_post_image(path: Path, stem: str) -> EncodedImage:
    """The stored PNG as Discord will take it (the PNG itself when under 10 MiB)."""
    from PIL import Image

    data = path.read_bytes()
    with Image.open(io.BytesIO(data)) as image:
        image.load()
        return encode_for_discord(image, stem=stem, prefer="png", png=data)


async def share_image(client: TesseraClient, service: Tessera, *, job: Job, index: int, sharer_id: int,
                      channel_id: int, guild_id: int | None, title: str | None = None,
                      source_url: str | None = None) -> SharedPost:
    """Post image `index` (0-based) of a finished job to the gallery channel and store the share.

    The entry's author is whoever wrote the prompt (an upscale's is its source's author); the
    sharer, when someone else, is named on the post.
    """
    # Who may share: `bot.authorization` (the owner; members of the job's own server unless private).
    await service.authorize(Actor(user_id=sharer_id, guild_id=guild_id), job, Act.SHARE)
    if job.state is not JobState.DONE:
        raise TesseraError(f"Job `{job.id}` is not finished; only finished images can be shared.")
    facts = await image_facts(service, job, index)
    if facts.image is None:
        count = len(await service.images(job.id))
        raise TesseraError(f"Job `{job.id}` has no image {index + 1}; it has {count}.")
    channel: Any = client.get_channel(channel_id) or client.get_partial_messageable(channel_id, guild_id=guild_id)
    post_guild = getattr(getattr(channel, "guild", None), "id", None) or guild_id
    key = (job.id, index)
    if key in _posting:
        raise TesseraError("This image is being shared right now; it will be in the gallery in a moment.")
    _posting.add(key)
    try:
        first = await service.find_share(job.id, index)
        if first is not None and first.message_id is not None:
            raise TesseraError(f"Thanks! This image is already in the gallery, shared first here: {entry_link(first)}")
        entry = await service.add_share(job.id, index, author_id=facts.author_id, title=title,
                                        guild_id=post_guild, prompt_text=job.prompt_text)
        try:
            message = await _post(channel, entry, facts, sharer_id=sharer_id, source_url=source_url,
                                  view=client.buttons.view("gallery", str(entry.id), count=entry.likes),
                                  web_url=web_page(service, entry))
        except BaseException:
            if first is None:  # ours alone: take it back out (a half-made share is finished by a retry)
                await service.remove_share_entry(entry.id)
            raise
        entry = await service.set_share_message(entry.id, message.channel.id, message.id)
    finally:
        _posting.discard(key)
    for_job(log, job.id).info("image %d shared as gallery #%d by %s", index + 1, entry.id, sharer_id)
    return SharedPost(entry, entry_link(entry) or "")


async def _post(channel: Any, entry: GalleryEntry, facts: ImageFacts, *, sharer_id: int, source_url: str | None,
                view: discord.ui.View, web_url: str | None = None) -> discord.Message:
    assert facts.image is not None
    job, index = facts.job, facts.index
    stem = filename_stem(entry.prompt_text, job.id) + (f"_{index + 1}" if job.kind is not JobKind.UPSCALE else "")
    upload = await asyncio.to_thread(_encode_post_image, facts.image.path, stem)
    embed = post_embed(entry, facts, sharer_id=sharer_id, filename=upload.filename, source_url=source_url,
                       web_url=web_url)
    try:
        return await channel.send(embed=embed, file=discord.File(io.BytesIO(upload.data), filename=upload.filename),
                                  view=view)
    except (discord.Forbidden, discord.NotFound):
        raise TesseraError(f"I cannot post in the gallery channel <#{channel.id}>. A server manager should check "
                           "that I may send messages, embeds and files there, or choose another channel with "
                           "`/admin gallery #channel`.") from None


def job_link(job: Job) -> str | None:
    return message_link(job.guild_id, job.channel_id, job.message_id)


# ----- removing ----------------------------------------------------------------------------------


async def remove_share(client: discord.Client, service: Tessera, entry: GalleryEntry) -> bool:
    """Take an entry out of the gallery and delete its post; False if the post could not be deleted."""
    await service.remove_share_entry(entry.id)  # first: the delete event then finds nothing to do
    if not entry.channel_id or not entry.message_id:
        return True
    channel = client.get_partial_messageable(entry.channel_id, guild_id=entry.guild_id)
    try:
        await channel.get_partial_message(entry.message_id).delete()
    except discord.NotFound:
        pass
    except discord.Forbidden:
        for_job(log, entry.job_id).warning("gallery #%d removed but its post %s could not be deleted "
                                           "(no permission)", entry.id, entry.message_id)
        return False
    for_job(log, entry.job_id).info("gallery #%d removed", entry.id)
    return True


async def forget_deleted_posts(service: Tessera | None, message_ids: Iterable[int]) -> int:
    """Messages were deleted in Discord: mark those that were gallery posts removed. Never raises
    (it runs as an event handler); returns how many entries it marked."""
    marked = 0
    if service is None:
        return 0
    for message_id in message_ids:
        try:
            entry = await service.gallery_entry_for_message(message_id)
            if entry is None or entry.removed:
                continue
            if await service.mark_share_removed(message_id):
                marked += 1
                for_job(log, entry.job_id).info("gallery #%d: its post %s was deleted in Discord; marked removed",
                                                entry.id, message_id)
        except Exception:
            log.exception("could not mark the gallery post %s removed", message_id)
    return marked

"""The job service: the one object slash commands and the CLI call.

`Tessera` wires settings, storage, the engine and the queue. It is Discord-free, so
`tessera imagine` goes through exactly the code path the bot uses (and, with
`QUEUE_URL=redis://…`, runs on a worker just as the bot's jobs do). Every method either
returns stored `Job`s that are queued, or raises a `TesseraError` whose message is shown to
the user as it is; nothing is stored when a request is refused.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import json
import logging
import math
import os
import re
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, Literal

from PIL import Image

from bot.authorization import Act, Actor, Subject, decide
from bot.config import ConfigError, Settings
from bot.shortcuts import LoraInfo, Shortcuts
from engine.diffusion.models import (
    PROFILES,
    ModelProfile,
    check_model_ref,
    peek_profile,
)
from engine.diffusion.safety import check_source
from engine.diffusion.segment import MAX_REGION_TEXT, Segmenter
from engine.diffusion.shorten import Shortening, ShortenTask
from engine.errors import (
    ImageFetchError,
    PromptError,
    QueueLimitError,
    StorageError,
    TesseraError,
)
from engine.imaging.canvas import (
    DIRECTIONS,
    EDIT_STRENGTH,
    Canvas,
    cell_mask,
    check_mask,
    check_zoom,
    fit_source,
    pan_canvas,
    parse_cells,
    region_canvas,
    square_canvas,
    zoom_canvas,
)
from engine.imaging.decode import decode_image
from engine.imaging.encoding import EncodedImage, encode_png
from engine.imaging.fetch import (
    FetchLimits,
    FetchPolicy,
    blend_images,
    fetch_images,
    fetch_init_image,
    save_init_image,
)
from engine.jobs.answers import DESCRIBE_AGAIN_MAX, check_answer
from engine.jobs.executor import EngineExecutor, Executor
from engine.jobs.joblog import for_job
from engine.jobs.metrics import MetricsServer
from engine.jobs.model import ImageRecord, Job, JobKind, JobState, NewJob
from engine.jobs.queue import Callback, InProcessQueue, JobQueue, QueueEvent, QueueStats, limits_from_settings
from engine.prompt import Expansion, Params, Prompt, PromptContext, parse
from engine.request import (
    SEED_MAX,
    Defaults,
    GenerationRequest,
    enhance_of,
    random_seed,
    reroll_of,
    resolve,
    size_for_aspect,
    variation_of,
    variation_of_image,
)
from engine.upscale.realesrgan import check_upscale_factor, check_upscale_size
from engine.vision.describe import Description
from storage.api import Storage
from storage.inputs import INPUTS_DIR_NAME, referenced_names, touch_inputs
from storage.models import GalleryEntry, GuildSettings, UserSettings
from storage.owner import this_cli

log = logging.getLogger(__name__)

# Prompts that make more jobs than this ask the user to confirm first (permutations, --repeat).
CONFIRM_ABOVE_JOBS = 4
BLEND_MIN, BLEND_MAX = 2, 5  # Midjourney's /blend takes 2 to 5 pictures
BLEND_DIMENSIONS = {"portrait": "2:3", "square": "1:1", "landscape": "3:2"}  # Midjourney's three choices
# Upscales are short and go ahead of full grids; a server's priority role adds PRIORITY_ROLE_BOOST.
UPSCALE_PRIORITY = 1
PRIORITY_ROLE_BOOST = 2
# Refused everywhere, on top of BANNED_WORDS and each server's own list. Deliberately short:
# servers add their own words; this only catches the most common requests for explicit images.
DEFAULT_BANNED_WORDS: tuple[str, ...] = ("nsfw", "nude", "nudity", "naked", "porn", "pornographic", "hentai",
                                         "gore", "child porn", "csam")


class NeedsConfirmation(TesseraError):
    """The prompt makes more than `CONFIRM_ABOVE_JOBS` jobs: ask, then call again with confirmed=True."""

    def __init__(self, count: int) -> None:
        super().__init__(f"This prompt makes {count} jobs (permutations and --repeat). Confirm to queue all {count}.")
        self.count = count


def find_banned_word(text: str, words: Sequence[str]) -> str | None:
    """A banned word or phrase that appears in `text` as a whole word (case-insensitive).

    One search with every word in one alternation, compiled once per list: it runs on the
    event loop for every prompt, and one search per word (each scanning the whole prompt) cost
    milliseconds per word on a long prompt. Escaped literals only, so it cannot backtrack."""
    cleaned = tuple(dict.fromkeys(w for w in (word.strip().lower() for word in words) if w))
    if not cleaned:
        return None
    found = _banned_pattern(cleaned).search(text.lower())
    return found.group(1) if found else None


@functools.lru_cache(maxsize=64)
def _banned_pattern(words: tuple[str, ...]) -> re.Pattern[str]:
    return re.compile(r"(?<!\w)(" + "|".join(re.escape(word) for word in words) + r")(?!\w)")


def build_queue(settings: Settings, storage: Storage, executor: Executor | None) -> JobQueue:
    """The in-process queue, or the Redis one when QUEUE_URL is set (it needs no executor)."""
    options: dict[str, Any] = {"limits": limits_from_settings(settings), "job_timeout_s": settings.job_timeout_s,
                               "max_attempts": settings.job_max_attempts}
    if settings.queue_url:
        try:
            from engine.jobs.redis_queue import RedisQueue  # heavy: redis, taskiq
        except ImportError:
            raise ConfigError("invalid setting QUEUE_URL: the Redis queue is not available in this build; "
                              "leave QUEUE_URL empty for the in-process queue") from None
        return RedisQueue(storage, settings.queue_url, **options)
    if executor is None:
        raise ValueError("the in-process queue needs an executor")
    return InProcessQueue(storage, executor, **options)


_UNHEARD_MAX = 1000  # final events kept for a subscriber still to come (the CLI never subscribes)


class Tessera:
    """Settings, storage, the engine and the queue, behind one Discord-free API."""

    def __init__(self, settings: Settings, storage: Storage, queue: JobQueue, executor: Executor | None) -> None:
        self.settings = settings
        self.storage = storage
        self.queue = queue
        self.executor = executor
        self._profiles: dict[str, ModelProfile] = {}
        self.shortcuts = Shortcuts(settings, storage)  # LoRA/embedding folders, /prefer, server styles
        self._segment: Segmenter | None = None  # Vary (Region)'s text-to-mask model, loaded on first use
        self._metrics: MetricsServer | None = None
        self._preparing: set[int] = set()  # users whose edit canvas or upload is being prepared (one each)
        self._waiters: dict[str, list[asyncio.Future]] = {}
        # Admission: the limits are checked and a request's jobs created and queued under this
        # lock, so concurrent requests cannot all pass a check that only one of them fits.
        self._admission = asyncio.Lock()
        # Final events emitted before anyone subscribed (a job given up on while stored jobs
        # resume, before the Discord client exists), replayed to the first subscriber.
        self._unheard: list[QueueEvent] | None = []
        queue.subscribe(self._wake_waiters)

    # ----- life cycle -------------------------------------------------------------------
    @classmethod
    async def start(cls, settings: Settings, *, executor: Executor | None = None, resume: bool = True,
                    requester: Literal["bot", "cli"] = "bot") -> Tessera:
        """Open storage, build the queue, load the model in the background, resume jobs.

        With `QUEUE_URL=redis://…` the GPU workers hold the model: this machine may have no
        weights, so nothing is checked or loaded here (`executor` is then unused and may be
        None; the model's profile comes from a live worker's heartbeat).

        `resume=False` leaves the jobs already stored in DATA_DIR alone: the CLI runs only
        the jobs it submits, so pointing it at a running bot's DATA_DIR never runs the bot's
        jobs a second time.

        `requester="cli"` records this process as the owner of every job it creates: the bot
        never resumes those (nobody would be waiting for the result), and a later CLI run or
        `tessera doctor --fix` can see when this process is gone and fail what it left. A CLI
        start settles such stuck jobs first, so killed runs do not pile up.
        """

        if executor is None and not settings.queue_url:
            await asyncio.to_thread(check_model_ref, settings.model_id)  # a typo fails here, not in a job
            if settings.safety_checker:
                await asyncio.to_thread(check_source, settings.model_id, settings.safety_checker_model)
            executor = EngineExecutor.from_settings(settings)
        storage = await Storage.open(settings.data_dir)  # creates DATA_DIR, or says why it cannot
        try:
            if requester == "cli":
                storage.jobs.owner = this_cli()
                for job in await storage.jobs.settle_stuck():
                    for_job(log, job.id).warning("marked failed: the command that started it is gone")
            queue = build_queue(settings, storage, executor)
            service = cls(settings, storage, queue, executor)
            await queue.start(resume=resume)
            if settings.metrics_port:
                service._metrics = MetricsServer(queue.stats, port=settings.metrics_port)
                service._metrics.start()
        except BaseException:
            await storage.close()
            raise
        return service

    async def close(self) -> None:
        """Stop the queue (a running job is re-queued for the next start) and close storage."""
        try:
            await self.queue.stop()
        finally:
            if self._metrics is not None:
                self._metrics.stop()
            await self.storage.close()

    def subscribe(self, callback: Callback) -> None:
        """Receive every queue event from now on; the first subscriber also gets the final
        events nobody heard (see `__init__`), so their messages still show how they ended."""
        self.queue.subscribe(callback)
        held, self._unheard = self._unheard, None
        for event in held or ():
            callback(event)

    async def wait_for_jobs(self, job_ids: Sequence[str], timeout: float | None = None) -> dict[str, QueueEvent]:
        """Wait until every job has finished; its final event (done, failed or cancelled) by id.

        For the CLI: `tessera imagine` submits through the queue like the bot and waits here.
        A job that finished before the call gets an event rebuilt from storage.
        """
        loop = asyncio.get_running_loop()
        futures: dict[str, asyncio.Future] = {}
        for job_id in job_ids:
            future = loop.create_future()
            self._waiters.setdefault(job_id, []).append(future)
            futures[job_id] = future
        for job_id, future in futures.items():
            job = await self.storage.jobs.require(job_id)
            if job.state.finished and not future.done():
                future.set_result(await self._final_event(job))
        try:
            done = await asyncio.wait_for(asyncio.gather(*futures.values()), timeout)
        finally:
            for job_id, future in futures.items():
                waiting = self._waiters.get(job_id, [])
                if future in waiting:
                    waiting.remove(future)
                if not waiting:
                    self._waiters.pop(job_id, None)
        return dict(zip(futures, done, strict=True))

    def _wake_waiters(self, event: QueueEvent) -> None:
        if event.kind in ("done", "failed", "cancelled"):
            if self._unheard is not None and len(self._unheard) < _UNHEARD_MAX:  # the file is re-made on demand
                self._unheard.append(replace(event, upload=None, images=(), preview=None))
            for future in self._waiters.get(event.job_id, []):
                if not future.done():
                    future.set_result(event)

    async def _final_event(self, job: Job) -> QueueEvent:
        if job.state == JobState.DONE and job.kind.answers_text:
            return QueueEvent("done", job.id, result=job.result_json)
        if job.state == JobState.DONE:
            images = tuple(await self.storage.images.for_job(job.id))
            return QueueEvent("done", job.id, images=images, upload=await self.result_upload(job.id))
        return QueueEvent(str(job.state), job.id, error=job.error)  # type: ignore[arg-type]

    async def wait_ready(self, timeout: float | None = None) -> bool:
        """Wait for the model to be loaded (True when it is)."""
        return await self.queue.wait_ready(timeout)

    # ----- what features ask (typed, so bot/ and commands/ never reach into storage or the queue)
    async def job(self, job_id: str) -> Job | None:
        """A stored job, or None when there is none (a deleted job behind an old button)."""
        return await self.storage.jobs.get(job_id)

    async def require_job(self, job_id: str) -> Job:
        """A stored job; `StorageError` naming the id when there is none."""
        return await self.storage.jobs.require(job_id)

    async def job_for_message(self, message_id: int) -> Job | None:
        """The job whose result (or progress) message this is, if any."""
        return await self.storage.jobs.find_by_message(message_id)

    async def recent_jobs(self, user_id: int, limit: int = 10) -> list[Job]:
        """A user's jobs, newest first."""
        return await self.storage.jobs.recent_for_user(user_id, limit=limit)

    async def active_jobs(self, user_id: int, limit: int = 10) -> list[Job]:
        """A user's running jobs, then their waiting ones (at most `limit` of each)."""
        jobs = self.storage.jobs
        return (await jobs.list(user_id=user_id, state=JobState.RUNNING, limit=limit)
                + await jobs.list(user_id=user_id, state=JobState.QUEUED, limit=limit))

    async def record_message(self, job_id: str, channel_id: int | None, message_id: int) -> Job:
        """Remember which message shows a job (for ✉️, links and `/show`)."""
        return await self.storage.jobs.set_message(job_id, channel_id, message_id)

    def queue_position(self, job_id: str) -> int | None:
        """1 for the next job to run; None when the job is not waiting."""
        return self.queue.position(job_id)

    def queue_stats(self) -> QueueStats:
        return self.queue.stats()

    def model_ready(self) -> bool:
        """Whether jobs can run now (cheap: called for every progress event)."""
        return self.queue.model_ready()

    async def image(self, job_id: str, index: int) -> ImageRecord | None:
        return await self.storage.images.get(job_id, index)

    async def images(self, job_id: str) -> list[ImageRecord]:
        return await self.storage.images.for_job(job_id)

    async def user_settings(self, user_id: int) -> UserSettings:
        return await self.storage.settings.user(user_id)

    async def save_user_settings(self, settings: UserSettings) -> UserSettings:
        return await self.storage.settings.save_user(settings)

    async def guild_settings(self, guild_id: int) -> GuildSettings:
        return await self.storage.settings.guild(guild_id)

    async def save_guild_settings(self, settings: GuildSettings) -> GuildSettings:
        return await self.storage.settings.save_guild(settings)

    # ----- prompts' context: folders, /prefer shortcuts, server styles (`bot.shortcuts`) ----
    async def prompt_context(self, user_id: int | None, guild_id: int | None) -> PromptContext:
        """What a new prompt of `user_id`, written in `guild_id`, is parsed with: the LoRA and
        embedding names, the user's suffix and options, the server's styles."""
        return await self.shortcuts.context(user_id, guild_id)

    async def parse_prompt(self, text: str, *, user_id: int | None, guild_id: int | None) -> Prompt:
        """Parse a user's new prompt with their context (`PromptError` when it is invalid)."""
        return parse(text, self.settings.prompt_limits, context=await self.prompt_context(user_id, guild_id))

    async def reparse(self, stored_text: str) -> Prompt:
        """Parse text stored earlier (already expanded): no shortcuts are applied again, and a
        LoRA file removed since does not make it fail."""
        return parse(stored_text, self.settings.prompt_limits, context=await self.shortcuts.stored_context())

    async def set_suffix(self, user_id: int, text: str | None, *, guild_id: int | None = None) -> str:
        """`/prefer suffix`: text appended to every prompt of the user ("" or "clear" clears it)."""
        return await self.shortcuts.set_suffix(user_id, text, guild_id=guild_id)

    async def suffix(self, user_id: int) -> str:
        return await self.shortcuts.suffix(user_id)

    async def set_option(self, user_id: int, name: str, value: str, *, guild_id: int | None = None) -> None:
        """`/prefer option set`: the user's `--name` stands for `value` from now on."""
        await self.shortcuts.set_option(user_id, name, value, guild_id=guild_id)

    async def delete_option(self, user_id: int, name: str, *, guild_id: int | None = None) -> None:
        await self.shortcuts.delete_option(user_id, name, guild_id=guild_id)

    async def list_options(self, user_id: int) -> dict[str, str]:
        return await self.shortcuts.list_options(user_id)

    async def add_style(self, guild_id: int, name: str, text: str) -> None:
        """`/admin style add`: `--style name` stands for `text` in every prompt made in the server."""
        await self.shortcuts.add_style(guild_id, name, text)

    async def delete_style(self, guild_id: int, name: str) -> None:
        await self.shortcuts.delete_style(guild_id, name)

    async def list_styles(self, guild_id: int) -> dict[str, str]:
        return await self.shortcuts.list_styles(guild_id)

    async def list_loras(self, query: str = "") -> list[LoraInfo]:
        """The LoRAs in LORA_DIR matching `query` (prefix first, then substring), sizes, previews."""
        return await self.shortcuts.list_loras(query)

    async def search_loras(self, query: str, limit: int = 25) -> list[str]:
        """LoRA names for autocomplete."""
        return await self.shortcuts.search_loras(query, limit)

    # ----- the gallery (the Discord posting itself is `bot.gallery`'s) ----------------------
    async def gallery_entry(self, entry_id: int) -> GalleryEntry | None:
        return await self.storage.gallery.get(entry_id)

    async def gallery_entry_for_message(self, message_id: int) -> GalleryEntry | None:
        return await self.storage.gallery.find_by_message(message_id)

    async def find_share(self, job_id: str, index: int) -> GalleryEntry | None:
        """The gallery entry of one image, if it was shared (or is being shared)."""
        return await self.storage.gallery.find_share(job_id, index)

    async def add_share(self, job_id: str, index: int, *, author_id: int, title: str | None,
                        guild_id: int | None, prompt_text: str) -> GalleryEntry:
        return await self.storage.gallery.share(job_id, index, author_id=author_id, title=title,
                                                guild_id=guild_id, prompt_text=prompt_text)

    async def set_share_message(self, entry_id: int, channel_id: int, message_id: int) -> GalleryEntry:
        return await self.storage.gallery.set_message(entry_id, channel_id, message_id)

    async def remove_share_entry(self, entry_id: int) -> None:
        await self.storage.gallery.remove(entry_id)

    async def mark_share_removed(self, message_id: int) -> bool:
        """A gallery post was deleted in Discord: its entry leaves the gallery (True if one did)."""
        return await self.storage.gallery.mark_removed_by_message(message_id)

    async def toggle_like(self, entry_id: int, user_id: int) -> tuple[bool, int]:
        """Like or unlike; (liked now, the new count)."""
        return await self.storage.gallery.toggle_like(entry_id, user_id)

    async def search_gallery(self, query: str, *, author_id: int | None, sort: str, limit: int,
                             offset: int) -> list[GalleryEntry]:
        return await self.storage.gallery.search(query, author_id=author_id, sort=sort, limit=limit, offset=offset)

    async def top_gallery(self, *, since_days: int | None, limit: int, offset: int) -> list[GalleryEntry]:
        return await self.storage.gallery.top(since_days=since_days, limit=limit, offset=offset)

    # ----- commands ---------------------------------------------------------------------
    async def imagine(self, *, user_id: int, prompt_text: str, guild_id: int | None = None,
                      channel_id: int | None = None, image_url: str | None = None,
                      style_urls: Sequence[str] = (), character_urls: Sequence[str] = (), confirmed: bool = False,
                      priority: int = 0, sampler: str | None = None) -> list[Job]:
        """Parse, check, resolve and queue a prompt: one job per expansion and --repeat.

        `image_url`, `style_urls` and `character_urls` are `/imagine`'s attachments (an image
        prompt, `sref`, `cref`): each acts as if its link were typed in front of the prompt or
        after `--sref` / `--cref` in every expansion (same checks, caps and fetch; the request
        and its PNGs record them), while the stored text stays what the member typed.
        `sampler` overrides the user's and the server's (the CLI's --sampler)."""

        prompt = await self.parse_prompt(prompt_text, user_id=user_id, guild_id=guild_id)
        expansions = [e.with_references(tuple(style_urls), tuple(character_urls)) for e in prompt.expansions]
        prompt_text = prompt.raw  # with the suffix, options and styles expanded: what is stored is what ran
        await self._check_words(prompt_text, guild_id)
        count = prompt.jobs
        if count > CONFIRM_ABOVE_JOBS and not confirmed:
            raise NeedsConfirmation(count)
        await self._check_limits(user_id, guild_id, count)
        user = await self.storage.settings.user(user_id)
        model = self._model_for(user.model)
        sampler = sampler or user.sampler or self.settings.sampler
        profile = await self._profile(model)
        defaults = Defaults(quality=user.quality, aspect=user.aspect, stylize=user.stylize)
        safety = await self._safety_for(guild_id)
        default_lora = await self._default_lora(user)
        plans: list[tuple[Expansion, GenerationRequest]] = []
        fetched: dict[tuple[tuple[str, ...], ...], tuple[str | None, tuple[str, ...], tuple[str, ...]]] = {}
        keys = [(((image_url,) if image_url else ()) + tuple(e.images), e.reference_links("sref"),
                 e.reference_links("cref")) for e in expansions]
        with_refs = [k for k in dict.fromkeys(keys) if k[1] or k[2]]
        if with_refs:  # before any fetch: every different set is fetched once, all share one bound
            self._check_references(profile.family, "--sref" if any(k[1] for k in with_refs) else "--cref",
                                   sum(len(a) + len(b) + len(c) for a, b, c in dict.fromkeys(keys)))
        for expansion, key in zip(expansions, keys, strict=True):
            urls, srefs, crefs = key
            if key not in fetched:
                fetched[key] = await self._fetch_pictures(urls, srefs, crefs) if any(key) else (None, (), ())
            init_image, style_refs, character_refs = fetched[key]
            for _ in range(expansion.params.repeat or 1):
                request = resolve(expansion, profile=profile, model=model, sampler=sampler, defaults=defaults,
                                  init_image=init_image, draft=self.settings.draft_profile,
                                  style_refs=style_refs, character_refs=character_refs)
                request = replace(request, safety_check=safety)
                if default_lora and not request.loras:
                    request = replace(request, loras=((default_lora, 1.0),))
                if image_url and image_url not in request.image_prompts:
                    request = replace(request, image_prompts=(image_url, *request.image_prompts))
                plans.append((expansion, request))
        text_for = (lambda e: e.source) if len(prompt.expansions) > 1 else (lambda e: prompt_text)
        return await self._admit(user_id, guild_id, [NewJob(
            kind=JobKind.IMAGINE, user_id=user_id, prompt_text=text_for(expansion),
            prompt_json=_expansion_json(expansion), request_json=request.to_json(), seed=request.seed,
            model=model, guild_id=guild_id, channel_id=channel_id, priority=priority,
        ) for expansion, request in plans])

    async def upscale(self, *, user_id: int, job_id: str, index: int, scale: int = 4, guild_id: int | None = None,
                      channel_id: int | None = None, priority: int = 0, actor: Actor | None = None) -> Job:
        """Queue an upscale of image `index` (0-based) of a finished job.

        `actor` is who pressed the button or typed the id (Discord); the CLI, run by the
        operator, passes none."""

        check_upscale_factor(scale)
        parent = await self._done_job(job_id)
        if actor is not None:
            await self.authorize(actor, parent, Act.USE)
        record = await self._image(parent, index)
        check_upscale_size(record.width, record.height, scale, self.settings.upscale_max_side)
        await self._check_limits(user_id, guild_id, 1)
        return await self._admit_one(user_id, guild_id, NewJob(
            kind=JobKind.UPSCALE, user_id=user_id, prompt_text=parent.prompt_text, prompt_json=parent.prompt_json,
            seed=parent.seed, model=parent.model, guild_id=guild_id, channel_id=channel_id, parent_id=parent.id,
            parent_index=index, options={"scale": scale, "source": str(record.path)},
            priority=UPSCALE_PRIORITY + priority,
        ))

    async def vary(self, *, user_id: int, job_id: str, index: int, strength: Literal["subtle", "strong"] = "subtle",
                   prompt_text: str | None = None, guild_id: int | None = None, channel_id: int | None = None,
                   priority: int = 0, seed: int | None = None, actor: Actor | None = None) -> Job:
        """Queue four variations of image `index` (0-based); `prompt_text` remixes the prompt.
        `actor` as for `upscale`."""

        parent = await self._done_job(job_id)
        if actor is not None:
            await self.authorize(actor, parent, Act.USE)
        record = await self._image(parent, index)
        base_request, base_index = await self._request_behind(parent, index)
        expansion = None
        if prompt_text:
            expansion = await self._single_expansion(prompt_text, user_id, guild_id)
            prompt_text = expansion.source
            await self._check_words(prompt_text, guild_id)
        await self._check_limits(user_id, guild_id, 1)
        request = variation_of(base_request, index=base_index, init_image=str(record.path), strength=strength,
                               expansion=expansion, seed=seed)
        request = replace(request, safety_check=await self._safety_for(guild_id))
        return await self._admit_one(user_id, guild_id, NewJob(
            kind=JobKind.VARIATION, user_id=user_id, prompt_text=prompt_text or parent.prompt_text,
            prompt_json=_expansion_json(expansion) if expansion else parent.prompt_json,
            request_json=request.to_json(), seed=request.seed, model=request.model, guild_id=guild_id,
            channel_id=channel_id, parent_id=parent.id, parent_index=index, options={"strength": strength},
            priority=priority,
        ))

    async def vary_upload(self, *, user_id: int, image_bytes: bytes, prompt_text: str = "",
                          strength: Literal["subtle", "strong"] = "subtle", guild_id: int | None = None,
                          channel_id: int | None = None, priority: int = 0) -> Job:
        """Queue variations of an uploaded image (DALL·E 2's "variations")."""

        expansion = await self._single_expansion(prompt_text, user_id, guild_id) if prompt_text.strip() else None
        if expansion is not None:
            prompt_text = expansion.source
            await self._check_words(prompt_text, guild_id)
        await self._check_limits(user_id, guild_id, 1)
        with self._one_preparing(user_id, "picture"):
            path, size = await asyncio.to_thread(self._store_input, image_bytes)
        user = await self.storage.settings.user(user_id)
        model = self._model_for(user.model)
        profile = await self._profile(model)
        request = variation_of_image(str(path), size, profile=profile, model=model,
                                     sampler=user.sampler or self.settings.sampler, strength=strength,
                                     expansion=expansion)
        request = replace(request, safety_check=await self._safety_for(guild_id))
        return await self._admit_one(user_id, guild_id, NewJob(
            kind=JobKind.VARIATION, user_id=user_id, prompt_text=prompt_text,
            prompt_json=_expansion_json(expansion) if expansion else None, request_json=request.to_json(),
            seed=request.seed, model=model, guild_id=guild_id, channel_id=channel_id,
            options={"strength": strength, "upload": str(path)}, priority=priority,
        ))

    # ----- edits: zoom out, pan, make square, vary (region) ------------------------------
    async def zoom(self, *, user_id: int, job_id: str, index: int, factor: float = 2.0, prompt_text: str | None = None,
                   **common: Any) -> Job:
        """Zoom Out: image `index` (0-based) shrunk by `factor` (1-2) into the centre of a canvas
        of the same size (or of the `--ar` in `prompt_text`), the border painted new.
        `common`: guild_id, channel_id, priority, seed, actor (as for `vary`)."""
        factor = check_zoom(factor)
        expansion = await self._edit_expansion(prompt_text, user_id, common.get("guild_id"))
        aspect = expansion.params.ar if expansion is not None else None

        def canvas(source: Image.Image, base: GenerationRequest, profile: ModelProfile) -> Canvas:
            size = size_for_aspect(aspect, profile.native) if aspect else (base.width, base.height)
            return zoom_canvas(source, factor, size)

        label = f"zoom {factor:g}"
        return await self._edit(user_id, job_id, index, canvas, label, {"edit": "zoom", "factor": factor},
                                expansion, prompt_text, **common)

    async def pan(self, *, user_id: int, job_id: str, index: int, direction: str, prompt_text: str | None = None,
                  **common: Any) -> Job:
        """Pan: the canvas grows by half its side towards `direction` (left, right, up, down);
        the picture keeps its pixels; up to PAN_MAX_SIDE."""
        if direction not in DIRECTIONS:
            raise PromptError(f"Pan direction must be one of {', '.join(DIRECTIONS)}, got {direction[:20]!r}.")
        expansion = await self._edit_expansion(prompt_text, user_id, common.get("guild_id"))
        max_side = self.settings.pan_max_side
        return await self._edit(user_id, job_id, index,
                                lambda source, base, profile: pan_canvas(source, direction, max_side=max_side),
                                f"pan {direction}", {"edit": "pan", "direction": direction}, expansion, prompt_text,
                                **common)

    async def square(self, *, user_id: int, job_id: str, index: int, prompt_text: str | None = None,
                     **common: Any) -> Job:
        """Make Square: the short side of a wide or tall picture extended to the long side."""
        expansion = await self._edit_expansion(prompt_text, user_id, common.get("guild_id"))
        max_side = max(self.settings.pan_max_side, 64)
        return await self._edit(user_id, job_id, index,
                                lambda source, base, profile: square_canvas(source, max_side=max_side),
                                "square", {"edit": "square"}, expansion, prompt_text, **common)

    async def region(self, *, user_id: int, job_id: str, index: int, cells: str | None = None,
                     where: str | None = None, mask_bytes: bytes | None = None, prompt_text: str | None = None,
                     **common: Any) -> Job:
        """Vary (Region): repaint a part of image `index` and keep the rest. The part is given by
        exactly one of `cells` ("a1,b2" on a 3x3 grid), `where` (a description, "the sky", found
        by SEGMENT_MODEL_ID) or `mask_bytes` (an uploaded black-and-white mask of the picture's
        size, white = repaint). `prompt_text` says what to paint there (default: the prompt)."""
        given = [name for name, value in (("cells", cells), ("where", where), ("mask", mask_bytes)) if value]
        if len(given) != 1:
            raise PromptError("Say which part to repaint in exactly one way: cells (like a1,b2), a description "
                              "(like “the sky”) or an uploaded black-and-white mask.")
        chosen_cells = parse_cells(cells) if cells else None
        if where is not None and len(where) > MAX_REGION_TEXT:
            raise PromptError(f"The region description is {len(where)} characters; at most {MAX_REGION_TEXT} are "
                              "allowed (a few words, like “the sky”).")
        expansion = await self._edit_expansion(prompt_text, user_id, common.get("guild_id"))

        def canvas(source: Image.Image, base: GenerationRequest, profile: ModelProfile,
                   shown: tuple[int, int] = (0, 0)) -> Canvas:
            if chosen_cells is not None:
                area = cell_mask(source.size, chosen_cells)
            elif mask_bytes is not None:  # decoded here, in the edit's worker thread, after every check
                area = check_mask(decode_image(mask_bytes, max_bytes=self.settings.image_prompt_max_bytes,
                                               max_pixels=self.settings.image_prompt_max_pixels, source="The mask"),
                                  shown)
            else:
                area = self._segmenter().mask(source, where or "")
            return region_canvas(source, area)

        what = f"cells {','.join(chosen_cells)}" if chosen_cells else "mask" if mask_bytes is not None else "where"
        options: dict[str, Any] = {"edit": "region", "by": given[0]}
        if chosen_cells:
            options["cells"] = ",".join(chosen_cells)
        if where:
            options["where"] = " ".join(where.split())
        return await self._edit(user_id, job_id, index, canvas, f"region ({what})", options, expansion,
                                prompt_text, wants_shown_size=True, **common)

    def _segmenter(self) -> Segmenter:
        """The region model, loaded on first use (in the calling worker thread)."""
        if self._segment is None:
            self._segment = Segmenter(self.settings.segment_model_id)
        return self._segment

    async def _edit_expansion(self, prompt_text: str | None, user_id: int, guild_id: int | None) -> Expansion | None:
        if not prompt_text or not prompt_text.strip():
            return None
        expansion = await self._single_expansion(prompt_text, user_id, guild_id)
        await self._check_words(expansion.source, guild_id)
        return expansion

    async def _edit(self, user_id: int, job_id: str, index: int, make_canvas: Callable[..., Canvas], label: str,
                    options: dict[str, Any], expansion: Expansion | None, prompt_text: str | None, *,
                    guild_id: int | None = None, channel_id: int | None = None, priority: int = 0,
                    seed: int | None = None, actor: Actor | None = None, wants_shown_size: bool = False) -> Job:
        """The part every edit shares: find the picture, build its canvas and mask off the event
        loop, store both under DATA_DIR/inputs by hash, queue a 2x2 grid of candidates."""
        parent = await self._done_job(job_id)
        if actor is not None:
            await self.authorize(actor, parent, Act.USE)
        record = await self._image(parent, index)
        base, _ = await self._request_behind(parent, index)
        await self._check_limits(user_id, guild_id, 1)
        model = self.settings.inpaint_model_id or base.model
        profile = await self._profile(base.model)

        def build() -> tuple[str, str, Canvas]:
            with Image.open(record.path) as opened:
                opened.load()
                shown = opened.size
                source = fit_source(opened, base.width, base.height)
            extra = {"shown": shown} if wants_shown_size else {}
            canvas = make_canvas(source, base, profile, **extra)
            image_path, _ = self._store_input_image(canvas.image)
            mask_path, _ = self._store_input_image(canvas.mask)
            return str(image_path), str(mask_path), canvas

        try:
            with self._one_preparing(user_id, "edit"):
                init_path, mask_path, canvas = await asyncio.to_thread(build)
        except FileNotFoundError:
            raise StorageError(f"Image {index + 1} of job {parent.id} is no longer on disk (it may have been "
                               "pruned).") from None
        width, height = canvas.size
        changes: dict[str, Any] = {}
        if expansion is not None:
            changes = {"prompts": tuple(expansion.prompts), "negative": tuple(expansion.negative),
                       "text": expansion.source}
        request = replace(
            base, width=width, height=height, aspect=_aspect_of(width, height), init_image=init_path,
            mask_image=mask_path, strength=EDIT_STRENGTH, feather=canvas.feather, edit=label,
            parent=f"{parent.id}#{index + 1}", model=model, count=4, tile=False, stop=None,
            seed=random_seed() if seed is None else seed % (SEED_MAX + 1), image_prompts=(), image_weight=None,
            variation=None, safety_check=await self._safety_for(guild_id), **changes)
        return await self._admit_one(user_id, guild_id, NewJob(
            kind=JobKind.EDIT, user_id=user_id, prompt_text=prompt_text or parent.prompt_text,
            prompt_json=_expansion_json(expansion) if expansion else parent.prompt_json,
            request_json=request.to_json(), seed=request.seed, model=request.model, guild_id=guild_id,
            channel_id=channel_id, parent_id=parent.id, parent_index=index,
            options={**options, "mask": mask_path}, priority=priority,
        ))

    async def blend(self, *, user_id: int, images: Sequence[bytes], dimensions: str = "square",
                    guild_id: int | None = None, channel_id: int | None = None, priority: int = 0) -> Job:
        """Queue Midjourney's /blend: a grid whose images mix 2-5 uploaded pictures (their
        IP-Adapter image embeddings averaged), with no text. `dimensions` is portrait (2:3),
        square (1:1) or landscape (3:2)."""

        if not BLEND_MIN <= len(images) <= BLEND_MAX:
            raise PromptError(f"/blend takes {BLEND_MIN} to {BLEND_MAX} pictures; got {len(images)}.")
        aspect = BLEND_DIMENSIONS.get(dimensions)
        if aspect is None:
            raise PromptError(f"/blend dimensions must be one of {', '.join(BLEND_DIMENSIONS)}; got {dimensions[:40]!r}.")
        user = await self.storage.settings.user(user_id)
        model = self._model_for(user.model)
        profile = await self._profile(model)
        self._check_references(profile.family, "/blend", len(images))
        await self._check_limits(user_id, guild_id, 1)
        with self._one_preparing(user_id, "pictures"):
            paths = await asyncio.to_thread(self._store_pictures, images)
        expansion = Expansion(prompts=(), negative=(), images=(), params=Params(ar=aspect), source="")
        request = resolve(expansion, profile=profile, model=model, sampler=user.sampler or self.settings.sampler)
        request = replace(request, blend_refs=paths, text=f"/blend {len(paths)} pictures",
                          safety_check=await self._safety_for(guild_id))
        return await self._admit_one(user_id, guild_id, NewJob(
            kind=JobKind.IMAGINE, user_id=user_id, prompt_text=request.text, prompt_json=None,
            request_json=request.to_json(), seed=request.seed, model=model, guild_id=guild_id,
            channel_id=channel_id, options={"blend": len(paths), "dimensions": dimensions}, priority=priority,
        ))

    def _store_pictures(self, images: Sequence[bytes]) -> tuple[str, ...]:
        """Decode uploads with the checked decoder (per picture and per prompt pixel limits,
        as for image links) and store each; blocking, run in a worker thread."""
        budget = [self.settings.image_prompt_max_total_pixels]

        def spend(size: tuple[int, int]) -> None:
            budget[0] -= size[0] * size[1]
            if budget[0] < 0:
                raise ImageFetchError(f"The pictures have more than {self.settings.image_prompt_max_total_pixels / 1e6:g} "
                                      "megapixels together; use fewer or smaller pictures.")

        decoded = [decode_image(data, max_bytes=self.settings.image_prompt_max_bytes,
                                max_pixels=self.settings.image_prompt_max_pixels, source=f"Picture {i}",
                                before_decode=spend) for i, data in enumerate(images, start=1)]
        return tuple(str(self._store_input_image(image)[0]) for image in decoded)

    # ----- /describe and /shorten: queue jobs that answer text ---------------------------
    async def describe(self, *, user_id: int, image_bytes: bytes, offset: int = 0, guild_id: int | None = None,
                       channel_id: int | None = None, priority: int = 0) -> Job:
        """Queue Midjourney's /describe of an uploaded picture: four prompts for it
        (`engine.vision.describe`), answered by the job (`Job.result_json`, the done event's
        `result`). The picture is checked and kept first (`keep_picture`)."""
        self._check_describe(offset)
        await self._check_limits(user_id, guild_id, 1)  # a member at their limit: refused before any decoding
        with self._one_preparing(user_id, "picture"):
            digest = await self.keep_picture(image_bytes)
        return await self.describe_kept(digest, offset, user_id=user_id, guild_id=guild_id, channel_id=channel_id,
                                        priority=priority)

    @contextlib.contextmanager
    def _one_preparing(self, user_id: int, what: str) -> Iterator[None]:
        """One edit canvas or upload in the making per person: the limits count admitted jobs
        only, so thirty concurrent requests would otherwise all decode and write before one
        was refused."""
        if user_id in self._preparing:
            raise QueueLimitError(f"Your last {what} is still being prepared; try again in a moment.")
        self._preparing.add(user_id)
        try:
            yield
        finally:
            self._preparing.discard(user_id)

    async def check_room(self, user_id: int, guild_id: int | None, count: int = 1) -> None:
        """Raise `QueueLimitError` when `count` more jobs of this member would not fit (their
        own, the server's or the queue's limits): commands ask before downloading an upload.
        Admission checks again, under its lock."""
        await self._check_limits(user_id, guild_id, count)

    async def describe_kept(self, digest: str, offset: int = 0, *, user_id: int, guild_id: int | None = None,
                            channel_id: int | None = None, priority: int = 0) -> Job:
        """Queue /describe of a picture stored by `keep_picture` (the command and its 🔄 button).

        It runs on the GPU thread or a Redis worker like any job: it waits its turn, counts
        against the member's and the server's limits, and survives a restart. `offset` (the 🔄
        count, 0-1000) deals the next-best phrases. The captioner (`CAPTION_MODEL`) loads on
        the first /describe, where the jobs run."""
        path = self.kept_picture(digest)
        self._check_describe(offset)
        await self._check_limits(user_id, guild_id, 1)
        text = "/describe" + (f" (🔄 {offset})" if offset else "")
        return await self._admit_one(user_id, guild_id, NewJob(
            kind=JobKind.DESCRIBE, user_id=user_id, prompt_text=text, guild_id=guild_id, channel_id=channel_id,
            options={"source": str(path), "digest": digest, "offset": offset}, priority=priority,
        ))

    def _check_describe(self, offset: int) -> None:
        if not self.settings.caption_model.strip():
            raise PromptError("/describe is not set up: the operator sets CAPTION_MODEL (a BLIP captioning model such "
                              "as Salesforce/blip-image-captioning-large).")
        if not 0 <= offset <= DESCRIBE_AGAIN_MAX:
            raise PromptError(f"describe again at most {DESCRIBE_AGAIN_MAX} times; got {offset}.")

    async def shorten(self, *, user_id: int, prompt_text: str, guild_id: int | None = None,
                      channel_id: int | None = None, priority: int = 0) -> Job:
        """Queue Midjourney's /shorten: the prompt's words weighed by the model's own text
        encoder (MODEL_ID's, where the jobs run) and up to five shorter prompts
        (`engine.diffusion.shorten`), answered by the job like /describe. The prompt is parsed
        and its words counted here, so a refused prompt never waits in the queue."""
        prompt = parse(prompt_text, self.settings.prompt_limits)
        await self._check_words(prompt_text, guild_id)
        task = ShortenTask.from_expansion(prompt.expansions[0])
        await self._check_limits(user_id, guild_id, 1)
        return await self._admit_one(user_id, guild_id, NewJob(
            kind=JobKind.SHORTEN, user_id=user_id, prompt_text=prompt.raw, guild_id=guild_id, channel_id=channel_id,
            options=task.to_options(), priority=priority,
        ))

    async def answer_of(self, job: Job, timeout: float | None = None) -> dict:
        """Wait for a /describe or /shorten job and return its answer (for the CLI); a failed
        or cancelled job raises `TesseraError` with its reason."""
        event = (await self.wait_for_jobs([job.id], timeout))[job.id]
        if event.kind == "done" and event.result is not None:
            return check_answer(job.kind, event.result)
        if event.kind == "cancelled":
            raise TesseraError(f"Job {job.id} was cancelled.")
        raise TesseraError(event.error or f"Job {job.id} failed.")

    # ----- /describe and /shorten in Discord: what their buttons need after a restart ------
    async def keep_picture(self, image_bytes: bytes) -> str:
        """Decode an upload with the checked decoder and store it under DATA_DIR/inputs; return
        its sha256 (the stored file's name), which /describe's buttons carry (a 100-character
        custom_id holds a hash, not a picture) to describe it again after any restart."""
        path, _size = await asyncio.to_thread(self._store_input, image_bytes, "The picture")
        return path.stem

    def kept_picture(self, digest: str) -> Path:
        """The stored picture named by a button: exactly 64 lowercase hex characters (no path
        can be spelled with them) and a file that exists under DATA_DIR/inputs."""
        if not isinstance(digest, str) or not _DIGEST.fullmatch(digest):
            raise PromptError("This button names no picture Tessera kept; run `/describe` again.")
        path = self.inputs_dir / f"{digest}.png"
        if not path.is_file():
            raise PromptError("The picture behind this button is no longer kept on this bot; run `/describe` again.")
        return path

    async def keep_description(self, digest: str, offset: int, description: Description) -> str:
        """Keep a /describe answer's four prompts for its 1-4 buttons; return their key
        (`d:<digest>:<offset>`, what the buttons carry)."""
        key = f"d:{digest}:{offset}"
        await self.storage.suggestions.save(key, description.prompts)
        return key

    async def keep_shortened(self, shortening: Shortening) -> str:
        """Keep /shorten's prompts for its buttons; return their key (16 hex characters of the
        prompts' sha256: content-addressed, so the same answer always gets the same key)."""
        if not shortening.prompts:
            raise PromptError("this prompt is already as short as it can be; there is nothing to run shorter.")
        blob = json.dumps(list(shortening.prompts), ensure_ascii=False).encode()
        key = hashlib.sha256(blob).hexdigest()[:16]
        await self.storage.suggestions.save(f"s:{key}", shortening.prompts)
        return key

    async def suggested(self, key: str) -> tuple[str, ...] | None:
        """Prompts kept by `keep_description` (`d:<digest>:<offset>`) or `keep_shortened` (`s:<key>`)."""
        return await self.storage.suggestions.get(key)

    async def reroll(self, *, user_id: int, job_id: str, guild_id: int | None = None, channel_id: int | None = None,
                     priority: int = 0, seed: int | None = None, actor: Actor | None = None) -> Job:
        """Queue the same request as `job_id` with a new seed (`seed`, else a random one).
        `actor` as for `upscale` (the gallery's 🎲 passes none: a share is public)."""

        parent = await self.storage.jobs.require(job_id)
        if actor is not None:
            await self.authorize(actor, parent, Act.USE)
        if parent.kind == JobKind.UPSCALE:
            parent = await self.storage.jobs.require(parent.parent_id or "")
        if not parent.request_json:
            raise StorageError(f"Job {parent.id} has no stored request to run again.")
        await self._check_limits(user_id, guild_id, 1)
        request = reroll_of(GenerationRequest.from_json(parent.request_json), seed=seed)
        request = replace(request, safety_check=await self._safety_for(guild_id))
        return await self._admit_one(user_id, guild_id, NewJob(
            kind=JobKind.REROLL, user_id=user_id, prompt_text=prompt_with_seed(parent.prompt_text, request.seed),
            prompt_json=parent.prompt_json,
            request_json=request.to_json(), seed=request.seed, model=request.model, guild_id=guild_id,
            channel_id=channel_id, parent_id=parent.id, options=dict(parent.options), priority=priority,
        ))

    async def enhance(self, *, user_id: int, job_id: str, guild_id: int | None = None, channel_id: int | None = None,
                      priority: int = 0, actor: Actor | None = None) -> Job:
        """Enhance under a draft grid: the same prompt, size and seeds at full quality (the
        steps, guidance, sampler and model a normal job of `user_id` gets). `actor` as for
        `upscale`: making a new job from someone's draft is using it (`Act.USE`)."""
        parent = await self._done_job(job_id)
        if actor is not None:
            await self.authorize(actor, parent, Act.USE)
        if parent.kind == JobKind.UPSCALE or not parent.request_json:
            raise PromptError("Only a draft grid can be enhanced (this job was not made with --draft).")
        base = GenerationRequest.from_json(parent.request_json)
        await self._check_limits(user_id, guild_id, 1)
        user = await self.storage.settings.user(user_id)
        model = self._model_for(user.model)
        profile = await self._profile(model)
        request = enhance_of(base, profile=profile, model=model, sampler=user.sampler or self.settings.sampler,
                             defaults=Defaults(quality=user.quality))
        request = replace(request, safety_check=await self._safety_for(guild_id))
        return await self._admit_one(user_id, guild_id, NewJob(
            kind=JobKind.REROLL, user_id=user_id, prompt_text=prompt_without_draft(parent.prompt_text),
            prompt_json=parent.prompt_json, request_json=request.to_json(), seed=request.seed, model=request.model,
            guild_id=guild_id, channel_id=channel_id, parent_id=parent.id, options={"enhance": True},
            priority=priority,
        ))

    async def _default_lora(self, user: UserSettings) -> str | None:
        """The user's default LoRA (`/settings`) while its file is still in LORA_DIR; a removed
        file is skipped (and logged), never a reason to refuse their prompts."""
        if not user.lora:
            return None
        loras, _ = await self.shortcuts.names()
        if user.lora in loras:
            return user.lora
        log.info("user %s's default LoRA %s is no longer in LORA_DIR; not using it", user.user_id, user.lora)
        return None

    async def cancel(self, *, actor: Actor, job_id: str) -> Job:
        """Cancel a waiting job (at once) or a running one (at its next step).

        Its owner may, from anywhere; a manager only from the job's own server (`authorize`)."""
        job = await self.storage.jobs.require(job_id)
        await self.authorize(actor, job, Act.CANCEL)
        if job.state.finished:
            raise TesseraError(f"Job {job.id} is already {job.state}; there is nothing to cancel.")
        if not await self.queue.cancel(job.id) and job.state == JobState.QUEUED:
            # Stored as queued but not in the queue (e.g. the queue refused it): cancel the row.
            await self.storage.jobs.transition(job.id, JobState.CANCELLED)
        return await self.storage.jobs.require(job.id)

    async def authorize(self, actor: Actor, target: Job | GalleryEntry, act: Act) -> None:
        """Refuse (`TesseraError`) unless `actor` may do `act` to a job or a gallery share.

        The one place that decides (rules in `bot.authorization`): every command and button that
        acts on someone's job or share asks here, with the job's own owner and server, never
        the rights the actor has in whatever server they happen to be in."""
        if isinstance(target, GalleryEntry):
            subject = Subject(owner_id=target.author_id, guild_id=target.guild_id)
        else:
            private = act in (Act.SHARE, Act.SHOW, Act.SEED) and await self._private_to(target, actor.user_id)
            subject = Subject(owner_id=target.user_id, guild_id=target.guild_id, private=private)
        refusal = decide(actor, act, subject)
        if refusal is not None:
            raise TesseraError(refusal)

    async def _private_to(self, job: Job, user_id: int) -> bool:
        """Whether someone other than `user_id` keeps this result private: the job's owner, or
        the owner of any image it was upscaled from (an upscale shows the same picture)."""
        current: Job | None = job
        for _ in range(32):
            if current is None:
                return False
            if current.user_id != user_id and (await self.storage.settings.user(current.user_id)).private:
                return True
            if current.kind is not JobKind.UPSCALE or not current.parent_id:
                return False
            current = await self.storage.jobs.get(current.parent_id)
        return False

    async def result_upload(self, job_id: str) -> EncodedImage:
        """Re-make the Discord file of a done job (for /show and after restarts)."""

        job = await self.storage.jobs.require(job_id)
        if job.state != JobState.DONE:
            raise StorageError(f"Job {job.id} is {job.state}, not done: it has no result to show yet.")
        if job.kind.answers_text:
            raise StorageError(f"Job {job.id} is a /{job.kind.value} answer: it has no picture.")
        return await self.queue.writer.upload_for(job)

    # ----- helpers ----------------------------------------------------------------------
    async def _admit_one(self, user_id: int, guild_id: int | None, new: NewJob) -> Job:
        (job,) = await self._admit(user_id, guild_id, [new])
        return job

    async def _admit(self, user_id: int, guild_id: int | None, news: Sequence[NewJob]) -> list[Job]:
        """One admission decision for a whole request: all of its jobs are stored and queued, or none.

        The limits were checked once before the expensive work (a quick refusal); here they are
        checked again and the jobs created and submitted under `_admission`, with no other
        request in between, so twenty concurrent prompts under a limit of three admit three.
        If anything fails half-way, the jobs already made are taken out of the queue and
        storage before the error goes on: a refused request leaves nothing that runs."""
        await self._touch_inputs(news)
        async with self._admission:
            await self._check_limits(user_id, guild_id, len(news))
            made: list[Job] = []
            submitted: list[Job] = []
            try:
                for new in news:
                    made.append(await self.storage.jobs.create(new))
                for job in made:
                    await self.queue.submit(job)
                    submitted.append(job)
            except BaseException as exc:
                if not isinstance(exc, TesseraError):  # a user-fixable error is the caller's to show
                    for_job(log, made[0].id if made else None).exception(
                        "could not queue %d job(s); taking them back", len(news))
                await self._take_back(made, submitted)
                raise
            return made

    async def _touch_inputs(self, news: Sequence[NewJob]) -> None:
        """Refresh the mtime of the DATA_DIR/inputs pictures these jobs use, before they are
        stored: `tessera prune` (maybe running beside the bot) then sees them as young and keeps
        them. A picture already pruned refuses the request here, with a message, instead of the
        job failing on the GPU (a 🔄 of an old job with an image prompt, reference or mask)."""
        values = [value for new in news for value in (new.request_json, new.options) if value]
        if any(referenced_names(value) for value in values):
            await asyncio.to_thread(touch_inputs, self.inputs_dir, *values)

    async def _take_back(self, made: Sequence[Job], submitted: Sequence[Job]) -> None:
        """Undo a half-done admission: out of the queue, then out of storage (no trace left)."""
        for job in submitted:
            try:
                await self.queue.cancel(job.id)
            except Exception:
                for_job(log, job.id).exception("could not take job %s back out of the queue", job.id)
        for job in made:
            try:
                await self.storage.jobs.delete(job.id)
            except Exception:
                for_job(log, job.id).exception("could not delete job %s after a refused request", job.id)

    async def _safety_for(self, guild_id: int | None) -> bool:
        """Whether this job's images go through the safety checker: SAFETY_CHECKER turns it on
        everywhere; a server's admins turn it on for their server (/admin nsfw)."""
        if self.settings.safety_checker:
            return True
        return guild_id is not None and (await self.storage.settings.guild(guild_id)).safety_checker

    async def _check_words(self, text: str, guild_id: int | None) -> None:
        words = list(DEFAULT_BANNED_WORDS) + list(self.settings.banned_words)
        if guild_id is not None:
            words += list((await self.storage.settings.guild(guild_id)).banned_words)
        word = find_banned_word(text, words)
        if word is not None:
            raise PromptError(f"The word “{word}” is not allowed here. Remove it from your prompt and try again.")

    async def _check_limits(self, user_id: int, guild_id: int | None, count: int) -> None:
        self.queue.check(user_id, count)
        if guild_id is None:
            return
        limit = (await self.storage.settings.guild(guild_id)).max_queued_per_user
        if limit is not None:
            waiting = self.queue.scheduler.waiting_for(user_id)
            if waiting + count > limit:
                raise QueueLimitError(
                    f"This server allows at most {limit} waiting jobs per person; you have {waiting} waiting and "
                    f"this makes {count} more. Wait for some to finish or cancel one with /cancel."
                )

    def _model_for(self, chosen: str | None) -> str:
        """The user's model if the server still allows it, else MODEL_ID."""
        if chosen and (chosen == self.settings.model_id or chosen in self.settings.allowed_models):
            return chosen
        return self.settings.model_id

    async def _profile(self, model: str) -> ModelProfile:
        """The model's profile: from the loaded model, its config files, or by waiting for the load."""
        if model in self._profiles:
            return self._profiles[model]
        loaded = getattr(self.executor, "model", None)
        profile = None
        if loaded is not None and getattr(loaded, "ref", None) == model:
            profile = loaded.profile
        if profile is None:
            profile = await asyncio.to_thread(peek_profile, model)
        if profile is None and model == self.settings.model_id:
            await self.wait_ready()
            loaded = getattr(self.executor, "model", None)
            profile = getattr(loaded, "profile", None)
            if profile is None:  # Redis: as a live worker loaded it
                profile = self.queue.model_profile(model)
        if profile is None:
            profile = PROFILES["sd1"]
            log.warning("cannot tell the family of %s before loading it; assuming SD 1.x sizes", model)
        self._profiles[model] = profile
        return profile

    async def _single_expansion(self, prompt_text: str, user_id: int | None, guild_id: int | None) -> Expansion:
        prompt: Prompt = await self.parse_prompt(prompt_text, user_id=user_id, guild_id=guild_id)
        if len(prompt.expansions) != 1:
            raise PromptError(f"A remix or variation prompt must make one job; this one makes {len(prompt.expansions)}.")
        return prompt.expansions[0]

    async def _done_job(self, job_id: str) -> Job:
        job = await self.storage.jobs.require(job_id)
        if job.state != JobState.DONE:
            raise StorageError(f"Job {job.id} is {job.state}; only finished jobs can be upscaled or varied.")
        if job.kind.answers_text:
            raise StorageError(f"Job {job.id} is a /{job.kind.value} answer, not pictures: press one of its numbered "
                               "buttons to imagine a prompt, then use the grid's buttons.")
        return job

    async def _image(self, job: Job, index: int) -> ImageRecord:
        record = await self.storage.images.get(job.id, index)
        if record is None:
            count = len(await self.storage.images.for_job(job.id))
            raise StorageError(f"Job {job.id} has no image {index + 1}; it has {count} (choose 1 to {count}).")
        return record

    async def _request_behind(self, job: Job, index: int) -> tuple[GenerationRequest, int]:
        """The generation request an image came from (an upscale's is its parent's)."""
        seen = 0
        while job.kind == JobKind.UPSCALE and seen < 32:
            index = job.parent_index or 0
            job = await self.storage.jobs.require(job.parent_id or "")
            seen += 1
        if not job.request_json:
            raise StorageError(f"Job {job.id} has no stored request to vary.")
        return GenerationRequest.from_json(job.request_json), index

    # ----- image prompts ----------------------------------------------------------------
    @property
    def inputs_dir(self) -> Path:
        return self.settings.data_dir / INPUTS_DIR_NAME

    async def _fetch_inputs(self, urls: Sequence[str]) -> str:
        """Fetch image prompts and store them (blended when several) as one init image file.

        Links may reach only public addresses on `IMAGE_FETCH_PORTS` (or the hosts in
        `IMAGE_FETCH_ALLOWED_HOSTS`); decoding and blending run off the event loop."""

        policy, limits = self._fetch_limits()
        path = await fetch_init_image(urls, self.inputs_dir, policy=policy, limits=limits)
        return str(path)

    def _check_references(self, family: str, what: str, pictures: int) -> None:
        """Refuse pictures as prompts, before any fetch, when they cannot be honoured: no
        IP-Adapter set up (naming the setting), a model family without one, too many pictures."""
        if not self.settings.ip_adapter_repo.strip():
            raise PromptError(f"{what} needs IP-Adapter weights, which this bot does not have: the operator sets "
                              "IP_ADAPTER_REPO (for example h94/IP-Adapter) to turn on --sref, --cref and /blend.")
        if family not in ("sd1", "sdxl"):
            raise PromptError(f"{what} works with SD 1.x and SDXL models; this model is {family}, which has no "
                              "IP-Adapter.")
        limit = self.settings.prompt_max_images
        if pictures > limit:
            raise PromptError(f"this prompt has {pictures} pictures to fetch (image links, --sref and --cref, "
                              f"linked or attached, over all its expansions); the most is {limit}.")

    def _fetch_limits(self) -> tuple[FetchPolicy, FetchLimits]:
        settings = self.settings
        policy = FetchPolicy.build(settings.image_fetch_allowed_hosts, settings.image_fetch_ports)
        limits = FetchLimits(max_bytes=settings.image_prompt_max_bytes, timeout_s=settings.image_fetch_timeout_s,
                             max_pixels=settings.image_prompt_max_pixels,
                             max_total_pixels=settings.image_prompt_max_total_pixels)
        return policy, limits

    async def _fetch_pictures(self, urls: Sequence[str], srefs: Sequence[str],
                              crefs: Sequence[str]) -> tuple[str | None, tuple[str, ...], tuple[str, ...]]:
        """Image prompts, --sref and --cref pictures in one guarded fetch (one pixel budget for
        the prompt): (the blended init image, each --sref picture, each --cref picture), stored
        content-addressed under DATA_DIR/inputs (the file name is the picture's sha256)."""
        if not srefs and not crefs:
            return await self._fetch_inputs(urls), (), ()
        policy, limits = self._fetch_limits()
        images = await fetch_images([*urls, *srefs, *crefs], policy=policy, limits=limits)

        def store() -> tuple[str | None, tuple[str, ...], tuple[str, ...]]:
            init = str(save_init_image(blend_images(images[:len(urls)]), self.inputs_dir)) if urls else None
            rest = [str(self._store_input_image(image)[0]) for image in images[len(urls):]]
            return init, tuple(rest[:len(srefs)]), tuple(rest[len(srefs):])

        return await asyncio.to_thread(store)

    def _store_input(self, data: bytes, source: str = "The upload") -> tuple[Path, tuple[int, int]]:
        """Decode an upload with the same checked decoder as image prompts, then store it.
        `source` names it in an error ("The picture is not a PNG…").

        Blocking (decodes): call it in a worker thread. Raises `ImageFetchError`."""

        image = decode_image(data, max_bytes=self.settings.image_prompt_max_bytes,
                             max_pixels=self.settings.image_prompt_max_pixels, source=source)
        return self._store_input_image(image)

    def _store_input_image(self, image: Any) -> tuple[Path, tuple[int, int]]:
        """Save as PNG under DATA_DIR/inputs/<sha256>.png (atomic, content-addressed); masks
        (mode L) stay greyscale. A picture already there gets a fresh mtime instead: `tessera
        prune` deletes inputs by mtime, and the job about to use it is new."""

        if image.mode not in ("RGB", "RGBA", "L"):
            image = image.convert("RGB")
        data = encode_png(image)
        digest = hashlib.sha256(data).hexdigest()
        self.inputs_dir.mkdir(parents=True, exist_ok=True)
        path = (self.inputs_dir / f"{digest}.png").resolve()
        try:  # stored before: refresh its mtime, so `tessera prune` sees a picture in use as young
            os.utime(path)
        except FileNotFoundError:  # new, or pruned a moment ago: write it
            fd, tmp = tempfile.mkstemp(dir=self.inputs_dir, suffix=".tmp")
            try:
                with os.fdopen(fd, "wb") as handle:
                    handle.write(data)
                    handle.flush()
                    os.fsync(handle.fileno())
                os.replace(tmp, path)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
        return path, image.size


def _aspect_of(width: int, height: int) -> str:
    """"W:H" in lowest terms, for display (an edit's canvas may change the shape)."""
    divisor = math.gcd(width, height) or 1
    return f"{width // divisor}:{height // divisor}"


_DIGEST = re.compile(r"[0-9a-f]{64}")  # a stored picture's sha256, as /describe's buttons carry it
_SPACES = re.compile(r"(\s+)")  # one class, no nesting: linear on any input


def prompt_with_seed(prompt_text: str, seed: int) -> str:
    """The prompt text with its `--seed` (or `—seed`) and value replaced by `--seed {seed}` at
    the end, so the text a re-roll shows (and users copy) makes that image again."""
    out: list[str] = []
    skipping = False
    for part in _SPACES.split(prompt_text):
        if not part or part.isspace():
            if not skipping:
                out.append(part)
            continue
        name = part[2:] if part.startswith("--") else part[1:] if part.startswith("—") else ""
        if name[:1].isalpha():
            skipping = name.lower() == "seed"
            if not skipping and out and not out[-1].isspace():
                out.append(" ")
        if not skipping:
            out.append(part)
    return f"{''.join(out).rstrip()} --seed {seed}".lstrip()


_DRAFT_FLAGS = frozenset({"draft", "turbo"})


def prompt_without_draft(prompt_text: str) -> str:
    """The prompt text without `--draft`/`--turbo` (flags: no value follows), for an enhanced
    draft, so the text it shows (and users copy) makes the full-quality grid."""
    kept = []
    for word in prompt_text.split():
        name = word[2:] if word.startswith("--") else word[1:] if word.startswith("—") else ""
        if name.lower() in _DRAFT_FLAGS:
            continue
        kept.append(word)
    return " ".join(kept)


def _expansion_json(expansion: Expansion | None) -> dict | None:
    if expansion is None:
        return None
    try:
        return expansion.to_json()
    except NotImplementedError:
        return None


__all__ = ["CONFIRM_ABOVE_JOBS", "DEFAULT_BANNED_WORDS", "NeedsConfirmation", "QueueEvent", "Tessera",
           "find_banned_word", "peek_profile", "prompt_without_draft"]

"""A seeded gallery and a web gallery server in a thread, for the web gallery's tests.

The database is built through storage's public API with real PNGs (Pillow), as the bot
would leave it: finished jobs with their requests, shares in two servers, an upscale of a
shared image (lineage), a variation, a private result that was never shared and a removed
share.
"""

from __future__ import annotations

import asyncio
import io
import threading
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageDraw

from bot.web import WebOptions, WebServer, start_web
from engine.jobs.model import Job, JobKind, JobState, NewJob
from storage import Storage
from storage.models import GalleryEntry

GUILD_A = 111111111111111111
GUILD_B = 222222222222222222
AUTHOR = 333333333333333333
OTHER_AUTHOR = 444444444444444444


def png(colour: tuple[int, int, int], width: int = 96, height: int = 96) -> bytes:
    """A real PNG: a gradient from `colour` to its complement with a sun in it (real work
    for the thumbnailer, and something to look at in the README's screenshot)."""
    top = Image.new("RGB", (width, height), colour)
    bottom = Image.new("RGB", (width, height), tuple(255 - c // 2 for c in colour))
    image = Image.composite(top, bottom, Image.linear_gradient("L").resize((width, height)).transpose(
        Image.Transpose.FLIP_TOP_BOTTOM))
    radius = min(width, height) // 5
    ImageDraw.Draw(image).ellipse((width // 2 - radius, height // 3 - radius, width // 2 + radius,
                                   height // 3 + radius), fill=(255, 236, 180))
    out = io.BytesIO()
    image.save(out, "PNG")
    return out.getvalue()


def request_json(prompt: str, seed: int, width: int, height: int) -> dict:
    return {"prompts": [{"text": prompt, "weight": 1.0}], "negative": ["blurry"], "width": width, "height": height,
            "steps": 25, "guidance": 7.5, "seed": seed, "sampler": "euler_a", "model": "/srv/models/dreamy-v2.safetensors",
            "count": 4, "chaos": 0, "tile": False, "stop": None, "init_image": "/srv/secret/init.png",
            "strength": None, "ignored": [], "text": prompt, "model_family": "sd1", "aspect": f"{width}:{height}",
            "quality": 1.0, "stylize": 100, "image_prompts": [], "image_weight": None, "variation": None,
            "safety_check": False, "exp": 0}


@dataclass
class Seeded:
    data_dir: Path
    shares: dict[str, GalleryEntry]
    jobs: dict[str, Job]


async def _job(storage: Storage, prompt: str, *, user: int, guild: int | None, seed: int, size: tuple[int, int],
               colours: list[tuple[int, int, int]], kind: JobKind = JobKind.IMAGINE, parent: Job | None = None,
               parent_index: int | None = None, options: dict | None = None) -> Job:
    job = await storage.jobs.create(NewJob(kind=kind, user_id=user, prompt_text=prompt, guild_id=guild,
                                           channel_id=5, parent_id=parent.id if parent else None,
                                           parent_index=parent_index, options=options or {}))
    if kind is not JobKind.UPSCALE:
        await storage.jobs.set_request(job.id, request_json(prompt, seed, *size), seed,
                                       "/srv/models/dreamy-v2.safetensors")
    await storage.jobs.transition(job.id, JobState.RUNNING)
    for index, colour in enumerate(colours):
        await storage.images.add(job.id, index, png(colour, *size), *size)
    await storage.jobs.set_message(job.id, 5, 900 + len(prompt))
    return await storage.jobs.transition(job.id, JobState.DONE)


async def seed_gallery(data_dir: Path) -> Seeded:
    shares: dict[str, GalleryEntry] = {}
    jobs: dict[str, Job] = {}
    async with await Storage.open(data_dir) as storage:
        fox = await _job(storage, "a red fox in the snow, watercolor --ar 3:2 --seed 1234", user=AUTHOR, guild=GUILD_A,
                         seed=1234, size=(144, 96), colours=[(200, 60, 20), (190, 70, 30), (180, 80, 40), (170, 90, 50)])
        jobs["fox"] = fox
        shares["fox"] = await storage.gallery.share(fox.id, 1, author_id=AUTHOR, title=None, guild_id=GUILD_A,
                                                    prompt_text=fox.prompt_text)
        await storage.gallery.set_message(shares["fox"].id, 5, 7001)
        up = await _job(storage, fox.prompt_text, user=OTHER_AUTHOR, guild=GUILD_A, seed=0, size=(288, 192),
                        colours=[(200, 60, 20)], kind=JobKind.UPSCALE, parent=fox, parent_index=1,
                        options={"scale": 2})
        jobs["upscale"] = up
        shares["upscale"] = await storage.gallery.share(up.id, 0, author_id=AUTHOR, title="Fox, larger",
                                                        guild_id=GUILD_A, prompt_text=up.prompt_text)
        lighthouse = await _job(storage, "a lighthouse at dusk, oil painting", user=OTHER_AUTHOR, guild=GUILD_A,
                                seed=42, size=(96, 96), colours=[(20, 40, 160)])
        jobs["lighthouse"] = lighthouse
        shares["lighthouse"] = await storage.gallery.share(lighthouse.id, 0, author_id=OTHER_AUTHOR, title=None,
                                                           guild_id=GUILD_A, prompt_text=lighthouse.prompt_text)
        for _ in range(3):
            await storage.gallery.toggle_like(shares["lighthouse"].id, _ + 10)
        vary = await _job(storage, "a lighthouse at dusk, oil painting", user=OTHER_AUTHOR, guild=GUILD_A, seed=77,
                          size=(96, 144), colours=[(30, 50, 170), (40, 60, 180)], kind=JobKind.VARIATION,
                          parent=lighthouse, parent_index=0, options={"strength": "strong"})
        jobs["variation"] = vary
        shares["variation"] = await storage.gallery.share(vary.id, 1, author_id=OTHER_AUTHOR, title=None,
                                                          guild_id=GUILD_A, prompt_text=vary.prompt_text)
        castle = await _job(storage, "a castle on a hill <script>alert(1)</script>", user=AUTHOR, guild=GUILD_B,
                            seed=9, size=(96, 96), colours=[(20, 160, 40)])
        jobs["castle"] = castle
        shares["castle"] = await storage.gallery.share(castle.id, 0, author_id=AUTHOR, title=None, guild_id=GUILD_B,
                                                       prompt_text=castle.prompt_text)
        private = await _job(storage, "my private secret portrait", user=AUTHOR, guild=GUILD_A, seed=5,
                             size=(96, 96), colours=[(90, 90, 90)])
        jobs["private"] = private
        gone = await _job(storage, "a removed robot picture", user=AUTHOR, guild=GUILD_A, seed=6, size=(96, 96),
                          colours=[(150, 150, 0)])
        jobs["removed"] = gone
        shares["removed"] = await storage.gallery.share(gone.id, 0, author_id=AUTHOR, title=None, guild_id=GUILD_A,
                                                        prompt_text=gone.prompt_text)
        await storage.gallery.remove(shares["removed"].id)
    return Seeded(data_dir=data_dir, shares=shares, jobs=jobs)


async def seed_filler(data_dir: Path, count: int, *, guild: int = GUILD_B) -> list[GalleryEntry]:
    """`count` more shares in `guild`, one small image each (for paging)."""
    found = []
    async with await Storage.open(data_dir) as storage:
        for number in range(count):
            job = await _job(storage, f"filler tile number {number}", user=OTHER_AUTHOR, guild=guild, seed=number,
                             size=(64, 64), colours=[(number * 7 % 256, 90, 200)])
            found.append(await storage.gallery.share(job.id, 0, author_id=OTHER_AUTHOR, title=None, guild_id=guild,
                                                     prompt_text=job.prompt_text))
    return found


class ServerThread:
    """The web gallery on 127.0.0.1 (a free port) on its own loop in a thread: for Selenium,
    whose calls block the test's thread."""

    def __init__(self, data_dir: Path, options: WebOptions | None = None) -> None:
        self.data_dir = data_dir
        self.options = options
        self.port = 0
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=lambda: asyncio.run(self._main()), daemon=True)

    async def _main(self) -> None:
        try:
            server: WebServer = await start_web(self.data_dir, host="127.0.0.1", port=0, options=self.options)
        except BaseException as exc:
            self._error = exc
            self._ready.set()
            raise
        self.port = server.port
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        self._ready.set()
        try:
            await self._stop.wait()
        finally:
            await server.close()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> ServerThread:
        self._thread.start()
        self._ready.wait(30)
        if self._error is not None:
            raise self._error
        return self

    def __exit__(self, *_exc: object) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(30)

"""From a finished job's images to what users get: a Discord-ready file and PNGs on disk.

This runs on the event loop with the CPU-heavy parts (grid, JPEG, PNG with metadata) in a
small thread pool, never on the GPU worker thread: a 1024² PNG takes hundreds of
milliseconds to encode, and the GPU should spend that time on the next job. The
Discord-ready upload (a fast JPEG grid, or the upscale as PNG when it fits) is made first;
the lossless PNGs are stored before the job may be marked done.
"""

from __future__ import annotations

import asyncio
import io
from collections.abc import Sequence
from concurrent.futures import Executor as PoolExecutor
from typing import Any

from PIL import Image as PILImage
from PIL.Image import Image

from engine.errors import StorageError
from engine.imaging.encoding import EncodedImage, encode_for_discord, encode_png, filename_stem
from engine.imaging.grid import make_grid
from engine.imaging.metadata import pnginfo_for
from engine.jobs.executor import UPSCALE
from engine.jobs.model import ImageRecord, Job, NewImage
from engine.jobs.store import Store
from engine.request import GenerationRequest
from engine.upscale.realesrgan import upscaled_pnginfo

PREVIEW_JPEG_QUALITY = 70


def encode_preview(image: Image) -> bytes:
    """Small JPEG bytes of a progress preview (blurry by nature; quality hardly matters)."""
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, format="JPEG", quality=PREVIEW_JPEG_QUALITY)
    return buffer.getvalue()


def make_upload(job: Job, images: Sequence[Image]) -> EncodedImage:
    """The file Discord gets: the 2x2 grid as JPEG for grids, the image itself for upscales."""
    stem = filename_stem(job.prompt_text, job.id)
    if job.kind == UPSCALE or len(images) == 1:
        return encode_for_discord(images[0], stem=stem, prefer="png")
    return encode_for_discord(make_grid(list(images)), stem=stem, prefer="jpeg")


def encode_pngs(request: GenerationRequest | None, images: Sequence[Image]) -> list[bytes]:
    """Lossless PNGs carrying the request's metadata; an upscale carries the text chunks the
    upscaler put in its `info` (the source's chunks plus the upscale step)."""
    if request is not None:
        return [encode_png(image, pnginfo_for(request, index=i)) for i, image in enumerate(images)]
    return [encode_png(image, upscaled_pnginfo(image)) for image in images]


class ResultWriter:
    """Turns images into the done event's payload and the stored image rows."""

    def __init__(self, storage: Store, pool: PoolExecutor | None = None) -> None:
        self.storage = storage
        self.pool = pool

    async def _off_loop(self, fn: Any, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self.pool, fn, *args)

    async def write(self, job: Job, request: GenerationRequest | None, images: Sequence[Image]
                    ) -> tuple[tuple[ImageRecord, ...], EncodedImage]:
        """Make the upload first, then store every PNG."""
        upload, pngs = await self._off_loop(_encode_all, job, request, images)
        # The files are written side by side (each is fsynced on its own, so their waits
        # overlap), then all rows in one statement: the job has every image or none. A job
        # re-run after a crash replaces the rows its first run left (storage allows that).
        records = await self.storage.images.add_many(job.id, [
            NewImage(index, data, image.width, image.height)
            for index, (image, data) in enumerate(zip(images, pngs, strict=True))
        ])
        return tuple(records), upload

    async def upload_for(self, job: Job) -> EncodedImage:
        """Re-make a done job's Discord file from its stored PNGs (for /show and restarts)."""
        records = sorted(await self.storage.images.for_job(job.id), key=lambda r: r.index)
        if not records:
            raise StorageError(f"Job {job.id} has no stored images (it is {job.state}).")
        return await self._off_loop(_upload_from_files, job, [r.path for r in records])


def _encode_all(job: Job, request: GenerationRequest | None, images: Sequence[Image]
                ) -> tuple[EncodedImage, list[bytes]]:
    """The upload first (what the user waits for), then the PNGs: one trip to the pool."""
    return make_upload(job, images), encode_pngs(request, images)


def _upload_from_files(job: Job, paths: Sequence[Any]) -> EncodedImage:
    images = []
    for path in paths:
        with PILImage.open(path) as image:
            image.load()
            images.append(image.copy())
    return make_upload(job, images)

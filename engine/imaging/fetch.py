"""Image prompts: fetched carefully, because anyone can paste any URL.

A prompt may start with a few image links (Midjourney blends them into the init image).
Each link is a request the bot makes on the user's behalf from the GPU machine, and each
image may be a decompression bomb, so `fetch_init_image`:

* checks every URL and every redirect against a `FetchPolicy` (`engine.imaging.netguard`): http(s)
  only, allowed ports only, public addresses only, with the name resolved once and the
  connection made to the checked address; at most `policy.max_redirects` redirects;
* downloads at most `FETCH_CONCURRENCY` links at once, each under `max_bytes` (checked on
  `Content-Length` and again while streaming) and within `timeout_s` (redirects included);
* decodes each in a worker thread with the one checked decoder (`engine.imaging.decode`):
  allowed formats only, at most `max_pixels` per image and `max_total_pixels` per prompt
  (both checked on the header, before decoding), reduced at once to `DECODE_MAX_SIDE`;
* blends and saves in a worker thread too, so the event loop never decodes a pixel.

Users get one neutral message per failed link, naming its position and the host they typed
("could not fetch image 2 (example.com)") and what is allowed, never what answered (status,
content type, refused connection): that would make the bot an oracle for probing networks.
The reason is logged at debug level.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import logging
import os
import threading
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image, ImageOps

from engine.errors import ImageFetchError
from engine.imaging.decode import (
    ALLOWED_CONTENT_TYPES,
    DECODE_MAX_SIDE,
    MAX_PIXELS,
    decode_image,
    describe_limits,
)
from engine.imaging.netguard import BlockedDestination, FetchPolicy, GuardedResolver

__all__ = ["FETCH_CONCURRENCY", "MAX_PIXELS", "MAX_TOTAL_PIXELS", "FetchLimits", "FetchPolicy", "blend_images",
           "decode_image", "fetch_image", "fetch_init_image", "save_init_image"]

log = logging.getLogger(__name__)

MAX_TOTAL_PIXELS = 200_000_000  # five images of 40 MP (IMAGE_PROMPT_MAX_TOTAL_PIXELS)
FETCH_CONCURRENCY = 3  # downloads at once for one prompt
# Links whose bytes this process holds at once, from download to the end of decoding, across
# every prompt: many concurrent /imagine commands each fetching their links would otherwise hold
# (commands x links x IMAGE_PROMPT_MAX_BYTES) before any queue limit applies.
PROCESS_IN_HAND = 8
_in_hand: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Semaphore] = weakref.WeakKeyDictionary()
_CHUNK = 64 * 1024
_REDIRECTS = frozenset({301, 302, 303, 307, 308})


@dataclass(frozen=True)
class FetchLimits:
    """Bounds on one prompt's image links (settings `IMAGE_PROMPT_*`, `IMAGE_FETCH_TIMEOUT_S`)."""

    max_bytes: int = 10 * 1024 * 1024
    timeout_s: float = 10.0
    max_pixels: int = MAX_PIXELS
    max_total_pixels: int = MAX_TOTAL_PIXELS
    max_side: int = DECODE_MAX_SIDE


class _Failed(Exception):
    """Why one link failed, for the log only (users see the neutral message)."""


def _host_of(url: str) -> str:
    """The host the user typed, safe to show in a Discord message (no markdown, bounded)."""
    from yarl import URL

    try:
        host = URL(url).host or "?"
    except (ValueError, TypeError):
        host = "?"
    return "".join(c for c in host if c.isalnum() or c in ".-:[]")[:80] or "?"


def _neutral(position: int, count: int, url: str, limits: FetchLimits) -> ImageFetchError:
    which = f"image {position} of {count}" if count > 1 else "the image"
    return ImageFetchError(f"Could not fetch {which} ({_host_of(url)}). Link directly to "
                           f"{describe_limits(limits.max_bytes, limits.max_pixels)} on a public web server.")


async def _download(session: Any, url: str, policy: FetchPolicy, max_bytes: int) -> bytes:
    """GET `url`, following redirects by hand so each hop is checked; raise `_Failed`."""
    import aiohttp

    target = url
    for _hop in range(policy.max_redirects + 1):
        try:
            checked = policy.check_url(target)
        except BlockedDestination as exc:
            raise _Failed(f"refused {str(target)[:200]}: {exc}") from None
        try:
            async with session.get(checked, allow_redirects=False) as response:
                if response.status in _REDIRECTS:
                    location = response.headers.get("Location")
                    if not location:
                        raise _Failed(f"HTTP {response.status} without Location")
                    try:
                        target = response.url.join(type(response.url)(location))
                    except (ValueError, TypeError):
                        raise _Failed("unparsable Location") from None
                    continue
                if response.status != 200:
                    raise _Failed(f"HTTP {response.status}")
                kind = (response.content_type or "").lower()
                if kind not in ALLOWED_CONTENT_TYPES:
                    raise _Failed(f"content type {kind[:60]!r}")
                if response.content_length is not None and response.content_length > max_bytes:
                    raise _Failed(f"Content-Length {response.content_length} > {max_bytes}")
                data = bytearray()
                async for chunk in response.content.iter_chunked(_CHUNK):
                    data += chunk
                    if len(data) > max_bytes:
                        raise _Failed(f"body over {max_bytes} bytes")
                return bytes(data)
        except (aiohttp.ClientError, OSError, ValueError) as exc:
            raise _Failed(f"{type(exc).__name__}: {str(exc)[:200]}") from None
    raise _Failed(f"more than {policy.max_redirects} redirects")


class _OverBudget(ImageFetchError):
    """The prompt's images have too many pixels together (shown as it is: it names no host)."""


class _PixelBudget:
    """Decoded pixels left for one prompt's images; spent on each header, before decoding.

    Spent from a worker thread, but one prompt decodes one image at a time (see
    `fetch_images`), so there is never more than one thread spending."""

    def __init__(self, total: int) -> None:
        self.left = self.total = total

    def spend(self, size: tuple[int, int]) -> None:
        need = size[0] * size[1]
        if need > self.left:
            raise _OverBudget(f"The image prompts have more than {self.total / 1e6:g} megapixels together; "
                              "use fewer or smaller images.")
        self.left -= need


def _in_hand_gate() -> asyncio.Semaphore:
    """This event loop's process-wide bound on links held (`PROCESS_IN_HAND`)."""
    loop = asyncio.get_running_loop()
    gate = _in_hand.get(loop)
    if gate is None:
        gate = _in_hand[loop] = asyncio.Semaphore(PROCESS_IN_HAND)
    return gate


async def fetch_images(urls: Sequence[str], *, policy: FetchPolicy | None = None,
                       limits: FetchLimits = FetchLimits()) -> list[Image.Image]:
    """Fetch and decode every link (reduced to `limits.max_side`), in order.

    Raises `ImageFetchError`: the neutral message for the first link that failed to fetch or
    decode, or the budget message when the images have too many pixels together."""
    import aiohttp

    policy = policy or FetchPolicy()
    count = len(urls)
    budget = _PixelBudget(limits.max_total_pixels)
    gate = asyncio.Semaphore(FETCH_CONCURRENCY)
    lock = asyncio.Lock()  # the budget is spent one header at a time
    in_hand = _in_hand_gate()

    async def one(position: int, url: str, session: aiohttp.ClientSession) -> Image.Image:
        async with in_hand:
            return await fetched(position, url, session)

    async def fetched(position: int, url: str, session: aiohttp.ClientSession) -> Image.Image:
        async with gate:
            try:
                async with asyncio.timeout(limits.timeout_s):  # each link, redirects included
                    data = await _download(session, url, policy, limits.max_bytes)
            except (_Failed, TimeoutError) as exc:
                log.debug("image prompt %d of %d (%s) not fetched: %r", position, count, _host_of(url), exc)
                raise _neutral(position, count, url, limits) from None
        async with lock:  # decode one at a time per prompt: peak memory is one full image
            try:
                return await asyncio.to_thread(decode_image, data, max_bytes=limits.max_bytes,
                                               max_pixels=limits.max_pixels, max_side=limits.max_side,
                                               source=f"Image {position}", before_decode=budget.spend)
            except _OverBudget:
                raise
            except ImageFetchError as exc:
                log.debug("image prompt %d of %d (%s) not decoded: %s", position, count, _host_of(url), exc)
                raise _neutral(position, count, url, limits) from None

    connector = aiohttp.TCPConnector(resolver=GuardedResolver(policy), limit=FETCH_CONCURRENCY,
                                     use_dns_cache=False)
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=limits.timeout_s, sock_read=limits.timeout_s)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout, trust_env=False,
                                     headers={"Accept": ", ".join(ALLOWED_CONTENT_TYPES)}) as session:
        tasks = [asyncio.ensure_future(one(i, url, session)) for i, url in enumerate(urls, start=1)]
        try:
            return list(await asyncio.gather(*tasks))
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)


async def fetch_image(url: str, *, max_bytes: int = 10 * 1024 * 1024, timeout_s: float = 10.0,
                      policy: FetchPolicy | None = None, max_pixels: int = MAX_PIXELS) -> Image.Image:
    """Download one link and decode it (RGB, reduced to `DECODE_MAX_SIDE`)."""
    limits = FetchLimits(max_bytes=max_bytes, timeout_s=timeout_s, max_pixels=max_pixels,
                         max_total_pixels=max(max_pixels, MAX_TOTAL_PIXELS))
    (image,) = await fetch_images([url], policy=policy, limits=limits)
    return image


def blend_images(images: Sequence[Image.Image]) -> Image.Image:
    """One RGB image: the pixel mean of `images`, each fitted to the first one's size.

    Summed one image at a time, so the blend holds one float buffer, not one per image."""
    if not images:
        raise ValueError("blend_images needs at least one image")
    first = images[0].convert("RGB")
    if len(images) == 1:
        return first
    import numpy as np

    total = np.zeros((first.height, first.width, 3), dtype=np.float32)
    for image in images:
        total += np.asarray(ImageOps.fit(image.convert("RGB"), first.size, Image.Resampling.LANCZOS),
                            dtype=np.float32)
    total /= len(images)
    return Image.fromarray(total.round().astype(np.uint8), "RGB")


def save_init_image(image: Image.Image, folder: Path) -> Path:
    """Write `image` as `folder/<sha256>.png` (once) and return its absolute path.

    A picture already there gets a fresh mtime instead: `tessera prune` deletes inputs by
    mtime, and the job about to use it is new."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    data = buffer.getvalue()
    folder.mkdir(parents=True, exist_ok=True)
    path = (folder / f"{hashlib.sha256(data).hexdigest()}.png").resolve()
    try:
        os.utime(path)
    except FileNotFoundError:  # new, or pruned a moment ago: write it
        tmp = path.with_suffix(f".{os.getpid()}.{threading.get_ident()}.tmp")  # two prompts may race
        tmp.write_bytes(data)
        tmp.replace(path)
    return path


def _blend_and_save(images: Sequence[Image.Image], folder: Path) -> Path:
    return save_init_image(blend_images(images), folder)


async def fetch_init_image(urls: Sequence[str], folder: Path, *, max_bytes: int = 10 * 1024 * 1024,
                           timeout_s: float = 10.0, policy: FetchPolicy | None = None,
                           limits: FetchLimits | None = None) -> Path:
    """Fetch every image prompt, blend them and save the result (off the loop); its path is
    the request's `init_image`. `limits`, when given, overrides `max_bytes` and `timeout_s`."""
    limits = limits or FetchLimits(max_bytes=max_bytes, timeout_s=timeout_s)
    images = await fetch_images(urls, policy=policy, limits=limits)
    return await asyncio.to_thread(_blend_and_save, images, folder)

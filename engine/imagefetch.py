"""Image prompts and attachments: fetched carefully, because anyone can paste any URL.

`fetch_image` refuses, each with a message fit for Discord: a URL that is not http(s), an HTTP
error, a response that is not an image (`Content-Type`), a file over the size cap (checked on
`Content-Length` and again while streaming, so a lying server cannot push more), a download
slower than the timeout, bytes Pillow cannot decode, and decoded images with too many pixels
(decompression bombs) or that are truncated. Nothing else escapes: every failure is an
`ImageFetchError`.

`blend_images` turns several image prompts into the one init image that image-to-image uses
(Midjourney blends image prompts): each is fitted to the size of the first (centre crop, no
distortion) and the pixels are averaged. `save_init_image` writes it as PNG under a name made
from its content, so the same image prompt is stored once.
"""

from __future__ import annotations

import hashlib
import io
import warnings
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import urlparse

from PIL import Image, ImageOps

from engine.errors import ImageFetchError

__all__ = ["MAX_PIXELS", "blend_images", "decode_image", "fetch_image", "fetch_init_image", "save_init_image"]

MAX_PIXELS = 40_000_000  # about 6300 x 6300; larger is refused before decoding
_FORMATS = {"PNG", "JPEG", "GIF", "WEBP"}
_CHUNK = 64 * 1024


def _mib(n: int) -> str:
    return f"{n / (1024 * 1024):.1f} MiB" if n >= 1024 * 1024 else f"{n} bytes"


def decode_image(data: bytes, *, source: str = "the image") -> Image.Image:
    """Decode bytes to an RGB image, refusing formats, sizes and files that are not sound."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as image:
                if image.format not in _FORMATS:
                    raise ImageFetchError(f"{source} is a {image.format} file; use PNG, JPEG, GIF or WebP")
                width, height = image.size
                if width * height > MAX_PIXELS or width < 1 or height < 1:
                    raise ImageFetchError(f"{source} is {width}x{height} pixels; at most {MAX_PIXELS:,} pixels are allowed")
                image.seek(0)
                image.load()
                return ImageOps.exif_transpose(image).convert("RGB")
    except ImageFetchError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ImageFetchError(f"{source} has too many pixels (at most {MAX_PIXELS:,})") from None
    except Exception as exc:  # Pillow raises many types for broken files
        raise ImageFetchError(f"{source} could not be read as an image ({type(exc).__name__})") from None


async def fetch_image(url: str, *, max_bytes: int = 10 * 1024 * 1024, timeout_s: float = 10.0) -> Image.Image:
    """Download `url` and decode it (RGB); raise `ImageFetchError` with what went wrong."""
    import aiohttp

    parsed = urlparse(url)
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise ImageFetchError(f"image prompts must be http(s) links, got {url[:100]!r}")
    timeout = aiohttp.ClientTimeout(total=timeout_s)
    try:
        async with aiohttp.ClientSession(timeout=timeout) as session, session.get(url) as response:
            if response.status != 200:
                raise ImageFetchError(f"could not fetch the image {url[:100]} (HTTP {response.status})")
            content_type = (response.content_type or "").lower()
            if not content_type.startswith("image/"):
                raise ImageFetchError(f"{url[:100]} is not an image (the server says {content_type or 'nothing'}); "
                                      "link directly to a PNG, JPEG, GIF or WebP file")
            if response.content_length is not None and response.content_length > max_bytes:
                raise ImageFetchError(f"the image at {url[:100]} is {_mib(response.content_length)}; "
                                      f"at most {_mib(max_bytes)} is allowed")
            data = bytearray()
            async for chunk in response.content.iter_chunked(_CHUNK):
                data += chunk
                if len(data) > max_bytes:
                    raise ImageFetchError(f"the image at {url[:100]} is larger than {_mib(max_bytes)}, the most allowed")
    except ImageFetchError:
        raise
    except TimeoutError:
        raise ImageFetchError(f"fetching {url[:100]} took longer than {timeout_s:g} s") from None
    except (aiohttp.ClientError, OSError, ValueError) as exc:
        raise ImageFetchError(f"could not fetch the image {url[:100]} ({type(exc).__name__})") from None
    return decode_image(bytes(data), source=f"the image at {url[:100]}")


def blend_images(images: Sequence[Image.Image]) -> Image.Image:
    """One RGB image: the pixel mean of `images`, each fitted to the first one's size."""
    if not images:
        raise ValueError("blend_images needs at least one image")
    first = images[0].convert("RGB")
    if len(images) == 1:
        return first
    import numpy as np

    fitted = [np.asarray(ImageOps.fit(im.convert("RGB"), first.size, Image.Resampling.LANCZOS), dtype=np.float32)
              for im in images]
    return Image.fromarray(np.mean(fitted, axis=0).round().astype(np.uint8), "RGB")


def save_init_image(image: Image.Image, folder: Path) -> Path:
    """Write `image` as `folder/<sha256>.png` (once) and return its absolute path."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    data = buffer.getvalue()
    folder.mkdir(parents=True, exist_ok=True)
    path = (folder / f"{hashlib.sha256(data).hexdigest()[:32]}.png").resolve()
    if not path.exists():
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(data)
        tmp.replace(path)
    return path


async def fetch_init_image(urls: Sequence[str], folder: Path, *, max_bytes: int = 10 * 1024 * 1024,
                           timeout_s: float = 10.0) -> Path:
    """Fetch every image prompt, blend them and save the result; its path is `init_image`."""
    import asyncio

    images = await asyncio.gather(*(fetch_image(u, max_bytes=max_bytes, timeout_s=timeout_s) for u in urls))
    return save_init_image(blend_images(images), folder)

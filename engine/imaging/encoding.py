"""Turning images into bytes: lossless PNG for disk, and files Discord will accept.

Discord refuses bot uploads over 10 MiB, and a 4096² upscale is ~25 MB as PNG. So what we
post is a PNG when it fits and otherwise a high-quality WebP (or JPEG), while the full PNG,
with its metadata, is what storage keeps on disk. Grid previews ask for JPEG straight away
(`prefer="jpeg"`): they are replaced by the final grid and must be fast, not lossless.
"""

from __future__ import annotations

import io
import re
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from PIL import Image
from PIL.PngImagePlugin import PngInfo

DISCORD_MAX_BYTES = 10 * 1024 * 1024

# Tried in order once the PNG is too large: WebP keeps alpha and beats JPEG at equal quality;
# JPEG is the last resort (and what `prefer="jpeg"` starts with).
_WEBP_QUALITIES = (92, 85, 75)
_JPEG_QUALITIES = (92, 85, 75, 60)
_PREVIEW_JPEG_QUALITY = 90
_STEM_WORDS = 6
_STEM_CHARS = 48


@dataclass(frozen=True)
class EncodedImage:
    """An encoded file ready to attach: its bytes, a file name with extension, its MIME type."""

    data: bytes
    filename: str
    mime: str


def pnginfo_from_text(text: Mapping[str, str]) -> PngInfo:
    """A `PngInfo` holding these text chunks (for example a source image's `image.text`)."""
    info = PngInfo()
    for key, value in text.items():
        info.add_text(key, value)
    return info


def encode_png(image: Image.Image, pnginfo: PngInfo | None = None) -> bytes:
    """Lossless PNG bytes with `pnginfo`'s text chunks (compression level 6, the zlib default)."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", pnginfo=pnginfo, compress_level=6)
    return buffer.getvalue()


def _encode(image: Image.Image, fmt: Literal["WEBP", "JPEG"], quality: int) -> bytes:
    buffer = io.BytesIO()
    if fmt == "JPEG":
        image = _flatten(image)
        image.save(buffer, format="JPEG", quality=quality, subsampling=0 if quality >= 90 else 2)
    else:
        if image.mode not in ("RGB", "RGBA"):
            image = image.convert("RGBA" if "A" in image.getbands() else "RGB")
        image.save(buffer, format="WEBP", quality=quality, method=4)
    return buffer.getvalue()


def _flatten(image: Image.Image) -> Image.Image:
    """JPEG has no alpha: composite transparent images on white, keep grayscale as it is."""
    if image.mode in ("RGB", "L"):
        return image
    if "A" in image.getbands() or image.mode == "P":
        rgba = image.convert("RGBA")
        background = Image.new("RGB", rgba.size, (255, 255, 255))
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    return image.convert("RGB")


def encode_for_discord(
    image: Image.Image,
    *,
    stem: str,
    max_bytes: int = DISCORD_MAX_BYTES,
    prefer: Literal["png", "jpeg"] = "png",
    pnginfo: PngInfo | None = None,
    png: bytes | None = None,
) -> EncodedImage:
    """The best file of `image` that is at most `max_bytes`.

    `prefer="png"`: PNG when it fits, else WebP at quality 92/85/75, else JPEG at
    92/85/75/60. `prefer="jpeg"`: JPEG at quality 90 first (fast previews), then the same
    fallbacks. If nothing fits at full size, the image is halved (Lanczos) and tried again,
    so a file always comes back. `pnginfo` is written into the PNG when PNG is chosen;
    `png` is the image's PNG already encoded (the stored file), reused instead of encoding again.
    """
    if max_bytes <= 0:
        raise ValueError("max_bytes must be positive")
    current = image
    while True:
        if prefer == "png":
            data = png if png is not None and current is image else encode_png(current, pnginfo)
            if len(data) <= max_bytes:
                return EncodedImage(data, f"{stem}.png", "image/png")
        else:
            data = _encode(current, "JPEG", _PREVIEW_JPEG_QUALITY)
            if len(data) <= max_bytes:
                return EncodedImage(data, f"{stem}.jpg", "image/jpeg")
        for quality in _WEBP_QUALITIES:
            data = _encode(current, "WEBP", quality)
            if len(data) <= max_bytes:
                return EncodedImage(data, f"{stem}.webp", "image/webp")
        for quality in _JPEG_QUALITIES:
            data = _encode(current, "JPEG", quality)
            if len(data) <= max_bytes:
                return EncodedImage(data, f"{stem}.jpg", "image/jpeg")
        if current.width <= 16 or current.height <= 16:
            raise ValueError(f"cannot encode an image within {max_bytes} bytes")
        current = current.resize((max(1, current.width // 2), max(1, current.height // 2)), Image.Resampling.LANCZOS)


_OPTIONS = re.compile(r"\s--?[A-Za-z].*$", re.DOTALL)
_WEIGHTS = re.compile(r"::\s*-?[0-9.]*")
_NOT_WORD = re.compile(r"[^a-z0-9]+")


def filename_stem(prompt_text: str, job_id: str) -> str:
    """`first_words_of_the_prompt_JOBID`: ASCII, lower case, safe on every file system.

    Parameters (`--ar 16:9`), weights (`::2`) and punctuation are dropped; accents are
    folded to ASCII. An empty result falls back to `image_JOBID`.
    """
    text = _WEIGHTS.sub(" ", _OPTIONS.sub("", " " + prompt_text))
    text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii").lower()
    words = [w for w in _NOT_WORD.split(text) if w][:_STEM_WORDS]
    stem = "_".join(words)[:_STEM_CHARS].strip("_") or "image"
    safe_id = re.sub(r"[^A-Za-z0-9-]+", "", job_id) or "job"
    return f"{stem}_{safe_id}"

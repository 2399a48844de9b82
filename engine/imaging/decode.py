"""The one checked decoder for pictures from strangers: image prompts and uploads alike.

Pillow will open dozens of formats, and some of them are dangerous to hand a stranger's
bytes: EPS runs Ghostscript, TIFF and BMP decode to huge buffers from tiny files, and a
6000×6000 PNG of 117 KB inflates to over 100 MB. So `decode_image`:

1. refuses files over `max_bytes` before looking at them;
2. opens them with `Image.open(formats=ALLOWED_FORMATS)`, so no other plugin ever sees the
   bytes (an EPS or TIFF file is "not a PNG, JPEG, GIF or WebP image", not a Ghostscript run);
3. reads the size from the header and refuses more than `max_pixels` *before* decoding;
4. decodes one frame at a bounded size: JPEG is decoded at 1/2, 1/4 or 1/8 scale straight
   away (`Image.draft`) when the result would still cover `max_side`, everything else is
   reduced by a whole factor right after loading (so the side ends at most `max_side`), and
   a caller holding several decoded images holds several small ones;
5. turns every failure Pillow can raise on a broken file (it raises `OSError`, `SyntaxError`,
   `ValueError`, `struct.error`, `EOFError`, ...) into an `ImageFetchError` that says what is
   allowed.

It is CPU-bound and blocking: call it from a worker thread (`asyncio.to_thread`), never on
the event loop. At most `DECODE_SLOTS` full-size decodes run at once in the process, so many
users posting large images at the same moment queue for memory instead of adding it up.
"""

from __future__ import annotations

import io
import threading
import warnings
from collections.abc import Callable

from PIL import Image, ImageOps

from engine.errors import ImageFetchError

__all__ = ["ALLOWED_CONTENT_TYPES", "ALLOWED_FORMATS", "DECODE_MAX_SIDE", "MAX_PIXELS", "check_attachment",
           "decode_image", "describe_limits", "read_header"]

ALLOWED_FORMATS: tuple[str, ...] = ("PNG", "JPEG", "GIF", "WEBP")
ALLOWED_CONTENT_TYPES: tuple[str, ...] = ("image/png", "image/jpeg", "image/gif", "image/webp")
FORMAT_WORDS = "PNG, JPEG, GIF or WebP"
MAX_PIXELS = 40_000_000  # about 6300 x 6300 (IMAGE_PROMPT_MAX_PIXELS)
# Decoded images are reduced to this longest side at once. Init images are fitted to the
# request's size (at most 2048 on a side for any model profile), so nothing is lost.
DECODE_MAX_SIDE = 2048
DECODE_SLOTS = 2
_decode_slots = threading.BoundedSemaphore(DECODE_SLOTS)


def _mib(n: int) -> str:
    return f"{n / (1024 * 1024):.1f} MiB" if n >= 1024 * 1024 else f"{n:,} bytes"


def describe_limits(max_bytes: int, max_pixels: int) -> str:
    """The rule, as users read it: the formats, the file size and the pixel count allowed."""
    return f"a {FORMAT_WORDS} file of at most {_mib(max_bytes)} and {max_pixels / 1e6:g} megapixels"


def check_attachment(filename: str, content_type: str | None, size: int, max_bytes: int) -> None:
    """The checks a Discord attachment allows before downloading it: declared type and size.

    The bytes are checked again by `decode_image`; this only saves a useless download."""
    name = filename.replace("`", "'")[:100]
    kind = (content_type or "").split(";")[0].strip().lower()
    if kind and kind not in ALLOWED_CONTENT_TYPES:
        raise ImageFetchError(f"`{name}` is not an image Tessera can read; attach a {FORMAT_WORDS} file.")
    if size > max_bytes:
        raise ImageFetchError(f"`{name}` is {_mib(size)}; images can be at most {_mib(max_bytes)}.")


def read_header(data: bytes, *, max_bytes: int, max_pixels: int, source: str = "The image") -> tuple[int, int]:
    """Width and height from the header only (cheap: nothing is decoded), after every check
    that needs no decoding. Raises `ImageFetchError`."""
    with _opened(data, max_bytes=max_bytes, max_pixels=max_pixels, source=source) as image:
        return image.size


def decode_image(data: bytes, *, max_bytes: int = 10 * 1024 * 1024, max_pixels: int = MAX_PIXELS,
                 max_side: int | None = DECODE_MAX_SIDE, source: str = "The image",
                 before_decode: Callable[[tuple[int, int]], None] | None = None) -> Image.Image:
    """Decode the first frame of `data` to RGB, no side longer than `max_side` (aspect kept).

    `before_decode(size)` runs after the header checks and before any pixel is decoded (the
    fetcher uses it for its budget of pixels per prompt). Raises `ImageFetchError` only."""
    try:
        with _opened(data, max_bytes=max_bytes, max_pixels=max_pixels, source=source) as image:
            if before_decode is not None:
                before_decode(image.size)
            with _decode_slots, warnings.catch_warnings():
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                return _decode(image, max_side)
    except ImageFetchError:
        raise
    except Exception as exc:  # Pillow raises many types for broken files
        raise ImageFetchError(f"{source} could not be read as an image (it is damaged or incomplete); "
                              f"use {describe_limits(max_bytes, max_pixels)}.") from exc


class _opened:
    """`Image.open` restricted to the allowed formats, with the size and pixel checks done."""

    def __init__(self, data: bytes, *, max_bytes: int, max_pixels: int, source: str) -> None:
        self.data, self.max_bytes, self.max_pixels, self.source = data, max_bytes, max_pixels, source
        self.image: Image.Image | None = None

    def __enter__(self) -> Image.Image:
        rule = describe_limits(self.max_bytes, self.max_pixels)
        if len(self.data) > self.max_bytes:
            raise ImageFetchError(f"{self.source} is {_mib(len(self.data))}; use {rule}.")
        try:
            with warnings.catch_warnings():
                # Our own pixel limit follows, with the size in the message; Pillow's only
                # refuses here (DecompressionBombError) when far above any sane limit.
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                self.image = Image.open(io.BytesIO(self.data), formats=ALLOWED_FORMATS)
        except Image.DecompressionBombError:
            raise ImageFetchError(f"{self.source} has far more than {self.max_pixels:,} pixels; use {rule}.") from None
        except Exception:
            raise ImageFetchError(f"{self.source} is not a {FORMAT_WORDS} image; use {rule}.") from None
        width, height = self.image.size
        if width < 1 or height < 1 or width * height > self.max_pixels:
            self.image.close()
            raise ImageFetchError(f"{self.source} is {width:,}×{height:,} pixels; use {rule}.")
        return self.image

    def __exit__(self, *exc: object) -> None:
        if self.image is not None:
            self.image.close()


_REDUCIBLE = frozenset({"L", "LA", "RGB", "RGBA", "CMYK", "YCbCr", "I", "F"})


def _decode(image: Image.Image, max_side: int | None) -> Image.Image:
    """Load one frame at a bounded size and return it upright, in RGB."""
    if max_side is not None and image.format == "JPEG":
        # JPEG decodes at 1/2, 1/4 or 1/8 scale for free; draft keeps the result >= the request.
        scale = max(image.size) / max_side
        if scale > 1:
            image.draft("RGB", (max(1, int(image.size[0] / scale)), max(1, int(image.size[1] / scale))))
    image.seek(0)
    image.load()
    frame: Image.Image = image
    if max_side is not None and max(frame.size) > max_side:
        if frame.mode not in _REDUCIBLE:  # palette and 1-bit pixels cannot be averaged as they are
            frame = frame.convert("RGB")
        # Box filter by the smallest whole factor that fits: one fast pass that frees the big
        # buffer. The init image is resampled to the request's size later anyway.
        frame = frame.reduce(-(-max(frame.size) // max_side))
    upright = ImageOps.exif_transpose(frame) or frame
    return upright.convert("RGB") if upright.mode != "RGB" or upright is image else upright

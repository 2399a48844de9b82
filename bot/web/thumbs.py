"""WebP thumbnails of shared images, made once on worker threads and cached on disk.

Why threads and a cache: decoding a 1024² PNG and resizing it takes tens of milliseconds of
CPU, which on the event loop would stall every other request (and the Discord bot beside
it). Pillow releases the GIL while it decodes, resizes and encodes, so a small pool of
threads keeps the loop free. A thumbnail is keyed by the image's content hash and its size,
written to a temporary name and renamed into place, so a crash never leaves half a file and
identical images share one thumbnail. Two requests for the same missing thumbnail wait for
one job instead of making it twice.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from PIL import Image

log = logging.getLogger(__name__)

SIZES = (256, 512, 1024)  # longest side in pixels; the grid uses 256/512, the image page 1024
WEBP_QUALITY = 80
MAX_SOURCE_PIXELS = 64_000_000  # stored images are ours (≤ 4096² upscales), but never decode a bomb
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


def make_thumbnail(source: Path, target: Path, size: int) -> Path:
    """Blocking: write a WebP of `source` whose longest side is at most `size` to `target`."""
    with Image.open(source) as image:
        if image.width * image.height > MAX_SOURCE_PIXELS:
            raise ValueError(f"{source.name} has {image.width}x{image.height} pixels, too many to thumbnail")
        image.draft("RGB", (size, size))  # JPEG sources decode at a reduced scale; others ignore it
        image.load()
        picture = image.convert("RGBA" if "A" in image.getbands() else "RGB")
    picture.thumbnail((size, size), Image.Resampling.LANCZOS, reducing_gap=3.0)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(dir=target.parent, prefix=".thumb-", suffix=".webp")
    try:
        with os.fdopen(fd, "wb") as out:
            picture.save(out, "WEBP", quality=WEBP_QUALITY, method=4)
        os.replace(temporary, target)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return target


class Thumbnailer:
    """The thumbnail cache in `cache_dir`, filled by `workers` threads."""

    def __init__(self, cache_dir: Path, *, workers: int = 2) -> None:
        self.cache_dir = cache_dir
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="tessera-thumb")
        self._pending: dict[tuple[str, int], asyncio.Future[Path]] = {}

    def path_for(self, sha256: str, size: int) -> Path:
        if not _SHA256.match(sha256) or size not in SIZES:  # both come from our database: a bug otherwise
            raise ValueError(f"bad thumbnail key {sha256!r}/{size}")
        return self.cache_dir / sha256[:2] / f"{sha256}-{size}.webp"

    async def get(self, source: Path, sha256: str, size: int) -> Path:
        """The cached thumbnail's path, making it on a worker thread first if needed."""
        target = self.path_for(sha256, size)
        if target.is_file():
            return target
        key = (sha256, size)
        future = self._pending.get(key)
        if future is None:
            future = asyncio.get_running_loop().run_in_executor(self._executor, make_thumbnail, source, target, size)
            self._pending[key] = future
            future.add_done_callback(lambda _: self._pending.pop(key, None))
        return await asyncio.shield(future)

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)

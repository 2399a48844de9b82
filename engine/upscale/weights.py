"""Real-ESRGAN weight files: where they come from, and fetching them safely once.

A `.pth` file is a pickle, so a swapped download is code execution: every download is
written under a temporary name, its SHA-256 compared with the one published for the official
release, and only then renamed into place. A file an operator put in the folder is used as it
is (it may be a fine-tune), and a machine with no internet gets a message that says exactly
which file to fetch from where and where to put it.
"""

from __future__ import annotations

import hashlib
import logging
import os
import sys
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from engine.errors import UpscaleError

logger = logging.getLogger(__name__)

RELEASES = "https://github.com/xinntao/Real-ESRGAN/releases/download"
_CHUNK = 1 << 20
_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class WeightSpec:
    """One official weight file: its name, release URL, published SHA-256 and scale."""

    name: str
    url: str
    sha256: str
    scale: int

    @property
    def filename(self) -> str:
        return f"{self.name}.pth"


# The official Real-ESRGAN releases (xinntao/Real-ESRGAN) and their SHA-256 digests.
OFFICIAL: dict[str, WeightSpec] = {
    spec.name: spec
    for spec in (
        WeightSpec("RealESRGAN_x4plus", f"{RELEASES}/v0.1.0/RealESRGAN_x4plus.pth",
                   "4fa0d38905f75ac06eb49a7951b426670021be3018265fd191d2125df9d682f1", 4),
        WeightSpec("RealESRGAN_x2plus", f"{RELEASES}/v0.2.1/RealESRGAN_x2plus.pth",
                   "49fafd45f8fd7aa8d31ab2a22d14d91b536c34494a5cfe31eb5d89c2fa266abb", 2),
        WeightSpec("RealESRGAN_x4plus_anime_6B", f"{RELEASES}/v0.2.2.4/RealESRGAN_x4plus_anime_6B.pth",
                   "f872d837d3c90ed2e05227bed711af5671a6fd1c9f7d7e91c911a61f155e99da", 4),
    )
}


def spec_for(name: str) -> WeightSpec:
    """The official spec called `name`, or an `UpscaleError` listing the known ones."""
    try:
        return OFFICIAL[name]
    except KeyError:
        raise UpscaleError(f"unknown upscaler model {name!r}; use one of {', '.join(OFFICIAL)}") from None


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _missing_message(spec: WeightSpec, folder: Path, reason: str) -> str:
    return (
        f"the upscaler weights {spec.filename} are not in {folder} and {reason}; "
        f"download {spec.url} and put it in {folder} (or set UPSCALER_WEIGHTS_DIR to the folder that has it)"
    )


def ensure_weights(spec: WeightSpec, folder: Path, *, allow_download: bool = True,
                   progress: bool | None = None) -> Path:
    """The path of `spec`'s file in `folder`, downloading and verifying it if it is missing.

    `progress=None` shows a progress bar only when stderr is a terminal (the CLI).
    Raises `UpscaleError` when the file is missing and cannot be downloaded, or when the
    download's SHA-256 differs from the published one (the bad file is removed).
    """
    folder = Path(folder)
    path = folder / spec.filename
    if path.is_file():
        return path
    if not allow_download:
        raise UpscaleError(_missing_message(spec, folder, "downloading is switched off"))
    folder.mkdir(parents=True, exist_ok=True)
    logger.info("downloading %s from %s into %s", spec.filename, spec.url, folder)
    fd, name = tempfile.mkstemp(dir=folder, prefix=f".{spec.filename}.", suffix=".part")
    temp = Path(name)
    try:
        with os.fdopen(fd, "wb") as handle:
            digest = _download(spec.url, handle, progress=sys.stderr.isatty() if progress is None else progress)
        if digest != spec.sha256:
            raise UpscaleError(
                f"the download of {spec.filename} from {spec.url} has SHA-256 {digest}, not the published "
                f"{spec.sha256}; it was removed. Download it yourself and put it in {folder}"
            )
        os.replace(temp, path)
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise UpscaleError(_missing_message(spec, folder, f"could not be downloaded ({_reason(exc)})")) from None
    finally:
        temp.unlink(missing_ok=True)
    logger.info("saved %s (SHA-256 verified)", path)
    return path


def _reason(exc: BaseException) -> str:
    if isinstance(exc, urllib.error.HTTPError):
        return f"HTTP {exc.code}"
    if isinstance(exc, urllib.error.URLError):
        return str(exc.reason)
    return str(exc) or exc.__class__.__name__


def _download(url: str, out, *, progress: bool) -> str:
    """Stream `url` into the open file `out`; return the SHA-256 of what was written."""
    from tqdm import tqdm

    digest = hashlib.sha256()
    request = urllib.request.Request(url, headers={"User-Agent": "tessera"})
    with urllib.request.urlopen(request, timeout=_TIMEOUT_S) as response:
        total = int(response.headers.get("Content-Length") or 0) or None
        name = url.rsplit("/", 1)[-1]
        with tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=name,
                  disable=not progress, file=sys.stderr) as bar:
            for chunk in iter(lambda: response.read(_CHUNK), b""):
                out.write(chunk)
                digest.update(chunk)
                bar.update(len(chunk))
    return digest.hexdigest()

"""Image files on disk: content-addressed, sharded, written atomically, never overwritten.

A file is named by the SHA-256 of its bytes and lives in `images/ab/cd/<sha256>.<ext>`, so one
folder never holds more than a few thousand files and identical images are stored once. It is
written to a temporary name in the same folder, fsynced, then hard-linked to its final name
(a link never replaces an existing file, unlike rename) and the folder is fsynced: after a
crash the final name either does not exist or holds the complete bytes. Callers insert the
database row only after `write_image` returns, so a row never points at a missing file;
the opposite (a file with no row, or a stray temporary file) is what `tessera doctor` finds.
"""

from __future__ import annotations

import hashlib
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from storage import faults

TEMP_PREFIX = ".tmp-"
_EXTENSIONS = {"PNG": "png", "JPEG": "jpg", "JPG": "jpg", "WEBP": "webp", "GIF": "gif"}


def extension_for(fmt: str) -> str:
    try:
        return _EXTENSIONS[fmt.upper()]
    except KeyError:
        raise ValueError(f"unsupported image format {fmt!r}; use one of {', '.join(sorted(_EXTENSIONS))}") from None


def relative_path(sha256: str, fmt: str) -> str:
    """Where an image with this hash lives, relative to the image folder (always '/'-separated)."""
    return f"{sha256[:2]}/{sha256[2:4]}/{sha256}.{extension_for(fmt)}"


@dataclass(frozen=True)
class WrittenFile:
    """An image file on disk (see `write_image`)."""

    relative: str  # '/'-separated, relative to the image folder
    sha256: str
    bytes: int
    created: bool  # False when the same content was already on disk
    format: str = "PNG"


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _make_dirs(root: Path, relative_dir: str) -> Path:
    """Create the shard folders, fsyncing each parent whose entry list changed."""
    current = root
    for part in relative_dir.split("/"):
        child = current / part
        if not child.is_dir():
            try:
                child.mkdir()
            except FileExistsError:
                pass
            else:
                _fsync_dir(current)
        current = child
    return current


def _write_all(fd: int, data: bytes) -> None:
    """Write every byte to `fd` (the one place image bytes reach the disk)."""
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def write_image(root: Path, data: bytes, fmt: str) -> WrittenFile:
    """Store `data` under its content hash; blocking (call it in a thread).

    A full or read-only disk raises `StorageError` naming DATA_DIR (the image folder's
    parent) and the cause, and leaves no temporary file behind: a half-written `.tmp-*` file
    would only take more of the space that just ran out.
    """
    try:
        return _write_image(root, data, fmt)
    except OSError as exc:
        mapped = faults.from_oserror(exc, root.parent)
        if mapped is None:
            raise
        raise mapped from exc


def _write_image(root: Path, data: bytes, fmt: str) -> WrittenFile:
    sha = hashlib.sha256(data).hexdigest()
    relative = relative_path(sha, fmt)
    final = root / relative
    if final.is_file() and final.stat().st_size == len(data):
        return WrittenFile(relative, sha, len(data), created=False, format=fmt.upper())
    folder = _make_dirs(root, relative.rsplit("/", 1)[0])
    temp = folder / f"{TEMP_PREFIX}{sha[:16]}-{secrets.token_hex(4)}"
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        try:
            _write_all(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    created = True
    try:
        try:
            os.link(temp, final)
        except FileExistsError:
            # Same name, same hash: someone stored these bytes first. If it is the wrong size it
            # is damaged (disk error, manual edit), and replacing it is a repair, not an overwrite.
            if final.stat().st_size == len(data):
                created = False
            else:
                os.replace(temp, final)
        except OSError:
            # Filesystems without hard links: rename is still atomic; the content is identical.
            os.replace(temp, final)
    finally:
        temp.unlink(missing_ok=True)
    if created:
        _fsync_dir(folder)
    return WrittenFile(relative, sha, len(data), created=created, format=fmt.upper())


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def scan(root: Path) -> tuple[list[str], list[str]]:
    """(image files, temporary files) under `root`, as '/'-separated relative paths."""
    images: list[str] = []
    temps: list[str] = []
    if not root.is_dir():
        return images, temps
    for dirpath, _dirs, names in os.walk(root):
        base = Path(dirpath).relative_to(root).as_posix()
        for name in names:
            rel = name if base == "." else f"{base}/{name}"
            (temps if name.startswith(TEMP_PREFIX) else images).append(rel)
    return images, temps


def remove(root: Path, relative: str) -> int:
    """Delete one stored file; return the bytes freed (0 if it was already gone)."""
    path = root / relative
    try:
        size = path.stat().st_size
        path.unlink()
    except FileNotFoundError:
        return 0
    return size

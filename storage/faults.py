"""Disk trouble in words an operator can act on: full, read-only, or not there at all.

Why a module of its own: the same three causes reach Tessera from two directions. Python's
file calls raise `OSError` (`ENOSPC`, `EROFS`, `EACCES`...), SQLite raises
`sqlite3.OperationalError` ("database or disk is full", "attempt to write a readonly
database", "unable to open database file"). Left alone, the first is a traceback and the
second says "is it a Tessera database?", which sends the operator looking in the wrong
place. Here both become one `StorageError` that names DATA_DIR and the cause, so the CLI
prints one line and the bot logs one line a person understands.
"""

from __future__ import annotations

import errno
import os
import sqlite3
import tempfile
from pathlib import Path

from engine.errors import StorageError

_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})
_READONLY_ERRNOS = frozenset({errno.EROFS})
_DENIED_ERRNOS = frozenset({errno.EACCES, errno.EPERM})


class DiskFullError(StorageError):
    """DATA_DIR has no room left (or the user's quota or file size limit is reached)."""


class ReadOnlyError(StorageError):
    """DATA_DIR (or the file system under it) cannot be written by this process."""


def full_message(folder: Path) -> str:
    return (f"DATA_DIR {folder} is full: free some space on that disk (for example `tessera prune "
            "--older-than 30d`), or set DATA_DIR to a folder on a disk with room")


def readonly_message(folder: Path, *, permission: bool) -> str:
    why = ("is not writable by this user (permission denied)" if permission
           else "is on a read-only file system")
    return (f"DATA_DIR {folder} {why}: Tessera writes its database and images there; make it "
            "writable for the user running Tessera, or set DATA_DIR to a writable folder")


def from_oserror(exc: OSError, folder: Path) -> StorageError | None:
    """The `StorageError` for a full or read-only disk, or None for anything else (a real bug)."""
    if exc.errno in _FULL_ERRNOS:
        return DiskFullError(full_message(folder))
    if exc.errno in _READONLY_ERRNOS:
        return ReadOnlyError(readonly_message(folder, permission=False))
    if exc.errno in _DENIED_ERRNOS:
        return ReadOnlyError(readonly_message(folder, permission=True))
    return None


def from_sqlite(exc: sqlite3.Error, folder: Path) -> StorageError | None:
    """The `StorageError` for SQLite's full / read-only / cannot-open errors, else None.

    `sqlite_errorcode` (Python 3.11+) is checked first; the message text is the fallback for
    wrappers that lose the code. A "cannot open" is probed with a real file in the folder,
    because SQLite's own message does not say why it could not.
    """
    code = getattr(exc, "sqlite_errorcode", None)
    primary = code & 0xFF if isinstance(code, int) else None
    text = str(exc).lower()
    if primary == sqlite3.SQLITE_FULL or "database or disk is full" in text:
        return DiskFullError(full_message(folder))
    if primary == sqlite3.SQLITE_READONLY or "readonly database" in text:
        return probe(folder) or ReadOnlyError(readonly_message(folder, permission=True))
    if primary == sqlite3.SQLITE_CANTOPEN or "unable to open database file" in text:
        return probe(folder)
    return None


def probe(folder: Path) -> StorageError | None:
    """Why `folder` cannot be written, found by trying to; None when it can be.

    Trying beats `os.access`: as root `access()` says yes to any folder, but the write still
    fails on a read-only file system; and a full disk only shows itself on a real write.
    """
    try:
        with tempfile.TemporaryFile(dir=folder, prefix=".tessera-probe-") as handle:
            handle.write(b"x")
            handle.flush()
            os.fsync(handle.fileno())
    except FileNotFoundError:
        return StorageError(f"DATA_DIR {folder} does not exist and could not be created")
    except OSError as exc:
        return from_oserror(exc, folder)
    return None


def make_data_dir(folder: Path) -> None:
    """Create DATA_DIR (and its parents) or raise a `StorageError` that says why it cannot be."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise StorageError(f"DATA_DIR {folder} is a file, not a folder: set DATA_DIR to a folder") from None
    except NotADirectoryError:
        raise StorageError(f"cannot create DATA_DIR {folder}: a part of its path is a file, not a folder") from None
    except OSError as exc:
        parent = _existing_parent(folder)
        if exc.errno in _FULL_ERRNOS:
            raise DiskFullError(f"cannot create DATA_DIR {folder}: the disk under {parent} is full") from exc
        if exc.errno in _READONLY_ERRNOS | _DENIED_ERRNOS:
            how = "is on a read-only file system" if exc.errno in _READONLY_ERRNOS else "is not writable by this user"
            raise ReadOnlyError(f"cannot create DATA_DIR {folder}: its parent {parent} {how}; create the "
                                "folder yourself with the right owner, or set DATA_DIR to a writable folder") from exc
        raise
    if not folder.is_dir():
        raise StorageError(f"DATA_DIR {folder} is not a folder: set DATA_DIR to a folder")


def _existing_parent(folder: Path) -> Path:
    for parent in folder.parents:
        if parent.exists():
            return parent
    return Path(folder.anchor or ".")

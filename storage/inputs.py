"""DATA_DIR/inputs: the pictures jobs start from, and which of them may be pruned.

Uploads, fetched image prompts, --sref/--cref and /blend pictures, /describe uploads and the
canvases and masks of edits are stored content-addressed as `DATA_DIR/inputs/<sha256>.png`
(the bot's `Tessera._store_input_image`; blended image prompts by `save_init_image`, which
before named them by the first 32 hex digits of the hash). A job refers to them by absolute
path in its `request_json` and `options` (a /describe job also by `digest`).

Nothing but `tessera prune` deletes them, and it may delete a file only when all of these hold
at the moment of deletion:

- its name is one Tessera writes (`<64 or 32 lowercase hex>.png`), it is a regular file (not a
  symbolic link) and it sits directly in the inputs folder;
- its mtime is older than the cutoff. Storing a picture that is already there refreshes the
  mtime, and so does queueing a job that re-uses one (`touch_inputs`): a file a job made or
  re-used minutes ago is young, whatever the job;
- no queued or running job, and no job with a live gallery share (its 🎲 re-runs it), refers
  to it.

The bot and `tessera prune` run side by side without a lock between them. The deletion
closes the race with a rename: the old file is first moved to a hidden name (a store or touch
from then on fails to find it, so the bot writes the picture afresh or says it is gone), its
mtime is read again, and it is put back if the bot touched it just before the move. A
picture left aside by a crashed prune is put back by the next one if a job uses it, and
deleted once old otherwise, and so is a half-written picture a killed process left
(`STRAY_NAME`).
"""

from __future__ import annotations

import contextlib
import os
import re
import stat
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.errors import StorageError

INPUTS_DIR_NAME = "inputs"
# Exactly the names Tessera writes: a full sha256 (or the 32-digit prefix older blends used).
INPUT_NAME = re.compile(r"[0-9a-f]{64}\.png|[0-9a-f]{32}\.png")
# A picture prune moved aside to delete (`_remove_if_still_old`) and left by a crash: its own
# name, so only prune's own leftovers match; the next prune deletes it once it is old.
ASIDE_NAME = re.compile(r"\.prune-(?:[0-9a-f]{64}|[0-9a-f]{32})\.png\.[0-9]{1,10}\.[0-9]{1,24}\.tmp")
# A picture half-written when its process was killed: `tempfile.mkstemp`'s `tmp<8>.tmp` (the
# bot's store) or `<sha256>.<pid>.<thread>.tmp` (a blended image prompt). A store takes
# milliseconds, so one older than the cutoff is a crash's leftover and nobody's file.
STRAY_NAME = re.compile(r"tmp[a-z0-9_]{8}\.tmp|[0-9a-f]{64}\.[0-9]{1,10}\.[0-9]{1,24}\.tmp")
_DIGEST = re.compile(r"[0-9a-f]{64}")
_MAX_DEPTH = 8  # request_json and options are flat dicts of lists; deeper is not ours to walk
# What a missing picture was, by the request or options key that named it (for the user's message).
_WHAT = {
    "init_image": "the picture it starts from",
    "mask_image": "the mask of its edit",
    "style_refs": "a --sref picture",
    "character_refs": "a --cref picture",
    "blend_refs": "a /blend picture",
    "upload": "the uploaded picture",
    "mask": "the mask of its edit",
    "source": "its picture",
}


def _strings(value: Any, key: str = "", depth: int = 0) -> Iterator[tuple[str, str]]:
    """Every string in a JSON-like value, with the top-level key it was found under."""
    if depth > _MAX_DEPTH:
        return
    if isinstance(value, str):
        yield key, value
    elif isinstance(value, dict):
        for name, item in value.items():
            yield from _strings(item, key or str(name), depth + 1)
    elif isinstance(value, list | tuple):
        for item in value:
            yield from _strings(item, key, depth + 1)


def referenced_names(*values: Any) -> set[str]:
    """The input file names a job's `request_json` and `options` refer to.

    Deliberately generous: any string whose last path part is an input name, and any bare
    64-digit hash (a /describe job's `digest`), counts, whatever key it is under, so a field
    added later that names a picture keeps it from being pruned without this list knowing it."""
    names: set[str] = set()
    for value in values:
        for _key, text in _strings(value):
            if len(text) > 4096:
                continue
            tail = text.rsplit("/", 1)[-1]
            if INPUT_NAME.fullmatch(tail):
                names.add(tail)
            elif _DIGEST.fullmatch(text):
                names.add(f"{text}.png")
    return names


def touch_inputs(inputs_dir: Path, *values: Any) -> None:
    """Refresh the mtime of every picture under `inputs_dir` that `values` (a new job's
    `request_json` and `options`) refer to by path, so `tessera prune` sees them as young.

    Blocking (file system calls): run it in a worker thread. A picture that is gone raises
    `StorageError` naming what it was, so a 🔄 of a job whose pictures were pruned is refused
    before anything is queued rather than failing later on the GPU."""
    folder = inputs_dir.resolve()
    seen: set[str] = set()
    for key, text in (pair for value in values for pair in _strings(value)):
        if text in seen or len(text) > 4096 or not INPUT_NAME.fullmatch(text.rsplit("/", 1)[-1]):
            continue
        seen.add(text)
        path = Path(text)
        if not path.is_absolute() or path.parent.resolve() != folder:
            continue
        try:
            os.utime(path, follow_symlinks=False)
        except FileNotFoundError:
            what = _WHAT.get(key, "a picture it needs")
            raise StorageError(f"This job needs {what}, which is no longer on disk (it may have been pruned); "
                               "run the command again with the picture.") from None


@dataclass
class InputsPrune:
    """What pruning DATA_DIR/inputs did (or, in a dry run, would do)."""

    files: int = 0
    bytes: int = 0
    kept_in_use: int = 0  # old pictures kept because a queued, running or shared job refers to them
    note: str | None = None  # why the folder was not pruned at all


def prune_inputs(data_dir: Path, cutoff: float, in_use: Iterable[str], *, dry_run: bool = False) -> InputsPrune:
    """Delete the pictures in `data_dir/inputs` older than `cutoff` (a time.time() value) that
    are not named in `in_use`; see the module docstring for the rules.

    Blocking: run it in a worker thread. Works through a descriptor of the folder opened
    without following a symbolic link, so nothing outside it can be reached even if the path
    is swapped meanwhile."""
    report = InputsPrune()
    keep = set(in_use)
    try:
        fd = os.open(data_dir / INPUTS_DIR_NAME, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    except FileNotFoundError:
        return report  # no picture stored yet
    except OSError as exc:  # ELOOP (a symbolic link), ENOTDIR, EACCES
        report.note = (f"{data_dir / INPUTS_DIR_NAME} was left alone: it is not a plain folder Tessera can read "
                       f"({exc.strerror}); prune follows no symbolic link")
        return report
    try:
        with os.scandir(fd) as entries:
            listed = [entry.name for entry in entries]
        for name in sorted(n for n in listed if ASIDE_NAME.fullmatch(n)):
            _leftover(fd, name, cutoff, keep, dry_run, report)
        for name in sorted(n for n in listed if STRAY_NAME.fullmatch(n)):
            _delete_if_old(fd, name, cutoff, dry_run, report)
        for name in sorted(n for n in listed if INPUT_NAME.fullmatch(n)):
            size = _old_file_size(fd, name, cutoff)
            if size is None:
                continue
            if name in keep:
                report.kept_in_use += 1
                continue
            if dry_run or _remove_if_still_old(fd, name, cutoff):
                report.files += 1
                report.bytes += size
    finally:
        os.close(fd)
    return report


def _leftover(fd: int, name: str, cutoff: float, keep: set[str], dry_run: bool, report: InputsPrune) -> None:
    """A picture a crashed prune moved aside: put back if a job uses it, else deleted once old."""
    original = name.split(".", 2)[1].removeprefix("prune-") + ".png"
    try:
        if not stat.S_ISREG(os.stat(name, dir_fd=fd, follow_symlinks=False).st_mode):
            return
    except FileNotFoundError:
        return
    if original in keep:
        if not dry_run:
            with contextlib.suppress(FileExistsError, FileNotFoundError):  # there already / another prune's
                os.link(name, original, src_dir_fd=fd, dst_dir_fd=fd, follow_symlinks=False)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(name, dir_fd=fd)
        return
    _delete_if_old(fd, name, cutoff, dry_run, report)


def _delete_if_old(fd: int, name: str, cutoff: float, dry_run: bool, report: InputsPrune) -> None:
    """Delete (and count) a file no job can name: prune's own leftover or a half-written
    picture a killed process left; only once old."""
    size = _old_file_size(fd, name, cutoff)
    if size is None:
        return
    if not dry_run:
        try:
            os.unlink(name, dir_fd=fd)
        except FileNotFoundError:  # another prune at the same time took it
            return
    report.files += 1
    report.bytes += size


def _old_file_size(fd: int, name: str, cutoff: float) -> int | None:
    """The size of `name` if it is a regular file (not a link) with an mtime before `cutoff`."""
    try:
        info = os.stat(name, dir_fd=fd, follow_symlinks=False)
    except FileNotFoundError:
        return None
    if not stat.S_ISREG(info.st_mode) or info.st_mtime >= cutoff:
        return None
    return info.st_size


def _remove_if_still_old(fd: int, name: str, cutoff: float) -> bool:
    """Move the file aside, check its mtime again, then unlink it (or put it back if the bot
    stored or re-used it in between). True when it was deleted."""
    if _old_file_size(fd, name, cutoff) is None:
        return False
    aside = f".prune-{name}.{os.getpid()}.{time.monotonic_ns()}.tmp"
    try:
        os.rename(name, aside, src_dir_fd=fd, dst_dir_fd=fd)
    except FileNotFoundError:
        return False
    try:
        if os.stat(aside, dir_fd=fd, follow_symlinks=False).st_mtime >= cutoff:  # touched just before the move
            # FileExistsError: the bot already wrote the same picture again (same name, same bytes).
            with contextlib.suppress(FileExistsError):
                os.link(aside, name, src_dir_fd=fd, dst_dir_fd=fd, follow_symlinks=False)
            os.unlink(aside, dir_fd=fd)
            return False
        os.unlink(aside, dir_fd=fd)
    except FileNotFoundError:  # a second prune running at the same time took it
        return False
    return True

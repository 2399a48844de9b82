"""Delete old unshared images and their rows, and old suggested prompts.

Removes the images (rows, then files) of finished jobs older than `--older-than` (30d, 12h,
90m), except images shared in the gallery, and the prompts /describe and /shorten suggested
that were last offered before then (their buttons then say to run the command again), and
the pictures under DATA_DIR/inputs (uploads, image prompts, references, edit masks) older
than that which no queued, running or shared job still uses (`storage.inputs`). Job rows
stay, so seeds and history remain. Prints how many images, pictures, bytes and suggestions
were freed; `--dry-run` only says what would go.
Safe to run next to a running bot.
"""

from __future__ import annotations

import argparse
import asyncio

from bot.config import load_settings


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--older-than", required=True, metavar="AGE", help="age like 30d, 12h or 90m")
    parser.add_argument("--dry-run", action="store_true", help="report what would be deleted, delete nothing")


def _size(count: int) -> str:
    value = float(count)
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{count} bytes" if unit == "bytes" else f"{value:.1f} {unit} ({count} bytes)"
        value /= 1024
    raise AssertionError


async def _run(args: argparse.Namespace) -> int:
    from storage.api import Storage  # heavy for the CLI: aiosqlite
    from storage.maintenance import parse_duration, prune  # heavy for the CLI: aiosqlite

    age = parse_duration(args.older_than)
    storage = await Storage.open(load_settings().data_dir)
    try:
        report = await prune(storage, age, dry_run=args.dry_run)
    finally:
        await storage.close()
    verb = "would delete" if report.dry_run else "deleted"
    print(f"{verb} {report.images} images ({report.files} files), "
          f"{'would free' if report.dry_run else 'freed'} {_size(report.bytes_freed)}")
    if report.kept_shared:
        print(f"kept {report.kept_shared} old images that are shared in the gallery")
    print(f"{verb} {report.suggestions} old /describe and /shorten suggestions")
    print(f"{verb} {report.inputs} old input pictures (uploads, image prompts, references, masks), "
          f"{'would free' if report.dry_run else 'freed'} {_size(report.inputs_bytes)}")
    if report.inputs_in_use:
        print(f"kept {report.inputs_in_use} old input pictures that queued, running or shared jobs still use")
    if report.inputs_note:
        print(report.inputs_note)
    return 0


def main(args: argparse.Namespace) -> int:
    return asyncio.run(_run(args))  # a StorageError is one line from `bot.cli.run_guarded`

"""Check the database and image folder for problems.

Runs SQLite's integrity and foreign-key checks and the search index check, then compares the
image rows with the files: rows whose file is missing or the wrong size (`--verify` also
re-hashes every file), files no row points at (orphans) and temporary files left by a crash.
Files younger than an hour are left alone: the bot may be writing them right now.
It also lists stuck jobs: queued or running, asked for by a `tessera imagine` (or vary,
reroll, upscale) that is no longer running, so nothing will ever run or collect them.
`--fix` deletes orphan and temporary files and marks stuck jobs failed ("the command that
started this job stopped"). Exit status: 0 all well, 1 problems found.
Safe to run next to a running bot.
"""

from __future__ import annotations

import argparse
import asyncio

from bot.config import load_settings

_SHOWN = 20


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--verify", action="store_true", help="re-hash every image file (slow)")
    parser.add_argument("--fix", action="store_true", help="delete orphan and temporary files, mark stuck jobs failed")


def _list(title: str, items: list[str]) -> None:
    print(f"{title}: {len(items)}")
    for item in items[:_SHOWN]:
        print(f"  {item}")
    if len(items) > _SHOWN:
        print(f"  … and {len(items) - _SHOWN} more")


async def _run(args: argparse.Namespace) -> int:
    from storage.api import Storage  # heavy for the CLI: aiosqlite
    from storage.maintenance import doctor  # heavy for the CLI: aiosqlite

    settings = load_settings()
    storage = await Storage.open(settings.data_dir)
    try:
        report = await doctor(storage, verify=args.verify, fix=args.fix)
    finally:
        await storage.close()
    print(f"database: {storage.db.path} (schema version {report.schema_version})")
    print(f"integrity: {', '.join(report.integrity[:5])}")
    print(f"foreign key problems: {report.foreign_key_problems}")
    print(f"search index: {'ok' if report.fts_ok else 'DAMAGED'}")
    states = ", ".join(f"{k} {v}" for k, v in sorted(report.jobs_by_state.items())) or "none"
    print(f"jobs: {states}")
    _list("rows whose file is missing", report.missing_files)
    _list("rows whose file is damaged", report.damaged_files)
    _list("files with no row (orphans)", report.orphan_files)
    _list("temporary files left by a crash", report.temp_files)
    if report.stuck_jobs:
        print(f"{len(report.stuck_jobs)} jobs stuck: started by a `tessera imagine` (or vary, reroll, upscale) "
              "that is no longer running")
        for item in report.stuck_jobs[:_SHOWN]:
            print(f"  {item}")
        if len(report.stuck_jobs) > _SHOWN:
            print(f"  … and {len(report.stuck_jobs) - _SHOWN} more")
    else:
        print("stuck jobs: 0")
    if report.recent_orphans:
        print(f"files younger than an hour without a row (left alone): {report.recent_orphans}")
    if args.fix:
        print(f"removed {report.removed_files} files, {report.removed_bytes} bytes freed")
        if report.stuck_jobs:
            print(f"marked {report.settled_jobs} stuck jobs failed")
    ok = report.healthy and (args.fix or (not report.orphan_files and not report.temp_files)) \
        and len(report.stuck_jobs) == report.settled_jobs
    print("all well" if ok else "problems found")
    return 0 if ok else 1


def main(args: argparse.Namespace) -> int:
    return asyncio.run(_run(args))  # a StorageError is one line from `bot.cli.run_guarded`

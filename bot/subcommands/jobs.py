"""List stored jobs, newest first.

One line per job: id, kind, state, user, created (UTC), seed and the start of the prompt.
`--json` prints a JSON list instead, with every stored field.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from dataclasses import asdict

from bot.config import load_settings
from engine.jobs.model import JobState

STATES = ("queued", "running", "done", "failed", "cancelled")


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--user", type=int, metavar="ID", help="only this Discord user's jobs")
    parser.add_argument("--state", choices=STATES, help="only jobs in this state")
    parser.add_argument("--limit", type=int, default=50, metavar="N", help="at most N jobs (default 50)")
    parser.add_argument("--json", action="store_true", help="print a JSON list")


def _line(job) -> str:
    created = job.created_at.strftime("%Y-%m-%d %H:%M:%S")
    seed = "-" if job.seed is None else str(job.seed)
    prompt = " ".join(job.prompt_text.split())
    prompt = prompt if len(prompt) <= 60 else prompt[:59] + "…"
    return f"{job.id:8} {job.kind.value:9} {job.state.value:9} {job.user_id:>20} {created} {seed:>12}  {prompt}"


async def _run(args: argparse.Namespace) -> int:
    from storage.api import Storage  # heavy for the CLI: aiosqlite

    storage = await Storage.open(load_settings().data_dir)
    try:
        found = await storage.jobs.list(user_id=args.user, state=JobState(args.state) if args.state else None,
                                        limit=args.limit)
    finally:
        await storage.close()
    if args.json:
        print(json.dumps([asdict(j) for j in found], default=str, ensure_ascii=False, indent=2))
        return 0
    if not found:
        print("no jobs", file=sys.stderr)
        return 0
    print(f"{'id':8} {'kind':9} {'state':9} {'user':>20} {'created (UTC)':19} {'seed':>12}  prompt")
    for job in found:
        print(_line(job))
    return 0


def main(args: argparse.Namespace) -> int:
    return asyncio.run(_run(args))  # a StorageError is one line from `bot.cli.run_guarded`

"""Print the seed of a job.

JOB is the job id shown under its image (any case), or a link to the job's Discord message.
Prints the seed alone on standard output, so `tessera imagine "... --seed $(tessera seed k3m9qra)"`
works. Exits 1 with a message when the job is unknown or has no seed yet (still queued).
"""

from __future__ import annotations

import argparse
import asyncio
import sys

from bot.config import load_settings


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("job", help="job id (like k3m9qra) or a Discord message link")


async def _seed(ref: str) -> int | None:
    from storage.api import Storage  # heavy for the CLI: aiosqlite

    storage = await Storage.open(load_settings().data_dir)
    try:
        job = await storage.jobs.resolve_job_ref(ref)
    finally:
        await storage.close()
    return job.seed


def main(args: argparse.Namespace) -> int:
    seed = asyncio.run(_seed(args.job))  # a StorageError is one line from `bot.cli.run_guarded`
    if seed is None:
        print(f"tessera seed: job {args.job.strip()} has no seed yet (it has not started)", file=sys.stderr)
        return 1
    print(seed)
    return 0

"""Run a job's prompt again with a new seed (the 🔄 button).

Everything else of the job's request is kept (size, steps, sampler, model, image prompt).
Recorded as a "reroll" job, child of JOB; prints the same JSON object as `tessera imagine`.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from bot.subcommands._gridjob import add_common_options

if TYPE_CHECKING:
    from bot.config import Settings


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("job", metavar="JOB", help="the job id, as shown under the grid")
    parser.add_argument("--seed", type=int, default=None, help="the new seed (default: random)")
    add_common_options(parser)


def main(args: argparse.Namespace) -> int:
    import asyncio

    from bot.config import load_settings
    from bot.subcommands._gridjob import report_error
    from engine.errors import JobCancelled, TesseraError

    settings = load_settings()
    try:
        return asyncio.run(_reroll(settings, args))
    except TesseraError as exc:
        return report_error("reroll", exc)
    except (JobCancelled, KeyboardInterrupt):
        return report_error("reroll", KeyboardInterrupt("cancelled"))


async def _reroll(settings: Settings, args: argparse.Namespace) -> int:
    import asyncio

    from bot.subcommands._gridjob import load, print_result, run_job
    from engine.errors import StorageError
    from engine.request import GenerationRequest, reroll_of
    from storage.db import Storage
    from storage.models import JobKind, NewJob

    storage = await Storage.open(settings.data_dir)
    try:
        parent = await storage.jobs.require(args.job)
        if parent.kind == JobKind.UPSCALE and parent.parent_id:
            parent = await storage.jobs.require(parent.parent_id)
        if not parent.request_json:
            raise StorageError(f"job {parent.id} has no stored request to run again")
        request = reroll_of(GenerationRequest.from_json(parent.request_json), seed=args.seed)
        model = await asyncio.to_thread(load, settings, request.model)
        new_job = NewJob(kind=JobKind.REROLL, user_id=args.user, prompt_text=parent.prompt_text,
                         prompt_json=parent.prompt_json, request_json=request.to_json(), seed=request.seed,
                         model=request.model, guild_id=parent.guild_id, parent_id=parent.id)
        print_result(await run_job(storage, model, new_job, request, args.out))
    finally:
        await storage.close()
    return 0

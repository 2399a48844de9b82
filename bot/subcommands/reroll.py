"""Run a job's prompt again with a new seed (the 🔄 button).

Everything else of the job's request is kept (size, steps, sampler, model, image prompt). It
goes through the job service like a bot command (with `QUEUE_URL=redis://…` a GPU worker runs
it), recorded as a "reroll" job, child of JOB; prints the same JSON object as `tessera imagine`.
"""

from __future__ import annotations

import argparse

from bot.subcommands._submit import add_common_options, run_command, run_jobs, settings_for_parent, write_grid


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("job", metavar="JOB", help="the job id, as shown under the grid")
    parser.add_argument("--seed", type=int, default=None, help="the new seed (default: random)")
    add_common_options(parser)


def main(args: argparse.Namespace) -> int:
    return run_command("reroll", lambda: _reroll(args))


async def _reroll(args: argparse.Namespace) -> int:
    from bot.service import Tessera  # heavy for the CLI: aiosqlite, PIL

    settings = await settings_for_parent(args.job)

    async def submit(service: Tessera) -> list:
        return [await service.reroll(user_id=args.user, job_id=args.job, seed=args.seed)]

    return await run_jobs("reroll", settings, submit, write_grid, args.out)

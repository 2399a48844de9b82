"""Make four variations of one image of a job (the V1–V4 buttons, or Vary after an upscale).

The variations go through the job service like a bot command (with `QUEUE_URL=redis://…` a
GPU worker runs them). They are recorded as a "variation" job, child of JOB and its image
INDEX (counted from 1); prints the same JSON object as `tessera imagine`.
"""

from __future__ import annotations

import argparse

from bot.subcommands._submit import add_common_options, run_command, run_jobs, settings_for_parent, write_grid


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("job", metavar="JOB", help="the job id, as shown under the grid")
    parser.add_argument("index", metavar="INDEX", type=int, help="which image: 1-4 as on V1-V4")
    parser.add_argument("--strength", choices=("subtle", "strong"), default="subtle", help="how far to vary")
    parser.add_argument("--prompt", default=None, help="remix: a new prompt for the variations")
    parser.add_argument("--seed", type=int, default=None, help="seed of the variations (default: random)")
    add_common_options(parser)


def main(args: argparse.Namespace) -> int:
    return run_command("vary", lambda: _vary(args))


async def _vary(args: argparse.Namespace) -> int:
    from bot.service import Tessera  # heavy for the CLI: aiosqlite, PIL

    settings = await settings_for_parent(args.job)

    async def submit(service: Tessera) -> list:
        return [await service.vary(user_id=args.user, job_id=args.job, index=args.index - 1, strength=args.strength,
                                   prompt_text=args.prompt, seed=args.seed)]

    return await run_jobs("vary", settings, submit, write_grid, args.out)

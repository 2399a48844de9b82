"""What `tessera zoom`, `pan`, `square` and `region` share: options, and submitting one edit.

Each edit is a job of kind "edit", child of JOB and its image INDEX (counted from 1), that
makes a new 2x2 grid of candidates; it goes through the job service like a bot command and
prints the same JSON object as `tessera imagine`.
"""

from __future__ import annotations

import argparse
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from bot.subcommands._submit import add_common_options, run_command, run_jobs, settings_for_parent, write_grid

if TYPE_CHECKING:
    from bot.service import Tessera


def add_edit_options(parser: argparse.ArgumentParser) -> None:
    """JOB, INDEX, --prompt and --seed, then --out and --user."""
    parser.add_argument("job", metavar="JOB", help="the job id, as shown under the grid")
    parser.add_argument("index", metavar="INDEX", type=int, help="which image: 1-4 as on U1-U4 (1 for an upscale)")
    parser.add_argument("--prompt", default=None, help="a new prompt for what to paint (default: the job's)")
    parser.add_argument("--seed", type=int, default=None, help="seed of the new grid (default: random)")
    add_common_options(parser)


def run_edit(command: str, args: argparse.Namespace,
             call: Callable[[Tessera, dict[str, Any]], Awaitable[Any]]) -> int:
    """Submit one edit with `call(service, common_kwargs)` and print its grid's JSON."""

    async def main() -> int:
        settings = await settings_for_parent(args.job)

        async def submit(service: Tessera) -> list:
            common = {"user_id": args.user, "job_id": args.job, "index": args.index - 1, "prompt_text": args.prompt,
                      "seed": args.seed}
            return [await call(service, common)]

        return await run_jobs(command, settings, submit, write_grid, args.out)

    return run_command(command, main)

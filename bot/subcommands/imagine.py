"""Generate a 2x2 grid from a prompt, as the bot would.

The prompt is Midjourney's language (`--ar`, `--no`, `--seed`, `::` weights, `{a, b}`, image
URLs in front). It goes through the job service like a bot command: checked, stored, queued
(with `QUEUE_URL=redis://…` a GPU worker runs it). Each job's four PNGs are written to --out
with the grid (`<prompt words>_<job>_1.png` ... `_grid.png`), and one JSON object is printed
per job: {"job_id", "seed", "width", "height", "steps", "files", "grid", "ignored"}.
A progress bar is shown on stderr when it is a terminal.
"""

from __future__ import annotations

import argparse

from bot.config import load_settings
from bot.subcommands._submit import add_common_options, run_command, run_jobs, write_grid
from engine.diffusion.models import check_model_ref
from engine.samplers import check_sampler


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("prompt", metavar="PROMPT", help='the prompt, e.g. "a lighthouse at dusk --ar 16:9"')
    parser.add_argument("--model", default=None, help="hub id, model folder or checkpoint file (default: MODEL_ID)")
    parser.add_argument("--sampler", default=None, help="sampler name (default: the user's, else SAMPLER)")
    add_common_options(parser)


def main(args: argparse.Namespace) -> int:
    return run_command("imagine", lambda: _imagine(args))


async def _imagine(args: argparse.Namespace) -> int:
    import asyncio

    from bot.service import Tessera  # heavy for the CLI: aiosqlite, PIL

    sampler = check_sampler(args.sampler).name if args.sampler else None
    overrides: dict[str, object] = {}
    if args.model:
        await asyncio.to_thread(check_model_ref, args.model)  # names the path, before settings reject it
        # This model for this run only: MODEL_ID becomes it, and no stored user choice replaces it.
        overrides = {"model_id": args.model, "allowed_models": []}
    settings = load_settings(**overrides)

    async def submit(service: Tessera) -> list:
        return await service.imagine(user_id=args.user, prompt_text=args.prompt, confirmed=True, sampler=sampler)

    return await run_jobs("imagine", settings, submit, write_grid, args.out)

"""Generate a 2x2 grid from a prompt, as the bot would.

The prompt is Midjourney's language (`--ar`, `--no`, `--seed`, `::` weights, `{a, b}`, image
URLs in front). Each job it makes is recorded in storage like a bot job, its four PNGs are
written to --out with the grid (`<prompt words>_<job>_1.png` ... `_grid.png`), and one JSON
object is printed per job: {"job_id", "seed", "width", "height", "steps", "files", "grid",
"ignored"}. A progress bar is shown on stderr when it is a terminal.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from bot.subcommands._gridjob import add_common_options

if TYPE_CHECKING:
    from bot.config import Settings


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("prompt", metavar="PROMPT", help='the prompt, e.g. "a lighthouse at dusk --ar 16:9"')
    parser.add_argument("--model", default=None, help="hub id, model folder or checkpoint file (default: MODEL_ID)")
    parser.add_argument("--sampler", default=None, help="sampler name (default: the user's, else SAMPLER)")
    add_common_options(parser)


def main(args: argparse.Namespace) -> int:
    import asyncio

    from bot.config import load_settings
    from bot.subcommands._gridjob import report_error
    from engine.errors import JobCancelled, TesseraError

    settings = load_settings()
    try:
        return asyncio.run(_imagine(settings, args))
    except TesseraError as exc:
        return report_error("imagine", exc)
    except (JobCancelled, KeyboardInterrupt):
        return report_error("imagine", KeyboardInterrupt("cancelled"))


async def _imagine(settings: Settings, args: argparse.Namespace) -> int:
    import asyncio

    from bot.subcommands._gridjob import load, print_result, run_job
    from engine.imagefetch import fetch_init_image
    from engine.models import check_model_ref
    from engine.prompt import PromptLimits, parse
    from engine.request import Defaults, resolve
    from engine.samplers import check_sampler
    from storage.db import Storage
    from storage.models import JobKind, NewJob

    prompt = parse(args.prompt, PromptLimits(settings.prompt_max_length, settings.prompt_max_jobs))
    ref = args.model or settings.model_id
    check_model_ref(ref)
    storage = await Storage.open(settings.data_dir)
    try:
        user = await storage.settings.user(args.user)
        sampler = check_sampler(args.sampler or user.sampler or settings.sampler).name
        defaults = Defaults(quality=user.quality, aspect=user.aspect, stylize=user.stylize)
        model = await asyncio.to_thread(load, settings, ref)
        for expansion in prompt.expansions:
            init_image = None
            if expansion.images:
                init_image = str(await fetch_init_image(
                    expansion.images, settings.data_dir / "inputs", max_bytes=settings.image_prompt_max_bytes,
                    timeout_s=settings.image_fetch_timeout_s))
            for _ in range(expansion.params.repeat or 1):
                request = resolve(expansion, profile=model.profile, model=ref, sampler=sampler, defaults=defaults,
                                  init_image=init_image)
                text = prompt.raw if len(prompt.expansions) == 1 else expansion.source
                new_job = NewJob(kind=JobKind.IMAGINE, user_id=args.user, prompt_text=text,
                                 prompt_json=expansion.to_json(), request_json=request.to_json(), seed=request.seed,
                                 model=ref)
                print_result(await run_job(storage, model, new_job, request, args.out))
    finally:
        await storage.close()
    return 0

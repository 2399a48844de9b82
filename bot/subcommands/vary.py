"""Make four variations of one image of a job.

INDEX counts from 1, as on the V1-V4 buttons. `--strength subtle` (default) keeps the
composition, `strong` changes more (image-to-image strengths 0.35 and 0.7); `--prompt` remixes
with a new prompt. Recorded as a "variation" job, child of JOB; prints the same JSON object as
`tessera imagine`.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from bot.subcommands._gridjob import add_common_options

if TYPE_CHECKING:
    from bot.config import Settings


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("job", metavar="JOB", help="the job id, as shown under the grid")
    parser.add_argument("index", metavar="INDEX", type=int, help="which image: 1-4 as on V1-V4")
    parser.add_argument("--strength", choices=("subtle", "strong"), default="subtle", help="how far to vary")
    parser.add_argument("--prompt", default=None, help="remix: a new prompt for the variations")
    parser.add_argument("--seed", type=int, default=None, help="seed of the variations (default: random)")
    add_common_options(parser)


def main(args: argparse.Namespace) -> int:
    import asyncio

    from bot.config import load_settings
    from bot.subcommands._gridjob import report_error
    from engine.errors import JobCancelled, TesseraError

    settings = load_settings()
    try:
        return asyncio.run(_vary(settings, args))
    except TesseraError as exc:
        return report_error("vary", exc)
    except (JobCancelled, KeyboardInterrupt):
        return report_error("vary", KeyboardInterrupt("cancelled"))


async def _vary(settings: Settings, args: argparse.Namespace) -> int:
    import asyncio

    from bot.subcommands._gridjob import load, print_result, run_job
    from engine.errors import PromptError, StorageError
    from engine.prompt import PromptLimits, parse
    from engine.request import GenerationRequest, variation_of
    from storage.db import Storage
    from storage.models import JobKind, NewJob

    expansion = None
    if args.prompt:
        prompt = parse(args.prompt, PromptLimits(settings.prompt_max_length, settings.prompt_max_jobs))
        if len(prompt.expansions) != 1:
            raise PromptError("a remix prompt must make exactly one prompt (no {a, b} permutations)")
        expansion = prompt.expansions[0]
    storage = await Storage.open(settings.data_dir)
    try:
        parent = await storage.jobs.require(args.job)
        if not parent.request_json:
            raise StorageError(f"job {parent.id} has no stored request to vary (is it an upscale?)")
        images = await storage.images.for_job(parent.id)
        record = next((r for r in images if r.index == args.index - 1), None)
        if record is None:
            raise StorageError(f"job {parent.id} has {len(images)} image(s); INDEX must be 1 to {max(len(images), 1)}")
        base = GenerationRequest.from_json(parent.request_json)
        request = variation_of(base, index=args.index - 1, init_image=str(record.path), strength=args.strength,
                               expansion=expansion, seed=args.seed)
        model = await asyncio.to_thread(load, settings, request.model)
        new_job = NewJob(kind=JobKind.VARIATION, user_id=args.user, prompt_text=args.prompt or parent.prompt_text,
                         prompt_json=expansion.to_json() if expansion else parent.prompt_json,
                         request_json=request.to_json(), seed=request.seed, model=request.model,
                         guild_id=parent.guild_id, parent_id=parent.id, parent_index=args.index - 1,
                         options={"strength": args.strength})
        print_result(await run_job(storage, model, new_job, request, args.out))
    finally:
        await storage.close()
    return 0

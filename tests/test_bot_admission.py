"""Admission under concurrency: one all-or-nothing decision per request.

The limits (per user, in total, and a server's `/admin limit`) used to be checked before
several awaits and each job submitted on its own, so concurrent requests all passed a check
only some of them fitted, and a multi-job request refused half-way left its first jobs queued.
Here many requests arrive at once through real Interactions, and storage and the queue are
checked afterwards.
"""

from __future__ import annotations

import asyncio
import re
from collections import Counter
from pathlib import Path

import pytest

from engine.errors import QueueLimitError
from engine.jobs.model import JobState
from tests.bot_helpers import Bot, start_bot
from tests.discord_harness import ADMIN_ID, MANAGE_GUILD, USER_ID


async def busy_bot(tiny_models: dict[str, Path], data_dir: Path, **settings: object) -> Bot:
    """A bot whose user has one job running (held) and may run no other, so every job they
    add stays waiting and the counts below do not depend on timing."""
    bot = await start_bot(tiny_models["sd15"], data_dir, queue_max_running_per_user=1, **settings)
    bot.executor.gate.clear()
    await bot.h.run_command("imagine", {"prompt": "a long first job"})
    (first,) = await bot.jobs(USER_ID)

    async def running() -> bool:
        return (await bot.service.storage.jobs.require(first.id)).state is JobState.RUNNING
    await bot.until(running)
    return bot


def last_words(bot: Bot, token: str) -> str:
    said = [c.content for c in bot.http.for_token(token) if c.content]
    return said[-1] if said else ""


async def waiting_jobs(bot: Bot) -> list:
    return [j for j in await bot.jobs(USER_ID) if j.state is JobState.QUEUED]


async def test_twenty_concurrent_imagines_under_admin_limit_3_admit_exactly_3(
        tiny_models: dict[str, Path], data_dir: Path) -> None:
    bot = await busy_bot(tiny_models, data_dir)
    try:
        await bot.h.run_command("admin", {"waiting": 3}, subcommand="limit", user_id=ADMIN_ID, permissions=MANAGE_GUILD)
        interactions = await asyncio.gather(*(bot.h.run_command("imagine", {"prompt": f"a cat number {n}"})
                                              for n in range(20)))
        waiting = await waiting_jobs(bot)
        assert len(waiting) == 3
        scheduler = bot.service.queue.scheduler  # type: ignore[attr-defined]
        assert scheduler.waiting_for(USER_ID) == 3
        assert all(bot.service.queue.position(j.id) is not None for j in waiting)
        refused = [i for i in interactions if "at most 3 waiting jobs" in last_words(bot, i.token)]
        assert len(refused) == 17
        assert len(await bot.jobs(USER_ID)) == 1 + 3  # the refused left no rows either
    finally:
        await bot.close()


async def test_concurrent_multi_job_prompts_are_admitted_whole_or_not_at_all(
        tiny_models: dict[str, Path], data_dir: Path) -> None:
    bot = await busy_bot(tiny_models, data_dir, queue_max_per_user=10)
    try:
        prompts = [f"{{red, green, blue, gold}} fox {n}" for n in range(10)]  # four jobs each
        interactions = await asyncio.gather(*(bot.h.run_command("imagine", {"prompt": p}) for p in prompts))
        waiting = await waiting_jobs(bot)
        per_prompt = Counter(int(re.fullmatch(r"\w+ fox (\d+)", j.prompt_text)[1]) for j in waiting)  # type: ignore[index]
        assert sorted(per_prompt.values()) == [4, 4]  # two whole prompts fit in 10; none in part
        scheduler = bot.service.queue.scheduler  # type: ignore[attr-defined]
        assert scheduler.waiting_for(USER_ID) == 8 == len(scheduler)
        assert {j.id for j in waiting} == {j.id for j in await bot.jobs(USER_ID) if j.state is not JobState.RUNNING}
        refused = [i for i in interactions if "at most 10 jobs waiting" in last_words(bot, i.token)]
        assert len(refused) == 8
    finally:
        await bot.close()


async def test_a_request_refused_half_way_takes_back_the_jobs_it_queued(
        tiny_models: dict[str, Path], data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """If the queue refuses the third of four jobs (a limit the pre-check did not foresee, or
    an outage), the first two are taken out of the queue and storage: none of them runs."""
    bot = await busy_bot(tiny_models, data_dir)
    try:
        queue = bot.service.queue
        real_submit = queue.submit
        calls = 0

        async def refuse_the_third(job):  # type: ignore[no-untyped-def]
            nonlocal calls
            calls += 1
            if calls == 3:
                raise QueueLimitError("The queue is full.")
            return await real_submit(job)

        monkeypatch.setattr(queue, "submit", refuse_the_third)
        before = {j.id for j in await bot.jobs()}
        with pytest.raises(QueueLimitError):
            await bot.service.imagine(user_id=USER_ID, prompt_text="{a, b, c, d} owl", guild_id=None)
        assert calls == 3
        assert {j.id for j in await bot.jobs()} == before
        assert len(queue.scheduler) == 0  # type: ignore[attr-defined]
        bot.executor.gate.set()
        await bot.h.settle()
        assert {j.id for j in await bot.jobs()} == before
    finally:
        await bot.close()

"""Issue 20 through Discord: a pasted V7 prompt runs, and the result names what was not used."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.bot_helpers import Bot, start_bot


@pytest.fixture
async def bot(tiny_models: dict[str, Path], data_dir: Path) -> AsyncIterator[Bot]:
    running = await start_bot(tiny_models["sd15"], data_dir)
    yield running
    await running.close()


async def test_imagine_a_v7_prompt_says_which_parameters_were_not_used(bot: Bot) -> None:
    prompt = "a lighthouse --chaos 20 --exp 25 --style raw --v 7 --profile exiuzv7 --profile 69o9ke7 --sv 4"
    interaction = await bot.h.run_command("imagine", {"prompt": prompt})
    job = (await bot.jobs())[0]
    await bot.finished(job.id)
    final = [c for c in bot.http.for_token(interaction.token) if c.files and c.method == "PATCH"][-1]
    notice = next(line for line in final.content.splitlines() if "not used" in line)
    for ignored in ("`--style raw`", "`--v 7`", "`--profile exiuzv7 69o9ke7`", "`--sv 4`"):
        assert ignored in notice
    assert "--exp" not in notice and "--chaos" not in notice  # applied

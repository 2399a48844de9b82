"""/imagine end to end with the real engine: the tiny SD 1.x model on the CPU, no fakes but Discord."""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import pytest
from PIL import Image

from engine.jobs.model import JobState
from tests.bot_helpers import start_bot
from tests.discord_harness import USER_ID, message_with
from tests.test_bot import GRID_BUTTONS, final_edit, ids


@pytest.fixture(scope="module")
def small_model(tiny_models: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny SD 1.5 folder with a profile override: 128² native, 2 steps (fast on a CPU)."""
    folder = tmp_path_factory.mktemp("model") / "sd15"
    shutil.copytree(tiny_models["sd15"], folder)
    (folder / "tessera.json").write_text(json.dumps({"native": 128, "steps": 2, "guidance": 5.0}))
    return folder


async def test_imagine_with_the_tiny_model(small_model: Path, data_dir: Path) -> None:
    from engine.jobs.executor import EngineExecutor

    executor = EngineExecutor(str(small_model), device="cpu", dtype="float32")
    bot = await start_bot(small_model, data_dir, executor=executor)  # MODEL_ID=<the tiny model>, DEVICE=cpu
    try:
        interaction = await bot.h.run_command("imagine", {"prompt": "a red lighthouse at dusk --ar 1:1 --seed 11"})
        job = await bot.only_job(USER_ID)
        stored = await bot.finished(job.id)
        assert stored.state is JobState.DONE, stored.error
        calls = bot.http.for_token(interaction.token)
        assert calls[0].callback_type == 5
        final = final_edit(calls)
        assert final.custom_ids == ids(GRID_BUTTONS, job.id)
        (name, data), = final.files
        assert name.startswith(f"a_red_lighthouse_at_{job.id}") or name.startswith("a_red_lighthouse")
        grid = Image.open(io.BytesIO(data))
        records = await bot.service.storage.images.for_job(job.id)
        assert len(records) == 4
        assert grid.size == (records[0].width * 2, records[0].height * 2)  # the 2x2 grid
        assert len(set(grid.getdata())) > 16  # a real picture, not a blank
        assert int(message_with(final)["id"]) == stored.message_id
    finally:
        await bot.close()

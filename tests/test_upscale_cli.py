"""`tessera upscale JOB INDEX`: records an upscale job, stores and writes the PNG, prints JSON."""

from __future__ import annotations

import asyncio
import io
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bot.cli import main
from engine.imaging.encoding import encode_png
from engine.jobs.model import JobKind, JobState, NewJob
from engine.upscale.realesrgan import Upscaler
from storage.api import Storage


def _png(seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    return encode_png(Image.fromarray((rng.random((32, 40, 3)) * 255).astype(np.uint8), "RGB"))


async def _grid_job(data_dir: Path) -> str:
    storage = await Storage.open(data_dir)
    try:
        job = await storage.jobs.create(NewJob(kind=JobKind.IMAGINE, user_id=7, prompt_text="a red fox --ar 5:4",
                                               seed=3, model="tiny"))
        await storage.jobs.transition(job.id, JobState.RUNNING)
        for index in range(4):
            await storage.images.add(job.id, index, _png(index), 40, 32)
        await storage.jobs.transition(job.id, JobState.DONE)
        return job.id
    finally:
        await storage.close()


async def _read(data_dir: Path, job_id: str) -> tuple:
    storage = await Storage.open(data_dir)
    try:
        job = await storage.jobs.require(job_id)
        return job, await storage.images.for_job(job_id)
    finally:
        await storage.close()


@pytest.fixture
def configured(data_dir: Path, tiny_models: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    weights = tmp_path / "weights"
    weights.mkdir()
    shutil.copy(tiny_models["x4"], weights / "RealESRGAN_x4plus.pth")
    monkeypatch.setenv("DATA_DIR", str(data_dir))
    monkeypatch.setenv("UPSCALER_WEIGHTS_DIR", str(weights))
    monkeypatch.setenv("DEVICE", "cpu")
    monkeypatch.setenv("UPSCALE_MAX_SIDE", "256")
    return data_dir


def test_upscale_records_a_child_job_and_writes_the_png(configured: Path, tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    parent_id = asyncio.run(_grid_job(configured))
    out = tmp_path / "out"
    assert main(["upscale", parent_id, "3", "--scale", "4", "--out", str(out)]) == 0
    printed = json.loads(capsys.readouterr().out)
    weights_dir = Path(os.environ["UPSCALER_WEIGHTS_DIR"])

    written = Path(printed["file"])
    assert written.parent == out.resolve() and written.name.startswith("a_red_fox_")
    image = Image.open(written)
    assert image.size == (160, 128)
    assert json.loads(image.text["tessera"])["extra_steps"][0]["scale"] == 4

    job, images = asyncio.run(_read(configured, printed["job_id"]))
    assert job.kind == JobKind.UPSCALE and job.state == JobState.DONE
    assert job.parent_id == parent_id and job.parent_index == 2 and job.options["scale"] == 4
    assert [(r.index, r.width, r.height) for r in images] == [(0, 160, 128)]
    assert images[0].path.read_bytes() == written.read_bytes()
    # INDEX 3 is the grid's third image (index 2): the file is exactly that image upscaled.
    expected = Upscaler(weights_dir, device="cpu", allow_download=False).upscale(Image.open(io.BytesIO(_png(2))), 4)
    assert np.array_equal(np.asarray(image.convert("RGB")), np.asarray(expected))

    # Chaining: the upscale's own image (INDEX 1) would pass UPSCALE_MAX_SIDE=256 at ×4.
    assert main(["upscale", printed["job_id"], "1", "--out", str(out)]) == 1
    assert "larger than the 256 px limit" in capsys.readouterr().err


def test_bad_index_and_unknown_job_are_clear_errors(configured: Path, capsys: pytest.CaptureFixture[str]) -> None:
    parent_id = asyncio.run(_grid_job(configured))
    assert main(["upscale", parent_id, "5"]) == 1
    assert "no image 5" in (err := capsys.readouterr().err) and "choose 1 to 4" in err
    assert main(["upscale", "nosuchjob", "1"]) == 1
    assert "nosuchjob" in capsys.readouterr().err

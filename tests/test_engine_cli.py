"""`tessera imagine`, `vary` and `reroll` on the tiny SD 1.5 model: files, JSON, storage records."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from PIL import Image

from bot.cli import main
from engine.metadata import read_metadata


@pytest.fixture
def small_model(tiny_models: dict[str, Path], tmp_path: Path) -> Path:
    """The tiny SD 1.5 folder with a profile override, so the CLI's native size stays small."""
    folder = tmp_path / "tiny-sd15"
    folder.mkdir()
    for child in tiny_models["sd15"].iterdir():
        (folder / child.name).symlink_to(child)
    (folder / "tessera.json").write_text(json.dumps({"native": 128, "steps": 2, "guidance": 6}))
    return folder


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, list[dict], str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, [json.loads(line) for line in out.splitlines() if line.strip()], err


async def stored(data_dir: Path, job_id: str) -> tuple[object, list[object]]:
    from storage.db import Storage

    storage = await Storage.open(data_dir)
    try:
        return await storage.jobs.require(job_id), await storage.images.for_job(job_id)
    finally:
        await storage.close()


def test_imagine_vary_reroll(small_model: Path, data_dir: Path, tmp_path: Path,
                             capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATA_DIR", str(data_dir))
    monkeypatch.setenv("DEVICE", "cpu")
    out = tmp_path / "out"
    code, results, err = run(capsys, "imagine", "a lighthouse::2 at dusk --ar 2:1 --seed 5 --no fog --niji",
                             "--model", str(small_model), "--out", str(out))
    assert code == 0, err
    [result] = results
    assert (result["seed"], result["width"], result["height"], result["steps"]) == (5, 192, 64, 2)
    assert result["ignored"] == ["--niji"]
    assert len(result["files"]) == 4 and all(Path(f).parent == out.resolve() for f in result["files"])
    with Image.open(result["grid"]) as grid:
        assert grid.size == (384, 128)
    meta = read_metadata(result["files"][2])
    assert meta["tessera"]["seed"] == 7 and meta["a1111"]["Seed"] == "7"
    assert meta["a1111"]["negative_prompt"] == "fog" and meta["a1111"]["Size"] == "192x64"

    job, images = asyncio.run(stored(data_dir, result["job_id"]))
    assert (job.kind, job.state, job.seed) == ("imagine", "done", 5)
    assert job.request_json["prompts"][0] == {"text": "a lighthouse", "weight": 2.0}
    assert [im.index for im in images] == [0, 1, 2, 3] and all(Path(im.path).is_file() for im in images)

    code, [variation], err = run(capsys, "vary", result["job_id"], "2", "--strength", "strong", "--seed", "99",
                                 "--out", str(out))
    assert code == 0, err
    assert (variation["seed"], variation["width"], variation["height"]) == (99, 192, 64)
    job, images = asyncio.run(stored(data_dir, variation["job_id"]))
    assert (job.kind, job.parent_id, job.parent_index, len(images)) == ("variation", result["job_id"], 1, 4)
    assert job.request_json["strength"] == 0.7 and job.request_json["init_image"].endswith(".png")

    code, [again], err = run(capsys, "reroll", result["job_id"], "--out", str(out))
    assert code == 0, err
    job, _ = asyncio.run(stored(data_dir, again["job_id"]))
    assert (job.kind, job.parent_id) == ("reroll", result["job_id"])
    assert again["seed"] != 5 and (again["width"], again["height"]) == (192, 64)


def test_cli_errors_are_one_clear_line(data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                       monkeypatch: pytest.MonkeyPatch, small_model: Path) -> None:
    monkeypatch.setenv("DATA_DIR", str(data_dir))
    missing = tmp_path / "nowhere"
    code, results, err = run(capsys, "imagine", "a cat", "--model", str(missing))
    assert code == 1 and not results and str(missing) in err
    code, results, err = run(capsys, "imagine", "a cat --ar 9:1", "--model", str(small_model))
    assert code == 1 and "4:1" in err
    code, results, err = run(capsys, "vary", "nosuchjob", "1")
    assert code == 1 and "nosuchjob" in err.lower()

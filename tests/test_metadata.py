"""What saved files say about themselves (issue 14, item 12): grids carry the same chunks as
single images, a re-roll's prompt text carries its own seed, and no chunk holds a server path."""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path

import pytest
from PIL import Image

from engine.imaging.metadata import model_name, pnginfo_for, read_metadata
from engine.prompt import WeightedText, parse
from engine.request import GenerationRequest
from tests.test_engine_cli import run, small_model, stored

__all__ = ["small_model"]  # the fixture, shared with the CLI tests


def _chunks(path: str | Path) -> str:
    with Image.open(path) as image:
        return "\n".join(str(v) for v in (image.text or {}).values())  # type: ignore[attr-defined]


def test_cli_grid_and_images_carry_metadata_without_server_paths(small_model: Path, data_dir: Path, tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture[str],
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATA_DIR", str(data_dir))
    monkeypatch.setenv("DEVICE", "cpu")
    out = tmp_path / "out"
    code, [first], err = run(capsys, "imagine", "a lighthouse --seed 7 --ar 2:1", "--model", str(small_model),
                             "--out", str(out))
    assert code == 0, err
    grid = read_metadata(first["grid"])
    image = read_metadata(first["files"][0])
    assert grid["parameters"] == image["parameters"]  # image 1's, as A1111 grids have
    assert grid["a1111"]["Seed"] == "7" and grid["a1111"]["Model"] == "tiny-sd15"
    assert grid["tessera"]["grid"] is True and grid["tessera"]["seed"] == 7
    assert grid["tessera"]["request"] == image["tessera"]["request"]
    assert GenerationRequest.from_json(grid["tessera"]["request"]).width == first["width"]

    code, [variation], err = run(capsys, "vary", first["job_id"], "2", "--out", str(out))  # has an init image
    assert code == 0, err
    job, _ = asyncio.run(stored(data_dir, variation["job_id"]))
    init = Path(job.request_json["init_image"])  # type: ignore[attr-defined]
    assert init.is_file()
    for path in [variation["grid"], *variation["files"]]:
        text = _chunks(path)
        assert str(data_dir) not in text and str(small_model) not in text and str(tmp_path) not in text
        request = read_metadata(path)["tessera"]["request"]
        assert request["model"] == "tiny-sd15" and request["init_image"] is None
        assert request["init_image_sha256"] == hashlib.sha256(init.read_bytes()).hexdigest()

    code, [again], err = run(capsys, "reroll", first["job_id"], "--seed", "99", "--out", str(out))
    assert code == 0, err
    rerolled, _ = asyncio.run(stored(data_dir, again["job_id"]))
    assert rerolled.prompt_text == "a lighthouse --ar 2:1 --seed 99"  # type: ignore[attr-defined]
    assert parse(rerolled.prompt_text).expansions[0].params.seed == 99  # type: ignore[attr-defined]


@pytest.mark.parametrize(("model", "name"), [
    ("stable-diffusion-v1-5/stable-diffusion-v1-5", "stable-diffusion-v1-5/stable-diffusion-v1-5"),
    ("stabilityai/sdxl-turbo", "stabilityai/sdxl-turbo"),
    ("/srv/models/dreamshaper-8", "dreamshaper-8"),
    ("/srv/models/sd-v1.5/", "sd-v1.5"),
    ("/srv/ckpt/v1-5-pruned-emaonly.safetensors", "v1-5-pruned-emaonly"),
    ("./models/anything", "anything"),
    ("models/local/anything", "anything"),
    ("~/weights/juggernaut.ckpt", "juggernaut"),
    ("C:\\models\\realvis", "realvis"),
])
def test_model_name_keeps_hub_ids_and_drops_folders(model: str, name: str, tmp_path: Path) -> None:
    assert model_name(model) == name
    request = GenerationRequest(prompts=(WeightedText("a cat"),), negative=(), width=64, height=64, steps=2,
                                guidance=7.0, seed=1, sampler="euler", model=model)
    png = tmp_path / "x.png"
    Image.new("RGB", (4, 4)).save(png, pnginfo=pnginfo_for(request, index=0))
    meta = read_metadata(png)
    assert meta["a1111"]["Model"] == name and meta["tessera"]["request"]["model"] == name


def test_a_model_is_shown_by_its_name_never_its_path() -> None:
    from bot.gallery import model_name as shown_in_the_gallery
    from engine.imaging.metadata import model_label, model_name

    for path, label in (("data/models/sd/dreamy", "dreamy"), ("/srv/m/dreamy-v2.safetensors", "dreamy-v2.safetensors"),
                        ("C:\\models\\x.ckpt", "x.ckpt"), ("org/name", "org/name")):
        assert model_label(path) == shown_in_the_gallery(path) == label
    assert model_name("/srv/m/dreamy-v2.safetensors") == "dreamy-v2"  # PNG metadata: A1111's form

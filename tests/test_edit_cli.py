"""`tessera zoom`, `pan`, `square` and `region` on the tiny models: new grids, kept pixels, refusals."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from engine.diffusion.segment import Segmenter
from engine.errors import PromptError
from engine.imaging.canvas import feather_for, grow
from engine.imaging.metadata import read_metadata
from tests.test_engine_cli import run, small_model, stored  # noqa: F401  (small_model is a fixture)


def _array(path: str | Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"), dtype=np.int16)


@pytest.fixture
def source(small_model: Path, data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],  # noqa: F811
           monkeypatch: pytest.MonkeyPatch) -> dict:
    monkeypatch.setenv("DATA_DIR", str(data_dir))
    monkeypatch.setenv("DEVICE", "cpu")
    monkeypatch.setenv("MODEL_ID", str(small_model))
    code, [result], err = run(capsys, "imagine", "a lighthouse --ar 2:1 --seed 5", "--out", str(tmp_path / "src"))
    assert code == 0, err
    assert (result["width"], result["height"]) == (192, 64)
    return result


def test_zoom_out_two_keeps_the_centre_and_paints_the_border(source: dict, data_dir: Path, tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    code, [zoom], err = run(capsys, "zoom", source["job_id"], "1", "--factor", "2", "--seed", "3",
                            "--out", str(tmp_path / "zoom"))
    assert code == 0, err
    assert (zoom["width"], zoom["height"], len(zoom["files"])) == (192, 64, 4)
    with Image.open(source["files"][0]) as picture:
        centre = np.asarray(picture.convert("RGB").resize((96, 32), Image.Resampling.LANCZOS), dtype=np.int16)
    band = feather_for(192, 64)
    inner = centre[band:32 - band, band:96 - band]
    for file in zoom["files"]:
        out = _array(file)
        assert np.abs(out[16 + band:48 - band, 48 + band:144 - band] - inner).max() <= 1
        border = out[:, :40]
        assert np.abs(border - centre[:, :1].mean(axis=(0, 1))).mean() > 3  # painted, not the flat fill colour
    job, images = asyncio.run(stored(data_dir, zoom["job_id"]))
    assert (job.kind, job.parent_id, job.parent_index, len(images)) == ("edit", source["job_id"], 0, 4)
    assert job.options["edit"] == "zoom" and job.request_json["parent"] == f"{source['job_id']}#1"
    meta = read_metadata(zoom["files"][0])
    assert meta["a1111"]["Edit"] == "zoom 2" and meta["a1111"]["Edit of"] == f"{source['job_id']}#1"


def test_pan_left_grows_the_picture_and_keeps_its_pixels(source: dict, tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    code, [pan], err = run(capsys, "pan", source["job_id"], "2", "--direction", "left", "--out", str(tmp_path / "p"))
    assert code == 0, err
    assert (pan["width"], pan["height"]) == (256, 64)
    original = _array(source["files"][1])
    band = feather_for(256, 64)
    for file in pan["files"]:
        out = _array(file)
        assert np.array_equal(out[:, 64 + band:], original[:, band:])
        assert np.abs(out[:, :48] - original[:, :48]).mean() > 3


def test_make_square_on_a_wide_picture_gives_a_square(source: dict, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    code, [square], err = run(capsys, "square", source["job_id"], "1", "--out", str(tmp_path / "s"))
    assert code == 0, err
    assert (square["width"], square["height"]) == (192, 192)
    with Image.open(square["grid"]) as grid:
        assert grid.size == (384, 384)


@pytest.mark.parametrize("how", [("--cells", "a1,b1"), ("--where", "the sky")])
def test_vary_region_repaints_inside_and_keeps_outside(source: dict, data_dir: Path, tmp_path: Path,
                                                       tiny_models: dict[str, Path], capsys: pytest.CaptureFixture[str],
                                                       monkeypatch: pytest.MonkeyPatch, how: tuple[str, str]) -> None:
    monkeypatch.setenv("SEGMENT_MODEL_ID", str(tiny_models["clipseg"]))
    code, [edit], err = run(capsys, "region", source["job_id"], "1", *how, "--prompt", "a red sky",
                            "--out", str(tmp_path / "r"))
    assert code == 0, err
    original = _array(source["files"][0])
    band = feather_for(192, 64)
    with Image.open(source["files"][0]) as picture:
        if how[0] == "--cells":  # a1,b1: the left two thirds of the top row
            region = Image.new("L", (192, 64), 0)
            region.paste(255, (0, 0, 128, 21))
        else:  # the region model's own answer for the text (the random tiny CLIPSeg: speckles)
            region = Segmenter(str(tiny_models["clipseg"])).mask(picture.convert("RGB"), "the sky")
    inside = np.asarray(region) > 127
    outside = ~(np.asarray(grow(region, band)) > 127)
    job, _ = asyncio.run(stored(data_dir, edit["job_id"]))
    assert job.options["by"] == {"--cells": "cells", "--where": "where"}[how[0]] and job.request_json["edit"].startswith("region")
    assert np.array_equal(_array(job.options["mask"])[..., 0] > 127, ~outside)  # the stored mask is the region + band
    for file in edit["files"]:
        out = _array(file)
        assert np.abs(out[inside] - original[inside]).mean() > 3  # repainted
        assert np.array_equal(out[outside], original[outside])  # kept exactly


def test_the_region_model_turns_text_into_a_mask(tiny_models: dict[str, Path]) -> None:
    segmenter = Segmenter(str(tiny_models["clipseg"]))
    picture = Image.fromarray(np.random.default_rng(0).integers(0, 256, (48, 80, 3), dtype=np.uint8), "RGB")
    sky = np.asarray(segmenter.mask(picture, "the sky"))
    assert sky.shape == (48, 80) and set(np.unique(sky)) == {0, 255}
    assert np.array_equal(sky, np.asarray(segmenter.mask(picture, "  the   sky ")))  # same text, same mask
    assert not np.array_equal(sky, np.asarray(segmenter.mask(picture, "her hat")))
    for text, message in (("", "Describe the region"), ("x" * 201, "at most 200")):
        with pytest.raises(PromptError, match=message):
            segmenter.mask(picture, text)


def test_bad_edits_are_refused_with_a_clear_line(source: dict, tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    job = source["job_id"]
    wrong_size, grey = tmp_path / "wrong.png", tmp_path / "grey.png"
    Image.new("L", (64, 64), 255).save(wrong_size)
    Image.new("L", (192, 64), 128).save(grey)
    for argv, message in [
        (("pan", job, "1", "--direction", "sideways"), "left, right, up, down"),
        (("zoom", job, "1", "--factor", "3"), "Zoom must be from 1 to 2"),
        (("zoom", job, "9"), "has no image 9"),
        (("region", job, "1", "--mask", str(wrong_size)), "the picture is 192x64"),
        (("region", job, "1", "--mask", str(grey)), "not black and white"),
        (("region", job, "1", "--cells", "z9"), "Unknown cell"),
    ]:
        code, results, err = run(capsys, *argv, "--out", str(tmp_path / "x"))
        assert code == 1 and results == [] and message in err, (argv, err)
        assert len(err.strip().splitlines()) == 1

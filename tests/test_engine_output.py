"""Grids, latent previews and PNG metadata (A1111 `parameters` + `tessera` JSON)."""

from __future__ import annotations

import io
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from engine.diffusion.preview import latents_to_preview
from engine.imaging.grid import make_grid
from engine.imaging.metadata import a1111_parameters, parse_parameters, pnginfo_for, read_metadata
from engine.prompt import WeightedText
from engine.request import GenerationRequest


def request() -> GenerationRequest:
    return GenerationRequest(
        prompts=(WeightedText("a lighthouse, at dusk"), WeightedText("oil painting", 0.5), WeightedText("boats", -1)),
        negative=("fog", "people"), width=704, height=384, steps=30, guidance=7.5, seed=4294967295,
        sampler="euler_a", model="/models/dreamshaper-8", chaos=20, stop=80, text="a lighthouse…",
        model_family="sd1", aspect="16:9")


@pytest.mark.parametrize("size", [(3, 2), (2, 5), (4, 4)])
def test_grid_places_each_image_exactly(size: tuple[int, int]) -> None:
    w, h = size
    colors = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (9, 9, 9)]
    grid = make_grid([Image.new("RGB", size, c) for c in colors])
    assert grid.size == (2 * w, 2 * h)
    array = np.asarray(grid)
    for index, color in enumerate(colors):
        x, y = (index % 2) * w, (index // 2) * h
        assert (array[y:y + h, x:x + w] == color).all()  # every pixel of the cell, no border
    with pytest.raises(ValueError):
        make_grid([Image.new("RGB", (2, 2)), Image.new("RGB", (3, 2))])


def test_preview_from_latents_without_the_vae() -> None:
    latents = torch.zeros(4, 4, 6, 10)
    latents[0, 0] = 3.0  # a bright first image (channel 0 is mostly luminance)
    preview = latents_to_preview(latents, "sd1")
    assert preview.size == (20, 12)
    array = np.asarray(preview).astype(int)
    assert array[:6, :10].mean() > array[6:, 10:].mean() + 50
    single = latents_to_preview(latents[1], "sdxl", scale=4)
    assert single.size == (40, 24) and single.mode == "RGB"


def test_png_carries_a1111_parameters_and_the_full_request(tmp_path: Path) -> None:
    req = request()
    path = tmp_path / "image.png"
    Image.new("RGB", (8, 8)).save(path, pnginfo=pnginfo_for(req, index=1, extra_steps=[{"upscale": 4}]))
    meta = read_metadata(path)
    assert meta["tessera"]["seed"] == 0 and meta["tessera"]["index"] == 1  # (2**32 - 1 + 1) mod 2**32
    assert GenerationRequest.from_json(meta["tessera"]["request"]) == replace(req, model="dreamshaper-8")  # no path
    assert meta["tessera"]["extra_steps"] == [{"upscale": 4}]
    a1111 = meta["a1111"]
    assert a1111["prompt"] == "a lighthouse, at dusk::1 oil painting::0.5"
    assert a1111["negative_prompt"] == "boats, fog, people"
    assert (a1111["Steps"], a1111["Sampler"], a1111["CFG scale"], a1111["Seed"]) == ("30", "Euler a", "7.5", "0")
    assert (a1111["Size"], a1111["Model"]) == ("704x384", "dreamshaper-8")
    with open(path, "rb") as handle:
        assert read_metadata(handle.read()) == meta


def test_a1111_text_shape() -> None:
    text = a1111_parameters(request(), 0)
    lines = text.split("\n")
    assert lines[1] == "Negative prompt: boats, fog, people"
    assert lines[2].startswith("Steps: 30, Sampler: Euler a, CFG scale: 7.5, Seed: 4294967295, Size: 704x384")
    simple = GenerationRequest(prompts=(WeightedText("cat"),), negative=(), width=512, height=512, steps=20,
                               guidance=7.0, seed=1, sampler="dpmpp_2m", model="owner/model")
    parsed = parse_parameters(a1111_parameters(simple, 0))
    assert parsed["prompt"] == "cat" and parsed["negative_prompt"] == "" and parsed["Sampler"] == "DPM++ 2M"
    buffer = io.BytesIO()
    Image.new("RGB", (4, 4)).save(buffer, format="PNG")
    assert read_metadata(buffer.getvalue()) == {"parameters": None, "a1111": {}, "tessera": None}

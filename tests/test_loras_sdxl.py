"""SDXL LoRAs (`--lora name:w`) on the tiny SDXL model, against diffusers' StableDiffusionXLPipeline.

The SD 1.x LoRA paths are checked in tests/test_loras.py; SDXL differs in what a LoRA reaches:
a second text encoder (`text_encoder_2`, whose projected output is the pooled embedding) and
kohya's `lora_te1_` / `lora_te2_` prefixes for the two encoders.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from engine.diffusion.generate import Generator
from engine.diffusion.loras import BatchAdapters
from engine.diffusion.models import LoadedModel, load_model
from engine.prompt import WeightedText
from engine.request import GenerationRequest

torch.set_num_threads(2)


@pytest.fixture(scope="module")
def sdxl(tiny_models: dict[str, Path]) -> LoadedModel:
    return load_model(str(tiny_models["sdxl"]), device="cpu")


@pytest.fixture(scope="module")
def generator(sdxl: LoadedModel, tiny_models: dict[str, Path]) -> Generator:
    return Generator(sdxl, adapters=BatchAdapters(sdxl.pipe, sdxl.family, lora_dir=tiny_models["loras"]))


@pytest.fixture(scope="module")
def plain(generator: Generator) -> list[Image.Image]:
    return generator.generate([make_request()])[0]


def make_request(**changes: object) -> GenerationRequest:
    base = GenerationRequest(prompts=(WeightedText("a red lighthouse at dusk"),), negative=(), width=64, height=64,
                             steps=3, guidance=7.0, seed=1234, sampler="euler", model="tiny", count=2)
    return replace(base, **changes)


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image).astype(np.int16)


def mean_diff(a: Image.Image, b: Image.Image) -> float:
    return float(np.abs(pixels(a) - pixels(b)).mean())


def diffusers_xl_images(folder: Path, request: GenerationRequest,
                        loras: list[tuple[Path, float]]) -> list[Image.Image]:
    """The same request through diffusers' StableDiffusionXLPipeline (load_lora_weights + set_adapters)."""
    from diffusers import StableDiffusionXLPipeline

    pipe = StableDiffusionXLPipeline.from_pretrained(str(folder))
    pipe.set_progress_bar_config(disable=True)
    names = [f"ref{i}" for i in range(len(loras))]
    for name, (path, _) in zip(names, loras, strict=True):
        pipe.load_lora_weights(str(path), adapter_name=name)
    if loras:
        pipe.set_adapters(names, [weight for _, weight in loras])
    generators = [torch.Generator("cpu").manual_seed(request.image_seed(i)) for i in range(request.count)]
    out = pipe(request.prompts[0].text, height=request.height, width=request.width,
               num_inference_steps=request.steps, guidance_scale=request.guidance,
               num_images_per_prompt=request.count, generator=generators, output_type="pil")
    return list(out.images)


@pytest.mark.parametrize("weight", [1.0, 0.6])
def test_sdxl_lora_equals_diffusers(generator: Generator, plain: list[Image.Image], tiny_models: dict[str, Path],
                                    weight: float) -> None:
    request = make_request(loras=(("tiny_xl", weight),))
    ours = generator.generate([request])[0]
    theirs = diffusers_xl_images(tiny_models["sdxl"], request, [(tiny_models["loras"] / "tiny_xl.safetensors", weight)])
    for a, b, c in zip(ours, theirs, plain, strict=True):
        assert mean_diff(a, b) <= 1.0, mean_diff(a, b)
        assert mean_diff(a, c) > 2  # the LoRA really changed the picture


def test_sdxl_lora_at_weight_zero_is_no_lora(generator: Generator, plain: list[Image.Image]) -> None:
    with_lora = generator.generate([make_request(loras=(("tiny_xl", 1.0),))])[0]
    zero = generator.generate([make_request(loras=(("tiny_xl", 0.0),))])[0]
    assert all(np.array_equal(pixels(a), pixels(b)) for a, b in zip(plain, zero, strict=True))
    assert mean_diff(plain[0], with_lora[0]) > 2
    again = generator.generate([make_request()])[0]  # nothing of the LoRA is left on the pipeline
    assert all(np.array_equal(pixels(a), pixels(b)) for a, b in zip(plain, again, strict=True))

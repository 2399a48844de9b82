"""Inpainting in Tessera's loop: the same pixels as diffusers' inpaint pipelines, and the paste-back.

Parity is checked for SD 1.x and SDXL, with ordinary (4-channel) and inpainting (9-channel)
UNets, on the tiny models loaded through the product's own loader: each image of a Tessera
batch must equal a diffusers run of that image alone with a generator seeded like it
(mean absolute difference at most 1/255).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from engine.diffusion.generate import Generator
from engine.diffusion.models import LoadedModel, load_model
from engine.errors import ModelError
from engine.imaging.canvas import paste_alpha, zoom_canvas
from engine.prompt import WeightedText
from engine.request import GenerationRequest
from engine.samplers import make_scheduler

SIZE = 64


@pytest.fixture(scope="module")
def models(tiny_models: dict[str, Path]) -> dict[str, LoadedModel]:
    return {name: load_model(str(tiny_models[name]), device="cpu")
            for name in ("sd15", "sd15-inpaint", "sdxl", "sdxl-inpaint")}


def _files(tmp_path: Path) -> tuple[Path, Path]:
    rng = np.random.default_rng(3)
    source = Image.fromarray(rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8), "RGB")
    canvas = zoom_canvas(source, 2.0, (SIZE, SIZE), feather=8)
    init, mask = tmp_path / "canvas.png", tmp_path / "mask.png"
    canvas.image.save(init)
    canvas.mask.save(mask)
    return init, mask


def _request(model: LoadedModel, init: Path, mask: Path, *, strength: float, sampler: str, feather: int = 0,
             count: int = 2, seed: int = 11) -> GenerationRequest:
    return GenerationRequest(
        prompts=(WeightedText("a red bird", 1.0),), negative=(), width=SIZE, height=SIZE, steps=4, guidance=7.0,
        seed=seed, sampler=sampler, model=model.ref, count=count, init_image=str(init), strength=strength,
        mask_image=str(mask), feather=feather, model_family=model.family,
    )


def _diffusers(model: LoadedModel, request: GenerationRequest, index: int) -> Image.Image:
    import torch
    from diffusers import AutoPipelineForInpainting

    pipe = AutoPipelineForInpainting.from_pipe(model.pipe)
    pipe.scheduler = make_scheduler(model.pipe.scheduler.config, request.sampler)
    pipe.set_progress_bar_config(disable=True)
    with Image.open(request.init_image or "") as init, Image.open(request.mask_image or "") as mask:
        out = pipe(prompt=request.prompts[0].text, image=init.convert("RGB"), mask_image=mask.convert("L"),
                   height=request.height, width=request.width, num_inference_steps=request.steps,
                   strength=request.strength, guidance_scale=request.guidance,
                   generator=torch.Generator("cpu").manual_seed(request.image_seed(index)))
    return out.images[0]


def _mad(a: Image.Image, b: Image.Image) -> float:
    return float(np.abs(np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)).mean()) / 255


@pytest.mark.parametrize(("name", "sampler", "strength"), [
    ("sd15", "euler_a", 1.0), ("sd15", "euler", 0.75), ("sd15-inpaint", "euler_a", 1.0),
    ("sd15-inpaint", "euler", 0.75), ("sdxl", "euler_a", 1.0), ("sdxl-inpaint", "euler", 0.75),
])
def test_inpainting_matches_the_diffusers_pipeline(models: dict[str, LoadedModel], tmp_path: Path, name: str,
                                                   sampler: str, strength: float) -> None:
    model = models[name]
    assert model.pipe.unet.config.in_channels == (9 if name.endswith("inpaint") else 4)
    init, mask = _files(tmp_path)
    request = _request(model, init, mask, strength=strength, sampler=sampler)
    images = Generator(model).generate([request])[0]
    for index, image in enumerate(images):
        assert _mad(image, _diffusers(model, request, index)) <= 1 / 255, (name, index)
    assert _mad(images[0], images[1]) > 5 / 255  # each image has its own seed


def test_paste_back_keeps_every_pixel_outside_the_mask(models: dict[str, LoadedModel], tmp_path: Path) -> None:
    model = models["sd15"]
    init, mask = _files(tmp_path)
    raw = Generator(model).generate([_request(model, init, mask, strength=1.0, sampler="euler_a")])[0]
    pasted = Generator(model).generate([_request(model, init, mask, strength=1.0, sampler="euler_a",
                                                 feather=8)])[0]
    with Image.open(init) as canvas_file, Image.open(mask) as mask_file:
        canvas, outside = np.asarray(canvas_file.convert("RGB")), np.asarray(mask_file) <= 127
        alpha = np.asarray(paste_alpha(mask_file, 8))
    for image, plain in zip(pasted, raw, strict=True):
        array = np.asarray(image)
        assert np.array_equal(array[outside], canvas[outside])
        assert not np.array_equal(np.asarray(plain)[outside], canvas[outside])  # the VAE alone shifts them
        full = alpha == 255
        assert np.array_equal(array[full], np.asarray(plain)[full])  # the painted part is the model's


def test_a_batch_of_edits_gives_the_same_images_as_single_runs(models: dict[str, LoadedModel],
                                                                tmp_path: Path) -> None:
    model = models["sd15-inpaint"]
    init, mask = _files(tmp_path)
    a = _request(model, init, mask, strength=1.0, sampler="euler_a", seed=5)
    b = _request(model, init, mask, strength=1.0, sampler="euler_a", seed=99)
    together = Generator(model).generate([a, b])
    alone = [Generator(model).generate([r])[0] for r in (a, b)]
    for batch_images, single_images in zip(together, alone, strict=True):
        for x, y in zip(batch_images, single_images, strict=True):
            assert _mad(x, y) <= 1 / 255


def test_an_inpainting_model_refuses_plain_prompts(models: dict[str, LoadedModel]) -> None:
    model = models["sd15-inpaint"]
    request = GenerationRequest(prompts=(WeightedText("a bird", 1.0),), negative=(), width=SIZE, height=SIZE,
                                steps=2, guidance=7.0, seed=1, sampler="euler", model=model.ref, count=1)
    with pytest.raises(ModelError, match="INPAINT_MODEL_ID"):
        Generator(model).generate([request])

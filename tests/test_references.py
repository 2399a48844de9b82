"""Pictures as prompts (IP-Adapter) on the tiny SD 1.5 and SDXL models, against diffusers."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from engine.diffusion.generate import Generator
from engine.diffusion.models import LoadedModel, load_model
from engine.diffusion.references import AdapterFiles, style_scale
from engine.errors import ModelError
from engine.prompt import WeightedText
from engine.request import GenerationRequest
from tests.fixtures.tiny_models import IMAGE_ENCODER_FOLDER, IP_ADAPTER_FILES

torch.set_num_threads(2)

SAMPLER = {"sd15": "euler_a", "sdxl": "euler"}  # each tiny model's own scheduler


def adapter_files(tiny_models: dict[str, Path], family: str, *, face: bool = True) -> AdapterFiles:
    style, face_file = IP_ADAPTER_FILES[family]
    return AdapterFiles(repo=str(tiny_models["ip_adapter"]), style=style, face=face_file if face else "",
                        image_encoder=IMAGE_ENCODER_FOLDER)


def picture(path: Path, seed: int, size: tuple[int, int] = (48, 40)) -> Path:
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8), "RGB").save(path)
    return path


def request(family: str, **changes: object) -> GenerationRequest:
    base = GenerationRequest(prompts=(WeightedText("a red lighthouse at dusk"),), negative=(), width=64, height=64,
                             steps=3, guidance=7.0, seed=1234, sampler=SAMPLER[family], model="tiny", count=2)
    return replace(base, **changes)


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image).astype(np.float64)


@pytest.fixture(scope="module", params=["sd15", "sdxl"])
def family(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(scope="module")
def loaded(family: str, tiny_models: dict[str, Path]) -> LoadedModel:
    return load_model(str(tiny_models[family]), device="cpu")


@pytest.fixture(scope="module")
def generator(loaded: LoadedModel, family: str, tiny_models: dict[str, Path]) -> Generator:
    return Generator(loaded, reference_files=adapter_files(tiny_models, family))


@pytest.fixture(scope="module")
def diffusers_pipe(family: str, tiny_models: dict[str, Path]) -> object:
    """diffusers' own pipeline for the family, with its plain IP-Adapter loaded by `load_ip_adapter`."""
    from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline

    cls = StableDiffusionXLPipeline if family == "sdxl" else StableDiffusionPipeline
    pipe = cls.from_pretrained(str(tiny_models[family]))
    pipe.set_progress_bar_config(disable=True)
    subfolder, _, weight = IP_ADAPTER_FILES[family][0].rpartition("/")
    pipe.load_ip_adapter(str(tiny_models["ip_adapter"]), subfolder=subfolder, weight_name=weight,
                         image_encoder_folder=IMAGE_ENCODER_FOLDER)
    return pipe


def diffusers_sref(pipe: Any, refs: list[Path], sw: int, req: GenerationRequest) -> list[np.ndarray]:
    """The same prompt through diffusers' pipeline with InstantStyle's per-block scale (the
    style layers: `up_blocks.0.attentions.1` in the tiny UNets)."""
    pipe.set_ip_adapter_scale({"up": {"block_0": [0.0, style_scale(sw), 0.0]}})
    generators = [torch.Generator("cpu").manual_seed(req.image_seed(i)) for i in range(req.count)]
    images = [Image.open(p).convert("RGB") for p in refs]
    out = pipe(req.prompts[0].text, ip_adapter_image=[images], num_inference_steps=req.steps,
               guidance_scale=req.guidance, generator=generators, num_images_per_prompt=req.count,
               height=req.height, width=req.width, output_type="pil")
    return [pixels(im) for im in out.images]


@pytest.mark.parametrize("count", [1, 2])
def test_sref_gives_diffusers_pixels(generator: Generator, family: str, diffusers_pipe: Any,
                                     tmp_path: Path, count: int) -> None:
    refs = [picture(tmp_path / f"ref{i}.png", seed=i) for i in range(count)]
    req = request(family, style_refs=tuple(str(p) for p in refs), style_weight=250)
    ours = [pixels(im) for im in generator.generate([req])[0]]
    theirs = diffusers_sref(diffusers_pipe, refs, 250, req)
    for a, b in zip(ours, theirs, strict=True):
        assert np.abs(a - b).mean() <= 1.0, np.abs(a - b).mean()
    plain = [pixels(im) for im in generator.generate([request(family)])[0]]
    assert np.abs(ours[0] - plain[0]).mean() > 1.0  # the reference did change the picture


def test_sw_zero_equals_no_reference(generator: Generator, family: str, tmp_path: Path) -> None:
    ref = picture(tmp_path / "ref.png", seed=7)
    with_zero = generator.generate([request(family, style_refs=(str(ref),), style_weight=0)])[0]
    plain = generator.generate([request(family)])[0]
    for a, b in zip(with_zero, plain, strict=True):
        assert np.array_equal(pixels(a), pixels(b))


def test_cref_changes_the_images_and_cw_weighs_it(generator: Generator, family: str, tmp_path: Path) -> None:
    ref = str(picture(tmp_path / "face.png", seed=3))
    plain = pixels(generator.generate([request(family, count=1)])[0][0])
    full = pixels(generator.generate([request(family, count=1, character_refs=(ref,), character_weight=100)])[0][0])
    face_only = pixels(generator.generate([request(family, count=1, character_refs=(ref,),
                                                   character_weight=0)])[0][0])
    assert np.abs(full - plain).mean() > np.abs(face_only - plain).mean() > 0.5


def test_requests_with_references_batch_like_single_runs(generator: Generator, family: str,
                                                         tmp_path: Path) -> None:
    a = request(family, count=1, style_refs=(str(picture(tmp_path / "a.png", seed=1)),))
    b = request(family, count=1, seed=99, style_refs=(str(picture(tmp_path / "b.png", seed=2)),))
    assert a.batch_key() == b.batch_key()
    together = generator.generate([a, b])
    alone = [generator.generate([a])[0], generator.generate([b])[0]]
    for x, y in zip(together, alone, strict=True):
        assert np.abs(pixels(x[0]) - pixels(y[0])).max() <= 2


def test_blend_averages_the_pictures_embeddings(generator: Generator, family: str, tmp_path: Path) -> None:
    pics = [str(picture(tmp_path / f"p{i}.png", seed=10 + i)) for i in range(3)]
    blank = request(family, prompts=(), count=1)
    mixed = pixels(generator.generate([replace(blank, blend_refs=tuple(pics))])[0][0])
    again = pixels(generator.generate([replace(blank, blend_refs=tuple(reversed(pics)))])[0][0])
    other = pixels(generator.generate([replace(blank, blend_refs=tuple(pics[:2]))])[0][0])
    assert np.abs(mixed - again).max() <= 2  # a mean: the order does not matter
    assert np.abs(mixed - other).mean() > 0.5


def test_references_without_the_adapter_name_the_setting(loaded: LoadedModel, family: str,
                                                         tmp_path: Path) -> None:
    ref = str(picture(tmp_path / "ref.png", seed=1))
    with pytest.raises(ModelError, match="IP_ADAPTER_REPO"):
        Generator(loaded).generate([request(family, style_refs=(ref,))])


def test_image_links_act_through_the_embedding_too_when_the_adapter_is_set_up(
        generator: Generator, loaded: LoadedModel, family: str, tmp_path: Path) -> None:
    init = str(picture(tmp_path / "init.png", seed=5, size=(64, 64)))
    linked = request(family, count=1, init_image=init, strength=0.9, image_prompts=("https://i.example/a.png",),
                     image_weight=2.0)
    with_adapter = pixels(generator.generate([linked])[0][0])
    init_only = pixels(Generator(loaded).generate([linked])[0][0])  # no adapter files: the init image alone
    assert np.abs(with_adapter - init_only).mean() > 0.5
    # A variation is image-to-image from its source only, adapter or not.
    variation = replace(linked, variation="subtle")
    assert np.array_equal(pixels(generator.generate([variation])[0][0]),
                          pixels(Generator(loaded).generate([variation])[0][0]))

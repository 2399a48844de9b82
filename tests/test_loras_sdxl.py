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
from engine.diffusion.loras import BatchAdapters, Catalog
from engine.diffusion.models import LoadedModel, load_model
from engine.errors import ModelError
from engine.prompt import PromptContext, WeightedText, parse
from engine.request import GenerationRequest, resolve

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


def typed(sdxl: LoadedModel, tiny_models: dict[str, Path], text: str) -> GenerationRequest:
    """The request a member's prompt becomes (parse against the LoRA folder's names, resolve)."""
    context = PromptContext(loras=Catalog(tiny_models["loras"]).names())
    request = resolve(parse(text, context=context).expansions[0], profile=replace(sdxl.profile, native=64, steps=3),
                      model="tiny", sampler="euler")
    return replace(request, count=2)


@pytest.mark.parametrize("weight", ["1", "0.6"])
@pytest.mark.parametrize("name", ["tiny_xl", "tiny_xl_kohya"])  # diffusers layout, kohya layout (lora_te1_/te2_)
def test_sdxl_lora_equals_diffusers(generator: Generator, sdxl: LoadedModel, tiny_models: dict[str, Path],
                                    name: str, weight: str) -> None:
    request = typed(sdxl, tiny_models, f"a red lighthouse at dusk --lora {name}:{weight} --seed 1234")
    assert request.loras == ((name, float(weight)),) and (request.width, request.steps) == (64, 3)
    ours = generator.generate([request])[0]
    theirs = diffusers_xl_images(tiny_models["sdxl"], request,
                                 [(tiny_models["loras"] / f"{name}.safetensors", float(weight))])
    plain = generator.generate([replace(request, loras=())])[0]
    for a, b, c in zip(ours, theirs, plain, strict=True):
        assert mean_diff(a, b) <= 1.0, mean_diff(a, b)
        assert mean_diff(a, c) > 2  # the LoRA really changed the picture


def test_two_sdxl_loras_together_equal_diffusers(generator: Generator, tiny_models: dict[str, Path]) -> None:
    request = make_request(loras=(("tiny_xl", 0.7), ("tiny_xl_kohya", 0.4)), seed=99)
    ours = generator.generate([request])[0]
    theirs = diffusers_xl_images(tiny_models["sdxl"], request,
                                 [(tiny_models["loras"] / f"{name}.safetensors", w) for name, w in request.loras])
    for a, b in zip(ours, theirs, strict=True):
        assert mean_diff(a, b) <= 1.0, mean_diff(a, b)


@pytest.mark.parametrize("name", ["tiny_xl", "tiny_xl_kohya"])
def test_sdxl_lora_reaches_both_text_encoders(generator: Generator, name: str) -> None:
    """Each text encoder's output moves with the LoRA's weight, and comes back without it: the
    pooled embedding is text_encoder_2's alone, the first 32 features of the hidden states text_encoder's."""
    text = "a red lighthouse at dusk"
    outputs = []
    for loras in ((), ((name, 1.0),), ((name, 0.5),), ()):
        generator.adapters.prepare([make_request(loras=loras)])
        outputs.append(generator.encoder.encode_text(text))
    width = generator.pipe.text_encoder.config.hidden_size
    for part in (lambda e: e[0][..., :width], lambda e: e[0][..., width:], lambda e: e[1]):
        plain, full, half, again = (part(e) for e in outputs)
        assert torch.equal(plain, again)
        assert (full - plain).abs().mean() > 1e-3 and (half - plain).abs().mean() > 1e-3
        assert not torch.allclose(full, half)


def test_sdxl_lora_at_weight_zero_is_no_lora(generator: Generator, plain: list[Image.Image]) -> None:
    with_lora = generator.generate([make_request(loras=(("tiny_xl", 1.0),))])[0]
    zero = generator.generate([make_request(loras=(("tiny_xl", 0.0),))])[0]
    assert all(np.array_equal(pixels(a), pixels(b)) for a, b in zip(plain, zero, strict=True))
    assert mean_diff(plain[0], with_lora[0]) > 2
    again = generator.generate([make_request()])[0]  # nothing of the LoRA is left on the pipeline
    assert all(np.array_equal(pixels(a), pixels(b)) for a, b in zip(plain, again, strict=True))


def test_a_lora_that_fails_part_way_leaves_nothing_behind(tiny_models: dict[str, Path], tmp_path: Path) -> None:
    """diffusers loads an SDXL LoRA into unet, text_encoder, then text_encoder_2; when the last
    part does not fit, the first two stayed loaded and active: every later job (anyone's) ran
    with them, and the file could never be retried ("adapter name already in use")."""
    from safetensors.torch import load_file, save_file

    source = tiny_models["loras"] / "tiny_xl.safetensors"
    (tmp_path / "good.safetensors").write_bytes(source.read_bytes())
    state = load_file(str(source))
    assert any(key.startswith("text_encoder_2.") for key in state)
    save_file({key: torch.zeros(value.shape[0], value.shape[1] + 3) if key.startswith("text_encoder_2.")
               and ".down." in key else value for key, value in state.items()}, str(tmp_path / "bad.safetensors"))
    model = load_model(str(tiny_models["sdxl"]), device="cpu")  # its own pipeline: no adapters yet
    generator = Generator(model, adapters=BatchAdapters(model.pipe, model.family, lora_dir=tmp_path))
    request = make_request(count=1, steps=2)
    plain = generator.generate([request])[0][0]
    for _ in range(2):  # and a second time: the same sentence, not "already in use"
        with pytest.raises(ModelError) as error:
            generator.generate([replace(request, loras=(("bad", 1.0),))])
        assert np.array_equal(pixels(generator.generate([request])[0][0]), pixels(plain))
        assert str(error.value) == "the LoRA bad does not fit this model (SDXL); choose another one"
    good = generator.generate([replace(request, loras=(("good", 1.0),))])[0][0]
    assert mean_diff(good, plain) > 2
    with pytest.raises(ModelError):
        generator.generate([replace(request, loras=(("bad", 0.5),))])
    again = generator.generate([replace(request, loras=(("good", 1.0),))])[0][0]  # the set before the failure
    assert np.array_equal(pixels(again), pixels(good))
    assert np.array_equal(pixels(generator.generate([request])[0][0]), pixels(plain))


def test_a_lora_file_with_mixed_dtypes_is_not_taken_for_another_family(plain: list[Image.Image],
                                                                        tiny_models: dict[str, Path],
                                                                        tmp_path: Path) -> None:
    """safetensors files list tensors by dtype first: when a `down_blocks` up matrix comes
    first, its width (the rank) was read as the text-feature width and a fitting LoRA refused."""
    from safetensors.torch import load_file, save_file

    state = load_file(str(tiny_models["loras"] / "tiny_xl.safetensors"))
    mixed = {key: value if "down_blocks" in key and "attn2.to_k" in key and ".up." in key else value.half()
             for key, value in state.items()}
    save_file(mixed, str(tmp_path / "mixed.safetensors"))
    first = next(key for key in load_file(str(tmp_path / "mixed.safetensors")) if "attn2" in key)
    assert "down_blocks" in first and first.endswith(".up.weight")  # the order that misled the check
    model = load_model(str(tiny_models["sdxl"]), device="cpu")
    own = Generator(model, adapters=BatchAdapters(model.pipe, model.family, lora_dir=tmp_path))
    images = own.generate([make_request(loras=(("mixed", 1.0),))])[0]
    assert mean_diff(images[0], plain[0]) > 2


def test_names_that_differ_only_in_dot_dash_underscore_are_two_loras(tiny_models: dict[str, Path],
                                                                       tmp_path: Path) -> None:
    """`ab.c`, `ab-c` and `ab_c` are three valid names (three files); as peft adapter names they
    all became `lora_ab_c`, so one replaced the other on the pipeline."""
    for name, source in (("ab.c", "tiny_xl"), ("ab_c", "tiny_xl_kohya"), ("tiny_xl", "tiny_xl"),
                         ("tiny_xl_kohya", "tiny_xl_kohya")):
        (tmp_path / f"{name}.safetensors").write_bytes((tiny_models["loras"] / f"{source}.safetensors").read_bytes())
    model = load_model(str(tiny_models["sdxl"]), device="cpu")
    own = Generator(model, adapters=BatchAdapters(model.pipe, model.family, lora_dir=tmp_path))
    request = make_request(count=1, steps=2)
    expected = own.generate([replace(request, loras=(("tiny_xl", 0.7), ("tiny_xl_kohya", 0.4)))])[0][0]
    both = own.generate([replace(request, loras=(("ab.c", 0.7), ("ab_c", 0.4)))])[0][0]
    assert np.array_equal(pixels(both), pixels(expected))
    assert np.array_equal(pixels(own.generate([replace(request, loras=(("ab.c", 1.0),))])[0][0]),
                          pixels(own.generate([replace(request, loras=(("tiny_xl", 1.0),))])[0][0]))

"""LoRAs, embeddings and draft mode on the tiny models, against diffusers' own pipelines."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from engine.diffusion.generate import Generator
from engine.diffusion.loras import BatchAdapters, Catalog, LoraCache
from engine.diffusion.models import LoadedModel, load_model
from engine.errors import PromptError
from engine.prompt import WeightedText
from engine.request import GenerationRequest

torch.set_num_threads(2)


@pytest.fixture(scope="module")
def sd15(tiny_models: dict[str, Path]) -> LoadedModel:
    return load_model(str(tiny_models["sd15"]), device="cpu")


@pytest.fixture(scope="module")
def generator(sd15: LoadedModel, tiny_models: dict[str, Path]) -> Generator:
    adapters = BatchAdapters(sd15.pipe, sd15.family, lora_dir=tiny_models["loras"],
                             embeddings_dir=tiny_models["embeddings"], draft_lora=tiny_models["draft_lora"])
    return Generator(sd15, adapters=adapters)


def make_request(**changes: object) -> GenerationRequest:
    base = GenerationRequest(prompts=(WeightedText("a red lighthouse at dusk"),), negative=(), width=64, height=64,
                             steps=3, guidance=7.0, seed=1234, sampler="euler_a", model="tiny", count=2)
    return replace(base, **changes)


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image).astype(np.int16)


def mean_diff(a: Image.Image, b: Image.Image) -> float:
    return float(np.abs(pixels(a) - pixels(b)).mean())


def diffusers_images(folder: Path, request: GenerationRequest, lora: Path | None, weight: float = 1.0,
                     embedding: Path | None = None) -> list[Image.Image]:
    """The same request through diffusers' StableDiffusionPipeline (load_lora_weights + set_adapters)."""
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(str(folder), safety_checker=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    if lora is not None:
        pipe.load_lora_weights(str(lora), adapter_name="ref")
        pipe.set_adapters(["ref"], [weight])
    if embedding is not None:
        from safetensors.torch import load_file

        pipe.load_textual_inversion(load_file(str(embedding))["emb_params"], token=f"<{embedding.stem}>")
    generators = [torch.Generator("cpu").manual_seed(request.image_seed(i)) for i in range(request.count)]
    out = pipe(request.prompts[0].text, height=request.height, width=request.width,
               num_inference_steps=request.steps, guidance_scale=request.guidance,
               num_images_per_prompt=request.count, generator=generators, output_type="pil")
    return list(out.images)


@pytest.mark.parametrize("name", ["tiny_style", "tiny_ink"])  # kohya layout, diffusers layout
def test_lora_at_weight_one_equals_diffusers(generator: Generator, tiny_models: dict[str, Path], name: str) -> None:
    request = make_request(loras=((name, 1.0),))
    ours = generator.generate([request])[0]
    theirs = diffusers_images(tiny_models["sd15"], request, tiny_models["loras"] / f"{name}.safetensors")
    plain = generator.generate([make_request()])[0]
    for a, b, c in zip(ours, theirs, plain, strict=True):
        assert mean_diff(a, b) <= 1.0, mean_diff(a, b)
        assert mean_diff(a, c) > 2  # the LoRA really changed the picture


def test_lora_at_weight_zero_is_no_lora(generator: Generator) -> None:
    plain = generator.generate([make_request()])[0]
    with_lora = generator.generate([make_request(loras=(("tiny_style", 1.0),))])[0]
    zero = generator.generate([make_request(loras=(("tiny_style", 0.0),))])[0]
    assert all(np.array_equal(pixels(a), pixels(b)) for a, b in zip(plain, zero, strict=True))
    assert mean_diff(plain[0], with_lora[0]) > 2
    # And once more without: nothing of the LoRA is left behind on the pipeline.
    again = generator.generate([make_request()])[0]
    assert all(np.array_equal(pixels(a), pixels(b)) for a, b in zip(plain, again, strict=True))


def test_lora_sets_batch_apart_and_match_running_alone(generator: Generator) -> None:
    a = make_request(loras=(("tiny_style", 0.8),), seed=5)
    b = make_request(loras=(("tiny_ink", 1.0), ("tiny_style", 0.5)), seed=6)
    assert a.batch_key() != b.batch_key()
    alone_a = generator.generate([a])[0]
    alone_b = generator.generate([b])[0]
    # The queue runs them one after the other (different batch keys); interleave to look for leaks.
    for _ in range(2):
        assert all(np.array_equal(pixels(x), pixels(y)) for x, y in zip(generator.generate([b])[0], alone_b,
                                                                           strict=True))
        assert all(np.array_equal(pixels(x), pixels(y)) for x, y in zip(generator.generate([a])[0], alone_a,
                                                                           strict=True))
    with pytest.raises(ValueError, match="batch_key"):
        generator.generate([a, b])


def test_switching_back_to_a_lora_reads_no_file(tiny_models: dict[str, Path]) -> None:
    model = load_model(str(tiny_models["sd15"]), device="cpu")  # its own pipeline: no adapters yet
    cache = LoraCache(size=4)
    adapters = BatchAdapters(model.pipe, model.family, lora_dir=tiny_models["loras"], cache=cache)
    adapters.prepare([make_request(loras=(("tiny_style", 1.0),))])
    adapters.prepare([make_request(loras=(("tiny_ink", 1.0),))])
    adapters.prepare([make_request(loras=(("tiny_style", 0.7),))])
    adapters.prepare([make_request()])
    assert cache.reads == 2


def test_a_lora_for_another_family_is_refused_by_name(generator: Generator) -> None:
    with pytest.raises(PromptError, match=r"tiny_xl is made for another model.*SD 1\.x"):
        generator.generate([make_request(loras=(("tiny_xl", 1.0),))])


def test_embedding_equals_diffusers_textual_inversion(generator: Generator, tiny_models: dict[str, Path]) -> None:
    request = make_request(prompts=(WeightedText("a <tinyemb> lighthouse"),), embeddings=("tinyemb",))
    ours = generator.generate([request])[0]
    theirs = diffusers_images(tiny_models["sd15"], request, None,
                              embedding=tiny_models["embeddings"] / "tinyemb.safetensors")
    for a, b in zip(ours, theirs, strict=True):
        assert mean_diff(a, b) <= 1.0, mean_diff(a, b)


def test_catalog_lists_previews_and_refreshes_on_change(tmp_path: Path) -> None:
    for name in ("Alpha", "beta_2", "gamma-x"):
        (tmp_path / f"{name}.safetensors").write_bytes(b"")
    (tmp_path / "beta_2.png").write_bytes(b"")
    (tmp_path / "bad name!.safetensors").write_bytes(b"")
    catalog = Catalog(tmp_path)
    assert catalog.names() == {"Alpha", "beta_2", "gamma-x"}
    assert catalog.get("beta_2").preview == tmp_path / "beta_2.png"
    assert catalog.search("a") == ["Alpha", "beta_2", "gamma-x"]
    assert catalog.search("ta") == ["beta_2"]
    (tmp_path / "delta.safetensors").write_bytes(b"")
    assert "delta" in catalog.names()


def test_draft_runs_the_lcm_path_and_enhance_reruns_the_seeds_in_full(generator: Generator,
                                                                        sd15: LoadedModel) -> None:
    from diffusers import LCMScheduler

    from engine.prompt import parse
    from engine.request import DraftProfile, enhance_of, resolve

    expansion = parse("a red lighthouse --draft --seed 77 --s 0").expansions[0]
    draft = resolve(expansion, profile=sd15.profile, model="tiny", sampler="euler_a",
                    draft=DraftProfile(steps=4, guidance=1.0, sampler="lcm"))
    assert (draft.draft, draft.steps, draft.guidance, draft.sampler) == (True, 4, 1.0, "lcm")
    steps: list[tuple[int, int]] = []
    images = generator.generate([replace(draft, width=64, height=64, count=2)],
                                on_step=lambda _, p: steps.append((p.step, p.total)))[0]
    assert steps == [(1, 4), (2, 4), (3, 4), (4, 4)]
    assert type(generator._scheduler("lcm")) is LCMScheduler
    full = enhance_of(draft, profile=sd15.profile, model="tiny", sampler="euler_a")
    assert (full.draft, full.seed, full.steps, full.sampler) == (False, 77, sd15.profile.steps, "euler_a")
    assert full.guidance == 3.0  # --s 0 on the model's 7.5: the floor applies again outside drafts
    enhanced = generator.generate([replace(full, width=64, height=64, count=2, steps=3)])[0]
    assert mean_diff(images[0], enhanced[0]) > 1
    # The draft LoRA is part of the draft's batch only: without --draft it is gone.
    without = generator.generate([replace(draft, draft=False, width=64, height=64, count=2)])[0]
    assert mean_diff(images[0], without[0]) > 1


def test_draft_without_a_configured_path_is_refused(sd15: LoadedModel) -> None:
    from engine.prompt import parse
    from engine.request import resolve

    with pytest.raises(PromptError, match="--draft is not set up"):
        resolve(parse("a cat --turbo").expansions[0], profile=sd15.profile, model="tiny", sampler="euler_a")


def test_a1111_parameters_name_loras_embeddings_and_draft() -> None:
    from engine.imaging.metadata import a1111_parameters

    request = make_request(prompts=(WeightedText("a <tinyemb> cat"),), embeddings=("tinyemb",),
                           loras=(("tiny_ink", 0.5), ("tiny_style", 1.0)), draft=True)
    text = a1111_parameters(request, 0)
    assert text.splitlines()[0] == "a tinyemb cat <lora:tiny_ink:0.5> <lora:tiny_style:1>"
    assert "Draft: True" in text
    assert GenerationRequest.from_json(request.to_json()) == request


def test_draft_equals_diffusers_with_the_lcm_lora_and_lcm_scheduler(generator: Generator,
                                                                     tiny_models: dict[str, Path]) -> None:
    """--draft is a new generation path: the same pixels as diffusers' pipeline with the draft
    LoRA (load_lora_weights + set_adapters) and its LCMScheduler, at the draft's steps and guidance."""
    from diffusers import LCMScheduler, StableDiffusionPipeline

    request = make_request(draft=True, sampler="lcm", steps=4, guidance=1.0, seed=77)
    ours = generator.generate([request])[0]
    pipe = StableDiffusionPipeline.from_pretrained(str(tiny_models["sd15"]), safety_checker=None,
                                                   requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    pipe.scheduler = LCMScheduler.from_config(pipe.scheduler.config)
    pipe.load_lora_weights(str(tiny_models["draft_lora"]), adapter_name="draft")
    pipe.set_adapters(["draft"], [1.0])
    generators = [torch.Generator("cpu").manual_seed(request.image_seed(i)) for i in range(request.count)]
    theirs = pipe(request.prompts[0].text, height=request.height, width=request.width,
                  num_inference_steps=request.steps, guidance_scale=request.guidance,
                  num_images_per_prompt=request.count, generator=generators, output_type="pil").images
    plain = generator.generate([replace(request, draft=False)])[0]
    for a, b, c in zip(ours, theirs, plain, strict=True):
        assert mean_diff(a, b) <= 1.0, mean_diff(a, b)
        assert mean_diff(a, c) > 1  # the draft LoRA really took part


def test_shorten_after_a_lora_batch_measures_the_model_without_it(generator: Generator) -> None:
    """The LoRA set of the last batch stays on the pipeline: /shorten must not weigh words with
    a text encoder a stranger's LoRA changed."""
    from engine.diffusion.shorten import ShortenTask, shorten
    from engine.prompt import parse

    task = ShortenTask.from_expansion(parse("a red lighthouse on a rocky cliff at dusk").expansions[0])
    plain = shorten(generator.plain_encoder(), task)
    generator.generate([make_request(loras=(("tiny_style", 1.0),), count=1, steps=1)])
    assert generator.adapters.loras.activate([("tiny_style", 1.0)]) is False  # the batch left it active
    assert shorten(generator.encoder, task) != plain  # the LoRA reaches the text encoder...
    assert shorten(generator.plain_encoder(), task) == plain  # ...and /shorten measures without it

"""Generation on the tiny SD 1.5 and SDXL models, through the same loading code as real weights."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from engine.diffusion.conditioning import NO_ITEM_WEIGHT, chaos_for_image
from engine.diffusion.generate import Generator, StepProgress
from engine.diffusion.models import LoadedModel, load_model
from engine.errors import JobCancelled
from engine.prompt import Expansion, Params, WeightedText
from engine.request import GenerationRequest, resolve, variation_of

torch.set_num_threads(2)


@pytest.fixture(scope="module", params=["sd15", "sdxl"])
def model(request: pytest.FixtureRequest, tiny_models: dict[str, Path]) -> LoadedModel:
    return load_model(str(tiny_models[request.param]), device="cpu")


@pytest.fixture(scope="module")
def sd15(tiny_models: dict[str, Path]) -> LoadedModel:
    return load_model(str(tiny_models["sd15"]), device="cpu")


def make_request(**changes: object) -> GenerationRequest:
    base = GenerationRequest(prompts=(WeightedText("a red lighthouse at dusk"),), negative=(), width=64, height=64,
                             steps=2, guidance=7.0, seed=1234, sampler="euler_a", model="tiny", count=2)
    return replace(base, **changes)


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image).astype(np.int16)


def assert_same(a: Image.Image, b: Image.Image) -> None:
    """Equal up to float rounding of batch-size-dependent CPU kernels (a 1/255 step, rarely)."""
    diff = np.abs(pixels(a) - pixels(b))
    assert diff.max() <= 2 and (diff > 0).mean() < 0.01, (diff.max(), (diff > 0).mean())


def mean_diff(a: Image.Image, b: Image.Image) -> float:
    return float(np.abs(pixels(a) - pixels(b)).mean())


def test_same_seed_same_images_and_a_new_seed_changes_them(model: LoadedModel) -> None:
    generator = Generator(model)
    first = generator.generate([make_request(count=4)])[0]
    again = generator.generate([make_request(count=4)])[0]
    other = generator.generate([make_request(seed=99, count=4)])[0]
    assert len(first) == 4 and all(im.size == (64, 64) and im.mode == "RGB" for im in first)
    assert all(np.array_equal(pixels(a), pixels(b)) for a, b in zip(first, again, strict=True))
    assert all(mean_diff(a, b) > 1 for a, b in zip(first, other, strict=True))
    assert mean_diff(first[0], first[1]) > 1  # the four images differ (seed + i)


def test_each_grid_image_reproduces_alone(model: LoadedModel) -> None:
    generator = Generator(model)
    request = make_request(seed=4294967294, chaos=60, sampler="euler_a", count=4, steps=3)
    grid = generator.generate([request])[0]
    for index in (1, 3):  # 1 wraps around: (4294967294 + 2) mod 2**32 = 0 is image 2's seed
        alone = generator.generate([replace(request, seed=request.image_seed(index), count=1)])[0][0]
        assert_same(grid[index], alone)
        assert mean_diff(grid[index - 1], alone) > 1


def test_requests_batched_together_match_single_runs(sd15: LoadedModel) -> None:
    generator = Generator(sd15)
    a = make_request(seed=5, guidance=3.0)
    b = make_request(seed=6, guidance=12.0, prompts=(WeightedText("a blue boat"),), negative=("fog",), count=1)
    assert a.batch_key() == b.batch_key()
    together = generator.generate([a, b])
    assert [len(images) for images in together] == [2, 1]
    for request, images in zip((a, b), together, strict=True):
        for single, batched in zip(generator.generate([request])[0], images, strict=True):
            assert_same(single, batched)
    with pytest.raises(ValueError, match="batch_key"):
        generator.generate([a, replace(b, steps=4)])


def test_quality_changes_the_steps_seen_by_progress(model: LoadedModel) -> None:
    profile = replace(model.profile, native=64, steps=4)
    totals = {}
    for quality in (0.5, 1, 2):
        expansion = Expansion(prompts=(WeightedText("a cat"),), negative=(), images=(),
                              params=Params(quality=quality, seed=3), source="a cat")
        request = replace(resolve(expansion, profile=profile, model="tiny", sampler="euler_a"), count=1)
        seen: list[tuple[int, int]] = []
        Generator(model).generate([request], on_step=lambda _, p, seen=seen: seen.append((p.step, p.total)))
        assert [step for step, _ in seen] == list(range(1, request.steps + 1))
        totals[quality] = seen[-1][1]
    assert totals == {0.5: 2, 1: 4, 2: 8}


def test_stop_ends_early_and_decodes_what_is_there(model: LoadedModel) -> None:
    generator = Generator(model)
    seen: list[StepProgress] = []
    full = generator.generate([make_request(steps=4, count=1)])[0][0]
    stopped = generator.generate([make_request(steps=4, count=1, stop=50)], on_step=lambda _, p: seen.append(p))[0][0]
    assert [(p.step, p.total) for p in seen] == [(1, 2), (2, 2)]
    assert stopped.size == full.size and mean_diff(stopped, full) > 0.5


def test_cancellation_stops_at_the_next_step(model: LoadedModel) -> None:
    generator = Generator(model)
    steps: list[int] = []
    with pytest.raises(JobCancelled):
        generator.generate([make_request(steps=8, count=1)], on_step=lambda _, p: steps.append(p.step),
                           should_stop=lambda _: len(steps) >= 2)
    assert steps == [1, 2]


def test_cancelling_one_request_of_a_batch_keeps_the_others(sd15: LoadedModel) -> None:
    generator = Generator(sd15)
    steps: dict[int, list[int]] = {0: [], 1: []}
    outcomes = generator.generate_each(
        [make_request(seed=1, count=2), make_request(seed=2, count=2)],
        on_step=lambda i, p: steps[i].append(p.step), should_stop=lambda i: i == 1 and len(steps[1]) >= 1)
    assert isinstance(outcomes[1], JobCancelled) and steps[1] == [1]
    assert isinstance(outcomes[0], list) and len(outcomes[0]) == 2 and steps[0] == [1, 2]
    assert_same(outcomes[0][1], generator.generate([make_request(seed=1, count=2)])[0][1])
    partial = generator.generate([make_request(seed=1, count=1), make_request(seed=2, count=1)],
                                 should_stop=lambda i: i == 0)
    assert partial[0] == [] and len(partial[1]) == 1


def _padding_modes(model: LoadedModel) -> set[str]:
    return {layer.padding_mode for module in (model.pipe.unet, model.pipe.vae) for layer in module.modules()
            if isinstance(layer, torch.nn.Conv2d) and max(layer.padding) > 0}


def test_tile_switches_padding_for_the_job_only(model: LoadedModel) -> None:
    generator = Generator(model)
    assert _padding_modes(model) == {"zeros"}
    during: list[set[str]] = []
    tiled = generator.generate([make_request(tile=True, count=1)],
                               on_step=lambda _, p: during.append(_padding_modes(model)))[0][0]
    assert during and all(modes == {"circular"} for modes in during)
    assert _padding_modes(model) == {"zeros"}
    plain = generator.generate([make_request(count=1)])[0][0]
    assert mean_diff(tiled, plain) > 0.5
    with pytest.raises(JobCancelled):  # restored when the job ends early too
        generator.generate([make_request(tile=True, count=1)], should_stop=lambda _: True)
    assert _padding_modes(model) == {"zeros"}


def test_no_items_and_negative_weights_reach_the_negative_conditioning(model: LoadedModel) -> None:
    encoder = Generator(model).encoder
    fog, _ = encoder.encode_text("fog")
    people, _ = encoder.encode_text("people")
    red, _ = encoder.encode_text("red")
    plain = encoder.encode([WeightedText("a ship")], ())
    with_no = encoder.encode([WeightedText("a ship")], ("fog",))
    assert torch.allclose(with_no.uncond, fog)
    assert torch.allclose(with_no.cond, plain.cond)
    if model.family == "sdxl":  # force_zeros_for_empty_prompt
        assert not plain.uncond.any() and not plain.uncond_pooled.any()
    else:
        assert torch.allclose(plain.uncond, encoder.encode_text("")[0])
    mixed = encoder.encode([WeightedText("a ship"), WeightedText("red", -1.0)], ("fog", "people"))
    total = 1.0 + 2 * NO_ITEM_WEIGHT
    assert torch.allclose(mixed.uncond, (red * 1.0 + fog * NO_ITEM_WEIGHT + people * NO_ITEM_WEIGHT) / total,
                          atol=1e-6)
    assert torch.allclose(mixed.cond, plain.cond)

    captured: list[torch.Tensor] = []
    unet = model.pipe.unet
    original = unet.forward

    def spy(*args: object, **kwargs: object) -> object:
        captured.append(kwargs["encoder_hidden_states"])
        return original(*args, **kwargs)

    unet.forward = spy
    try:
        Generator(model).generate([make_request(steps=1, count=2, negative=("fog",))])
    finally:
        del unet.forward
    states = captured[0]
    assert states.shape[0] == 4  # [uncond x2, cond x2]
    assert torch.allclose(states[0], fog[0]) and torch.allclose(states[1], fog[0])
    assert not torch.allclose(states[2], fog[0])


def test_weights_pull_the_embedding_toward_the_heavier_part(model: LoadedModel) -> None:
    encoder = Generator(model).encoder
    red, red_pooled = encoder.encode_text("red")
    blue, blue_pooled = encoder.encode_text("blue")
    heavy_red = encoder.encode([WeightedText("red", 3.0), WeightedText("blue", 1.0)], ())
    heavy_blue = encoder.encode([WeightedText("red", 1.0), WeightedText("blue", 3.0)], ())
    assert torch.dist(heavy_red.cond, red) < torch.dist(heavy_blue.cond, red)
    assert torch.dist(heavy_blue.cond, blue) < torch.dist(heavy_red.cond, blue)
    assert torch.allclose(heavy_red.cond, (3 * red + blue) / 4, atol=1e-6)
    if model.family == "sdxl":
        assert torch.allclose(heavy_red.pooled, (3 * red_pooled + blue_pooled) / 4, atol=1e-6)
        assert torch.dist(heavy_red.pooled, red_pooled) < torch.dist(heavy_blue.pooled, red_pooled)


def test_long_prompts_are_chunked_not_cut(model: LoadedModel) -> None:
    encoder = Generator(model).encoder
    words = " ".join(f"word{i}" for i in range(60))  # far beyond 75 tokens with this vocabulary
    head, _ = encoder.encode_text(words)
    tail, _ = encoder.encode_text(words + " and a final dragon")
    assert head.shape[1] % 77 == 0 and head.shape[1] >= 3 * 77
    short, _ = encoder.encode_text("a cat")
    assert short.shape[1] == 77
    assert not torch.allclose(head[:, -77:], tail[:, -77:])  # the end of the prompt is seen
    mixed = encoder.encode([WeightedText(words), WeightedText("a cat")], ())
    assert mixed.cond.shape == head.shape  # shorter parts padded with empty windows
    images = Generator(model).generate([make_request(prompts=(WeightedText(words),), count=1, steps=1)])[0]
    assert images[0].size == (64, 64)


def test_chaos_perturbs_each_image_reproducibly(model: LoadedModel) -> None:
    cond = Generator(model).encoder.encode_text("a cat")[0]
    same, guidance = chaos_for_image(cond, 7.0, 0, seed=1)
    assert same is cond and guidance == 7.0
    a1, g1 = chaos_for_image(cond, 7.0, 80, seed=1)
    a2, g2 = chaos_for_image(cond, 7.0, 80, seed=1)
    b, _ = chaos_for_image(cond, 7.0, 80, seed=2)
    small, _ = chaos_for_image(cond, 7.0, 10, seed=1)
    assert torch.equal(a1, a2) and g1 == g2 and 1.0 <= g1 <= 7.0 * 1.5
    assert not torch.allclose(a1, b)
    assert torch.dist(small, cond) < torch.dist(a1, cond)
    generator = Generator(model)
    calm = generator.generate([make_request()])[0]
    wild = generator.generate([make_request(chaos=100)])[0]
    assert mean_diff(calm[1], wild[1]) > 0.5


def test_image_to_image_from_a_file(model: LoadedModel, tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    path = tmp_path / "init.png"
    Image.fromarray(rng.integers(0, 255, (96, 160, 3), dtype=np.uint8)).save(path)
    other = tmp_path / "other.png"
    Image.new("RGB", (64, 64), (200, 30, 30)).save(other)
    generator = Generator(model)
    seen: list[int] = []
    request = make_request(init_image=str(path), strength=0.5, steps=4, count=2)
    images = generator.generate([request], on_step=lambda _, p: seen.append(p.total))[0]
    assert seen and set(seen) == {2} and [im.size for im in images] == [(64, 64)] * 2
    again = generator.generate([request])[0]
    assert np.array_equal(pixels(images[0]), pixels(again[0]))
    elsewhere = generator.generate([replace(request, init_image=str(other))])[0]
    assert mean_diff(images[0], elsewhere[0]) > 1
    missing = replace(request, init_image=str(tmp_path / "gone.png"))
    with pytest.raises(Exception, match="no longer on disk"):
        generator.generate([missing])


def test_variation_of_a_generated_image(sd15: LoadedModel, tmp_path: Path) -> None:
    generator = Generator(sd15)
    parent = make_request(seed=11, steps=10, count=4)
    grid = generator.generate([replace(parent, steps=2, count=3)])[0]
    source = tmp_path / "parent-2.png"
    grid[2].save(source)
    totals = {}
    for strength in ("subtle", "strong"):
        seen: list[int] = []
        variation = variation_of(parent, index=2, init_image=str(source), strength=strength, seed=500)
        images = generator.generate([replace(variation, count=2)],
                                    on_step=lambda _, p, seen=seen: seen.append(p.total))[0]
        assert len(images) == 2 and all(mean_diff(im, grid[2]) > 0.5 for im in images)
        totals[strength] = seen[-1]
    assert totals == {"subtle": 3, "strong": 7}  # int(10 x 0.35), int(10 x 0.7) denoising steps


def test_out_of_memory_halves_the_batch_and_gives_the_same_images(sd15: LoadedModel,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    generator = Generator(sd15)
    request = make_request(seed=21)
    expected = generator.generate([request])[0]
    unet = sd15.pipe.unet
    original = unet.forward
    sizes: list[int] = []

    def small_gpu(sample: torch.Tensor, *args: object, **kwargs: object) -> object:
        sizes.append(sample.shape[0])
        if sample.shape[0] > 2:  # more than one image (with its unconditional twin)
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return original(sample, *args, **kwargs)

    monkeypatch.setattr(unet, "forward", small_gpu)
    images = generator.generate([request])[0]
    assert sizes[0] == 4 and sizes[-1] == 2 and sizes.count(2) == 2 * request.steps
    for a, b in zip(expected, images, strict=True):
        assert_same(a, b)


def test_progress_previews_every_few_steps(model: LoadedModel) -> None:
    seen: list[StepProgress] = []
    Generator(model, preview_every=2).generate([make_request(steps=5, count=4)], on_step=lambda _, p: seen.append(p))
    with_preview = [p.step for p in seen if p.preview is not None]
    assert with_preview == [2, 4]  # not at the last step: the final images come right after
    preview = seen[3].preview
    assert preview is not None and preview.size == (2 * 16, 2 * 16)  # 2x2 grid of 8x8 latents, scaled x2


def test_other_samplers_run(sd15: LoadedModel) -> None:
    generator = Generator(sd15)
    results = {name: generator.generate([make_request(sampler=name, count=1)])[0][0]
               for name in ("euler", "dpmpp_2m_karras", "ddim", "heun", "unipc", "pndm")}
    assert all(im.size == (64, 64) for im in results.values())
    assert mean_diff(results["euler"], results["ddim"]) > 0.1


def test_vae_tiles_only_large_images_or_after_out_of_memory(sd15: LoadedModel,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    generator = Generator(sd15)
    native = sd15.profile.native
    assert not generator._vae_tiles(native, native) and not generator._vae_tiles(704, 384)
    assert generator._vae_tiles(2 * native, 2 * native)
    vae = sd15.pipe.vae
    original = vae.decode
    tiled_calls: list[bool] = []

    def small_gpu(*args: object, **kwargs: object) -> object:
        tiled_calls.append(vae.use_tiling)
        if not vae.use_tiling:
            raise torch.OutOfMemoryError("CUDA out of memory")
        return original(*args, **kwargs)

    monkeypatch.setattr(vae, "decode", small_gpu)
    images = generator.generate([make_request(count=1)])[0]
    assert len(images) == 1 and tiled_calls == [False, True] and vae.use_tiling is False

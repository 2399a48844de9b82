"""Resolving prompts into generation requests: sizes, seeds, steps, guidance, ignored params."""

from __future__ import annotations

import pytest

from engine.diffusion.models import PROFILES, ModelProfile
from engine.errors import PromptError
from engine.prompt import Expansion, Params, WeightedText
from engine.request import (
    SEED_MAX,
    VARIATION_STRENGTH,
    Defaults,
    GenerationRequest,
    guidance_for_stylize,
    reroll_of,
    resolve,
    size_for_aspect,
    strength_for_iw,
    variation_of,
    variation_of_image,
)


def expansion(text: str = "a lighthouse", *, images: tuple[str, ...] = (), negative: tuple[str, ...] = (),
              **params: object) -> Expansion:
    return Expansion(prompts=(WeightedText(text),) if text else (), negative=negative, images=images,
                     params=Params(**params), source=text)


def request_for(profile: ModelProfile, **params: object) -> GenerationRequest:
    return resolve(expansion(**params), profile=profile, model="m", sampler="euler_a")


@pytest.mark.parametrize(("family", "aspect", "size"), [
    ("sd1", "16:9", (704, 384)), ("sd1", "2:3", (448, 640)), ("sd1", "1:1", (512, 512)),
    ("sd2", "16:9", (1024, 576)), ("sd2", "2:3", (640, 960)), ("sd2", "1:1", (768, 768)),
    ("sdxl", "16:9", (1344, 768)), ("sdxl", "2:3", (832, 1280)), ("sdxl", "1:1", (1024, 1024)),
])
def test_aspect_sizes_keep_native_area_in_multiples_of_64(family: str, aspect: str, size: tuple[int, int]) -> None:
    profile = PROFILES[family]
    request = request_for(profile, ar=aspect)
    assert (request.width, request.height) == size
    assert request.width % 64 == 0 and request.height % 64 == 0
    assert 0.85 < request.width * request.height / profile.native**2 < 1.15
    w, h = (int(x) for x in aspect.split(":"))
    assert abs(request.width / request.height - w / h) / (w / h) < 0.1


@pytest.mark.parametrize("aspect", ["5:1", "1:5", "17:4"])
def test_ratios_beyond_four_to_one_are_refused(aspect: str) -> None:
    with pytest.raises(PromptError, match="1:4 to 4:1"):
        request_for(PROFILES["sd1"], ar=aspect)
    assert size_for_aspect("4:1", 512) == (1024, 256)


def test_seed_is_drawn_and_recorded_when_absent() -> None:
    seeds = {request_for(PROFILES["sd1"]).seed for _ in range(20)}
    assert len(seeds) > 15 and all(0 <= s <= SEED_MAX for s in seeds)
    assert request_for(PROFILES["sd1"], seed=7).seed == 7
    request = resolve(expansion(), profile=PROFILES["sd1"], model="m", sampler="euler_a", seed=99)
    assert request.seed == 99
    top = request_for(PROFILES["sd1"], seed=SEED_MAX)
    assert [top.image_seed(i) for i in range(3)] == [SEED_MAX, 0, 1]


@pytest.mark.parametrize(("quality", "steps"), [(0.25, 8), (0.5, 15), (1, 30), (2, 60), (4, 120)])
def test_quality_scales_steps(quality: float, steps: int) -> None:
    assert request_for(PROFILES["sd1"], quality=quality).steps == steps


def test_user_defaults_apply_when_the_prompt_says_nothing() -> None:
    defaults = Defaults(quality=0.5, aspect="2:3", stylize=500)
    plain = resolve(expansion(), profile=PROFILES["sd1"], model="m", sampler="ddim", defaults=defaults)
    assert (plain.steps, plain.width, plain.height, plain.stylize) == (15, 448, 640, 500)
    explicit = resolve(expansion(quality=2, ar="1:1", stylize=100), profile=PROFILES["sd1"], model="m",
                       sampler="ddim", defaults=defaults)
    assert (explicit.steps, explicit.width, explicit.guidance) == (60, 512, PROFILES["sd1"].guidance)


def test_stylize_maps_monotonically_to_guidance_with_default_at_100() -> None:
    for profile in PROFILES.values():
        values = [guidance_for_stylize(s, profile.guidance) for s in range(0, 1001, 50)]
        assert values == sorted(values) and len(set(values)) == len(values)
        assert guidance_for_stylize(100, profile.guidance) == profile.guidance
        assert request_for(profile).guidance == profile.guidance
        assert values[0] >= 1.5 and values[-1] == pytest.approx(2 * profile.guidance)


def test_image_weight_maps_to_strength() -> None:
    values = [strength_for_iw(w / 2) for w in range(7)]
    assert values == sorted(values, reverse=True)
    assert values[0] == 1.0 and values[-1] == pytest.approx(0.3)
    with_image = resolve(expansion(images=("https://x/a.png",), iw=2.0), profile=PROFILES["sd1"], model="m",
                         sampler="euler_a", init_image="/tmp/a.png")
    assert with_image.strength == strength_for_iw(2.0) and with_image.image_prompts == ("https://x/a.png",)
    assert request_for(PROFILES["sd1"]).strength is None


def test_unhonoured_parameters_are_listed_as_ignored() -> None:
    request = request_for(PROFILES["sd1"], version="6", style="raw", weird=200, iw=1.5,
                          extra={"niji": "", "sref": "123"})
    assert set(request.ignored) == {"--v 6", "--style raw", "--weird 200", "--iw 1.5 (no image prompt)",
                                    "--niji", "--sref 123"}
    assert request_for(PROFILES["sd1"], chaos=20, tile=True, stop=50).ignored == ()


def test_stop_chaos_tile_and_json_round_trip() -> None:
    request = resolve(
        Expansion(prompts=(WeightedText("space", 2.0), WeightedText("ship", 1.0), WeightedText("red", -0.5)),
                  negative=("fog", "people"), images=(), params=Params(stop=40, chaos=30, tile=True, seed=5),
                  source="space::2 ship red::-.5 --no fog, people"),
        profile=PROFILES["sdxl"], model="owner/model", sampler="dpmpp_2m")
    assert (request.stop, request.chaos, request.tile) == (40, 30, True)
    assert request_for(PROFILES["sd1"], stop=100).stop is None
    data = request.to_json()
    assert data["prompts"][0] == {"text": "space", "weight": 2.0}
    assert GenerationRequest.from_json(data) == request
    assert GenerationRequest.from_json({**data, "unknown_future_field": 1}) == request


def test_variations_and_rerolls_keep_the_request_with_new_seeds() -> None:
    parent = request_for(PROFILES["sd1"], seed=10, ar="16:9")
    subtle = variation_of(parent, index=2, init_image="/img/2.png", strength="subtle", seed=77)
    strong = variation_of(parent, index=2, init_image="/img/2.png", strength="strong")
    assert (subtle.strength, strong.strength) == (VARIATION_STRENGTH["subtle"], VARIATION_STRENGTH["strong"])
    assert subtle.strength < strong.strength
    assert subtle.seed == 77 and subtle.init_image == "/img/2.png"
    assert (subtle.width, subtle.height, subtle.prompts) == (parent.width, parent.height, parent.prompts)
    remix = variation_of(parent, index=0, init_image="/i.png", strength="subtle", expansion=expansion("a boat"))
    assert remix.prompts == (WeightedText("a boat"),)
    with pytest.raises(PromptError):
        variation_of(parent, index=4, init_image="/i.png", strength="subtle")
    again = reroll_of(parent)
    assert again.seed != parent.seed or reroll_of(parent).seed != parent.seed
    assert reroll_of(parent, seed=3) == GenerationRequest(**{**parent.__dict__, "seed": 3})
    upload = variation_of_image("/up.png", (1600, 900), profile=PROFILES["sd1"], model="m", sampler="euler_a",
                                strength="strong")
    assert (upload.width, upload.height, upload.init_image) == (704, 384, "/up.png")
    assert upload.strength == VARIATION_STRENGTH["strong"]


def test_batch_key_separates_what_cannot_share_a_batch() -> None:
    a = request_for(PROFILES["sd1"], seed=1, stylize=50)
    b = request_for(PROFILES["sd1"], seed=2, stylize=900, chaos=40)
    assert a.batch_key() == b.batch_key()  # guidance and chaos are per image
    assert a.batch_key() != request_for(PROFILES["sd1"], ar="16:9").batch_key()
    assert a.batch_key() != request_for(PROFILES["sd1"], quality=2).batch_key()
    x = variation_of(a, index=0, init_image="/i.png", strength="subtle")
    y = variation_of(a, index=0, init_image="/j.png", strength="strong")
    assert x.batch_key() != y.batch_key()

"""The safety checker: a tiny random `StableDiffusionSafetyChecker`, loaded by the product's code.

Its concept thresholds decide the outcome deterministically: at -1 every image is flagged (a
cosine similarity is always above -1), at the default 1 none is (it is never above 1).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from engine.diffusion.safety import (
    NOTICE_BACKGROUND,
    SafetyChecker,
    SafetyFilter,
    check_source,
    find_source,
    notice_image,
)
from engine.errors import ModelError


def _save_checker(folder: Path, *, flag_everything: bool, layout: str) -> Path:
    """A tiny checker: "root" = the CompVis repo's layout, "subfolders" = a pipeline folder's."""
    import torch
    from diffusers.pipelines.stable_diffusion.safety_checker import StableDiffusionSafetyChecker
    from transformers import CLIPConfig, CLIPImageProcessor

    torch.manual_seed(0)
    tiny = {"hidden_size": 16, "intermediate_size": 32, "num_attention_heads": 2, "num_hidden_layers": 1}
    config = CLIPConfig(text_config={**tiny, "vocab_size": 99}, projection_dim=8,
                        vision_config={**tiny, "image_size": 32, "patch_size": 8})
    checker = StableDiffusionSafetyChecker(config)
    if flag_everything:
        with torch.no_grad():
            checker.concept_embeds_weights.fill_(-1.0)
    processor = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    checker_dir = folder / "safety_checker" if layout == "subfolders" else folder
    processor_dir = folder / "feature_extractor" if layout == "subfolders" else folder
    checker.save_pretrained(checker_dir)
    processor.save_pretrained(processor_dir)
    return folder


@pytest.fixture(scope="module")
def checkers(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("checkers")
    return {"flag_all": _save_checker(root / "flag_all", flag_everything=True, layout="root"),
            "flag_none": _save_checker(root / "flag_none", flag_everything=False, layout="root"),
            "in_model": _save_checker(root / "model", flag_everything=True, layout="subfolders")}


def _images() -> list[Image.Image]:
    rng = np.random.default_rng(1)
    return [Image.fromarray((rng.random((64, 96, 3)) * 255).astype(np.uint8), "RGB") for _ in range(3)]


def test_the_model_folder_checker_comes_first_then_the_fallback(checkers: dict[str, Path], tmp_path: Path) -> None:
    (tmp_path / "model_index.json").write_text("{}")
    source = find_source(str(checkers["in_model"]), str(checkers["flag_none"]))
    assert (source.ref, source.checker_subfolder) == (str(checkers["in_model"]), "safety_checker")
    source = find_source(str(tmp_path), str(checkers["flag_none"]))  # no subfolders: the fallback
    assert (source.ref, source.checker_subfolder) == (str(checkers["flag_none"]), "")
    loaded = SafetyChecker.load(str(checkers["in_model"]), fallback="unused/unused", device="cpu")
    assert loaded.flags(_images()) == [True, True, True]


def test_flagged_images_are_replaced_by_the_notice(checkers: dict[str, Path]) -> None:
    images = _images()
    out, flagged = SafetyFilter("", fallback=str(checkers["flag_all"]), device="cpu").apply(images)
    assert flagged == [0, 1, 2]
    for original, notice in zip(images, out, strict=True):
        pixels = np.asarray(notice)
        assert notice.size == original.size and not np.array_equal(pixels, np.asarray(original))
        assert tuple(pixels[0, 0]) == NOTICE_BACKGROUND  # a plain dark image ...
        assert pixels.max() > 150  # ... with light text on it


def test_images_that_pass_are_kept_as_they_are(checkers: dict[str, Path]) -> None:
    images = _images()
    out, flagged = SafetyFilter("", fallback=str(checkers["flag_none"]), device="cpu").apply(images)
    assert flagged == [] and all(a is b for a, b in zip(images, out, strict=True))


def test_notice_fits_small_and_wide_images() -> None:
    for size in ((64, 64), (512, 128), (1024, 1024)):
        image = notice_image(size)
        assert image.size == size and image.mode == "RGB"
        assert np.asarray(image).max() > 150


def test_a_missing_checker_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelError, match="not in the local Hugging Face cache") as info:
        check_source(str(tmp_path), "tessera-tests/no-such-checker")
    assert "SAFETY_CHECKER_MODEL" in str(info.value)
    missing = tmp_path / "nowhere"
    with pytest.raises(ModelError, match=re.escape(str(missing))):
        check_source("", str(missing))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ModelError, match=re.escape("config.json")):
        SafetyFilter("", fallback=str(empty), device="cpu").apply(_images())


async def test_service_start_refuses_an_unloadable_checker_when_it_is_on(
        tiny_models: dict[str, Path], data_dir: Path, tmp_path: Path) -> None:
    from bot.config import load_settings
    from bot.service import Tessera

    settings = load_settings(model_id=str(tiny_models["sd15"]), data_dir=data_dir, device="cpu",
                             safety_checker=True, safety_checker_model=str(tmp_path / "no-checker-here"))
    with pytest.raises(ModelError, match="no-checker-here"):
        await Tessera.start(settings)


@pytest.fixture
def small_model(tiny_models: dict[str, Path], tmp_path: Path) -> Path:
    folder = tmp_path / "tiny-sd15"
    folder.mkdir()
    for child in tiny_models["sd15"].iterdir():
        (folder / child.name).symlink_to(child)
    (folder / "tessera.json").write_text(json.dumps({"native": 64, "steps": 2, "guidance": 6}))
    return folder


async def test_a_server_with_the_filter_gets_notices_and_others_are_not_checked(
        small_model: Path, checkers: dict[str, Path], data_dir: Path) -> None:
    """End to end on the tiny SD 1.5 model: guild 1 turned the filter on, guild 2 did not."""
    from bot.config import load_settings
    from bot.service import Tessera
    from storage.models import GuildSettings

    settings = load_settings(model_id=str(small_model), data_dir=data_dir, device="cpu", safety_checker=False,
                             safety_checker_model=str(checkers["flag_all"]))
    service = await Tessera.start(settings)
    try:
        await service.storage.settings.save_guild(GuildSettings(guild_id=1, safety_checker=True))
        [unchecked] = await service.imagine(user_id=5, prompt_text="a quiet harbour --seed 3", guild_id=2)
        plain = (await service.wait_for_jobs([unchecked.id], timeout=120))[unchecked.id]
        assert plain.kind == "done" and plain.flagged == ()
        assert unchecked.request_json["safety_check"] is False
        assert not service.executor.safety.loaded  # the filter is off here: nothing was checked

        [checked] = await service.imagine(user_id=5, prompt_text="a quiet harbour --seed 3", guild_id=1)
        assert checked.request_json["safety_check"] is True
        event = (await service.wait_for_jobs([checked.id], timeout=120))[checked.id]
        assert event.kind == "done", event.error
        assert event.flagged == (0, 1, 2, 3)
        for record, original in zip(event.images, plain.images, strict=True):
            with Image.open(record.path) as notice, Image.open(original.path) as shown:
                assert notice.size == shown.size == (64, 64)
                assert notice.getpixel((0, 0)) == NOTICE_BACKGROUND
                assert not np.array_equal(np.asarray(notice.convert("RGB")), np.asarray(shown.convert("RGB")))
    finally:
        await service.close()

"""Loading models: references checked before any job, families and profiles, devices, samplers."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import torch

from engine.device import resolve_device, resolve_dtype
from engine.diffusion.models import PROFILES, ModelProfile, check_model_ref, load_model, peek_profile
from engine.errors import ModelError
from engine.samplers import SAMPLERS, SamplerError, a1111_name, check_sampler, make_scheduler


def test_missing_path_is_named_in_the_error(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-model"
    with pytest.raises(ModelError, match=str(missing)):
        check_model_ref(str(missing))
    with pytest.raises(ModelError, match="does not exist"):
        load_model(str(tmp_path / "weights.safetensors"))


def test_folder_without_model_index_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match=r"model_index\.json"):
        check_model_ref(str(tmp_path))
    wrong = tmp_path / "model.bin"
    wrong.write_bytes(b"x")
    with pytest.raises(ModelError, match=r"\.safetensors or \.ckpt"):
        check_model_ref(str(wrong))


def test_hub_id_offline_fails_fast_saying_how_to_place_weights() -> None:
    started = time.monotonic()
    with pytest.raises(ModelError) as info:
        load_model("someone/not-cached-model")
    message = str(info.value)
    assert "offline" in message and "tessera models pull someone/not-cached-model --local-dir" in message
    assert "MODEL_ID=" in message
    assert time.monotonic() - started < 5


def test_families_and_profiles_are_recognised(tiny_models: dict[str, Path]) -> None:
    sd15 = load_model(str(tiny_models["sd15"]), device="cpu")
    assert (sd15.family, sd15.profile, sd15.device, sd15.dtype) == ("sd1", PROFILES["sd1"], "cpu", torch.float32)
    sdxl = load_model(str(tiny_models["sdxl"]), device="auto", vae_tiling=False)
    assert (sdxl.family, sdxl.profile.native) == ("sdxl", 1024)
    assert sdxl.vae_tiling is False and sd15.vae_tiling is True
    img2img = sd15.img2img
    assert type(img2img).__name__ == "StableDiffusionImg2ImgPipeline"
    assert img2img.unet is sd15.pipe.unet and sd15.img2img is img2img  # shared, built once


def test_a_model_folder_may_override_its_profile(tiny_models: dict[str, Path], tmp_path: Path) -> None:
    folder = tmp_path / "custom"
    folder.mkdir()
    for child in tiny_models["sd15"].iterdir():
        (folder / child.name).symlink_to(child)
    (folder / "tessera.json").write_text(json.dumps({"native": 768, "steps": 12, "guidance": 5}))
    model = load_model(str(folder), attention_slicing=True)
    assert (model.profile.native, model.profile.steps, model.profile.guidance) == (768, 12, 5.0)
    (folder / "tessera.json").write_text("{not json")
    with pytest.raises(ModelError, match=r"tessera\.json"):
        load_model(str(folder))


def test_peeking_at_a_folder_gives_the_profile_loading_gives(tiny_models: dict[str, Path], tmp_path: Path) -> None:
    """Jobs queued while the model loads are sized from its config files: the same rule as the load."""
    folder = tmp_path / "custom"
    folder.mkdir()
    for child in tiny_models["sd15"].iterdir():
        if child.name != "unet":
            (folder / child.name).symlink_to(child)
    (folder / "unet").mkdir()
    for child in (tiny_models["sd15"] / "unet").iterdir():
        (folder / "unet" / child.name).symlink_to(child)
    (folder / "tessera.json").write_text(json.dumps({"steps": 12, "guidance": 5}))
    assert peek_profile(str(folder)) == load_model(str(folder)).profile == ModelProfile("sd1", 512, 12, 5.0)
    assert peek_profile(str(tiny_models["sdxl"])) == PROFILES["sdxl"]
    # An SD 2.x "base" model (64² latents) is 512² native; without a sample size, 768² (v-models).
    unet = json.loads((tiny_models["sd15"] / "unet" / "config.json").read_text())
    (folder / "unet" / "config.json").unlink()
    (folder / "unet" / "config.json").write_text(json.dumps({**unet, "cross_attention_dim": 1024, "sample_size": 64}))
    (folder / "tessera.json").unlink()
    assert peek_profile(str(folder)) == ModelProfile("sd2", 512, 30, 7.5)
    (folder / "unet" / "config.json").write_text(json.dumps({**unet, "cross_attention_dim": 1024} | {"sample_size": None}))
    assert peek_profile(str(folder)) is None  # a config it cannot read: wait for the load instead
    (folder / "unet" / "config.json").write_text(json.dumps({k: v for k, v in unet.items() if k != "sample_size"}
                                                            | {"cross_attention_dim": 1024}))
    assert peek_profile(str(folder)) == PROFILES["sd2"]
    (folder / "tessera.json").write_text("{not json")
    assert peek_profile(str(folder)) is None  # the load reports it (above)
    assert peek_profile(str(tmp_path / "missing")) is None


def test_devices_and_dtypes() -> None:
    expected = "cuda" if torch.cuda.is_available() else (
        "mps" if torch.backends.mps.is_available() else "cpu")
    assert resolve_device("auto") == expected
    assert resolve_device("cpu") == "cpu"
    if not torch.cuda.is_available():
        with pytest.raises(ModelError, match="no usable CUDA"):
            resolve_device("cuda")
    with pytest.raises(ModelError):
        resolve_device("tpu")
    assert resolve_dtype("auto", "cpu") == torch.float32
    assert resolve_dtype("auto", "cuda") == torch.float16
    assert resolve_dtype("bfloat16", "cpu") == torch.bfloat16


def test_samplers_swap_schedulers_from_the_model_config(tiny_models: dict[str, Path]) -> None:
    from diffusers import EulerDiscreteScheduler

    config = EulerDiscreteScheduler.from_pretrained(str(tiny_models["sdxl"]), subfolder="scheduler").config
    for name, sampler in SAMPLERS.items():
        scheduler = make_scheduler(config, name)
        assert type(scheduler).__name__ == sampler.scheduler
        assert scheduler.config.beta_schedule == "scaled_linear"  # the model's own schedule kept
    assert make_scheduler(config, "dpmpp_2m_karras").config.use_karras_sigmas is True
    assert a1111_name("euler_a") == "Euler a"
    with pytest.raises(SamplerError, match="euler_a"):
        check_sampler("k_lms_fancy")


def test_unreadable_single_file_checkpoint_is_a_model_error(tmp_path: Path) -> None:
    broken = tmp_path / "model.safetensors"
    broken.write_bytes(b"\x00garbage, not a checkpoint")
    with pytest.raises(ModelError, match=r"model\.safetensors"):
        load_model(str(broken))

"""Real-ESRGAN upscaling: sizes, tiling, image modes, metadata and the size limit.

The weights are the tiny random RRDBNet files from the fixtures (official key names), loaded
through the product's real spandrel path; images are 32-64 px so the whole file runs in seconds.
"""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from engine.errors import UpscaleError
from engine.imaging.metadata import read_metadata
from engine.upscale.realesrgan import Upscaler, upscale_to_png, upscaled_pnginfo
from engine.upscale.tiles import ramp, run_tiled_with_retry, run_tiles, spans


def _noise(width: int, height: int, mode: str = "RGB", seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    bands = len(Image.new(mode, (1, 1)).getbands())
    array = (rng.random((height, width, bands)) * 255).astype(np.uint8)
    return Image.fromarray(array.squeeze(-1) if bands == 1 else array, mode)


def _smooth(width: int, height: int) -> Image.Image:
    """A gradient picture: what generated images look like to a tiler (not pure noise)."""
    y, x = np.mgrid[0:height, 0:width]
    array = np.stack([x * 255 / width, y * 255 / height, (x + y) * 127 / (width + height) + 64], -1)
    return Image.fromarray(array.astype(np.uint8), "RGB")


@pytest.fixture
def weights_x4(tiny_models: dict[str, Path], tmp_path: Path) -> Path:
    folder = tmp_path / "weights_x4"
    folder.mkdir()
    shutil.copy(tiny_models["x4"], folder / "RealESRGAN_x4plus.pth")
    return folder


@pytest.fixture
def weights_both(tiny_models: dict[str, Path], weights_x4: Path) -> Path:
    shutil.copy(tiny_models["x2"], weights_x4 / "RealESRGAN_x2plus.pth")
    return weights_x4


def _upscaler(folder: Path, **kwargs) -> Upscaler:
    kwargs.setdefault("device", "cpu")
    return Upscaler(folder, allow_download=False, **kwargs)


def _mae(a: Image.Image, b: Image.Image) -> float:
    return float(np.abs(np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)).mean())


def test_x4_and_x2_output_sizes_with_both_models(weights_both: Path) -> None:
    upscaler = _upscaler(weights_both)
    image = _noise(40, 32)
    four = upscaler.upscale(image, 4)
    two = upscaler.upscale(image, 2)
    assert four.size == (160, 128) and four.mode == "RGB"
    assert two.size == (80, 64) and two.mode == "RGB"
    steps = json.loads(two.info["tessera"])["extra_steps"]
    assert steps[-1]["model"] == "RealESRGAN_x2plus" and "method" not in steps[-1]


def test_x2_without_x2_weights_is_x4_then_lanczos(weights_x4: Path) -> None:
    upscaler = _upscaler(weights_x4)
    image = _noise(36, 28)
    two = upscaler.upscale(image, 2)
    assert two.size == (72, 56)
    expected = upscaler.upscale(image, 4).resize((72, 56), Image.Resampling.LANCZOS)
    assert np.array_equal(np.asarray(two), np.asarray(expected))
    step = json.loads(two.info["tessera"])["extra_steps"][-1]
    assert step["model"] == "RealESRGAN_x4plus" and "Lanczos" in step["method"]


def test_tiled_output_agrees_with_untiled(weights_x4: Path) -> None:
    image = _smooth(64, 48)
    whole = _upscaler(weights_x4, tile=0).upscale(image, 4)
    tiled = _upscaler(weights_x4, tile=24, overlap=8).upscale(image, 4)
    assert len(spans(64, 24, 8)) * len(spans(48, 24, 8)) == 6  # really cut into tiles
    assert tiled.size == whole.size == (256, 192)
    assert _mae(tiled, whole) <= 1.0  # within 1/255 on average


def test_tiles_blend_back_exactly_for_a_pixelwise_model() -> None:
    """Blending weights form a partition of unity, so a model without context is reproduced."""
    torch.manual_seed(0)
    image = torch.rand(1, 3, 37, 53)

    def model(x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.interpolate(x * 0.5 + 0.1, scale_factor=4, mode="nearest")

    whole = model(image)
    for tile, overlap in ((16, 4), (10, 6), (20, 0), (8, 16)):
        tiled = run_tiles(model, image, scale=4, tile=tile, overlap=overlap)
        assert torch.allclose(tiled, whole, atol=1e-5), (tile, overlap)
        as_image = run_tiles(model, image, scale=4, tile=tile, overlap=overlap, as_uint8_hwc=True)
        expected = (whole[0].permute(1, 2, 0) * 255).round().to(torch.uint8)
        assert as_image.dtype == torch.uint8 and as_image.shape == (148, 212, 3)
        assert (as_image.int() - expected.int()).abs().max() <= 1, (tile, overlap)


@pytest.mark.parametrize(("length", "tile", "overlap"), [(64, 24, 8), (100, 30, 10), (33, 8, 4), (17, 16, 2)])
def test_blend_ramps_sum_to_one(length: int, tile: int, overlap: int) -> None:
    scale = 2
    total = torch.zeros(length * scale)
    cut = spans(length, tile, overlap)
    assert cut[0].start == 0 and cut[-1].end == length
    assert all(s.core_end - s.core_start <= tile for s in cut)
    for span in cut:
        total[span.start * scale:span.end * scale] += ramp(span, length, overlap, scale)
    assert torch.allclose(total, torch.ones_like(total))


def test_tile_is_halved_on_out_of_memory() -> None:
    image = torch.rand(1, 3, 40, 40)
    seen: list[int] = []

    def model(x: torch.Tensor) -> torch.Tensor:
        if max(x.shape[-2:]) > 30:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return torch.nn.functional.interpolate(x, scale_factor=2, mode="nearest")

    out, used = run_tiled_with_retry(model, image, scale=2, tile=64, overlap=4, on_oom=seen.append)
    assert used == 32 and seen == [32]  # one 40 px window was too big; 24 px windows fit
    assert torch.allclose(out, torch.nn.functional.interpolate(image, scale_factor=2, mode="nearest"), atol=1e-6)


def test_out_of_memory_below_the_smallest_tile_is_raised() -> None:
    def model(x: torch.Tensor) -> torch.Tensor:
        raise torch.OutOfMemoryError("CUDA out of memory")

    with pytest.raises(torch.OutOfMemoryError):
        run_tiled_with_retry(model, torch.rand(1, 3, 80, 80), scale=2, tile=0, overlap=4)


def test_other_errors_are_not_mistaken_for_out_of_memory() -> None:
    def model(x: torch.Tensor) -> torch.Tensor:
        raise RuntimeError("shape mismatch")

    with pytest.raises(RuntimeError, match="shape mismatch"):
        run_tiled_with_retry(model, torch.rand(1, 3, 8, 8), scale=2, tile=64, overlap=4)


def test_rgba_alpha_is_upscaled_separately(weights_x4: Path) -> None:
    upscaler = _upscaler(weights_x4)
    color = _noise(32, 24)
    alpha = Image.new("L", (32, 24), 0)
    alpha.paste(255, (0, 0, 16, 24))  # left half opaque, right half transparent
    rgba = color.copy()
    rgba.putalpha(alpha)

    out = upscaler.upscale(rgba, 4)
    assert out.mode == "RGBA" and out.size == (128, 96)
    assert np.array_equal(np.asarray(out.convert("RGB")), np.asarray(upscaler.upscale(color, 4)))
    expected_alpha = upscaler.upscale(alpha.convert("RGB"), 4).convert("L")
    assert np.array_equal(np.asarray(out.getchannel("A")), np.asarray(expected_alpha))


def test_opaque_rgba_keeps_a_fully_opaque_alpha(weights_x4: Path) -> None:
    out = _upscaler(weights_x4).upscale(_noise(32, 32, "RGBA").convert("RGB").convert("RGBA"), 2)
    assert out.mode == "RGBA" and out.size == (64, 64)
    assert out.getchannel("A").getextrema() == (255, 255)


def test_grayscale_in_grayscale_out(weights_x4: Path) -> None:
    upscaler = _upscaler(weights_x4)
    gray = _noise(32, 40, "L")
    out = upscaler.upscale(gray, 4)
    assert out.mode == "L" and out.size == (128, 160)
    assert np.array_equal(np.asarray(out), np.asarray(upscaler.upscale(gray.convert("RGB"), 4).convert("L")))

    la = gray.convert("LA")
    assert upscaler.upscale(la, 2).mode == "LA"

    deep = Image.fromarray(np.asarray(gray).astype(np.uint16) * 257)
    assert deep.mode.startswith("I")
    assert _mae(upscaler.upscale(deep, 4), out) <= 1.0  # 16-bit is scaled down, not clipped


def test_chained_upscale_is_refused_beyond_max_side(weights_x4: Path) -> None:
    upscaler = _upscaler(weights_x4, max_side=256)
    first = upscaler.upscale(_noise(32, 24), 4)
    assert first.size == (128, 96)
    with pytest.raises(UpscaleError) as info:
        upscaler.upscale(first, 4)
    message = str(info.value)
    assert "128×96" in message and "512×384" in message and "256" in message and "×2" in message
    second = upscaler.upscale(first, 2)
    assert second.size == (256, 192)
    steps = json.loads(second.info["tessera"])["extra_steps"]
    assert [s["scale"] for s in steps] == [4, 2]

    upscaler.check_scale(64, 50, 4)
    with pytest.raises(UpscaleError, match="must be 2 or 4"):
        upscaler.check_scale(64, 64, 3)
    with pytest.raises(UpscaleError, match="4096"):
        _upscaler(weights_x4).check_scale(1100, 1000, 4)


def test_result_keeps_source_metadata_and_adds_the_step(weights_x4: Path) -> None:
    info = PngInfo()
    info.add_text("parameters", "a lighthouse\nSteps: 20, Seed: 7")
    info.add_text("tessera", json.dumps({"job_id": "abc", "seed": 7}))
    buffer = io.BytesIO()
    _noise(32, 32).save(buffer, format="PNG", pnginfo=info)

    result = upscale_to_png(_upscaler(weights_x4), buffer.getvalue(), 4)
    assert (result.width, result.height) == (128, 128)
    reread = Image.open(io.BytesIO(result.png))
    assert reread.size == (128, 128)
    assert reread.text["parameters"] == "a lighthouse\nSteps: 20, Seed: 7"
    data = json.loads(reread.text["tessera"])
    assert data["job_id"] == "abc" and data["seed"] == 7
    assert data["extra_steps"] == [{"step": "upscale", "scale": 4, "model": "RealESRGAN_x4plus", "from": [32, 32],
                              "to": [128, 128]}]
    assert "Postprocess upscale by: 4" in reread.text["postprocessing"]
    assert read_metadata(result.png)["tessera"]["extra_steps"][0]["to"] == [128, 128]
    assert upscaled_pnginfo(result.image).chunks == upscaled_pnginfo(reread).chunks


def test_corrupt_weights_give_a_clear_error(tmp_path: Path) -> None:
    folder = tmp_path / "weights"
    folder.mkdir()
    (folder / "RealESRGAN_x4plus.pth").write_bytes(b"this is not a checkpoint" * 10)
    with pytest.raises(UpscaleError) as info:
        _upscaler(folder).upscale(_noise(16, 16), 4)
    assert str(folder / "RealESRGAN_x4plus.pth") in str(info.value)
    assert "damaged" in str(info.value)


def test_a_x2_file_under_the_x4_name_is_refused(tiny_models: dict[str, Path], tmp_path: Path) -> None:
    folder = tmp_path / "weights"
    folder.mkdir()
    shutil.copy(tiny_models["x2"], folder / "RealESRGAN_x4plus.pth")
    with pytest.raises(UpscaleError, match="×2 model, but ×4 was expected"):
        _upscaler(folder).upscale(_noise(16, 16), 4)


def test_library_call_uses_the_configured_weights(weights_x4: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from bot import library as module

    monkeypatch.setenv("UPSCALER_WEIGHTS_DIR", str(weights_x4))
    monkeypatch.setenv("DEVICE", "cpu")
    module._default_upscaler.cache_clear()
    try:
        assert module.upscale(_noise(20, 16), 4).size == (80, 64)
    finally:
        module._default_upscaler.cache_clear()


def test_anime_model_is_used_for_x4_and_for_x2(weights_both: Path) -> None:
    from tests.fixtures.tiny_models import rrdbnet_state_dict

    torch.save(rrdbnet_state_dict(scale=4, num_block=6, num_feat=8, seed=5),
               weights_both / "RealESRGAN_x4plus_anime_6B.pth")
    upscaler = _upscaler(weights_both, model="RealESRGAN_x4plus_anime_6B")
    image = _noise(24, 16)
    for scale, size in ((4, (96, 64)), (2, (48, 32))):
        out = upscaler.upscale(image, scale)
        assert out.size == size
        assert json.loads(out.info["tessera"])["extra_steps"][-1]["model"] == "RealESRGAN_x4plus_anime_6B"
    with pytest.raises(UpscaleError, match="unknown upscaler model"):
        _upscaler(weights_both, model="RealESRGAN_x8")

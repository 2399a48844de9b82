"""Files for Discord (PNG when it fits, else WebP/JPEG under the limit) and file-name stems."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from engine.imaging.encoding import encode_for_discord, encode_png, filename_stem, pnginfo_from_text


def _noise(size: int, mode: str = "RGB") -> Image.Image:
    rng = np.random.default_rng(1)
    return Image.fromarray((rng.random((size, size, 3)) * 255).astype(np.uint8), "RGB").convert(mode)


def _smooth(size: int) -> Image.Image:
    y, x = np.mgrid[0:size, 0:size]
    array = np.stack([x * 255 / size, y * 255 / size, np.full_like(x, 90)], -1)
    return Image.fromarray(array.astype(np.uint8), "RGB")


def test_png_when_it_fits_with_its_metadata() -> None:
    image = _smooth(128)
    encoded = encode_for_discord(image, stem="lighthouse_ab12", pnginfo=pnginfo_from_text({"parameters": "x"}))
    assert encoded.filename == "lighthouse_ab12.png" and encoded.mime == "image/png"
    reread = Image.open(io.BytesIO(encoded.data))
    assert reread.format == "PNG" and reread.text["parameters"] == "x"
    assert np.array_equal(np.asarray(reread), np.asarray(image))


def test_too_large_png_becomes_a_lossy_file_under_the_limit() -> None:
    image = _noise(256)  # noise: ~196 KB as PNG
    limit = 100_000
    assert len(encode_png(image)) > limit
    encoded = encode_for_discord(image, stem="s", max_bytes=limit)
    assert len(encoded.data) <= limit
    assert encoded.filename.endswith((".webp", ".jpg")) and encoded.mime in ("image/webp", "image/jpeg")
    reread = Image.open(io.BytesIO(encoded.data))
    assert reread.format == encoded.mime.split("/")[1].upper().replace("JPG", "JPEG")
    assert reread.size == image.size


def test_something_always_fits_by_shrinking() -> None:
    image = _noise(256, "RGBA")
    encoded = encode_for_discord(image, stem="s", max_bytes=8_000)
    assert len(encoded.data) <= 8_000
    assert Image.open(io.BytesIO(encoded.data)).width < 256


def test_prefer_jpeg_for_previews_even_when_png_would_fit() -> None:
    image = _smooth(64).convert("RGBA")
    encoded = encode_for_discord(image, stem="p", prefer="jpeg")
    assert encoded.filename == "p.jpg" and encoded.mime == "image/jpeg"
    assert Image.open(io.BytesIO(encoded.data)).mode == "RGB"


def test_discord_png_default_limit_is_10_mib() -> None:
    encoded = encode_for_discord(_noise(64), stem="n")
    assert encoded.mime == "image/png" and len(encoded.data) <= 10 * 1024 * 1024
    with pytest.raises(ValueError):
        encode_for_discord(_noise(8), stem="n", max_bytes=0)


def test_precomputed_png_is_reused() -> None:
    image = _smooth(32)
    png = encode_png(image, pnginfo_from_text({"tessera": "{}"}))
    assert encode_for_discord(image, stem="r", png=png).data == png


@pytest.mark.parametrize(
    ("prompt", "job", "expected"),
    [
        ("A lighthouse at dusk --ar 16:9 --no fog", "Ab12Cd", "a_lighthouse_at_dusk_Ab12Cd"),
        ("café::2 crème brûlée, {red, blue} sky and more words here", "x1", "cafe_creme_brulee_red_blue_sky_x1"),
        ("--ar 1:1", "j9", "image_j9"),
        ("../../etc/passwd", "j/..", "etc_passwd_j"),
    ],
)
def test_filename_stem(prompt: str, job: str, expected: str) -> None:
    assert filename_stem(prompt, job) == expected

"""The pure geometry of edits: zoom, pan and square canvases, cell masks, feathering, fill."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from engine.errors import PromptError
from engine.imaging.canvas import (
    cell_mask,
    check_mask,
    composite,
    grow,
    pan_canvas,
    parse_cells,
    paste_alpha,
    region_canvas,
    square_canvas,
    zoom_canvas,
)


def _picture(width: int, height: int, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8), "RGB")


def _mask_array(mask: Image.Image) -> np.ndarray:
    return np.asarray(mask) > 127


def test_zoom_out_two_shrinks_the_picture_into_the_centre_and_masks_the_rest() -> None:
    source = _picture(128, 128)
    canvas = zoom_canvas(source, 2.0, (128, 128), feather=8)
    assert canvas.size == (128, 128) and canvas.box == (32, 32, 96, 96)
    mask = _mask_array(canvas.mask)
    assert mask[0, 0] and mask[:, :32 - 0].all() and not mask[48:80, 48:80].any()
    # the band: 8 px into the old picture are repainted too, not more
    assert mask[32:96, 32:40].all() and not mask[40:88, 40:88].any()
    expected = np.asarray(source.resize((64, 64), Image.Resampling.LANCZOS))
    assert np.array_equal(np.asarray(canvas.image)[32:96, 32:96], expected)


def test_outpaint_fill_continues_the_edge_colours_not_grey() -> None:
    source = Image.new("RGB", (64, 64), (200, 30, 30))
    canvas = zoom_canvas(source, 2.0, (128, 128))
    corner = np.asarray(canvas.image)[0, 0]
    assert abs(int(corner[0]) - 200) < 5 and abs(int(corner[1]) - 30) < 5


def test_zoom_out_with_a_new_aspect_changes_the_canvas_shape() -> None:
    canvas = zoom_canvas(_picture(128, 128), 1.0, (192, 128))
    assert canvas.size == (192, 128) and canvas.box == (32, 0, 160, 128)


@pytest.mark.parametrize("factor", [0.99, 2.01, -1.0, float("nan")])
def test_zoom_outside_one_to_two_is_refused(factor: float) -> None:
    with pytest.raises(PromptError, match="Zoom must be from 1 to 2"):
        zoom_canvas(_picture(64, 64), factor, (64, 64))


@pytest.mark.parametrize(("direction", "size", "box"), [
    ("left", (192, 128), (64, 0, 192, 128)), ("right", (192, 128), (0, 0, 128, 128)),
    ("up", (128, 192), (0, 64, 128, 192)), ("down", (128, 192), (0, 0, 128, 128)),
])
def test_pan_grows_the_canvas_in_its_direction_and_keeps_the_pixels(direction: str, size: tuple[int, int],
                                                                      box: tuple[int, int, int, int]) -> None:
    source = _picture(128, 128)
    canvas = pan_canvas(source, direction, max_side=2048)
    assert canvas.size == size and canvas.box == box
    assert np.array_equal(np.asarray(canvas.image.crop(box)), np.asarray(source))


def test_repeated_pans_stop_at_the_size_limit() -> None:
    picture = _picture(512, 512)
    sizes = []
    with pytest.raises(PromptError, match="pans stop at 2048 px"):
        for _ in range(10):
            picture = pan_canvas(picture, "left", max_side=2048).image
            sizes.append(picture.size)
    assert sizes == [(768, 512), (1152, 512), (1728, 512)]


def test_unknown_direction_is_refused() -> None:
    with pytest.raises(PromptError, match="left, right, up, down"):
        pan_canvas(_picture(64, 64), "sideways", max_side=2048)


def test_make_square_extends_the_short_side() -> None:
    canvas = square_canvas(_picture(1024, 576), max_side=2048)
    assert canvas.size == (1024, 1024) and canvas.box == (0, 224, 1024, 800)
    with pytest.raises(PromptError, match="already square"):
        square_canvas(_picture(64, 64), max_side=2048)


def test_cells_parse_and_become_a_grid_mask() -> None:
    assert parse_cells("a1, B2,a1") == ("a1", "b2")
    mask = _mask_array(cell_mask((90, 60), ("a1", "c3")))
    assert mask[:20, :30].all() and mask[40:, 60:].all() and mask.sum() == 2 * 30 * 20
    for bad in ("d1", "a4", "a", "", ",", "a1" * 40):
        with pytest.raises(PromptError):
            parse_cells(bad)


def test_uploaded_masks_must_match_and_be_black_and_white() -> None:
    good = Image.new("L", (64, 64), 0)
    good.paste(255, (0, 0, 32, 32))
    assert _mask_array(check_mask(good.convert("RGB"), (64, 64))).sum() == 32 * 32
    with pytest.raises(PromptError, match="64x64"):
        check_mask(good, (128, 64))
    with pytest.raises(PromptError, match="not black and white"):
        check_mask(Image.new("L", (64, 64), 128), (64, 64))
    with pytest.raises(PromptError, match="all black"):
        check_mask(Image.new("L", (64, 64), 0), (64, 64))


@settings(max_examples=25, deadline=None)
@given(st.integers(8, 96), st.integers(8, 96), st.integers(0, 95), st.integers(0, 95), st.integers(0, 12))
def test_paste_back_never_changes_a_pixel_outside_the_mask(w: int, h: int, x: int, y: int, feather: int) -> None:
    region = Image.new("L", (96, 96), 0)
    region.paste(255, (x, y, min(96, x + w), min(96, y + h)))
    canvas = region_canvas(_picture(96, 96, 1), region, feather=feather)
    generated = _picture(96, 96, 2)
    alpha = paste_alpha(canvas.mask, feather)
    out = np.asarray(composite(canvas.image, generated, alpha))
    outside = ~_mask_array(canvas.mask)
    assert np.array_equal(out[outside], np.asarray(canvas.image)[outside])
    # deep inside the original region (beyond the band) the generated pixels are kept whole
    inner = _mask_array(grow(region, 0)) & (np.asarray(alpha) == 255)
    assert np.array_equal(out[inner], np.asarray(generated)[inner])


def test_paste_alpha_fades_across_the_band() -> None:
    mask = Image.new("L", (128, 64), 0)
    mask.paste(255, (64, 0, 128, 64))
    row = np.asarray(paste_alpha(mask, 16))[32]
    assert row[63] == 0 and row[127] == 255 and row[100] == 255
    band = row[64:81]
    assert (np.diff(band.astype(int)) >= 0).all() and 0 < band[8] < 255

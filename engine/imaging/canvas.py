"""Canvases for editing a picture: Zoom Out, Pan, Make Square and Vary (Region).

Pure geometry on PIL images (no torch): each edit becomes a `Canvas`, the picture to start
from (the source placed on a larger or reshaped canvas, the new area pre-filled) and a mask
(white = paint here, black = keep). `engine.diffusion.inpaint` paints the white part and pastes
the result back over the canvas with `paste_alpha`, so every pixel outside the mask is the
canvas's own pixel, exactly.

Why each step is done this way:

- **Fill before denoising.** The new area of an outpaint starts as the source's edge pixels
  extended outwards and blurred (as Fooocus and A1111's "fill" do), not flat grey: edits start
  part-way (`EDIT_STRENGTH` < 1), so the colours at the seam carry on into the new area.
- **Overlap band.** The mask is the new area grown by `feather` pixels into the old picture,
  so the model repaints a strip across the seam instead of meeting a hard edge.
- **Feathered paste-back.** `paste_alpha` is the mask eroded, then box-blurred over the same
  width (a morphological opening, smoothed): it falls to 0 at the mask's edge and is 0 outside
  it, so the generated pixels fade in across the band and nothing outside the mask changes.
- **Sizes.** Canvases are whole multiples of 64 pixels (what every SD UNet takes); a pan
  grows the canvas by half its side in that direction, up to `max_side` (PAN_MAX_SIDE).
- **Linear time.** Dilation and erosion are separable running max/min filters over numpy
  windows (a square structuring element), so a 2048² mask with a 32-pixel band takes ~0.1 s.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
from PIL import Image, ImageFilter

from engine.errors import PromptError

__all__ = [
    "CELL_COLUMNS",
    "CELL_ROWS",
    "DIRECTIONS",
    "EDIT_STRENGTH",
    "MASK_GREY_FRACTION",
    "SIDE_MULTIPLE",
    "ZOOM_MAX",
    "ZOOM_MIN",
    "Canvas",
    "cell_mask",
    "check_mask",
    "check_zoom",
    "composite",
    "feather_for",
    "fit_source",
    "grow",
    "pan_canvas",
    "parse_cells",
    "paste_alpha",
    "region_canvas",
    "shrink",
    "square_canvas",
    "zoom_canvas",
]

Direction = Literal["left", "right", "up", "down"]
DIRECTIONS: tuple[str, ...] = ("left", "right", "up", "down")
ZOOM_MIN = 1.0
ZOOM_MAX = 2.0
SIDE_MULTIPLE = 64
EDIT_STRENGTH = 0.9  # edits start from the filled canvas, 90% noised: the fill's colours carry into the new area
CELL_COLUMNS = "abc"  # left to right
CELL_ROWS = "123"  # top to bottom
MAX_CELLS_TEXT = 64  # "a1,a2,...,c3" is 26 characters
MASK_GREY_FRACTION = 0.02  # an uploaded mask may have this share of grey (anti-aliased) pixels, no more


@dataclass(frozen=True)
class Canvas:
    """Where an edit starts: the canvas image, what to paint, and where the source sits."""

    image: Image.Image  # RGB, the canvas size; the new area pre-filled
    mask: Image.Image  # L, 255 = paint (including the overlap band), 0 = keep
    box: tuple[int, int, int, int]  # the source's place on the canvas (left, top, right, bottom)
    feather: int  # width of the overlap band / paste-back fade, pixels

    @property
    def size(self) -> tuple[int, int]:
        return self.image.size


def feather_for(width: int, height: int) -> int:
    """The overlap band for a canvas: 1/32 of the short side, at least 8 pixels (16 at 512²)."""
    return max(8, min(width, height) // 32)


def _round_side(value: float) -> int:
    return max(SIDE_MULTIPLE, round(value / SIDE_MULTIPLE) * SIDE_MULTIPLE)


def fit_source(image: Image.Image, width: int, height: int) -> Image.Image:
    """The picture as RGB at the size it was generated at (an upscale is brought back down),
    so edits work at the model's scale and a pan of an upscale does not start at 2048 px."""
    image = image.convert("RGB")
    if image.size != (width, height):
        image = image.resize((width, height), Image.Resampling.LANCZOS)
    return image


def _max_filter(array: np.ndarray, radius: int) -> np.ndarray:
    """Running maximum over a (2r+1)² square, separable: O(pixels x r) with numpy windows."""
    if radius <= 0:
        return array
    out = array
    for axis in (0, 1):
        pad = [(0, 0), (0, 0)]
        pad[axis] = (radius, radius)
        padded = np.pad(out, pad, mode="constant", constant_values=0)
        windows = np.lib.stride_tricks.sliding_window_view(padded, 2 * radius + 1, axis=axis)
        out = windows.max(axis=-1)
    return out


def grow(mask: Image.Image, radius: int) -> Image.Image:
    """Binary mask (L, > 127 is set) dilated by `radius` pixels (a square), as 0/255."""
    binary = (np.asarray(mask.convert("L")) > 127).astype(np.uint8)
    return Image.fromarray((_max_filter(binary, radius) * 255).astype(np.uint8), "L")


def shrink(mask: Image.Image, radius: int) -> Image.Image:
    """Binary mask eroded by `radius` pixels (a square), as 0/255 (the canvas edge counts as set)."""
    binary = (np.asarray(mask.convert("L")) > 127).astype(np.uint8)
    if radius <= 0:
        return Image.fromarray(binary * 255, "L")
    inverted = 1 - binary
    # Erosion is dilation of the complement; outside the canvas counts as "set" so a mask that
    # reaches the border keeps its full strength there.
    padded = np.pad(inverted, radius, mode="constant", constant_values=0)
    grown = _max_filter(padded, radius)[radius:-radius, radius:-radius]
    return Image.fromarray(((1 - grown) * 255).astype(np.uint8), "L")


def paste_alpha(mask: Image.Image, feather: int) -> Image.Image:
    """How much of the generated picture to keep at each pixel (L, 0-255).

    The mask eroded by `feather`, then blurred with two box blurs of `feather / 2` each (total
    reach `feather`): 255 deep inside the mask, a smooth fade across the band, and exactly 0
    everywhere outside the mask (an opening is contained in the set it opens)."""
    if feather <= 0:
        return mask.convert("L").point(lambda v: 255 if v > 127 else 0)
    alpha = shrink(mask, feather)
    half = feather // 2
    rest = feather - half
    alpha = alpha.filter(ImageFilter.BoxBlur(half)).filter(ImageFilter.BoxBlur(rest)) if half else alpha.filter(
        ImageFilter.BoxBlur(rest))
    # BoxBlur rounds: clear any value outside the mask so "outside stays as it was" holds exactly.
    binary = np.asarray(mask.convert("L")) > 127
    array = np.where(binary, np.asarray(alpha), 0).astype(np.uint8)
    return Image.fromarray(array, "L")


def composite(canvas: Image.Image, generated: Image.Image, alpha: Image.Image) -> Image.Image:
    """`generated` where alpha is 255, `canvas` where it is 0, a blend in between."""
    return Image.composite(generated.convert("RGB"), canvas.convert("RGB"), alpha)


def _fill_around(source: Image.Image, size: tuple[int, int], offset: tuple[int, int]) -> Image.Image:
    """The source at `offset` on a canvas of `size`, the rest its edge pixels extended outwards
    and blurred (a soft continuation of the colours at the seam, not grey)."""
    width, height = size
    left, top = offset
    array = np.asarray(source.convert("RGB"))
    pads = ((top, height - top - source.height), (left, width - left - source.width), (0, 0))
    extended = Image.fromarray(np.pad(array, pads, mode="edge"), "RGB")
    blurred = extended.filter(ImageFilter.GaussianBlur(max(4, max(size) // 32)))
    blurred.paste(source.convert("RGB"), (left, top))
    return blurred


def _place(source: Image.Image, size: tuple[int, int], offset: tuple[int, int], feather: int) -> Canvas:
    left, top = offset
    box = (left, top, left + source.width, top + source.height)
    new_area = Image.new("L", size, 255)
    new_area.paste(0, box)
    return Canvas(image=_fill_around(source, size, offset), mask=grow(new_area, feather), box=box, feather=feather)


def check_zoom(factor: float) -> float:
    """The zoom factor, or a `PromptError` saying what is allowed."""
    if not isinstance(factor, int | float) or not ZOOM_MIN <= float(factor) <= ZOOM_MAX:
        raise PromptError(f"Zoom must be from {ZOOM_MIN:g} to {ZOOM_MAX:g} (like 1.5 or 2), got {factor}.")
    return float(factor)


def zoom_canvas(source: Image.Image, factor: float, size: tuple[int, int], *, feather: int | None = None) -> Canvas:
    """Zoom Out: the source fitted inside a canvas of `size`, shrunk by `factor`, centred.

    `size` is the output size (the source's own, or a new `--ar`'s); factor 1 with a new
    aspect only paints the bars the new shape adds."""
    factor = check_zoom(factor)
    width, height = size
    scale = min(width / source.width, height / source.height) / factor
    inner = (max(1, round(source.width * scale)), max(1, round(source.height * scale)))
    shrunk = source.convert("RGB").resize(inner, Image.Resampling.LANCZOS)
    offset = ((width - inner[0]) // 2, (height - inner[1]) // 2)
    return _place(shrunk, size, offset, feather if feather is not None else feather_for(width, height))


def pan_canvas(source: Image.Image, direction: str, *, max_side: int, feather: int | None = None) -> Canvas:
    """Pan: the canvas grows by half its side in `direction`; the source keeps its pixels."""
    if direction not in DIRECTIONS:
        raise PromptError(f"Pan direction must be one of {', '.join(DIRECTIONS)}, got {direction[:20]!r}.")
    width, height = source.size
    horizontal = direction in ("left", "right")
    side = width if horizontal else height
    grown = _round_side(side + side / 2)
    if grown > max_side:
        axis = "wide" if horizontal else "tall"
        raise PromptError(f"This picture is already {side} px {axis}; panning would make it {grown} px and pans stop "
                          f"at {max_side} px. Pan the other way, or zoom out instead.")
    size = (grown, height) if horizontal else (width, grown)
    offset = {"left": (grown - width, 0), "right": (0, 0), "up": (0, grown - height), "down": (0, 0)}[direction]
    return _place(source.convert("RGB"), size, offset,
                  feather if feather is not None else feather_for(*size))


def square_canvas(source: Image.Image, *, max_side: int, feather: int | None = None) -> Canvas:
    """Make Square: the short side extended (both ways equally) to the long side."""
    width, height = source.size
    if width == height:
        raise PromptError("This picture is already square; Make Square is for wide or tall pictures.")
    side = _round_side(max(width, height))
    if side > max_side:
        raise PromptError(f"A square of {side} px is larger than the {max_side} px edits allow.")
    offset = ((side - width) // 2, (side - height) // 2)
    return _place(source.convert("RGB"), (side, side), offset,
                  feather if feather is not None else feather_for(side, side))


def parse_cells(text: str) -> tuple[str, ...]:
    """"a1,b2" -> ("a1", "b2"): columns a-c left to right, rows 1-3 top to bottom."""
    if len(text) > MAX_CELLS_TEXT:
        raise PromptError(f"Cells are written like a1,b2 (at most 9 of them); that list is {len(text)} characters.")
    cells: list[str] = []
    for part in text.replace(" ", "").lower().split(","):
        if not part:
            continue
        if len(part) != 2 or part[0] not in CELL_COLUMNS or part[1] not in CELL_ROWS:
            raise PromptError(f"Unknown cell {part[:8]!r}: cells are a1 to c3 (column a-c from the left, row 1-3 "
                              "from the top), separated by commas, like a1,b2.")
        if part not in cells:
            cells.append(part)
    if not cells:
        raise PromptError("Choose at least one cell, like a1 or b2,c2 (columns a-c, rows 1-3).")
    return tuple(cells)


def cell_mask(size: tuple[int, int], cells: Sequence[str]) -> Image.Image:
    """White where the chosen cells of a 3x3 grid are (edges split as evenly as integers allow)."""
    width, height = size
    xs = [round(width * k / 3) for k in range(4)]
    ys = [round(height * k / 3) for k in range(4)]
    mask = Image.new("L", size, 0)
    for cell in cells:
        col, row = CELL_COLUMNS.index(cell[0]), CELL_ROWS.index(cell[1])
        mask.paste(255, (xs[col], ys[row], xs[col + 1], ys[row + 1]))
    return mask


def check_mask(mask: Image.Image, size: tuple[int, int]) -> Image.Image:
    """An uploaded mask as 0/255 L, or a `PromptError`: it must be `size` and black and white."""
    if mask.size != size:
        raise PromptError(f"The mask is {mask.width}x{mask.height} but the picture is {size[0]}x{size[1]}; "
                          "upload a black-and-white mask of exactly the picture's size.")
    if "A" in mask.getbands() and mask.mode != "LA":
        mask = mask.convert("RGBA")
        flat = Image.new("RGBA", mask.size, (0, 0, 0, 255))
        flat.alpha_composite(mask)
        mask = flat
    array = np.asarray(mask.convert("L"))
    grey = np.count_nonzero((array > 32) & (array < 223))
    if grey > MASK_GREY_FRACTION * array.size:
        raise PromptError(f"The mask is not black and white ({100 * grey / array.size:.0f}% of it is grey); paint "
                          "the part to repaint white and the rest black.")
    binary = array > 127
    if not binary.any():
        raise PromptError("The mask is all black: paint the part to repaint white.")
    return Image.fromarray(binary.astype(np.uint8) * 255, "L")


def region_canvas(source: Image.Image, region: Image.Image, *, feather: int | None = None) -> Canvas:
    """Vary (Region): keep the picture, paint the region (grown by the band) anew."""
    if region.size != source.size:
        region = region.convert("L").resize(source.size, Image.Resampling.NEAREST)
    width, height = source.size
    feather = feather if feather is not None else feather_for(width, height)
    return Canvas(image=source.convert("RGB"), mask=grow(region, feather), box=(0, 0, width, height), feather=feather)

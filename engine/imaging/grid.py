"""The 2x2 grid Midjourney answers with: four images, any aspect, no gaps or borders.

Every image of a job has the same size, so the grid is exactly 2 x width by 2 x height and
each image is pasted at its cell's corner, pixel for pixel (no resampling, no padding).
Fewer than four images (a partial batch, a preview) fill the cells row by row; an empty
cell stays black.
"""

from __future__ import annotations

from collections.abc import Sequence

from PIL import Image

__all__ = ["make_grid"]


def make_grid(images: Sequence[Image.Image], columns: int = 2) -> Image.Image:
    """Tile `images` (all the same size) in a grid of `columns` columns, row by row."""
    if not images:
        raise ValueError("make_grid needs at least one image")
    width, height = images[0].size
    if any(im.size != (width, height) for im in images):
        raise ValueError(f"grid images must all be {width}x{height}, got {[im.size for im in images]}")
    cols = min(columns, len(images))
    rows = -(-len(images) // cols)
    mode = "RGBA" if any(im.mode == "RGBA" for im in images) else "RGB"
    grid = Image.new(mode, (cols * width, rows * height))
    for index, image in enumerate(images):
        grid.paste(image if image.mode == mode else image.convert(mode),
                   ((index % cols) * width, (index // cols) * height))
    return grid

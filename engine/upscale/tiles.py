"""Tiled inference for image-to-image models, so memory stays bounded whatever the size.

An ×4 Real-ESRGAN pass over a 1024² image needs gigabytes of activations at once; cut into
tiles it needs only what one tile needs. Tiles are cut evenly (no thin leftover tile), each
one is run with `overlap` pixels of its neighbours around it, and neighbouring outputs are
cross-faded over the central `overlap` pixels of their shared strip, so no seam shows:

    tile k's core      │ shared strip (2·overlap wide) │   tile k+1's core
    ───────────────────┼──────────┬─────────┬──────────┼──────────────────
    weight of tile k:  1 ........ 1 ╲ ramp ╲ 0 ........ 0

The ramps of two neighbours add up to exactly 1, and so do the products of the horizontal
and vertical ramps, so outputs are summed straight into the result: no weight map is kept,
and only one tile-row of the output is held in float32 at a time.
Each pixel that gets any weight has at least `overlap/2` pixels of real context on every
side. On out-of-memory the tile is halved and the image started again (down to `MIN_TILE`).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from engine.memory import free_memory, is_out_of_memory

logger = logging.getLogger(__name__)

MIN_TILE = 32


@dataclass(frozen=True)
class Span:
    """One tile along one axis: the input window it reads and its share of the output."""

    start: int  # window in input pixels, context included
    end: int
    core_start: int  # the part this tile owns before blending
    core_end: int


def spans(length: int, tile: int, overlap: int) -> list[Span]:
    """Cut `length` pixels into the fewest even cores of at most `tile`, with context.

    `tile <= 0` or `tile >= length` gives one span covering everything.
    """
    if tile <= 0 or tile >= length:
        return [Span(0, length, 0, length)]
    count = math.ceil(length / tile)
    bounds = [round(k * length / count) for k in range(count + 1)]
    return [
        Span(max(0, bounds[k] - overlap), min(length, bounds[k + 1] + overlap), bounds[k], bounds[k + 1])
        for k in range(count)
    ]


def ramp(span: Span, length: int, overlap: int, scale: int) -> torch.Tensor:
    """Blend weights (output pixels) for `span`'s window along one axis.

    Inside a shared strip around a core boundary `b`, the weight falls linearly from 1 to 0
    over output pixels [(b - overlap/2)·s, (b + overlap/2)·s); neighbours' ramps sum to 1.
    """
    start, end = span.start * scale, span.end * scale
    positions = torch.arange(start, end, dtype=torch.float32) + 0.5
    weight = torch.ones(end - start)
    half = overlap * scale / 2
    if half <= 0:
        inside = (positions >= span.core_start * scale) & (positions < span.core_end * scale)
        return inside.float()
    if span.core_start > 0:
        left = span.core_start * scale
        weight = torch.minimum(weight, ((positions - (left - half)) / (2 * half)).clamp(0, 1))
    if span.core_end < length:
        right = span.core_end * scale
        weight = torch.minimum(weight, (((right + half) - positions) / (2 * half)).clamp(0, 1))
    return weight


def run_tiles(
    model: Callable[[torch.Tensor], torch.Tensor],
    image: torch.Tensor,
    *,
    scale: int,
    tile: int,
    overlap: int,
    out_channels: int | None = None,
    as_uint8_hwc: bool = False,
) -> torch.Tensor:
    """Apply `model` (1×C×h×w → 1×C'×h·s×w·s, values in [0, 1]) to `image` (1×C×H×W) tile by tile.

    The image is moved to the model's device one window at a time. Tiles are summed into a
    float32 band one tile-row high; rows that no later tile touches are moved to the result
    as soon as a tile-row is done, so no full-size float32 copy of the output ever exists
    when `as_uint8_hwc` asks for an H·s×W·s×C' uint8 result (what an image needs).
    Otherwise the result is a 1×C'×H·s×W·s float32 tensor. All results are on the CPU.
    `overlap` is clamped to half the tile so cores stay dominant.
    """
    _, channels, height, width = image.shape
    if tile > 0:
        overlap = min(overlap, tile // 2)
    rows, cols = spans(height, tile, overlap), spans(width, tile, overlap)
    out_c, out_h, out_w = out_channels or channels, height * scale, width * scale
    if as_uint8_hwc:
        out = torch.empty(out_h, out_w, out_c, dtype=torch.uint8)
    else:
        out = torch.empty(1, out_c, out_h, out_w, dtype=torch.float32)
    blend = len(rows) > 1 or len(cols) > 1
    col_weights = [ramp(c, width, overlap, scale) for c in cols] if blend else []
    band: torch.Tensor | None = None
    band_start = band_end = 0
    for i, row in enumerate(rows):
        y0, y1 = row.start * scale, row.end * scale
        fresh = torch.zeros(1, out_c, y1 - y0, out_w, dtype=torch.float32)
        if band is not None and band_end > y0:  # carry the strip shared with the previous tile-row
            fresh[:, :, : band_end - y0] = band[:, :, y0 - band_start:]
        band, band_start, band_end = fresh, y0, y1
        row_weight = ramp(row, height, overlap, scale)[:, None] if blend else None
        for j, col in enumerate(cols):
            window = image[:, :, row.start:row.end, col.start:col.end]
            result = model(window).float().cpu()
            target = band[:, :, :, col.start * scale:col.end * scale]
            if row_weight is not None:
                target.addcmul_(result, row_weight * col_weights[j][None, :])
            else:
                target.copy_(result)
        done = rows[i + 1].start * scale if i + 1 < len(rows) else band_end
        _emit(out, band[:, :, : done - band_start], band_start, as_uint8_hwc)
    return out


def _emit(out: torch.Tensor, part: torch.Tensor, start: int, as_uint8_hwc: bool) -> None:
    """Write finished output rows `part` (1×C×h×W float32) at row `start` of `out`."""
    stop = start + part.shape[2]
    if as_uint8_hwc:
        out[start:stop] = part[0].permute(1, 2, 0).mul(255).round_().clamp_(0, 255).to(torch.uint8)
    else:
        out[:, :, start:stop] = part


def run_tiled_with_retry(
    model: Callable[[torch.Tensor], torch.Tensor],
    image: torch.Tensor,
    *,
    scale: int,
    tile: int,
    overlap: int,
    out_channels: int | None = None,
    as_uint8_hwc: bool = False,
    on_oom: Callable[[int], None] | None = None,
) -> tuple[torch.Tensor, int]:
    """`run_tiles`, halving the tile on out-of-memory; returns (output, tile that worked).

    `tile=0` (no tiling) that runs out of memory continues with half the longest side.
    Raises the last out-of-memory error once the tile would go below `MIN_TILE`.
    """
    while True:
        try:
            out = run_tiles(model, image, scale=scale, tile=tile, overlap=overlap, out_channels=out_channels,
                            as_uint8_hwc=as_uint8_hwc)
            return out, tile
        except Exception as exc:
            if not is_out_of_memory(exc):
                raise
            current = tile if tile > 0 else max(image.shape[-2:])
            smaller = current // 2
            if smaller < MIN_TILE:
                raise
            logger.warning("out of memory with upscale tile %d; retrying with %d", current, smaller)
            free_memory()
            if on_oom is not None:
                on_oom(smaller)
            tile = smaller

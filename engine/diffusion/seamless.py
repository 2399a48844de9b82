"""`--tile`: seamless textures by circular padding in the UNet and VAE convolutions.

With circular padding every convolution sees the opposite edge beyond each edge, so the
image wraps around and tiles without a seam. The models are shared by every job, so the
padding is switched for one job only and always restored afterwards, even when the job
fails or is cancelled. VAE tiling (decoding in overlapping pieces) would break the wrap, so
it is switched off for the same span.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

__all__ = ["circular_padding"]


@contextmanager
def circular_padding(*modules: Any) -> Iterator[int]:
    """Within the block, every padded Conv2d in `modules` pads circularly; yields how many."""
    import torch

    saved: list[tuple[Any, str]] = []
    tiled: list[Any] = []
    try:
        for module in modules:
            if module is None:
                continue
            if getattr(module, "use_tiling", False):
                module.use_tiling = False
                tiled.append(module)
            for layer in module.modules():
                if isinstance(layer, torch.nn.Conv2d) and any(p > 0 for p in _padding(layer)):
                    saved.append((layer, layer.padding_mode))
                    layer.padding_mode = "circular"
        yield len(saved)
    finally:
        for layer, mode in saved:
            layer.padding_mode = mode
        for module in tiled:
            module.use_tiling = True


def _padding(layer: Any) -> tuple[int, ...]:
    padding = layer.padding
    if isinstance(padding, str):  # "same" / "valid": not used by SD models
        return (0,)
    return tuple(padding)

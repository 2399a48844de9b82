"""Library calls that use Tessera's configuration (environment and `.env`).

Engine never reads the configuration (it sits below the bot and takes its settings as
arguments), so the convenience of "just use what `.env` says" lives here, one layer up.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Literal

from PIL import Image

from bot.config import load_settings
from engine.upscale.realesrgan import Upscaler

__all__ = ["upscale"]


@lru_cache(maxsize=1)
def _default_upscaler() -> Upscaler:
    return Upscaler.from_settings(load_settings())


def upscale(image: Image.Image, scale: Literal[2, 4]) -> Image.Image:
    """Upscale `image` ×`scale` with the configured upscaler (weights folder, device, tiling)."""
    return _default_upscaler().upscale(image, scale)

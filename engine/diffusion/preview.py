"""Cheap live previews: latents to RGB with one linear map, no VAE and no extra weights.

The VAE decoder costs as much as several denoising steps, so progress previews use the
well-known linear approximation of it (the "approx cheap" preview of A1111 and ComfyUI's
latent RGB factors): each latent pixel's 4 channels times a 4x3 matrix, plus a bias, gives one
RGB pixel at 1/8 of the image's resolution. Blurry, which is exactly what Midjourney's
progress shows.
"""

from __future__ import annotations

from typing import Any

from PIL import Image

__all__ = ["LATENT_RGB", "latents_to_preview"]

# (factors 4x3, bias 3) per family; SD 1.x and 2.x share the same VAE latent space.
_SD = ([[0.298, 0.207, 0.208], [0.187, 0.286, 0.173], [-0.158, 0.189, 0.264], [-0.184, -0.271, -0.473]],
       [0.0, 0.0, 0.0])
_SDXL = ([[0.3651, 0.4232, 0.4341], [-0.2533, -0.0042, 0.1068], [0.1076, 0.1111, -0.0362],
          [-0.3165, -0.2492, -0.2188]], [0.1084, -0.0175, -0.0011])
LATENT_RGB: dict[str, tuple[list[list[float]], list[float]]] = {"sd1": _SD, "sd2": _SD, "sdxl": _SDXL}


def latents_to_preview(latents: Any, family: str, *, scale: int = 1) -> Image.Image:
    """An RGB preview of latents (4, h, w) or (B, 4, h, w); a batch becomes a 2x2 grid.

    `scale` enlarges the result (bilinear) so a preview is not postage-stamp sized. The grid
    is assembled as one tensor, so there is a single small PIL image and a single resize.
    """
    import torch

    factors, bias = LATENT_RGB.get(family, _SD)
    x = latents.detach()[..., :4, :, :].float().cpu()
    if x.ndim == 3:
        x = x[None]
    rgb = torch.einsum("bchw,cr->bhwr", x, torch.tensor(factors)) + torch.tensor(bias)
    pixels = rgb.clamp_(-1, 1).add_(1).mul_(127.5).round_().to(torch.uint8)
    count, h, w, _ = pixels.shape
    cols = 1 if count == 1 else 2
    rows = -(-count // cols)
    grid = torch.zeros(rows * h, cols * w, 3, dtype=torch.uint8)
    for index in range(count):
        top, left = (index // cols) * h, (index % cols) * w
        grid[top:top + h, left:left + w] = pixels[index]
    image = Image.fromarray(grid.numpy(), "RGB")
    if scale > 1:
        image = image.resize((image.width * scale, image.height * scale), Image.Resampling.BILINEAR)
    return image

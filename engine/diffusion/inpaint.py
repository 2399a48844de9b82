"""Inpainting and outpainting inside Tessera's own denoising loop (`engine.diffusion.generate`).

A request with a `mask_image` (white = paint, black = keep) paints only the white part of its
`init_image`. Both kinds of checkpoint work, SD 1.x/2.x and SDXL alike:

- **Inpainting checkpoints** (9-channel UNet): the UNet's input is the scaled latents, the
  mask at latent size and the VAE latents of the masked image (its white part zeroed),
  concatenated on the channel axis.
- **Ordinary checkpoints** (4-channel UNet): after every step the known part is replaced by the
  init image's latents noised to the next step's level (`scheduler.add_noise`), so the model
  paints the hole while everything around it follows the picture.

Adapted from diffusers 0.42.1, `pipelines/stable_diffusion/pipeline_stable_diffusion_inpaint.py`
(`prepare_latents`, `_encode_vae_image`, `prepare_mask_latents`, the loop's 9-channel concat
and 4-channel blend) and `pipelines/stable_diffusion_xl/pipeline_stable_diffusion_xl_inpaint.py`
(the same steps; SDXL's time ids are generate.py's). What is kept exactly, so the pixels equal
the diffusers pipelines' for the same inputs, seed, steps and strength:

- the image is `pixels / 255 * 2 - 1`; the mask is binarised at 0.5 and resized to latent size
  with nearest-neighbour `interpolate`; the masked image is `image * (mask < 0.5)`;
- each image's generator draws in the pipelines' order: a VAE *sample* of the init image
  (4-channel UNets, or strength below 1), then the starting noise, then a VAE sample of the
  masked image. One generator per image (diffusers with a single generator and one image), so
  image *i* of a grid reproduces alone, as every Tessera image does;
- strength 1 starts from pure noise (x `init_noise_sigma`); below 1, from the init latents
  noised to the first timestep.

What Tessera adds after decoding (`paste_back`): with `feather > 0` the decoded picture is
blended over the canvas with `engine.imaging.canvas.paste_alpha`, so pixels outside the mask
are exactly the canvas's (the VAE round trip would otherwise shift them slightly) and the seam
fades over `feather` pixels. Parity is measured with `feather=0`, the pipelines' raw output.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from PIL import Image

from engine.errors import ImageFetchError
from engine.imaging.canvas import composite, paste_alpha

__all__ = ["InpaintBatch", "load_mask", "prepare_inpaint"]


def load_mask(path: str, size: tuple[int, int]) -> Image.Image:
    """A stored mask as L at `size` (nearest-neighbour, so it stays black and white)."""
    try:
        with Image.open(path) as image:
            mask = image.convert("L")
    except FileNotFoundError:
        raise ImageFetchError("the mask of this edit is no longer on disk (it may have been pruned)") from None
    except OSError as exc:
        raise ImageFetchError(f"the mask of this edit cannot be read: {exc}") from None
    if mask.size != size:
        mask = mask.resize(size, Image.Resampling.NEAREST)
    return mask


def _pixels(image: Image.Image) -> Any:
    """(1, 3, H, W) in [-1, 1], as diffusers' VaeImageProcessor makes it."""
    import numpy as np
    import torch

    array = np.asarray(image.convert("RGB")).astype(np.float32) / 255.0
    return torch.from_numpy(array).permute(2, 0, 1)[None] * 2.0 - 1.0


def _mask_tensor(mask: Image.Image) -> Any:
    """(1, 1, H, W) of 0/1: the mask processor's grayscale, /255 and binarise at 0.5."""
    import numpy as np
    import torch

    array = np.asarray(mask.convert("L")).astype(np.float32) / 255.0
    array = np.where(array < 0.5, 0.0, 1.0).astype(np.float32)
    return torch.from_numpy(array)[None, None]


@dataclass
class InpaintBatch:
    """Per-row inpainting state of one sub-batch (rows in slot order)."""

    nine_channels: bool
    mask: Any  # (B, 1, h, w) at latent size
    masked_latents: Any  # (B, 4, h, w): the masked image's latents (used by 9-channel UNets)
    image_latents: Any | None  # (B, 4, h, w): the init image's latents (used by 4-channel UNets)
    noise: Any  # (B, 4, h, w): the starting noise, re-used to noise the known part each step
    canvases: list[Image.Image]  # per row: the init picture, for the paste-back
    masks: list[Image.Image]  # per row: the full-size mask
    feathers: list[int]  # per row: paste-back band, 0 = none

    def unet_input(self, model_input: Any, do_cfg: bool) -> Any:
        """The UNet's input after `scale_model_input`: 9-channel UNets get the mask and the
        masked image's latents concatenated (doubled for classifier-free guidance)."""
        import torch

        if not self.nine_channels:
            return model_input
        mask, masked = self.mask, self.masked_latents
        if do_cfg:
            mask, masked = torch.cat([mask] * 2), torch.cat([masked] * 2)
        return torch.cat([model_input, mask.to(model_input.dtype), masked.to(model_input.dtype)], dim=1)

    def blend(self, latents: Any, scheduler: Any, timesteps: Any, index: int) -> Any:
        """4-channel UNets: the known part replaced by the init latents noised to the next
        step's level (the last step: the init latents themselves)."""
        import torch

        if self.nine_channels:
            return latents
        proper = self.image_latents
        assert proper is not None  # a 4-channel batch always keeps the image latents (need_image)
        if index < len(timesteps) - 1:
            proper = scheduler.add_noise(proper, self.noise, torch.tensor([timesteps[index + 1]]))
        mask = self.mask.to(latents.dtype)
        return (1 - mask) * proper.to(latents.dtype) + mask * latents

    def paste_back(self, images: dict[tuple[int, int], Image.Image], keys: Sequence[tuple[int, int]]) -> None:
        """Blend each decoded picture over its canvas (rows with feather > 0), in place."""
        alphas: dict[tuple[int, int], Image.Image] = {}
        for row, key in enumerate(keys):
            if key not in images or self.feathers[row] <= 0:
                continue
            ident = (id(self.masks[row]), self.feathers[row])
            if ident not in alphas:
                alphas[ident] = paste_alpha(self.masks[row], self.feathers[row])
            images[key] = composite(self.canvases[row], images[key], alphas[ident])


def prepare_inpaint(*, vae: Any, unet_channels: int, latent_channels: int, scale: Callable[[Any], Any],
                    encode: Callable[[Any], Any], rows: Sequence[tuple[str, str, int, int]], width: int,
                    height: int, vae_scale_factor: int, strength: float, scheduler: Any, first_timestep: Any,
                    fit: Callable[[Image.Image, int, int], Image.Image], open_image: Callable[[str], Image.Image],
                    device: Any, dtype: Any) -> tuple[Any, list[Any], InpaintBatch]:
    """Starting latents, the rows' generators (to use for the sampler's step noise) and the
    inpainting state, each row drawn as diffusers' inpaint pipelines draw it.

    `rows` are (init image path, mask path, seed, feather) per image; `scale` turns VAE
    latents into the UNet's scale; `encode(pixels)` is the VAE's `latent_dist` (with tiling).
    """
    import torch

    if unet_channels not in (4, 9):
        raise ValueError(f"inpainting needs a UNet with 4 or 9 input channels, not {unet_channels}")
    nine = unet_channels == 9
    strength_max = strength >= 1.0
    need_image = not nine or not strength_max
    shape = (1, latent_channels, height // vae_scale_factor, width // vae_scale_factor)
    upcast = vae.dtype == torch.float16 and getattr(vae.config, "force_upcast", False)
    dists: dict[Any, Any] = {}
    pictures: dict[str, Image.Image] = {}
    masks: dict[str, Image.Image] = {}

    def picture(path: str) -> Image.Image:
        if path not in pictures:
            pictures[path] = fit(open_image(path), width, height)
        return pictures[path]

    def mask_of(path: str) -> Image.Image:
        if path not in masks:
            masks[path] = load_mask(path, (width, height))
        return masks[path]

    def dist(key: tuple[str, str | None]) -> Any:
        if key not in dists:
            pixels = _pixels(picture(key[0]))
            if key[1] is not None:
                pixels = pixels * (_mask_tensor(mask_of(key[1])) < 0.5)
            dists[key] = encode(pixels.to(device=device, dtype=vae.dtype))
        return dists[key]

    def sample(d: Any, generator: Any) -> Any:
        draw = torch.randn(d.mean.shape, generator=generator, dtype=torch.float32).to(d.mean)
        return scale(d.mean + d.std * draw).to(dtype)

    generators, latents, noises, image_rows, masked_rows, mask_rows = [], [], [], [], [], []
    try:
        if upcast:
            vae.to(torch.float32)
        for init_path, mask_path, seed, _ in rows:
            generator = torch.Generator("cpu").manual_seed(seed)
            image_latents = sample(dist((init_path, None)), generator) if need_image else None
            noise = torch.randn(shape, generator=generator, dtype=torch.float32).to(device=device, dtype=dtype)
            masked_rows.append(sample(dist((init_path, mask_path)), generator))
            mask = torch.nn.functional.interpolate(_mask_tensor(mask_of(mask_path)),
                                                   size=(height // vae_scale_factor, width // vae_scale_factor))
            mask_rows.append(mask.to(device=device, dtype=dtype))
            if strength_max:
                start = noise * scheduler.init_noise_sigma
            else:
                start = scheduler.add_noise(image_latents, noise, first_timestep.repeat(1))
            generators.append(generator)
            latents.append(start)
            noises.append(noise)
            image_rows.append(image_latents)
    finally:
        if upcast:
            vae.to(torch.float16)
    batch = InpaintBatch(
        nine_channels=nine, mask=torch.cat(mask_rows), masked_latents=torch.cat(masked_rows),
        image_latents=torch.cat([row for row in image_rows if row is not None]) if need_image else None, noise=torch.cat(noises),
        canvases=[picture(r[0]) for r in rows], masks=[mask_of(r[1]) for r in rows], feathers=[r[3] for r in rows],
    )
    return torch.cat(latents), generators, batch

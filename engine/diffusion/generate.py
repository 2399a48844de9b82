"""From requests to pixels: one batched denoising run, with previews, cancel and OOM retry.

The denoising loop is written out here (as in a diffusers pipeline, step by step, using the
loaded pipeline's own UNet, VAE, text encoders and a scheduler built per job) because several
things a Midjourney grid needs are not parameters of the stock pipelines:

1. **One batch for many requests.** Requests with the same `batch_key()` (model, size, steps,
   sampler, tile, stop, image-to-image strength) run as one UNet batch of
   `sum(request.count)` images. Guidance is a per-image tensor, so requests with different
   `--stylize` (and `--chaos`'s guidance jitter) share the batch.
2. **Per-image seeds.** Image *i* of a request uses its own `torch.Generator` (on the CPU,
   seeded `(seed + i) mod 2**32`) for its starting noise and for the ancestral samplers' step
   noise, so any image reproduces alone and a batch gives the same images as single runs.
3. **Conditioning** comes from `engine.diffusion.conditioning` (`::` weights, negatives, long prompts,
   chaos); it is padded to one sequence length across the batch.
4. **Image-to-image** (image prompts and variations): the init image is fitted to the
   request's size (centre crop, no distortion), encoded once with the VAE (the latent mean),
   and noised to the first timestep of the last `round_down(steps x strength)` steps (at least
   one), as diffusers' img2img pipelines do.
5. **`--stop N`** runs the first ceil(N% of the steps) and decodes the sampler's current
   estimate of the final image (`pred_original_sample`; the latents themselves for samplers
   that do not give one). `total` in progress reports counts the steps that will run.
6. **`--tile`**: `engine.diffusion.seamless.circular_padding` around the loop and the decode.
7. **Progress**: `on_step(request_index, StepProgress)` after every step; every
   `preview_every` steps (and at the last step) with a blurry preview grid decoded from the
   latents by `engine.diffusion.preview` (no VAE call).
8. **Cancellation**: `should_stop(request_index)` is asked before every step. A cancelled
   request ends with `JobCancelled`; when every request in the batch is cancelled the loop
   stops at once.
9. **Out of memory**: the batch is halved and each half retried (down to single images),
   which gives identical images because every image has its own generator.
10. **Inpainting** (edits: zoom out, pan, make square, vary region): a request with a
   `mask_image` paints only the mask's white part of its init image, with 9-channel
   inpainting UNets or ordinary 4-channel ones; the steps are in `engine.diffusion.inpaint`,
   hooked in at the starting latents, the UNet input, after each step and after decoding.

Decoding makes PIL images and nothing more: grids, PNG encoding and storage writes happen off
this (GPU) thread.
"""

from __future__ import annotations

import inspect
import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from PIL import Image

from engine.diffusion.conditioning import Conditioning, PromptEncoder, chaos_for_image, pad_to_length
from engine.diffusion.inpaint import prepare_inpaint
from engine.diffusion.loras import BatchAdapters
from engine.diffusion.models import LoadedModel
from engine.diffusion.preview import latents_to_preview
from engine.diffusion.references import (
    AdapterFiles,
    ReferenceAdapter,
    batch_embeds,
    check_adapter_files,
    reference_scales,
)
from engine.diffusion.seamless import circular_padding
from engine.errors import ImageFetchError, JobCancelled, ModelError
from engine.memory import free_memory, is_out_of_memory, split_on_oom
from engine.request import GenerationRequest
from engine.samplers import make_scheduler

__all__ = ["Generator", "StepProgress", "fit_image", "run_generation"]

log = logging.getLogger(__name__)

DECODE_PIXELS = 1024 * 1024  # most pixels decoded by one VAE call
VAE_TILE_ABOVE_AREA = 1.5  # x native area: larger images are decoded in tiles (VAE_TILING=true)


@dataclass
class StepProgress:
    step: int  # 1-based, the step just finished
    total: int  # steps this run will do
    preview: Image.Image | None  # blurry grid of the request's images, every few steps


OnStep = Callable[[int, StepProgress], None]
ShouldStop = Callable[[int], bool]


@dataclass(frozen=True)
class _Slot:
    request: int  # index in the requests list
    image: int  # index in the request's grid
    seed: int


class _AllCancelled(Exception):
    """Every request of a sub-batch was cancelled: unwind the loop."""


def fit_image(image: Image.Image, width: int, height: int) -> Image.Image:
    """`image` as RGB at `width` x `height`: centre-cropped to the aspect, then resized."""
    from PIL import ImageOps

    return ImageOps.fit(image.convert("RGB"), (width, height), Image.Resampling.LANCZOS)


class Generator:
    """Runs generation requests on one loaded model (use from one thread at a time)."""

    def __init__(self, model: LoadedModel, *, preview_every: int = 5, preview_scale: int = 2,
                 adapters: BatchAdapters | None = None,
                 reference_files: AdapterFiles | None = None) -> None:
        self.model = model
        self.reference_files = reference_files  # IP-Adapter files for pictures as prompts (or None)
        self._references: ReferenceAdapter | None = None
        self.pipe = model.pipe
        self.preview_every = max(1, preview_every)
        self.preview_scale = preview_scale
        # Looked up once: both walk every parameter of the pipeline (ms per call).
        self.device = model.execution_device
        self.dtype = model.pipe.unet.dtype
        self.encoder = PromptEncoder(model.pipe, model.family, self.device, self.dtype)
        self._schedulers: dict[str, Any] = {}
        self.adapters = adapters or BatchAdapters(model.pipe, model.family)  # LoRAs, embeddings, draft

    # ------------------------------------------------------------------ public API
    def plain_encoder(self) -> PromptEncoder:
        """The model's own text encoders with no LoRA active (a batch's LoRA set stays on the
        pipeline after it): what /shorten measures a prompt with."""
        if self.adapters.loras.activate(()):
            self.encoder.forget()
        return self.encoder

    def generate(self, requests: Sequence[GenerationRequest], *, on_step: OnStep | None = None,
                 should_stop: ShouldStop | None = None) -> list[list[Image.Image]]:
        """Images per request, run as one batch. Raises `JobCancelled` when every request was
        cancelled; a request cancelled while others ran gets an empty list (see
        `generate_each` to tell the cases apart)."""
        outcomes = self.generate_each(requests, on_step=on_step, should_stop=should_stop)
        if all(isinstance(o, JobCancelled) for o in outcomes):
            raise JobCancelled()
        return [[] if isinstance(o, JobCancelled) else o for o in outcomes]

    def generate_each(self, requests: Sequence[GenerationRequest], *, on_step: OnStep | None = None,
                      should_stop: ShouldStop | None = None) -> list[list[Image.Image] | JobCancelled]:
        """Like `generate`, but each request's outcome is its images or a `JobCancelled`."""
        import torch

        if not requests:
            return []
        key = requests[0].batch_key()
        for request in requests:
            if request.batch_key() != key:
                raise ValueError(f"requests of one batch must share batch_key(): {request.batch_key()} != {key}")
            if request.image_prompts and not request.init_image:
                raise ValueError("a request with image prompts needs init_image (fetch them with engine.imaging.fetch)")
            if request.mask_image and not request.init_image:
                raise ValueError("a request with a mask needs init_image (the canvas to paint on)")
            if not request.mask_image and self.pipe.unet.config.in_channels != 4:
                raise ModelError(f"{self.model.ref} is an inpainting model: it can only edit pictures (zoom, pan, "
                                 "vary region); set MODEL_ID to an ordinary model and INPAINT_MODEL_ID to this one")
        cancelled: set[int] = set()
        if self.adapters.prepare(requests):  # this batch's LoRA set and embeddings (engine.diffusion.loras)
            self.encoder.forget()
        with torch.inference_mode():
            conds = [self.encoder.encode(r.prompts, r.negative) for r in requests]
            slots = [_Slot(ri, i, r.image_seed(i)) for ri, r in enumerate(requests) for i in range(r.count)]
            images = self._run_with_retry(requests, conds, slots, on_step, should_stop, cancelled)
        outcomes: list[list[Image.Image] | JobCancelled] = []
        for ri, request in enumerate(requests):
            if ri in cancelled:
                outcomes.append(JobCancelled())
            else:
                outcomes.append([images[(ri, i)] for i in range(request.count)])
        return outcomes

    # ------------------------------------------------------------------ batching
    def _run_with_retry(self, requests: Sequence[GenerationRequest], conds: list[Conditioning],
                        slots: list[_Slot], on_step: OnStep | None, should_stop: ShouldStop | None,
                        cancelled: set[int]) -> dict[tuple[int, int], Image.Image]:
        """Denoise `slots`, halving the batch on out-of-memory (`engine.memory.split_on_oom`)."""
        done: dict[tuple[int, int], Image.Image] = {}

        def attempt(part: Sequence[_Slot], _offset: int) -> dict[tuple[int, int], Image.Image]:
            live = [s for s in part if s.request not in cancelled]  # a half may start after a cancel
            if not live:
                return {}
            try:
                return self._denoise(requests, conds, live, on_step, should_stop, cancelled)
            except _AllCancelled:
                return {}

        split_on_oom([s for s in slots if s.request not in cancelled], attempt,
                     lambda _offset, images: done.update(images), what="images", before_retry=free_memory)
        return done

    # ------------------------------------------------------------------ the denoising job
    def _denoise(self, requests: Sequence[GenerationRequest], conds: list[Conditioning], slots: list[_Slot],
                 on_step: OnStep | None, should_stop: ShouldStop | None,
                 cancelled: set[int]) -> dict[tuple[int, int], Image.Image]:
        import contextlib

        import torch

        pipe = self.pipe
        first = requests[slots[0].request]
        device, dtype = self.device, self.dtype
        active = sorted({s.request for s in slots})

        # 1. Scheduler and timesteps (image-to-image starts part-way).
        scheduler = self._scheduler(first.sampler)
        scheduler.set_timesteps(first.steps, device=device)
        timesteps = scheduler.timesteps
        begin = 0
        if first.init_image:
            init_steps = min(max(int(first.steps * (first.strength or 1.0)), 1), first.steps)
            begin = (first.steps - init_steps) * scheduler.order
            timesteps = timesteps[begin:]
        if hasattr(scheduler, "set_begin_index"):
            scheduler.set_begin_index(begin)
        run_steps = len(timesteps)
        if first.stop is not None:
            run_steps = max(1, math.ceil(run_steps * first.stop / 100))

        # 2. Conditioning per image (chaos applies per image), padded to one length.
        conds_i: list[Any] = []
        guidance: list[float] = []
        for slot in slots:
            request = requests[slot.request]
            cond, g = chaos_for_image(conds[slot.request].cond, request.guidance, request.chaos, slot.seed)
            conds_i.append(cond)
            guidance.append(g)
        unconds = [conds[s.request].uncond for s in slots]
        do_cfg = any(g > 1.0 for g in guidance)
        length = max(t.shape[1] for t in conds_i + (unconds if do_cfg else []))
        empty = self.encoder.empty()[0]
        cond_batch = torch.cat([pad_to_length(c, length, empty) for c in conds_i])
        embeds = cond_batch
        if do_cfg:
            uncond_batch = torch.cat([pad_to_length(u, length, empty if u.any() else torch.zeros_like(empty))
                                      for u in unconds])
            embeds = torch.cat([uncond_batch, cond_batch])
        added: dict[str, Any] | None = None
        if self.model.family == "sdxl":
            pooled = torch.cat([conds[s.request].pooled for s in slots])
            if do_cfg:
                pooled = torch.cat([torch.cat([conds[s.request].uncond_pooled for s in slots]), pooled])
            time_ids = torch.tensor([[first.height, first.width, 0, 0, first.height, first.width]],
                                    dtype=dtype, device=device).repeat(pooled.shape[0], 1)
            added = {"text_embeds": pooled, "time_ids": time_ids}
        references = self._reference_context(requests, slots, do_cfg, added)  # pictures as prompts (IP-Adapter)
        added = references[1] if references is not None else added
        scales = torch.tensor(guidance, dtype=dtype, device=device).view(-1, 1, 1, 1)

        # 3. Starting latents: each image's own generator draws its noise first.
        generators = [torch.Generator("cpu").manual_seed(s.seed) for s in slots]
        scale_factor = pipe.vae_scale_factor
        shape = (1, pipe.vae.config.latent_channels, first.height // scale_factor, first.width // scale_factor)
        noise = torch.cat([torch.randn(shape, generator=g, dtype=torch.float32) for g in generators])
        noise = noise.to(device=device, dtype=dtype)
        inpaint = None
        if first.mask_image:  # inpainting/outpainting: engine.diffusion.inpaint draws in diffusers' order
            latents, generators, inpaint = self._inpaint_start(requests, slots, first, scheduler, timesteps)
        elif first.init_image:
            init = self._init_latents(requests, slots, first.width, first.height, device, dtype)
            latents = scheduler.add_noise(init, noise, timesteps[:1].repeat(len(slots)))
        else:
            latents = noise * scheduler.init_noise_sigma

        step_params = inspect.signature(scheduler.step).parameters
        extra: dict[str, Any] = {}
        if "generator" in step_params:
            extra["generator"] = generators
        if "eta" in step_params:
            extra["eta"] = 0.0

        # 4. Denoising loop.
        tile = circular_padding(pipe.unet, pipe.vae) if first.tile else contextlib.nullcontext()
        estimate = None
        with tile, references[0] if references is not None else contextlib.nullcontext():
            for i, t in enumerate(timesteps[:run_steps]):
                self._check_cancel(active, should_stop, cancelled)
                model_input = torch.cat([latents] * 2) if do_cfg else latents
                model_input = scheduler.scale_model_input(model_input, t)
                if inpaint is not None:  # 9-channel UNets: mask and masked-image latents concatenated
                    model_input = inpaint.unet_input(model_input, do_cfg)
                noise_pred = pipe.unet(model_input, t, encoder_hidden_states=embeds, added_cond_kwargs=added,
                                       return_dict=False)[0]
                if do_cfg:
                    uncond_pred, cond_pred = noise_pred.chunk(2)
                    noise_pred = uncond_pred + scales * (cond_pred - uncond_pred)
                out = scheduler.step(noise_pred, t, latents, **extra, return_dict=True)
                latents = out.prev_sample.to(dtype)
                if inpaint is not None:  # 4-channel UNets: the known part follows the init image
                    latents = inpaint.blend(latents, scheduler, timesteps, i)
                estimate = getattr(out, "pred_original_sample", None)
                if on_step is not None:
                    self._report(on_step, slots, active, cancelled, i + 1, run_steps,
                                 estimate if estimate is not None else latents)
            self._check_cancel(active, should_stop, cancelled)
            final = estimate if (run_steps < len(timesteps) and estimate is not None) else latents
            decoded = self._decode(final.to(dtype), slots, tiles=not first.tile and self._vae_tiles(first.width,
                                                                                                  first.height))
            if inpaint is not None:  # pixels outside the mask back exactly as they were, the seam faded
                inpaint.paste_back(decoded, [(s.request, s.image) for s in slots])
            return decoded

    def _reference_context(self, requests: Sequence[GenerationRequest], slots: list[_Slot], do_cfg: bool,
                           added: dict[str, Any] | None) -> tuple[Any, dict[str, Any]] | None:
        """(the adapter switched on with this batch's scales, `added_cond_kwargs` with its image
        embeddings), or None when the batch uses no picture (`engine.diffusion.references`)."""
        scales = reference_scales(requests[slots[0].request])
        if not scales.any:
            return None
        if self._references is None:
            if self.reference_files is None:
                if not requests[slots[0].request].uses_references:
                    return None  # image links without the adapter: the init image alone
                check_adapter_files(None, "--sref, --cref and /blend")
            self._references = ReferenceAdapter(self.pipe, self.reference_files)  # type: ignore[arg-type]
        embeds = batch_embeds(self._references, requests, [s.request for s in slots], do_cfg)
        return self._references.active(scales), {**(added or {}), "image_embeds": embeds}

    def _scheduler(self, sampler: str) -> Any:
        """One scheduler per sampler, reused (this thread runs one job at a time and
        `set_timesteps` resets a scheduler's state); building one costs ~10 ms."""
        if sampler not in self._schedulers:
            self._schedulers[sampler] = make_scheduler(self.pipe.scheduler.config, sampler)
        return self._schedulers[sampler]

    def _check_cancel(self, active: list[int], should_stop: ShouldStop | None, cancelled: set[int]) -> None:
        if should_stop is not None:
            for ri in active:
                if ri not in cancelled and should_stop(ri):
                    cancelled.add(ri)
        if all(ri in cancelled for ri in active):
            raise _AllCancelled()

    def _report(self, on_step: OnStep, slots: list[_Slot], active: list[int], cancelled: set[int], step: int,
                total: int, latents: Any) -> None:
        with_preview = step % self.preview_every == 0 and step < total  # the final images come next
        for ri in active:
            if ri in cancelled:
                continue
            preview = None
            if with_preview:
                rows = [k for k, s in enumerate(slots) if s.request == ri]
                preview = _preview(latents[rows], self.model.family, self.preview_scale)
            on_step(ri, StepProgress(step=step, total=total, preview=preview))

    def _inpaint_start(self, requests: Sequence[GenerationRequest], slots: list[_Slot], first: GenerationRequest,
                       scheduler: Any, timesteps: Any) -> tuple[Any, list[Any], Any]:
        """Starting latents, per-image generators and state of an inpainting sub-batch."""
        pipe = self.pipe
        rows = [(requests[s.request].init_image or "", requests[s.request].mask_image or "", s.seed,
                 requests[s.request].feather) for s in slots]
        tiles = self._vae_tiles(first.width, first.height)
        return prepare_inpaint(
            vae=pipe.vae, unet_channels=pipe.unet.config.in_channels, latent_channels=pipe.vae.config.latent_channels,
            scale=self._scale_latents, encode=lambda x: self._vae_call(lambda: pipe.vae.encode(x).latent_dist, tiles=tiles),
            rows=rows, width=first.width, height=first.height, vae_scale_factor=pipe.vae_scale_factor,
            strength=first.strength or 1.0, scheduler=scheduler, first_timestep=timesteps[:1], fit=fit_image,
            open_image=_open_init, device=self.device, dtype=self.dtype)

    def _init_latents(self, requests: Sequence[GenerationRequest], slots: list[_Slot], width: int, height: int,
                      device: Any, dtype: Any) -> Any:
        """Each distinct init image encoded once with the VAE (its latent mean, scaled)."""
        import numpy as np
        import torch

        vae = self.pipe.vae
        encoded: dict[str, Any] = {}
        rows = []
        upcast = vae.dtype == torch.float16 and getattr(vae.config, "force_upcast", False)
        try:
            if upcast:
                vae.to(torch.float32)
            for slot in slots:
                path = requests[slot.request].init_image or ""
                if path not in encoded:
                    image = fit_image(_open_init(path), width, height)
                    pixels = torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1)[None].float() / 127.5 - 1
                    batch = pixels.to(device=device, dtype=vae.dtype)
                    dist = self._vae_call(vae.encode, batch, tiles=self._vae_tiles(width, height)).latent_dist
                    encoded[path] = self._scale_latents(dist.mode()).to(dtype)
                rows.append(encoded[path])
        finally:
            if upcast:
                vae.to(torch.float16)
        return torch.cat(rows)

    def _latents_stats(self, latents: Any) -> tuple[Any, Any] | None:
        """The VAE's per-channel latent (mean, std) shaped like `latents`, when its config has them."""
        import torch

        config = self.pipe.vae.config
        mean, std = getattr(config, "latents_mean", None), getattr(config, "latents_std", None)
        if mean is None or std is None:
            return None
        return (torch.tensor(mean).view(1, -1, 1, 1).to(latents), torch.tensor(std).view(1, -1, 1, 1).to(latents))

    def _scale_latents(self, latents: Any) -> Any:
        config = self.pipe.vae.config
        stats = self._latents_stats(latents)
        if stats is not None:
            mean_t, std_t = stats
            return (latents - mean_t) * config.scaling_factor / std_t
        return latents * config.scaling_factor

    def _unscale_latents(self, latents: Any) -> Any:
        config = self.pipe.vae.config
        stats = self._latents_stats(latents)
        if stats is not None:
            mean_t, std_t = stats
            return latents * std_t / config.scaling_factor + mean_t
        shift = getattr(config, "shift_factor", None) or 0.0
        return latents / config.scaling_factor + shift

    def _vae_tiles(self, width: int, height: int) -> bool:
        """Tile the VAE only for images well above the model's native area (when allowed)."""
        return self.model.vae_tiling and width * height > VAE_TILE_ABOVE_AREA * self.model.profile.native ** 2

    def _vae_call(self, fn: Callable[..., Any], *args: Any, tiles: bool, **kwargs: Any) -> Any:
        """`fn(*args, **kwargs)` (a VAE method) with tiling on or off; retried tiled after running out of memory."""
        vae = self.pipe.vae
        saved = getattr(vae, "use_tiling", False)
        try:
            vae.use_tiling = tiles
            try:
                return fn(*args, **kwargs)
            except Exception as exc:
                if tiles or not self.model.vae_tiling or not is_out_of_memory(exc):
                    raise
            free_memory()
            log.warning("out of memory in the VAE; retrying in tiles")
            vae.use_tiling = True
            return fn(*args, **kwargs)
        finally:
            vae.use_tiling = saved

    def _decode(self, latents: Any, slots: list[_Slot], tiles: bool) -> dict[tuple[int, int], Image.Image]:
        """VAE-decode in chunks of at most `DECODE_PIXELS` pixels (all four 512² images at once,
        1024² images one by one: bounded memory), straight to 8-bit PIL images."""
        import torch

        vae = self.pipe.vae
        height, width = latents.shape[-2] * self.pipe.vae_scale_factor, latents.shape[-1] * self.pipe.vae_scale_factor
        chunk = max(1, DECODE_PIXELS // (width * height))
        upcast = vae.dtype == torch.float16 and getattr(vae.config, "force_upcast", False)
        out: dict[tuple[int, int], Image.Image] = {}
        try:
            if upcast:
                vae.to(torch.float32)
            for start in range(0, len(slots), chunk):
                z = self._unscale_latents(latents[start:start + chunk]).to(vae.dtype)
                decoded = self._vae_call(vae.decode, z, tiles=tiles, return_dict=False)[0]
                # [-1, 1] -> 0..255, rounded (+0.5 before the truncating cast), channels last.
                pixels = decoded.permute(0, 2, 3, 1).float().mul_(127.5).add_(128.0).clamp_(0, 255)
                arrays = pixels.to(torch.uint8).cpu().numpy()
                for k, array in enumerate(arrays):
                    slot = slots[start + k]
                    out[(slot.request, slot.image)] = Image.fromarray(array, "RGB")
        finally:
            if upcast:
                vae.to(torch.float16)
        return out


def _preview(latents: Any, family: str, scale: int) -> Image.Image:
    return latents_to_preview(latents, family, scale=scale)


def _open_init(path: str) -> Image.Image:
    try:
        with Image.open(path) as image:
            image.load()
            return image.copy()
    except FileNotFoundError:
        raise ImageFetchError("the source image is no longer on disk (it may have been pruned)") from None
    except OSError as exc:
        raise ImageFetchError(f"the source image cannot be read: {exc}") from None


def run_generation(model: LoadedModel, requests: Sequence[GenerationRequest], *,
                   on_step: OnStep | None = None, should_stop: ShouldStop | None = None) -> list[list[Image.Image]]:
    """The one call that generates (the CLI uses it; the queue replaces it with its own)."""
    return Generator(model).generate(requests, on_step=on_step, should_stop=should_stop)

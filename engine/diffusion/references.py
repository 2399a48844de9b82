"""Pictures as prompts: IP-Adapter image embeddings inside Tessera's own denoising loop.

IP-Adapter (Ye et al. 2023) adds a second cross-attention to every cross-attention layer of
the UNet; its keys and values come from a CLIP image encoder's embedding of a picture,
projected to a few tokens. Tessera loads the official files with diffusers' own
`load_ip_adapter` (so every published variant diffusers reads, Tessera reads) and then runs
the adapter from its own loop:

- **Two slots**, loaded together once, on the first job that needs a picture: slot 0 is the
  plain adapter (`ip-adapter_sd15`, `ip-adapter_sdxl_vit-h`), slot 1 the face adapter
  (`ip-adapter-full-face_sd15`, `ip-adapter-plus-face_sdxl_vit-h`; optional). Both read the
  same image encoder. Jobs without pictures run with the UNet's original attention
  processors: the adapter's processors and projection are swapped in only around a batch
  that uses them (`ReferenceAdapter.active`), so they change nothing else.
- **Scales per layer and per slot**, as `set_ip_adapter_scale` sets them (the processors'
  `scale` lists); a scale of 0 makes diffusers skip the slot, so `--sw 0` is exactly "no
  reference":
  - `--sref` (style): slot 0 on the *style* layers only, InstantStyle's choice
    (Wang et al. 2024, diffusers' `set_ip_adapter_scale({"up": {"block_0": [0, s, 0]}})`
    for SDXL): the middle attention of the first up block that has cross-attention. Other
    layers carry composition and content, which a style reference must not copy.
  - image links in front of the prompt (content): slot 0 on every layer (when no `--sref`
    uses the slot; with `--sref` they act through the init image only).
  - `--cref` (character): slot 1 on every layer.
  - `/blend`: slot 0 on every layer, the pictures' embeddings averaged into one.
- **Embeddings** as diffusers' `encode_image` / `prepare_ip_adapter_image_embeds` make them
  (`pipelines/stable_diffusion/pipeline_stable_diffusion.py`, diffusers 0.42.1): the
  pipeline's `feature_extractor` (224² centre crop for the real encoders), `image_embeds`
  for plain projections and the penultimate hidden states for the others; the negative
  side of classifier-free guidance is zeros (plain) or the encoding of a black picture.
  Several pictures of one slot are several image tokens groups (diffusers' "multiple
  images per adapter"), one tensor `(batch, n, ...)` per slot.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image

from engine.device import hub_offline
from engine.errors import ImageFetchError, ModelError

__all__ = ["AdapterFiles", "RefScales", "ReferenceAdapter", "batch_embeds", "character_scale", "check_adapter_files",
           "content_scale", "open_reference", "reference_scales", "style_scale"]

log = logging.getLogger(__name__)

STYLE, FACE = 0, 1  # adapter slots


@dataclass(frozen=True)
class AdapterFiles:
    """Where one model family's IP-Adapter weights and image encoder are.

    `repo` is a hub id (downloaded once into the Hugging Face cache, whose download checks
    each file's sha256 against the hub's) or a local folder (used as it is). `style` and
    `face` are weight files inside it, `image_encoder` the encoder's folder inside it.
    `settings` names the settings these came from, for error messages.
    """

    repo: str
    style: str
    face: str = ""
    image_encoder: str = "models/image_encoder"
    settings: str = "IP_ADAPTER_REPO / IP_ADAPTER_*"


def _split(path: str) -> tuple[str, str]:
    parent, _, name = path.strip("/").rpartition("/")
    return parent, name


def check_adapter_files(files: AdapterFiles | None, what: str) -> AdapterFiles:
    """`files` when they can be used, else a `ModelError` naming the settings to set."""
    if files is None or not files.repo or not files.style:
        raise ModelError(f"{what} needs the IP-Adapter weights, which are not set up: set {files.settings if files else 'IP_ADAPTER_REPO'} "
                         "(see the README's picture references section)")
    local = Path(files.repo).expanduser()
    if local.is_absolute() or files.repo.startswith("."):
        for name in (files.style, files.face, files.image_encoder):
            if name and not (local / name).exists():
                raise ModelError(f"{what} needs {str(local / name)!r}, which does not exist: check {files.settings}")
    return files


@dataclass(frozen=True)
class RefScales:
    """One batch's adapter scales (every request of a batch shares them: see `batch_key`)."""

    style: float = 0.0  # slot 0 on the style layers (--sref)
    content: float = 0.0  # slot 0 on every layer (image links, /blend)
    face: float = 0.0  # slot 1 on every layer (--cref)

    @property
    def any(self) -> bool:
        return bool(self.style or self.content or self.face)


def style_scale(sw: int) -> float:
    """--sw 0..1000 -> the style layers' scale: 0 -> 0, 100 (default) -> 1.0, 1000 -> 2.0,
    linear in between (1.0 is InstantStyle's own setting; much higher only burns the image)."""
    s = min(max(sw, 0), 1000)
    return round(s / 100 if s <= 100 else 1.0 + (s - 100) / 900, 4)


def character_scale(cw: int) -> float:
    """--cw 0..100 -> the face adapter's scale: 0 -> 0.5 (the face only), 100 -> 1.0 (face,
    hair and clothes). The face adapter carries the face at any weight; less weight carries
    less of everything else around it."""
    c = min(max(cw, 0), 100)
    return round(0.5 + 0.5 * c / 100, 4)


def content_scale(iw: float) -> float:
    """--iw 0..3 -> the plain adapter's scale for image links: iw / 2, so the default 1 is
    0.5 (diffusers' suggested starting point) and 2 or more is 1.0 and above (up to 1.5)."""
    return round(min(max(iw, 0.0), 3.0) / 2, 4)


class ReferenceAdapter:
    """The IP-Adapter slots of one loaded pipeline (use from the GPU thread only)."""

    def __init__(self, pipe: Any, files: AdapterFiles) -> None:
        import torch

        self.pipe = pipe
        self.files = files
        unet = pipe.unet
        original = dict(unet.attn_processors)
        names = [files.style] + ([files.face] if files.face else [])
        parts = [_split(n) for n in names]
        encoder = files.image_encoder.strip("/")
        if "/" not in encoder:  # diffusers reads a bare name as relative to the weights' subfolder
            encoder = f"{parts[0][0]}/{encoder}" if parts[0][0] else encoder
        try:
            pipe.load_ip_adapter(files.repo, subfolder=[p[0] for p in parts], weight_name=[p[1] for p in parts],
                                 image_encoder_folder=encoder, local_files_only=hub_offline())
        except Exception as exc:
            raise ModelError(f"cannot load the IP-Adapter from {files.repo!r} ({type(exc).__name__}: "
                             f"{str(exc)[:300]}); check {files.settings}") from None
        self.processors = dict(unet.attn_processors)
        self.projection = unet.encoder_hid_proj
        self.hid_type = unet.config.encoder_hid_dim_type
        self.original = original
        self.has_face = bool(files.face)
        self.ip_names = [n for n, p in self.processors.items() if hasattr(p, "to_k_ip")]
        self.style_names = set(_style_layers(self.ip_names))
        self._deactivate()
        self.image_encoder = pipe.image_encoder
        self.feature_extractor = pipe.feature_extractor
        from diffusers.models.embeddings import ImageProjection

        self.hidden_states = [not isinstance(layer, ImageProjection)
                              for layer in self.projection.image_projection_layers]
        self.dtype = next(self.image_encoder.parameters()).dtype
        self._torch = torch
        self._empty: dict[int, Any] = {}  # slot -> its stand-in embedding (`empty`), made once

    def _deactivate(self) -> None:
        unet = self.pipe.unet
        unet.set_attn_processor(dict(self.original))
        unet.encoder_hid_proj = None
        unet.config.encoder_hid_dim_type = None

    @contextlib.contextmanager
    def active(self, scales: RefScales) -> Iterator[None]:
        """The adapter's processors and projection in the UNet, with `scales`, for one batch."""
        unet = self.pipe.unet
        unet.set_attn_processor(dict(self.processors))
        unet.encoder_hid_proj = self.projection
        unet.config.encoder_hid_dim_type = self.hid_type
        for name in self.ip_names:
            plain = scales.content if scales.content else (scales.style if name in self.style_names else 0.0)
            values = [plain] + ([scales.face] if self.has_face else [])
            self.processors[name].scale = values
        try:
            yield
        finally:
            self._deactivate()

    # ------------------------------------------------------------------ embeddings
    def encode(self, pictures: Sequence[Image.Image], slot: int, *, average: bool = False) -> tuple[Any, Any]:
        """(positive, negative) embeddings of `pictures` for `slot`, each (1, n, ...) (n = 1
        when `average`). Adapted from diffusers 0.42.1 `StableDiffusionPipeline.encode_image`."""
        torch = self._torch
        pixels = self.feature_extractor([p.convert("RGB") for p in pictures], return_tensors="pt").pixel_values
        pixels = pixels.to(device=self._encoder_device(), dtype=self.dtype)
        if self.hidden_states[slot]:
            pos = self.image_encoder(pixels, output_hidden_states=True).hidden_states[-2]
            neg = self.image_encoder(torch.zeros_like(pixels), output_hidden_states=True).hidden_states[-2]
        else:
            pos = self.image_encoder(pixels).image_embeds
            neg = torch.zeros_like(pos)
        if average:
            pos, neg = pos.mean(dim=0, keepdim=True), neg[:1]
        device = self.pipe._execution_device  # where the UNet runs (CPU offload: not the encoder's)
        return pos[None].to(device), neg[None].to(device)

    def _encoder_device(self) -> Any:
        from diffusers.utils.torch_utils import get_module_execution_device

        return get_module_execution_device(self.image_encoder)

    def empty(self, slot: int) -> Any:
        """A stand-in embedding for a slot a batch does not use (its scale is 0: skipped). The
        same for every batch, so the image encoder runs once per slot, not once per request."""
        if slot not in self._empty:
            self._empty[slot] = self._encode_empty(slot)
        return self._empty[slot]

    def _encode_empty(self, slot: int) -> Any:
        torch = self._torch
        size = self.image_encoder.config.image_size
        pixels = torch.zeros((1, 3, size, size), device=self._encoder_device(), dtype=self.dtype)
        if self.hidden_states[slot]:
            out = self.image_encoder(pixels, output_hidden_states=True).hidden_states[-2]
        else:
            out = torch.zeros_like(self.image_encoder(pixels).image_embeds)
        return out[None].to(self.pipe._execution_device)


def _style_layers(names: Sequence[str]) -> list[str]:
    """InstantStyle's style layers: the middle attention of the first up block with
    cross-attention (SDXL: `up_blocks.0.attentions.1`, what diffusers' docs call
    `{"up": {"block_0": [0.0, 1.0, 0.0]}}`; SD 1.x: `up_blocks.1.attentions.1`)."""
    blocks = sorted({int(n.split(".")[1]) for n in names if n.startswith("up_blocks.")})
    if not blocks:
        return list(names)
    first = f"up_blocks.{blocks[0]}.attentions."
    indices = sorted({int(n[len(first):].split(".")[0]) for n in names if n.startswith(first)})
    middle = indices[len(indices) // 2]
    return [n for n in names if n.startswith(f"{first}{middle}.")]


def reference_scales(request: Any) -> RefScales:
    """The adapter scales a request asks for (see the module docstring for the mapping)."""
    if request.blend_refs:
        return RefScales(content=1.0)
    style = style_scale(request.style_weight) if request.style_refs else 0.0
    content = 0.0
    if request.image_prompts and request.init_image and not request.style_refs and request.variation is None:
        iw = request.image_weight if request.image_weight is not None else 1.0
        content = content_scale(iw)
    face = character_scale(request.character_weight) if request.character_refs else 0.0
    return RefScales(style=style, content=content, face=face)


def open_reference(path: str) -> Image.Image:
    """A stored reference picture (a local, already checked copy), RGB."""
    try:
        with Image.open(path) as image:
            image.load()
            return image.convert("RGB")
    except FileNotFoundError:
        raise ImageFetchError("a reference picture is no longer on disk (it may have been pruned)") from None
    except OSError as exc:
        raise ImageFetchError(f"a reference picture cannot be read: {exc}") from None


def batch_embeds(adapter: ReferenceAdapter, requests: Sequence[Any], rows: Sequence[int],
                 do_cfg: bool) -> list[Any]:
    """`added_cond_kwargs["image_embeds"]` for a batch whose image k belongs to request
    `rows[k]`: one tensor per slot, `(2 x batch if do_cfg, n, ...)`, negatives first, as
    diffusers' `prepare_ip_adapter_image_embeds` lays them out (diffusers 0.42.1,
    `pipelines/stable_diffusion/pipeline_stable_diffusion.py`)."""
    import torch

    per_request: dict[int, list[tuple[Any, Any]]] = {}
    for ri in sorted(set(rows)):
        request = requests[ri]
        if request.blend_refs:
            plain = adapter.encode([open_reference(p) for p in request.blend_refs], STYLE, average=True)
        elif request.style_refs:
            plain = adapter.encode([open_reference(p) for p in request.style_refs], STYLE)
        elif reference_scales(request).content:
            plain = adapter.encode([open_reference(request.init_image)], STYLE)
        else:
            empty = adapter.empty(STYLE)
            plain = (empty, empty)
        slots = [plain]
        if adapter.has_face:
            if request.character_refs:
                slots.append(adapter.encode([open_reference(p) for p in request.character_refs], FACE))
            else:
                empty = adapter.empty(FACE)
                slots.append((empty, empty))
        per_request[ri] = slots
    out = []
    for slot in range(2 if adapter.has_face else 1):
        pos = torch.cat([per_request[ri][slot][0] for ri in rows])
        if do_cfg:
            neg = torch.cat([per_request[ri][slot][1] for ri in rows])
            pos = torch.cat([neg, pos])
        out.append(pos)
    return out


def adapter_files_from_settings(settings: Any) -> dict[str, AdapterFiles]:
    """Each family's adapter files from `bot.config.Settings` (duck-typed: engine/ does not
    import bot/); empty when `IP_ADAPTER_REPO` is not set. SD 2.x has no IP-Adapter."""
    repo = (getattr(settings, "ip_adapter_repo", "") or "").strip()
    if not repo:
        return {}
    encoder = settings.ip_adapter_image_encoder
    return {
        "sd1": AdapterFiles(repo, settings.ip_adapter_sd15, settings.ip_adapter_sd15_face, encoder,
                            "IP_ADAPTER_REPO / IP_ADAPTER_SD15 / IP_ADAPTER_SD15_FACE / IP_ADAPTER_IMAGE_ENCODER"),
        "sdxl": AdapterFiles(repo, settings.ip_adapter_sdxl, settings.ip_adapter_sdxl_face, encoder,
                             "IP_ADAPTER_REPO / IP_ADAPTER_SDXL / IP_ADAPTER_SDXL_FACE / IP_ADAPTER_IMAGE_ENCODER"),
    }

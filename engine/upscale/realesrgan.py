"""Upscaling one image with Real-ESRGAN: the engine behind the U1–U4 buttons.

Weights are read with spandrel (the loader ComfyUI and A1111 use), which recognises the
official `RealESRGAN_x4plus.pth`, `RealESRGAN_x2plus.pth` and `RealESRGAN_x4plus_anime_6B.pth`
files. Missing ones are downloaded once and verified (`engine.upscale.weights`).

How each case is done:
- ×4: the ×4 model (`RealESRGAN_x4plus` by default, or the anime one), tiled (`engine.upscale.tiles`).
- ×2: `RealESRGAN_x2plus` when its file is in the weights folder (it is never downloaded on
  its own); otherwise the ×4 model followed by a Lanczos downscale by 2, which looks as
  sharp and costs one more resize.
- RGBA / LA: the colour goes through the model; the alpha channel is upscaled separately,
  through the same model as a grey image (as Real-ESRGAN's own `alpha_upsampler` does), and
  skipped (made opaque) when the image is fully opaque anyway.
- Grayscale (L, 1, I, I;16, F) comes back as 8-bit grayscale (16-bit depth is not kept).
- A chained upscale (an upscale of an upscale) is refused when the result's longest side
  would pass `max_side` (UPSCALE_MAX_SIDE, default 4096).

The result keeps the source PNG's text chunks (A1111 `parameters`, Tessera's `tessera`) in
`image.info`, with an `upscale` step added; `upscaled_pnginfo(image)` turns them into a
`PngInfo` for `engine.imaging.encoding.encode_png`.
"""

from __future__ import annotations

import json
import logging
import threading
from dataclasses import KW_ONLY, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from PIL import Image
from PIL.PngImagePlugin import PngInfo

from engine.device import resolve_device, resolve_dtype
from engine.errors import UpscaleError
from engine.imaging.encoding import encode_png, pnginfo_from_text
from engine.upscale.weights import OFFICIAL, WeightSpec, ensure_weights

if TYPE_CHECKING:
    import torch

logger = logging.getLogger(__name__)

DEFAULT_MODEL = "RealESRGAN_x4plus"
X2_MODEL = "RealESRGAN_x2plus"
SCALES = (2, 4)
_GRAY_MODES = ("1", "L", "I", "I;16", "I;16L", "I;16B", "I;16N", "F")


def load_descriptor(path: Path, *, scale: int | None = None) -> Any:
    """Load a Real-ESRGAN file with spandrel; any problem becomes an `UpscaleError` naming it.

    Returns spandrel's `ImageModelDescriptor` (callable on 1×3×H×W tensors in [0, 1]).
    """
    from spandrel import ImageModelDescriptor, ModelLoader

    try:
        descriptor = ModelLoader().load_from_file(path)
    except Exception as exc:
        logger.debug("spandrel could not load %s", path, exc_info=True)
        raise UpscaleError(
            f"the upscaler weights {path} cannot be loaded ({exc.__class__.__name__}): the file is damaged or "
            f"not a Real-ESRGAN model; delete it to have the official file downloaded again, or replace it"
        ) from None
    arch = getattr(getattr(descriptor, "architecture", None), "id", type(descriptor).__name__)
    if not isinstance(descriptor, ImageModelDescriptor) or arch != "ESRGAN":
        raise UpscaleError(f"the upscaler weights {path} are a {arch} model, not Real-ESRGAN (ESRGAN architecture); "
                           "replace the file with an official Real-ESRGAN one")
    if descriptor.input_channels != 3 or descriptor.output_channels != 3:
        raise UpscaleError(f"the upscaler weights {path} are not an RGB model "
                           f"({descriptor.input_channels} channels in, {descriptor.output_channels} out)")
    if scale is not None and descriptor.scale != scale:
        raise UpscaleError(f"the upscaler weights {path} are a ×{descriptor.scale} model, but ×{scale} was expected")
    return descriptor.eval()


@dataclass
class _Loaded:
    descriptor: Any
    scale: int
    name: str


def check_upscale_factor(scale: int) -> None:
    """Refuse an upscale factor other than 2 or 4 (the factors the Real-ESRGAN models give)."""
    if scale not in SCALES:
        raise UpscaleError(f"The upscale factor must be 2 or 4, not ×{scale}.")


def check_upscale_size(width: int, height: int, scale: int, max_side: int) -> None:
    """Refuse an upscale factor other than 2 or 4, or a result longer than `max_side` pixels.

    One rule for the service (before a job is queued) and the upscaler (before it runs), so the
    user reads the same message wherever the limit is hit.
    """
    check_upscale_factor(scale)
    if width < 1 or height < 1:
        raise UpscaleError(f"Cannot upscale an empty image ({width}×{height}).")
    new_w, new_h = width * scale, height * scale
    if max(new_w, new_h) <= max_side:
        return
    hint = f"; ×2 would give {width * 2}×{height * 2}" if scale == 4 and max(width, height) * 2 <= max_side else ""
    raise UpscaleError(
        f"Upscaling this {width}×{height} image ×{scale} would make it {new_w}×{new_h}, larger than the "
        f"{max_side} px limit on the longest side{hint}."
    )


@dataclass
class Upscaler:
    """Real-ESRGAN models loaded once on one device; `upscale` is called from the GPU worker.

    `tile` is the core tile size in input pixels (0 = whole image at once), `overlap` the
    context each tile reads from its neighbours, `max_side` the largest side a result may have.
    `model` is the ×4 model: `RealESRGAN_x4plus`, or `RealESRGAN_x4plus_anime_6B` for anime
    checkpoints. `specs` maps model names to their files (tests point URLs at 127.0.0.1).
    """

    weights_dir: Path
    _: KW_ONLY
    device: str = "auto"
    dtype: str = "auto"
    tile: int = 256
    overlap: int = 16
    max_side: int = 4096
    allow_download: bool = True
    model: str = DEFAULT_MODEL
    progress: bool | None = None  # download progress bar; None: when stderr is a terminal
    specs: dict[str, WeightSpec] = field(default_factory=lambda: dict(OFFICIAL))
    _loaded: dict[str, _Loaded] = field(default_factory=dict, init=False, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)
    _torch_device: str | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        self.weights_dir = Path(self.weights_dir)
        if self.model not in self.specs:
            raise UpscaleError(f"unknown upscaler model {self.model!r}; use one of {', '.join(self.specs)}")
        if self.specs[self.model].scale != 4:
            raise UpscaleError(f"the main upscaler model must be a ×4 model, not {self.model}")
        if self.tile < 0 or self.overlap < 0:
            raise UpscaleError("UPSCALE_TILE and UPSCALE_TILE_OVERLAP must be 0 or more")

    @classmethod
    def from_settings(cls, settings: Any, *, allow_download: bool = True) -> Upscaler:
        """Build from settings given by the caller (`bot.config.Settings` or anything with its
        `weights_dir`, `device`, `dtype`, `upscale_tile*` and `upscale_max_side`); engine never
        reads the configuration itself."""
        return cls(settings.weights_dir, device=settings.device, dtype=settings.dtype,
                   tile=settings.upscale_tile, overlap=settings.upscale_tile_overlap,
                   max_side=settings.upscale_max_side, allow_download=allow_download)

    # -- checks -----------------------------------------------------------------------------

    def check_scale(self, width: int, height: int, scale: int) -> None:
        """Raise `UpscaleError` if `scale` is not 2 or 4 or the result would pass `max_side`."""
        check_upscale_size(width, height, scale, self.max_side)

    # -- models -----------------------------------------------------------------------------

    def _device(self) -> str:
        if self._torch_device is None:
            self._torch_device = resolve_device(self.device)
        return self._torch_device

    def _load(self, name: str, *, download: bool) -> _Loaded:
        """The model `name`, loaded and moved to the device once."""
        with self._lock:
            if name in self._loaded:
                return self._loaded[name]
            import torch

            spec = self.specs[name]
            path = ensure_weights(spec, self.weights_dir, allow_download=download and self.allow_download,
                                  progress=self.progress)
            descriptor = load_descriptor(path, scale=spec.scale)
            device = self._device()
            dtype = self._dtype(descriptor, device)
            descriptor.to(torch.device(device)).to(dtype)
            if device.startswith(("cpu", "cuda")):
                # oneDNN and cuDNN run these 3×3 convolutions faster in NHWC (measured ~1.3× on CPU).
                descriptor.model.to(memory_format=torch.channels_last)
            logger.info("loaded upscaler %s (×%d) from %s on %s as %s", name, spec.scale, path, device, dtype)
            loaded = _Loaded(descriptor, spec.scale, name)
            self._loaded[name] = loaded
            return loaded

    def _dtype(self, descriptor: Any, device: str) -> torch.dtype:
        import torch

        dtype = resolve_dtype(self.dtype, device)
        if device.startswith("mps") and self.dtype in ("", "auto"):
            dtype = torch.float32  # RRDBNet's half-precision output on MPS is not reliable enough
        if dtype == torch.float16 and (device == "cpu" or not descriptor.supports_half):
            dtype = torch.float32
        if dtype == torch.bfloat16 and not descriptor.supports_bfloat16:
            dtype = torch.float32
        return dtype

    def _plan(self, scale: int) -> tuple[_Loaded, bool]:
        """The model for `scale` and whether its output must be halved afterwards.

        The x2 model is a photo model: it stands in for x4plus only, never for the anime one.
        """
        x2_file = self.weights_dir / self.specs[X2_MODEL].filename if X2_MODEL in self.specs else None
        if scale == 2 and self.model == DEFAULT_MODEL and x2_file is not None and x2_file.is_file():
            return self._load(X2_MODEL, download=False), False
        return self._load(self.model, download=True), scale == 2

    # -- running ----------------------------------------------------------------------------

    def upscale(self, image: Image.Image, scale: int) -> Image.Image:
        """`image` enlarged `scale` (2 or 4: `UpscaleError` otherwise) times; same kind of image
        back (RGB, RGBA, L or LA).

        The result's `info` holds the source's text chunks plus the upscale step.
        """
        self.check_scale(image.width, image.height, scale)
        loaded, halve = self._plan(scale)
        color, alpha, gray = _split(image)
        out = self._run(loaded, color)
        out_alpha = None
        if alpha is not None and alpha.getextrema() != (255, 255):
            out_alpha = self._run(loaded, alpha.convert("RGB")).convert("L")
        if halve:
            target = (image.width * scale, image.height * scale)
            out = out.resize(target, Image.Resampling.LANCZOS)
            if out_alpha is not None:
                out_alpha = out_alpha.resize(target, Image.Resampling.LANCZOS)
        if gray:
            out = out.convert("L")
        if alpha is not None:
            out = out.convert("LA" if gray else "RGBA")
            out.putalpha(out_alpha if out_alpha is not None else 255)
        info: dict[str | tuple[int, int], Any] = {}
        info.update(upscaled_text(image, scale=scale, model=loaded.name, size=out.size, halved=halve))
        out.info = info
        return out

    def _run(self, loaded: _Loaded, rgb: Image.Image) -> Image.Image:
        """One RGB image through the model, tiled; returns an RGB image `loaded.scale` larger."""
        import numpy as np
        import torch

        from engine.upscale.tiles import run_tiled_with_retry  # heavy: tiles imports torch at load

        descriptor = loaded.descriptor
        device, dtype = descriptor.device, descriptor.dtype
        channels_last = device.type in ("cpu", "cuda")

        def forward(window: torch.Tensor) -> torch.Tensor:
            x = window.to(device=device, dtype=dtype, non_blocking=True)
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            return descriptor(x)

        array = np.array(rgb, dtype=np.uint8)  # a writable copy: torch refuses read-only buffers
        with torch.inference_mode():
            pixels = torch.from_numpy(array).permute(2, 0, 1).unsqueeze(0).float().div_(255)
            result, used = run_tiled_with_retry(forward, pixels, scale=loaded.scale, tile=self.tile,
                                                overlap=self.overlap, out_channels=3, as_uint8_hwc=True)
            del pixels
        if used != self.tile:
            logger.warning("upscale tile lowered from %d to %d after running out of memory; "
                           "set UPSCALE_TILE=%d to start there", self.tile, used, used)
            self.tile = used
        return Image.fromarray(result.numpy(), "RGB")


def _split(image: Image.Image) -> tuple[Image.Image, Image.Image | None, bool]:
    """(RGB colour image, alpha or None, whether the source was grayscale)."""
    if image.mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    if image.mode == "PA":
        image = image.convert("RGBA")
    gray = image.mode in _GRAY_MODES or image.mode == "LA"
    alpha = image.getchannel("A") if "A" in image.getbands() else None
    if image.mode in _GRAY_MODES:
        color = _to_l(image).convert("RGB")
    elif image.mode == "LA":
        color = image.getchannel("L").convert("RGB")
    else:
        color = image.convert("RGB")
    return color, alpha, gray


def _to_l(image: Image.Image) -> Image.Image:
    """8-bit grayscale, scaling 16-bit and float images to 0–255 rather than clipping them."""
    if image.mode in ("1", "L"):
        return image.convert("L")
    import numpy as np

    array = np.asarray(image).astype(np.float64)
    if image.mode == "F":
        array = array * 255 if array.max(initial=0) <= 1.0 else array
    elif array.max(initial=0) > 255:
        array = array / 257
    return Image.fromarray(np.clip(np.rint(array), 0, 255).astype(np.uint8), "L")


# -- metadata ----------------------------------------------------------------------------------


def text_chunks(image: Image.Image) -> dict[str, str]:
    """The PNG text chunks (tEXt/zTXt/iTXt) of `image`, or its string `info` entries."""
    text = getattr(image, "text", None)
    if isinstance(text, dict):
        return {str(k): str(v) for k, v in text.items()}
    return {k: v for k, v in image.info.items() if isinstance(k, str) and isinstance(v, str)}


def upscaled_text(source: Image.Image, *, scale: int, model: str, size: tuple[int, int],
                  halved: bool = False) -> dict[str, str]:
    """The source's text chunks with this upscale recorded in them.

    The `tessera` JSON chunk (`engine.imaging.metadata`) gets an entry in its `extra_steps` list;
    A1111's `postprocessing` chunk (what its Extras tab writes) gets "Postprocess upscale by: N, ...".
    """
    text = text_chunks(source)
    step = {"step": "upscale", "scale": scale, "model": model, "from": [source.width, source.height],
            "to": list(size)}
    if halved:
        step["method"] = "x4 then Lanczos /2"
    try:
        data = json.loads(text.get("tessera", "{}"))
    except ValueError:
        data = {}
    if not isinstance(data, dict):
        data = {}
    steps = data.get("extra_steps")
    data["extra_steps"] = [*steps, step] if isinstance(steps, list) else [step]
    text["tessera"] = json.dumps(data, ensure_ascii=False, separators=(",", ":"))
    post = f"Postprocess upscale by: {scale}, Postprocess upscaler: {model}"
    text["postprocessing"] = f"{text['postprocessing']}, {post}" if text.get("postprocessing") else post
    return text


def upscaled_pnginfo(image: Image.Image) -> PngInfo:
    """A `PngInfo` with `image`'s text chunks, for `engine.imaging.encoding.encode_png`."""
    return pnginfo_from_text(text_chunks(image))


@dataclass(frozen=True)
class UpscaledPNG:
    """What storage keeps for an upscale: the image and its full PNG with metadata."""

    image: Image.Image
    png: bytes
    width: int
    height: int


def upscale_to_png(upscaler: Upscaler, source: Image.Image | Path | bytes, scale: Literal[2, 4]) -> UpscaledPNG:
    """Open `source` (an image, a file or PNG bytes), upscale it, encode the PNG with metadata.

    This is the whole job an upscale runs on the GPU worker; posting (a Discord-sized file
    via `engine.imaging.encoding.encode_for_discord(..., png=result.png)`) happens elsewhere.
    """
    import io

    image: Image.Image
    if isinstance(source, bytes):
        image = Image.open(io.BytesIO(source))
    elif isinstance(source, Path | str):
        try:
            image = Image.open(source)
        except FileNotFoundError:
            raise UpscaleError(f"the image file {source} is missing") from None
    else:
        image = source
    image.load()
    out = upscaler.upscale(image, scale)
    return UpscaledPNG(out, encode_png(out, upscaled_pnginfo(out)), out.width, out.height)


__all__ = ["DEFAULT_MODEL", "UpscaledPNG", "Upscaler", "load_descriptor", "text_chunks",
           "upscale_to_png", "upscaled_pnginfo", "upscaled_text"]

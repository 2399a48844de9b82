"""Loading a text-to-image model once and keeping it warm.

A model reference is a hub id, a diffusers folder or a single `.safetensors`/`.ckpt` file.
`check_model_ref` runs before any job (at start, and when a user picks a model) so that a typo
or an offline machine is a clear one-line error, not a stack trace in the middle of a job.

The family (SD 1.x, SD 2.x, SDXL) is read from the loaded pipeline, and each family has a
profile: native size, default steps and guidance. A model folder may override its profile
with a `tessera.json` file, e.g. `{"native": 768, "steps": 25, "guidance": 6.5}`.

Device: `auto` picks CUDA, then MPS, then CPU. dtype: `auto` is float16 on CUDA and MPS and
float32 on CPU (half precision on CPU is slow and unsupported by some kernels).
Memory savers (settings): attention slicing; VAE tiling (used by `engine.diffusion.generate` for images
well above the native area, and to retry a decode that ran out of memory: tiles can leave
faint seams, so images that fit are never tiled); model CPU offload (CUDA only: each
sub-model moves to the GPU for its forward pass).
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from engine.device import LOAD_LOCK, hub_offline, resolve_device, resolve_dtype
from engine.errors import ModelError

__all__ = ["PROFILES", "LoadedModel", "ModelProfile", "check_model_ref", "load_model", "peek_profile",
           "profile_for", "resolve_device", "resolve_dtype"]

log = logging.getLogger(__name__)

Family = Literal["sd1", "sd2", "sdxl"]
_SINGLE_FILE_SUFFIXES = (".safetensors", ".ckpt")
_OFFLINE_HINT = ("download it with `tessera models pull {ref}` once the hub can be reached (or, on a machine with "
                 "internet, `tessera models pull {ref} --local-dir DIR`, copy DIR here and set MODEL_ID=DIR, "
                 "an absolute path)")


@dataclass(frozen=True)
class ModelProfile:
    family: Literal["sd1", "sd2", "sdxl"]
    native: int  # side of the native square size in pixels
    steps: int  # default denoising steps (--quality 1)
    guidance: float  # default guidance scale (--stylize 100)


PROFILES: dict[str, ModelProfile] = {
    "sd1": ModelProfile("sd1", 512, 30, 7.5),
    "sd2": ModelProfile("sd2", 768, 30, 7.5),
    "sdxl": ModelProfile("sdxl", 1024, 30, 6.0),
}


@dataclass
class LoadedModel:
    """A pipeline loaded once, with what generation needs to know about it."""

    ref: str
    family: Family
    profile: ModelProfile
    device: str
    dtype: Any  # torch.dtype
    pipe: Any  # StableDiffusionPipeline | StableDiffusionXLPipeline
    cpu_offload: bool = False
    vae_tiling: bool = True  # decode/encode in tiles for large images or after running out of memory
    _img2img: Any = field(default=None, repr=False)

    @property
    def img2img(self) -> Any:
        """The image-to-image pipeline sharing this pipeline's components (no extra memory)."""
        if self._img2img is None:
            from diffusers import AutoPipelineForImage2Image

            self._img2img = AutoPipelineForImage2Image.from_pipe(self.pipe)
        return self._img2img

    @property
    def execution_device(self) -> Any:
        """Where inputs must go (with CPU offload the modules move there on their own)."""
        return self.pipe._execution_device


def _looks_like_path(ref: str) -> bool:
    return ref.startswith(("/", "./", "../", "~")) or ref.endswith(_SINGLE_FILE_SUFFIXES) or os.path.exists(ref)


def check_model_ref(ref: str) -> None:
    """Raise `ModelError` now if `ref` cannot be loaded: missing or unreadable path, not a
    diffusers folder, or a hub id that is neither cached nor downloadable."""
    ref = (ref or "").strip()
    if not ref:
        raise ModelError("no model given: set MODEL_ID to a hub id like 'owner/name', a model folder or a .safetensors/.ckpt file")
    if _looks_like_path(ref):
        path = Path(ref).expanduser()
        if not path.exists():
            raise ModelError(f"the model path {str(path)!r} does not exist (give an absolute path to a diffusers "
                             "model folder or a .safetensors/.ckpt file)")
        if not os.access(path, os.R_OK):
            raise ModelError(f"the model path {str(path)!r} cannot be read (check its permissions)")
        if path.is_dir():
            index = path / "model_index.json"
            if not index.is_file():
                raise ModelError(f"the folder {str(path)!r} is not a diffusers model (it has no model_index.json); "
                                 "give a diffusers folder or a single .safetensors/.ckpt file")
            try:
                json.loads(index.read_text(encoding="utf-8"))
            except (OSError, ValueError) as exc:
                raise ModelError(f"cannot read {str(index)!r}: {exc}") from None
        elif not path.name.endswith(_SINGLE_FILE_SUFFIXES):
            raise ModelError(f"the model file {str(path)!r} is not a .safetensors or .ckpt checkpoint")
        return
    from huggingface_hub import try_to_load_from_cache

    cached = try_to_load_from_cache(ref, "model_index.json")
    if isinstance(cached, str):
        return
    if hub_offline():
        raise ModelError(f"the model {ref!r} is not in the local Hugging Face cache and this machine is offline "
                         f"(HF_HUB_OFFLINE is set), so it cannot be downloaded; " + _OFFLINE_HINT.format(ref=ref))
    from huggingface_hub import HfApi
    from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError

    try:
        HfApi().model_info(ref, timeout=15)
    except GatedRepoError:
        raise ModelError(f"the model {ref!r} is gated: accept its licence on huggingface.co and log in "
                         "(`hf auth login`), or place the weights locally and set MODEL_ID to the folder") from None
    except RepositoryNotFoundError:
        raise ModelError(f"there is no model {ref!r} on the Hugging Face hub (check the id, like 'owner/name')") from None
    except Exception as exc:  # connection errors of several libraries
        raise ModelError(f"cannot reach the Hugging Face hub to download {ref!r} (offline? {type(exc).__name__}); "
                         + _OFFLINE_HINT.format(ref=ref)) from None


def _sd_family(cross_attention_dim: object) -> Family:
    """SD 2.x uses OpenCLIP ViT-H: 1024-wide text features (SD 1.x: 768)."""
    return "sd2" if cross_attention_dim == 1024 else "sd1"


def _unet_config(pipe: Any) -> Any:
    return pipe.unet.config


def _family_of(pipe: Any) -> Family:
    from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline

    if isinstance(pipe, StableDiffusionXLPipeline):
        return "sdxl"
    if isinstance(pipe, StableDiffusionPipeline):
        return _sd_family(_unet_config(pipe).cross_attention_dim)
    raise ModelError(f"the model is a {type(pipe).__name__}; Tessera runs SD 1.x, SD 2.x and SDXL text-to-image models")


def profile_for(family: Family, native: int | None, folder: Path | None) -> ModelProfile:
    """The profile of a model of `family`: the family's, then what the model itself says.

    `native` is the side the UNet's sample size gives (latent side × the VAE's factor), or
    None when unknown; it only decides between SD 2.x's 512² "base" models and its 768²
    v-models (other families have one native size). A `tessera.json` in the model's folder
    overrides any field; one that cannot be read raises `ModelError`. The one home of this
    rule: loading (`load_model`) and peeking before the load (`peek_profile`) both use it.
    """
    profile = PROFILES[family]
    if family == "sd2" and native in (512, 768):
        profile = ModelProfile("sd2", native, profile.steps, profile.guidance)
    override = folder / "tessera.json" if folder else None
    if override and override.is_file():
        try:
            data = json.loads(override.read_text(encoding="utf-8"))
            profile = ModelProfile(family, int(data.get("native", profile.native)),
                                   int(data.get("steps", profile.steps)), float(data.get("guidance", profile.guidance)))
        except (OSError, ValueError, TypeError) as exc:
            raise ModelError(f"cannot read the profile {str(override)!r}: {exc} "
                             '(expected JSON like {"native": 768, "steps": 25, "guidance": 6.5})') from None
    return profile


def peek_profile(ref: str) -> ModelProfile | None:
    """A model folder's profile from its config files, without loading it (None: unknown).

    Jobs are resolved (size, steps) when they are queued, which may be while the model is
    still loading; for diffusers folders the configs say enough. Single files and hub ids
    not in the local cache return None, and the caller waits for the loaded model instead;
    so does a `tessera.json` that cannot be read (the load reports it properly).
    """
    folder = Path(ref).expanduser()
    if not folder.is_dir():
        try:
            from huggingface_hub import try_to_load_from_cache

            cached = try_to_load_from_cache(ref, "model_index.json")
        except Exception:
            return None
        if not isinstance(cached, str):
            return None
        folder = Path(cached).parent
    try:
        index = json.loads((folder / "model_index.json").read_text(encoding="utf-8"))
        unet = json.loads((folder / "unet" / "config.json").read_text(encoding="utf-8"))
        family: Family = "sdxl" if "XL" in str(index.get("_class_name", "")) else _sd_family(
            unet.get("cross_attention_dim"))
        native = int(unet.get("sample_size", 96)) * 8 if family == "sd2" else None  # SD 2.x's VAE: ×8
        return profile_for(family, native, folder)
    except (OSError, ValueError, TypeError, AttributeError, ModelError):
        return None


def _has_safety_checker(path: Path | None, ref: str) -> bool:
    index: Any = path / "model_index.json" if path is not None else None
    if index is None:
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(ref, "model_index.json")
        if not isinstance(cached, str) and not hub_offline():
            from huggingface_hub import hf_hub_download

            try:
                cached = hf_hub_download(ref, "model_index.json")
            except Exception:  # the full download below reports the real problem
                cached = None
        index = Path(cached) if isinstance(cached, str) else None
    try:
        return index is not None and "safety_checker" in json.loads(Path(index).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False


def _weights_variant(path: Path | None, ref: str) -> str | None:
    """"fp16" when the local copy holds only the fp16 variant of the UNet weights (what
    `tessera models pull` fetches for a GPU), else None: diffusers loads a variant only when told."""
    folder = path
    if folder is None:
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(ref, "model_index.json")
        folder = Path(cached).parent if isinstance(cached, str) else None
    unet = folder / "unet" if folder is not None else None
    if unet is None or not unet.is_dir():
        return None
    names = [p.name for p in unet.iterdir() if p.name.startswith("diffusion_pytorch_model")
             and p.name.endswith((".safetensors", ".bin"))]
    if any(".fp16" not in name for name in names):
        return None
    return "fp16" if names else None


def _load_single_file(path: Path, dtype: Any) -> Any:
    from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline
    from diffusers.loaders.single_file_utils import infer_diffusers_model_type, load_single_file_checkpoint

    try:
        checkpoint = load_single_file_checkpoint(str(path))
        kind = infer_diffusers_model_type(checkpoint)
    except Exception as exc:
        raise ModelError(f"cannot read the checkpoint {str(path)!r}: {exc}") from None
    del checkpoint  # from_single_file reads the file again; do not hold two copies
    classes = {"v1": StableDiffusionPipeline, "v2": StableDiffusionPipeline, "xl_base": StableDiffusionXLPipeline}
    cls = classes.get(kind)
    if cls is None:
        raise ModelError(f"the checkpoint {str(path)!r} is a {kind} model; Tessera runs SD 1.x, SD 2.x and SDXL "
                         "text-to-image checkpoints")
    try:
        kwargs = {"safety_checker": None} if cls is StableDiffusionPipeline else {}
        return cls.from_single_file(str(path), dtype=dtype, local_files_only=hub_offline(), **kwargs)
    except Exception as exc:
        raise ModelError(f"cannot load the checkpoint {str(path)!r} ({exc}); single files need their model's config "
                         "from the hub once: when offline, use a diffusers folder instead") from None


def _load_pipe(ref: str, path: Path | None, torch_dtype: Any) -> Any:
    """The pipeline from a single checkpoint file, a diffusers folder or a hub id."""
    if path is not None and path.is_file():
        return _load_single_file(path, torch_dtype)
    from diffusers import AutoPipelineForText2Image

    # Safety checking is a per-server choice made elsewhere; never load its 1 GB model here.
    extra: dict[str, Any] = {"safety_checker": None, "requires_safety_checker": False} \
        if _has_safety_checker(path, ref) else {}
    variant = _weights_variant(path, ref)
    if variant:
        extra["variant"] = variant
    try:
        from diffusers.utils import logging as diffusers_logging
        from transformers.utils import logging as transformers_logging

        diffusers_logging.disable_progress_bar()  # loading bars would fill the logs
        transformers_logging.disable_progress_bar()
        return AutoPipelineForText2Image.from_pretrained(str(path or ref), dtype=torch_dtype, **extra)
    except Exception as exc:
        raise ModelError(f"cannot load the model {ref!r}: {exc}") from None


def load_model(ref: str, *, device: str = "auto", dtype: str = "auto", attention_slicing: bool = False,
               vae_tiling: bool = True, cpu_offload: bool = False) -> LoadedModel:
    """Load `ref` (hub id, diffusers folder or single checkpoint file) onto `device`."""
    check_model_ref(ref)
    device = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, device)
    path = Path(ref).expanduser() if _looks_like_path(ref) else None
    with LOAD_LOCK:
        pipe = _load_pipe(ref, path, torch_dtype)
    family = _family_of(pipe)
    native = int(_unet_config(pipe).sample_size) * int(pipe.vae_scale_factor) if family == "sd2" else None
    profile = profile_for(family, native, path if path is not None and path.is_dir() else None)
    pipe.set_progress_bar_config(disable=True)
    if attention_slicing:
        pipe.enable_attention_slicing()
    offload = bool(cpu_offload and device.startswith("cuda"))
    if cpu_offload and not offload:
        log.warning("CPU_OFFLOAD is only used with a CUDA device; ignored on %s", device)
    if offload:
        pipe.enable_model_cpu_offload(device=device)
    else:
        pipe.to(device)
    log.info("loaded %s (%s, native %d², %s, %s)", ref, family, profile.native, device, torch_dtype)
    return LoadedModel(ref=ref, family=family, profile=profile, device=device, dtype=torch_dtype, pipe=pipe,
                       cpu_offload=offload, vae_tiling=vae_tiling)

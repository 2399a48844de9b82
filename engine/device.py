"""Which torch device and dtype a setting names (`DEVICE`, `DTYPE`), and how weights load.

At engine's base because diffusion, vision and upscaling all place and load their models
with it, and none should import another for it. Torch is imported inside each call (heavy).
"""

from __future__ import annotations

import os
import threading
from typing import Any

from engine.errors import ModelError

__all__ = ["LOAD_LOCK", "hub_offline", "resolve_device", "resolve_dtype"]

# Held while weights load: diffusers and transformers build models on the "meta" device through
# process-wide patches, so two loads in two threads at once (the GPU thread's model or captioner
# and the region model of `engine.diffusion.segment`) can leave one with weights that have no data.
LOAD_LOCK = threading.RLock()


def hub_offline() -> bool:
    """Whether the Hugging Face hub may not be asked (HF_HUB_OFFLINE, read now or at import)."""
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE) or os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes")


def resolve_device(name: str = "auto") -> str:
    """`auto` -> cuda, mps or cpu, whichever is available first; checks explicit names."""
    import torch

    name = (name or "auto").strip().lower()
    has_mps = bool(getattr(torch.backends, "mps", None)) and torch.backends.mps.is_available()
    if name == "auto":
        if torch.cuda.is_available():
            return "cuda"
        return "mps" if has_mps else "cpu"
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ModelError(f"DEVICE={name} but this machine has no usable CUDA GPU; use DEVICE=auto or cpu")
        if ":" in name and int(name.split(":")[1]) >= torch.cuda.device_count():
            raise ModelError(f"DEVICE={name} but there are only {torch.cuda.device_count()} CUDA devices")
        return name
    if name == "mps" and not has_mps:
        raise ModelError("DEVICE=mps but MPS is not available here; use DEVICE=auto or cpu")
    if name not in ("cpu", "mps"):
        raise ModelError(f"DEVICE={name} is not one of auto, cpu, mps, cuda, cuda:N")
    return name


def resolve_dtype(name: str, device: str) -> Any:
    import torch

    if name in (None, "", "auto"):
        return torch.float16 if device.startswith(("cuda", "mps")) else torch.float32
    try:
        return {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}[name]
    except KeyError:
        raise ModelError(f"DTYPE={name} is not one of auto, float16, bfloat16, float32") from None

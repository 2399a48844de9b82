"""Which torch device and dtype a setting names (`DEVICE`, `DTYPE`).

At engine's base because diffusion and upscaling both place their models with it, and
neither should import the other for it. Torch is imported inside each call (heavy).
"""

from __future__ import annotations

from typing import Any

from engine.errors import ModelError

__all__ = ["resolve_device", "resolve_dtype"]


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

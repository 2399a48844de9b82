"""Samplers by name: the scheduler classes of diffusers behind the names people know.

A sampler is chosen per server (`SAMPLER`) and per user (`/settings`), so each job builds its
own scheduler from the model's scheduler config (`from_config`) instead of swapping the one on
the shared pipeline: two jobs with different samplers can follow each other on the GPU thread
without either seeing the other's choice, and the model's own config (beta schedule,
prediction type, timestep spacing) is always kept.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any

from engine.errors import TesseraError

__all__ = ["SAMPLERS", "Sampler", "SamplerError", "a1111_name", "check_sampler", "make_scheduler"]


class SamplerError(TesseraError):
    """A sampler name Tessera does not know."""


@dataclass(frozen=True)
class Sampler:
    """One named sampler: a diffusers scheduler class plus config overrides."""

    name: str  # Tessera's name, used in settings and stored on requests
    a1111: str  # the name A1111 writes in PNG `parameters` (so existing tools recognise it)
    scheduler: str  # class name in `diffusers`
    overrides: dict[str, Any] = field(default_factory=dict)


SAMPLERS: dict[str, Sampler] = {
    s.name: s
    for s in (
        Sampler("euler_a", "Euler a", "EulerAncestralDiscreteScheduler"),
        Sampler("euler", "Euler", "EulerDiscreteScheduler"),
        Sampler("dpmpp_2m", "DPM++ 2M", "DPMSolverMultistepScheduler",
                {"algorithm_type": "dpmsolver++", "solver_order": 2, "use_karras_sigmas": False}),
        Sampler("dpmpp_2m_karras", "DPM++ 2M Karras", "DPMSolverMultistepScheduler",
                {"algorithm_type": "dpmsolver++", "solver_order": 2, "use_karras_sigmas": True}),
        Sampler("ddim", "DDIM", "DDIMScheduler"),
        Sampler("pndm", "PLMS", "PNDMScheduler", {"skip_prk_steps": True}),
        Sampler("heun", "Heun", "HeunDiscreteScheduler"),
        Sampler("unipc", "UniPC", "UniPCMultistepScheduler"),
        Sampler("lcm", "LCM", "LCMScheduler"),  # --draft with an LCM-LoRA (engine.diffusion.loras)
    )
}


def check_sampler(name: str) -> Sampler:
    """The sampler called `name`, or `SamplerError` listing the known names."""
    sampler = SAMPLERS.get(name.strip().lower())
    if sampler is None:
        raise SamplerError(f"unknown sampler {name!r}; choose one of {', '.join(SAMPLERS)}")
    return sampler


def a1111_name(name: str) -> str:
    """A1111's spelling of a sampler name (the name itself when unknown)."""
    sampler = SAMPLERS.get(name)
    return sampler.a1111 if sampler else name


def make_scheduler(base_config: Any, name: str) -> Any:
    """A fresh scheduler of sampler `name` built from a model's scheduler config."""
    sampler = check_sampler(name)
    cls = getattr(importlib.import_module("diffusers"), sampler.scheduler)
    return cls.from_config(base_config, **sampler.overrides)

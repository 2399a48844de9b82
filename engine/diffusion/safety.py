"""The diffusers safety checker: flagged images are replaced by a notice before anyone sees them.

A server turns it on with `/admin nsfw` (or the operator for every server with
`SAFETY_CHECKER=true`); the service then marks each job's request `safety_check=True` and
the GPU worker thread runs `SafetyFilter.apply` on the finished images, after generation and
before anything is encoded, stored or posted. A flagged image is replaced by `notice_image`
(a plain dark image saying it was hidden), and its index is reported so the bot can say so.

Where the checker comes from, first match wins:
1. the model folder's own `safety_checker/` and `feature_extractor/` subfolders (SD 1.x
   folders ship them);
2. `SAFETY_CHECKER_MODEL`: a hub id (default `CompVis/stable-diffusion-safety-checker`, whose
   files sit at the repo's root) or a local folder in either layout.
A checker that cannot be loaded is a `ModelError` that says where to put the files: at start
when SAFETY_CHECKER is on, else in the first job that asks for a check (that job fails rather
than showing unchecked images).

Torch, transformers and diffusers are imported when the checker loads, not with this module.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from engine.device import hub_offline, resolve_device, resolve_dtype
from engine.errors import ModelError

if TYPE_CHECKING:
    from PIL.Image import Image

log = logging.getLogger(__name__)

DEFAULT_SAFETY_MODEL = "CompVis/stable-diffusion-safety-checker"
NOTICE_TEXT = "This image was hidden by the server's safety filter"
NOTICE_BACKGROUND = (24, 24, 28)
NOTICE_FOREGROUND = (200, 200, 205)
_CHECKER_DIR = "safety_checker"
_PROCESSOR_DIR = "feature_extractor"


@dataclass(frozen=True)
class SafetySource:
    """Where to load from: `ref` (folder or hub id) and the subfolders of each part ("" = root)."""

    ref: str
    checker_subfolder: str = ""
    processor_subfolder: str = ""

    def describe(self) -> str:
        return self.ref if not self.checker_subfolder else f"{self.ref} ({self.checker_subfolder}/)"


def _has_parts(folder: Path) -> bool:
    return (folder / _CHECKER_DIR / "config.json").is_file() and (folder / _PROCESSOR_DIR).is_dir()


def find_source(model_ref: str, fallback: str = DEFAULT_SAFETY_MODEL) -> SafetySource:
    """The model folder when it carries a checker, else `fallback` (hub id or folder)."""
    model_dir = Path(model_ref).expanduser() if model_ref else None
    if model_dir is not None and model_dir.is_dir() and _has_parts(model_dir):
        return SafetySource(str(model_dir), _CHECKER_DIR, _PROCESSOR_DIR)
    fallback = (fallback or DEFAULT_SAFETY_MODEL).strip()
    folder = Path(fallback).expanduser()
    if folder.is_dir() and _has_parts(folder):
        return SafetySource(str(folder), _CHECKER_DIR, _PROCESSOR_DIR)
    return SafetySource(str(folder) if folder.is_dir() else fallback)


def _load_error(source: SafetySource, reason: str) -> ModelError:
    return ModelError(
        f"The safety checker is on but cannot be loaded from {source.describe()}: {reason}. Put a copy of "
        f"{DEFAULT_SAFETY_MODEL} (config.json, model.safetensors, preprocessor_config.json) in a folder and set "
        "SAFETY_CHECKER_MODEL to it, or download it once while online "
        f"(`hf download {DEFAULT_SAFETY_MODEL}`); or turn the checker off (SAFETY_CHECKER=false, /admin nsfw)."
    )


def check_source(model_ref: str, fallback: str = DEFAULT_SAFETY_MODEL) -> SafetySource:
    """Raise `ModelError` now if the checker's files are neither on disk nor obtainable.

    Cheap (no weights are read): the service calls it at start when SAFETY_CHECKER is on.
    """
    source = find_source(model_ref, fallback)
    folder = Path(source.ref)
    if folder.is_dir():
        checker = folder / source.checker_subfolder / "config.json"
        processor = folder / source.processor_subfolder / "preprocessor_config.json"
        missing = [str(p) for p in (checker, processor) if not p.is_file()]
        if missing:
            raise _load_error(source, f"{', '.join(missing)} missing")
        return source
    if source.ref.startswith(("/", "./", "../", "~")):
        raise _load_error(source, "the folder does not exist")
    from huggingface_hub import try_to_load_from_cache

    cached = try_to_load_from_cache(source.ref, "config.json")
    if not isinstance(cached, str) and hub_offline():
        raise _load_error(source, "it is not in the local Hugging Face cache and HF_HUB_OFFLINE is set")
    return source


class SafetyChecker:
    """diffusers' `StableDiffusionSafetyChecker` and its CLIP image processor on one device."""

    def __init__(self, checker: Any, processor: Any, *, device: str, dtype: Any, source: SafetySource) -> None:
        self.checker = checker
        self.processor = processor
        self.device = device
        self.dtype = dtype
        self.source = source

    @classmethod
    def load(cls, model_ref: str, *, fallback: str = DEFAULT_SAFETY_MODEL, device: str = "auto",
             dtype: str = "auto") -> SafetyChecker:
        """Load from the model folder's subfolders or `fallback` (raises `ModelError`)."""
        source = check_source(model_ref, fallback)
        from diffusers.pipelines.stable_diffusion.safety_checker import StableDiffusionSafetyChecker
        from transformers import CLIPImageProcessor

        device = resolve_device(device)
        torch_dtype = resolve_dtype(dtype, device)
        local = hub_offline() or Path(source.ref).is_dir()
        from transformers.utils import logging as transformers_logging

        transformers_logging.disable_progress_bar()  # loading bars would fill the logs
        checker: Any  # transformers' decorated `to` confuses the checker's own annotations
        try:
            processor = CLIPImageProcessor.from_pretrained(source.ref, subfolder=source.processor_subfolder,
                                                           local_files_only=local)
            checker = StableDiffusionSafetyChecker.from_pretrained(source.ref, subfolder=source.checker_subfolder,
                                                                   local_files_only=local)
        except Exception as exc:
            raise _load_error(source, str(exc).splitlines()[0] if str(exc) else type(exc).__name__) from None
        checker = checker.to(device=device, dtype=torch_dtype).eval()
        log.info("loaded the safety checker from %s on %s as %s", source.describe(), device, torch_dtype)
        return cls(checker, processor, device=device, dtype=torch_dtype, source=source)

    def flags(self, images: Sequence[Image]) -> list[bool]:
        """Whether each image is flagged (diffusers' own decision: any concept over its threshold)."""
        if not images:
            return []
        import numpy as np
        import torch

        inputs = self.processor(images=[image.convert("RGB") for image in images], return_tensors="pt")
        clip_input = inputs["pixel_values"].to(device=self.device, dtype=self.dtype)
        with torch.inference_mode():
            # `images` is only blacked out by diffusers; a placeholder keeps ours untouched.
            _, flagged = self.checker(clip_input=clip_input, images=np.zeros((len(images), 1)))
        return [bool(flag) for flag in flagged]


def notice_image(size: tuple[int, int]) -> Image:
    """A plain dark image of `size` saying the image was hidden (wrapped to fit, centred)."""
    from PIL import Image, ImageDraw, ImageFont

    width, height = size
    image = Image.new("RGB", size, NOTICE_BACKGROUND)
    draw = ImageDraw.Draw(image)
    font_size = max(6, min(width // 16, height // 6, 48))
    try:
        font: Any = ImageFont.load_default(size=font_size)
    except (TypeError, OSError):  # Pillow built without FreeType: the fixed bitmap font
        font = ImageFont.load_default()
    lines: list[str] = []
    for word in NOTICE_TEXT.split():
        if lines and draw.textlength(f"{lines[-1]} {word}", font=font) <= width * 0.9:
            lines[-1] = f"{lines[-1]} {word}"
        else:
            lines.append(word)
    text = "\n".join(lines)
    draw.multiline_text((width / 2, height / 2), text, fill=NOTICE_FOREGROUND, font=font, anchor="mm",
                        align="center")
    return image


class SafetyFilter:
    """The checker for the GPU worker thread: loaded once, at `prepare` when `eager` (the
    operator turned it on everywhere) or at the first job that asks, and kept."""

    def __init__(self, model_ref: str, *, fallback: str = DEFAULT_SAFETY_MODEL, device: str = "auto",
                 dtype: str = "auto", eager: bool = False) -> None:
        self.model_ref = model_ref
        self.fallback = fallback
        self.device = device
        self.dtype = dtype
        self.eager = eager
        self._checker: SafetyChecker | None = None
        self._lock = threading.Lock()

    @property
    def loaded(self) -> bool:
        return self._checker is not None

    def prepare(self) -> None:
        if self.eager:
            self.checker()

    def checker(self) -> SafetyChecker:
        with self._lock:
            if self._checker is None:
                self._checker = SafetyChecker.load(self.model_ref, fallback=self.fallback, device=self.device,
                                                   dtype=self.dtype)
            return self._checker

    def apply(self, images: Sequence[Image]) -> tuple[list[Image], list[int]]:
        """The images with flagged ones replaced by a notice, and the flagged indices."""
        flags = self.checker().flags(images)
        out = [notice_image(image.size) if flag else image for image, flag in zip(images, flags, strict=True)]
        return out, [index for index, flag in enumerate(flags) if flag]

    def close(self) -> None:
        with self._lock:
            self._checker = None

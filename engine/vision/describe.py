"""/describe: four Midjourney-style prompts for a picture, from a BLIP captioning model.

Midjourney's /describe answers with four prompts that read like its users' prompts: a
subject first, then medium and style phrases, then the picture's aspect ratio. Tessera makes
them with one model, a BLIP captioner (`BlipForConditionalGeneration`, `CAPTION_MODEL`, for
example `Salesforce/blip-image-captioning-large`), in two deterministic steps:

1. **Subjects**: four captions by beam search (4 beams, 4 returned sequences), best first.
2. **Medium and style**: every phrase of two fixed lists (`MEDIUMS`, `STYLES`) is scored by
   how likely the captioner finds it as a caption of *this* picture (the mean log-probability
   of its tokens given the image, one batched forward pass); the best mediums and styles are
   dealt out over the four prompts (prompt *i* gets medium *i* and styles *2i*, *2i+1*), so
   the prompts differ in their phrases as well as in their subjects.

Each prompt ends with `--ar W:H`, the picture's own aspect (the nearest ratio with terms up to
16, within Midjourney's 1:4 to 4:1). Nothing is random: the same picture gives the same four
prompts, and 🔄 (describe again) asks for the next-best phrases (`offset`).
"""

from __future__ import annotations

import logging
import re
import threading
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

from PIL import Image

from engine.device import LOAD_LOCK, resolve_device, resolve_dtype
from engine.errors import ModelError

__all__ = ["MEDIUMS", "STYLES", "Describer", "Description", "aspect_of"]

log = logging.getLogger(__name__)

MEDIUMS: tuple[str, ...] = (
    "a photograph", "a film photograph", "a studio portrait photograph", "an oil painting", "a watercolor painting",
    "an acrylic painting", "a pencil sketch", "a charcoal drawing", "an ink illustration", "a digital painting",
    "a 3d render", "an anime illustration", "a comic book panel", "a vector illustration", "pixel art",
    "a linocut print", "a pastel drawing", "a collage", "concept art", "a children's book illustration",
)
STYLES: tuple[str, ...] = (
    "cinematic lighting", "soft natural light", "golden hour", "high contrast", "muted colors", "vibrant colors",
    "pastel tones", "dramatic shadows", "minimalist composition", "highly detailed", "impressionist brushwork",
    "surrealism", "art nouveau", "baroque", "ukiyo-e", "cyberpunk", "dreamy atmosphere", "vintage",
    "photorealistic", "flat design", "moody", "whimsical", "gothic", "bokeh", "symmetrical", "wide angle",
    "close-up", "aerial view", "monochrome", "warm tones", "cool tones", "hyperrealistic details",
)
MAX_CAPTION_TOKENS = 30
MAX_PROMPT_CHARS = 1000  # a caption (300) with a medium, two styles and --ar
_ASPECT = re.compile(r"[0-9]{1,2}:[0-9]{1,2}")  # fixed width: checks stored or received text, cannot backtrack


@dataclass(frozen=True)
class Description:
    """What /describe shows: four prompts (each ending with `--ar`) and the aspect."""

    prompts: tuple[str, ...]
    aspect: str

    def to_json(self) -> dict:
        return {"prompts": list(self.prompts), "aspect": self.aspect}

    @classmethod
    def from_json(cls, data: Any) -> Description:
        """Read back a stored or received answer, bounded (a Redis worker's reply is a
        stranger's bytes until checked): one to four prompts and a `W:H` aspect."""
        if not isinstance(data, dict):
            raise ValueError("a /describe answer must be an object")
        prompts, aspect = data.get("prompts"), data.get("aspect")
        if not isinstance(prompts, list) or not 0 < len(prompts) <= 4 or not all(
                isinstance(p, str) and 0 < len(p) <= MAX_PROMPT_CHARS for p in prompts):
            raise ValueError("a /describe answer has one to four prompts of text")
        if not isinstance(aspect, str) or not _ASPECT.fullmatch(aspect):
            raise ValueError("a /describe answer's aspect is W:H")
        return cls(tuple(prompts), aspect)


def aspect_of(width: int, height: int) -> str:
    """`W:H` for a picture: the nearest ratio with terms up to 16, clamped to 1:4..4:1."""
    ratio = Fraction(max(width, 1), max(height, 1))
    ratio = min(max(ratio, Fraction(1, 4)), Fraction(4, 1)).limit_denominator(16)
    while ratio.numerator > 16:  # e.g. 31/16: fewer terms, nearest first
        ratio = ratio.limit_denominator(ratio.denominator - 1)
    return f"{ratio.numerator}:{ratio.denominator}"


def _plain(text: str) -> str:
    """A caption as prompt text: letters, digits, spaces and `'-` only (no `::`, `{}`, `--` or
    links: the prompt must read back as the caption), at most 300 characters."""
    kept = "".join(c if c.isalnum() or c in " '-" else " " for c in text[:300])
    return " ".join(w.strip("-") for w in kept.split() if w.strip("-"))


class Describer:
    """A captioning model loaded once (use from one thread at a time: calls are serialised)."""

    def __init__(self, ref: str, *, device: str = "auto", dtype: str = "auto") -> None:
        ref = (ref or "").strip()
        if not ref:
            raise ModelError("/describe needs a captioning model: the operator sets CAPTION_MODEL (a BLIP captioning "
                             "model such as Salesforce/blip-image-captioning-large, or its folder).")
        from transformers import AutoProcessor, BlipForConditionalGeneration

        self.device = resolve_device(device)
        self.dtype = resolve_dtype(dtype, self.device)
        local = Path(ref).expanduser()
        unavailable = ("/describe is not available on this bot right now (its captioning model could not be "
                       "loaded; the operator's log says why, under CAPTION_MODEL).")
        if ref.startswith(("/", ".", "~")) and not local.is_dir():
            log.warning("CAPTION_MODEL %s is not a folder (give a hub id or a model folder)", ref)
            raise ModelError(unavailable)
        try:
            with LOAD_LOCK:  # never while another thread loads weights (meta-device patches)
                self.processor = AutoProcessor.from_pretrained(ref)
                self.model = BlipForConditionalGeneration.from_pretrained(ref, dtype=self.dtype).to(self.device)
        except Exception as exc:  # the path and the loader's words go to the log, never to a member
            log.warning("cannot load the captioning model %s (CAPTION_MODEL, a BLIP model: hub id or folder): %s",
                        ref, exc)
            raise ModelError(unavailable) from None
        self.model.eval()
        self._lock = threading.Lock()

    def describe(self, image: Image.Image, *, offset: int = 0) -> Description:
        """Four prompts for `image` (RGB); `offset` > 0 deals the next-best phrases (🔄)."""
        import torch

        with self._lock, torch.inference_mode():
            pixels = self.processor(images=image.convert("RGB"), return_tensors="pt").pixel_values
            pixels = pixels.to(self.device, self.dtype)
            captions = self._captions(pixels)
            image_embeds = self.model.vision_model(pixel_values=pixels)[0]  # once, for both lists
            mediums = self._ranked(image_embeds, MEDIUMS)
            styles = self._ranked(image_embeds, STYLES)
        aspect = aspect_of(*image.size)
        prompts = []
        for i, caption in enumerate(captions):
            medium = mediums[(i + offset * 4) % len(mediums)]
            first, second = (styles[(2 * i + k + offset * 8) % len(styles)] for k in (0, 1))
            prompts.append(f"{caption}, {medium}, {first}, {second} --ar {aspect}")
        return Description(prompts=tuple(prompts), aspect=aspect)

    def _captions(self, pixels: Any) -> list[str]:
        out = self.model.generate(pixels, num_beams=4, num_return_sequences=4, max_new_tokens=MAX_CAPTION_TOKENS,
                                  do_sample=False)
        texts = [_plain(t) for t in self.processor.batch_decode(out, skip_special_tokens=True)]
        return [t or "a picture" for t in texts]

    def _ranked(self, image_embeds: Any, phrases: tuple[str, ...]) -> list[str]:
        """`phrases`, most likely caption of the picture first (mean token log-probability)."""
        import torch

        config = self.model.config.text_config
        batch = self.processor.tokenizer(list(phrases), padding=True, return_tensors="pt").to(self.device)
        ids = batch.input_ids.clone()
        ids[:, 0] = config.bos_token_id  # BLIP's decoder starts with [DEC], as generate() does
        logits = self.model.text_decoder(input_ids=ids, attention_mask=batch.attention_mask,
                                         encoder_hidden_states=image_embeds.expand(len(phrases), -1, -1)).logits
        logprobs = torch.log_softmax(logits[:, :-1].float(), dim=-1).gather(-1, ids[:, 1:, None])[..., 0]
        mask = batch.attention_mask[:, 1:].float()
        scores = (logprobs * mask).sum(1) / mask.sum(1).clamp(min=1)
        order = sorted(range(len(phrases)), key=lambda k: (-float(scores[k]), k))
        return [phrases[k] for k in order]

"""Text to mask for Vary (Region): "the sky", "her hat" -> the part of the picture to repaint.

CLIPSeg (`CLIPSegForImageSegmentation` with its `CLIPSegProcessor`, through transformers) scores
every pixel of the picture against the text. It is small (about 150 M parameters), so it runs
on the CPU beside the bot or the worker (off the event loop, one call at a time), loaded once on
first use from a hub id or a folder (`SEGMENT_MODEL_ID`), like the other models.

The mask is the scores brought up to the picture's size and cut at half their range
(`(p - min) / (max - min) >= 0.5`): CLIPSeg's raw probabilities differ a lot between texts and
pictures, and a relative cut always gives the most likely region. When even the best pixel
scores below `MIN_SCORE` the text is not in the picture, and the user is told so.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from PIL import Image

from engine.device import LOAD_LOCK, hub_offline
from engine.errors import ModelError, PromptError

__all__ = ["MAX_REGION_TEXT", "MIN_SCORE", "Segmenter"]

log = logging.getLogger(__name__)

MAX_REGION_TEXT = 200  # characters of a region description ("the sky", "her hat")
MIN_SCORE = 0.05  # the best pixel's probability below this: the text is not in the picture


class Segmenter:
    """CLIPSeg loaded once (thread-safe: calls are serialised)."""

    def __init__(self, ref: str, *, device: str = "cpu") -> None:
        self.ref = ref
        self.device = device
        self._lock = threading.Lock()
        self._model: Any = None
        self._processor: Any = None

    def _load(self) -> None:
        if self._model is not None:
            return
        from transformers import CLIPSegForImageSegmentation, CLIPSegProcessor

        offline = hub_offline()
        try:
            with LOAD_LOCK:  # never while another thread loads weights (meta-device patches)
                self._processor = CLIPSegProcessor.from_pretrained(self.ref, local_files_only=offline)
                model = CLIPSegForImageSegmentation.from_pretrained(self.ref, local_files_only=offline)
        except Exception as exc:  # the operator reads why in the log; a member never sees the path
            log.warning("cannot load the region model %s (SEGMENT_MODEL_ID): %s", self.ref, exc)
            raise ModelError("Vary (Region) by description is not available on this bot right now (its region "
                             "model could not be loaded); pick cells or upload a mask instead.") from None
        self._model = model.to(self.device).eval()
        log.info("loaded the region model %s on %s", self.ref, self.device)

    def mask(self, image: Image.Image, text: str) -> Image.Image:
        """The region `text` names in `image`, as a 0/255 L mask of the image's size.

        Raises `PromptError` for an empty or too long text, or one not found in the picture."""
        text = " ".join(text.split())
        if not text:
            raise PromptError("Describe the region to repaint, like “the sky” or “her hat”.")
        if len(text) > MAX_REGION_TEXT:
            raise PromptError(f"The region description is {len(text)} characters; at most {MAX_REGION_TEXT} "
                              "are allowed (a few words, like “the sky”).")
        import numpy as np
        import torch

        with self._lock:
            self._load()
            inputs = self._processor(text=[text], images=[image.convert("RGB")], return_tensors="pt",
                                     padding=True, truncation=True)
            inputs = {k: v.to(self.device) for k, v in inputs.items()}
            with torch.inference_mode():
                logits = self._model(**inputs).logits
        scores = torch.sigmoid(logits.float().reshape(1, 1, *logits.shape[-2:]))
        probs = torch.nn.functional.interpolate(scores, size=(image.height, image.width), mode="bilinear",
                                                align_corners=False)[0, 0].cpu().numpy()
        best, worst = float(probs.max()), float(probs.min())
        if best < MIN_SCORE or best - worst < 1e-6:
            raise PromptError(f"Could not find “{text}” in the picture; describe it differently, or pick cells "
                              "or upload a mask instead.")
        region = (probs - worst) / (best - worst) >= 0.5
        return Image.fromarray(region.astype(np.uint8) * 255, "L")

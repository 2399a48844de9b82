"""Jobs that answer text: /describe (a captioner) and /shorten (the model's text encoders).

They run on the GPU thread (or a Redis worker) like every other job, so they wait their
turn in the fair queue, count against each member's limits, survive restarts, and never
load a second copy of a model beside the one generating images. Their answer is JSON
(`WorkResult.data`), stored with the job (`Job.result_json`) instead of images.

`TextAnswers` holds the captioner (`CAPTION_MODEL`, loaded on the first /describe) and
runs both kinds; the executor hands it the loaded generator for /shorten's encoders.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from engine.diffusion.shorten import Shortening, ShortenTask, shorten
from engine.errors import PromptError, TesseraError
from engine.imaging.decode import MAX_PIXELS, decode_image
from engine.jobs.model import JobKind
from engine.vision.describe import Describer, Description

if TYPE_CHECKING:
    from engine.diffusion.generate import Generator

DESCRIBE_AGAIN_MAX = 1000  # 🔄 presses one picture can take (the offset of its next-best phrases)
LOAD_RETRY_S = 300.0  # a captioner that failed to load is not tried again before this (each try is gigabytes)


def check_answer(kind: str, data: Any) -> dict:
    """`data` as a well-formed answer of `kind` (canonical JSON), or `ValueError`: a result from
    a Redis worker or the database is checked before it is stored or shown."""
    if kind == JobKind.DESCRIBE:
        return Description.from_json(data).to_json()
    if kind == JobKind.SHORTEN:
        return Shortening.from_json(data).to_json()
    raise ValueError(f"a {kind} job does not answer text")


def describe_offset(options: Any) -> int:
    offset = options.get("offset", 0) if isinstance(options, dict) else None
    if isinstance(offset, bool) or not isinstance(offset, int) or not 0 <= offset <= DESCRIBE_AGAIN_MAX:
        raise PromptError(f"describe again at most {DESCRIBE_AGAIN_MAX} times.")
    return offset


class TextAnswers:
    """The captioner (loaded once, on first use) and the two text-answering job kinds."""

    def __init__(self, caption_model: str = "", *, device: str = "auto", dtype: str = "auto",
                 max_pixels: int = MAX_PIXELS) -> None:
        self.caption_model = caption_model
        self.device, self.dtype = device, dtype
        self.max_pixels = max_pixels
        self._describer: Describer | None = None
        self._failed: tuple[float, BaseException] | None = None  # (when, why) the captioner last failed to load

    def describe(self, options: dict) -> dict:
        """Four prompts for the picture at `options["source"]` (a file: the bot's kept copy,
        or the worker's copy of the bytes sent with the batch), decoded with the checked
        decoder; `options["offset"]` deals the next-best phrases."""
        offset = describe_offset(options)
        source = options.get("source")
        if not isinstance(source, str) or not source:
            raise PromptError("this /describe job names no picture; run /describe again.")
        try:
            data = Path(source).read_bytes()
        except FileNotFoundError:
            raise TesseraError("The picture to describe is no longer on disk (it may have been pruned); "
                               "run /describe again.") from None
        image = decode_image(data, max_bytes=4 * self.max_pixels + 2**20, max_pixels=self.max_pixels,
                             source="The picture")
        return self._captioner().describe(image, offset=offset).to_json()

    def shorten(self, generator: Generator, options: dict) -> dict:
        """Word weights and shorter prompts, measured with the loaded model's own text
        encoders, with no LoRA active (a LoRA left by the last batch would skew the weights)."""
        task = ShortenTask.from_options(options)
        return shorten(generator.plain_encoder(), task).to_json()

    def _captioner(self) -> Describer:
        """The captioner, loaded on first use. A failed load is remembered for LOAD_RETRY_S: the
        describe jobs queued meanwhile fail at once with the same message instead of each
        loading gigabytes again on the GPU thread (the operator's log has the reason once)."""
        if self._describer is not None:
            return self._describer
        if not self.caption_model.strip():
            raise PromptError("/describe is not set up: the operator sets CAPTION_MODEL (a BLIP captioning "
                              "model such as Salesforce/blip-image-captioning-large).")
        if self._failed is not None and time.monotonic() - self._failed[0] < LOAD_RETRY_S:
            failed = self._failed[1]
            raise failed.__class__(*failed.args)  # a fresh one: re-raising one object grows its traceback
        try:
            self._describer = Describer(self.caption_model, device=self.device, dtype=self.dtype)
        except TesseraError as error:
            self._failed = (time.monotonic(), error)
            raise
        self._failed = None
        return self._describer

    def close(self) -> None:
        self._describer = None

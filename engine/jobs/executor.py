"""What runs on the GPU worker thread: one batch of jobs in, images (or an error per job) out.

The queue owns scheduling, storage and events; an `Executor` owns only the model. It is
called on the queue's single worker thread (never on the event loop), one batch at a time,
and must not touch storage or asyncio. Tests and benchmarks pass a fake one; the product
uses `EngineExecutor`, which calls `engine.diffusion.generate.Generator` and `engine.upscale.realesrgan.Upscaler`.

Batches hold jobs whose `GenerationRequest.batch_key()` are equal (same model, size, steps,
sampler, ...), so the pipeline runs them as one call. Upscales are never batched.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from engine.diffusion.generate import Generator, StepProgress
from engine.diffusion.loras import BatchAdapters
from engine.diffusion.models import LoadedModel, load_model
from engine.diffusion.references import adapter_files_from_settings
from engine.diffusion.safety import DEFAULT_SAFETY_MODEL, SafetyFilter
from engine.errors import JobCancelled, TesseraError
from engine.imaging.decode import MAX_PIXELS
from engine.jobs.answers import TextAnswers
from engine.jobs.model import JobKind
from engine.memory import is_out_of_memory, split_on_oom
from engine.request import GenerationRequest
from engine.upscale.realesrgan import Upscaler

if TYPE_CHECKING:
    from PIL.Image import Image

log = logging.getLogger(__name__)

UPSCALE = "upscale"


@dataclass(frozen=True)
class WorkItem:
    """One job as the worker thread needs it: no storage row, just what to compute."""

    job_id: str
    kind: str  # engine.jobs.model.JobKind value
    request: GenerationRequest | None  # None for upscales and the jobs that answer text
    options: dict = field(default_factory=dict)  # upscale: {"scale": 4, "source": "/abs/file.png"}; see JobKind
    prompt_text: str = ""


@dataclass
class WorkResult:
    """One job's outcome: its images (or its JSON answer, for /describe and /shorten), or the
    exception that ended it."""

    images: list[Image] | None = None
    data: dict | None = None  # the answer of a job that answers text (`JobKind.answers_text`)
    error: BaseException | None = None
    flagged: list[int] = field(default_factory=list)  # images the safety checker replaced by its notice


class BatchControl(Protocol):
    """What the queue lends an executor for one batch (thread-safe, cheap to call every step)."""

    def on_step(self, index: int, step: int, total: int, preview: Image | None) -> None: ...

    def should_stop(self, index: int) -> bool: ...


class Executor(Protocol):
    """Runs batches on the worker thread. `prepare` loads the model before the first batch."""

    def prepare(self) -> None: ...

    def run(self, items: Sequence[WorkItem], control: BatchControl) -> list[WorkResult]:
        """One result per item, in order. Raise only for errors that hit the whole batch
        (out of memory above all): the queue then splits the batch and tries again."""
        ...

    def close(self) -> None: ...


class NoOpExecutor:
    """Returns blank images at once: the benchmark's way to measure the queue alone."""

    def __init__(self, size: int = 8) -> None:
        self.size = size

    def prepare(self) -> None:
        pass

    def run(self, items: Sequence[WorkItem], control: BatchControl) -> list[WorkResult]:
        from PIL import Image

        results = []
        for index, item in enumerate(items):
            if control.should_stop(index):
                results.append(WorkResult(error=JobCancelled()))
                continue
            if JobKind(item.kind).answers_text:  # the smallest well-formed answer of each kind
                results.append(WorkResult(data={"prompts": ["a picture --ar 1:1"], "aspect": "1:1"}
                                          if item.kind == JobKind.DESCRIBE else
                                          {"words": [{"word": "a", "weight": 1.0}], "prompts": []}))
                continue
            count = 1 if item.request is None else item.request.count
            results.append(WorkResult(images=[Image.new("RGB", (self.size, self.size)) for _ in range(count)]))
        return results

    def close(self) -> None:
        pass


class EngineExecutor:
    """The real thing: diffusers for grids and variations, Real-ESRGAN for upscales, and the
    text answers of /describe and /shorten (`engine.jobs.answers`).

    The model loads in `prepare` (the queue calls it first thing on the worker thread, so the
    bot answers while it warms up). The upscaler loads on the first upscale, the captioner on
    the first /describe.
    """

    def __init__(
        self,
        model_ref: str,
        *,
        device: str = "auto",
        dtype: str = "auto",
        attention_slicing: bool = False,
        vae_tiling: bool = True,
        cpu_offload: bool = False,
        weights_dir: Path | None = None,
        upscale_tile: int = 256,
        upscale_overlap: int = 16,
        upscale_max_side: int = 4096,
        safety_checker: bool = False,
        safety_checker_model: str = "",
        lora_dir: Path | None = None,
        embeddings_dir: Path | None = None,
        draft_lora: Path | None = None,
        reference_files: dict[str, Any] | None = None,
        caption_model: str = "",
        describe_max_pixels: int = MAX_PIXELS,
    ) -> None:
        self.model_ref = model_ref
        self.lora_dir, self.embeddings_dir, self.draft_lora = lora_dir, embeddings_dir, draft_lora
        self.reference_files = reference_files or {}  # family -> AdapterFiles (pictures as prompts)
        self.device = device
        self.dtype = dtype
        self.attention_slicing, self.vae_tiling, self.cpu_offload = attention_slicing, vae_tiling, cpu_offload
        self.weights_dir = weights_dir
        self.upscale_tile, self.upscale_overlap, self.upscale_max_side = upscale_tile, upscale_overlap, upscale_max_side
        self.model: LoadedModel | None = None
        self._generator: Generator | None = None
        self._upscaler: Upscaler | None = None
        self._other: tuple[str, Generator] | None = None
        # Runs on jobs whose request asks (safety_check); loaded at prepare when on everywhere.
        self.safety = SafetyFilter(model_ref, fallback=safety_checker_model or DEFAULT_SAFETY_MODEL, device=device,
                                   dtype=dtype, eager=safety_checker)
        self.answers = TextAnswers(caption_model, device=device, dtype=dtype, max_pixels=describe_max_pixels)

    @classmethod
    def from_settings(cls, settings: Any) -> EngineExecutor:
        """Build from `bot.config.Settings` (duck-typed: engine/ does not import bot/)."""
        return cls(
            settings.model_id, device=settings.device, dtype=settings.dtype,
            attention_slicing=settings.attention_slicing, vae_tiling=settings.vae_tiling,
            cpu_offload=settings.cpu_offload, weights_dir=settings.weights_dir,
            upscale_tile=settings.upscale_tile, upscale_overlap=settings.upscale_tile_overlap,
            upscale_max_side=settings.upscale_max_side,
            safety_checker=settings.safety_checker,
            safety_checker_model=getattr(settings, "safety_checker_model", ""),
            lora_dir=getattr(settings, "lora_dir", None), embeddings_dir=getattr(settings, "embeddings_dir", None),
            draft_lora=getattr(settings, "draft_lora", None),
            reference_files=adapter_files_from_settings(settings),
            caption_model=getattr(settings, "caption_model", ""),
            describe_max_pixels=getattr(settings, "image_prompt_max_pixels", MAX_PIXELS),
        )

    def prepare(self) -> None:
        self._main_generator()
        self.safety.prepare()

    def _main_generator(self) -> Generator:
        if self._generator is None:
            self.model, self._generator = self._load(self.model_ref)
        return self._generator

    def _load(self, ref: str) -> tuple[LoadedModel, Generator]:
        model = load_model(ref, device=self.device, dtype=self.dtype, attention_slicing=self.attention_slicing,
                           vae_tiling=self.vae_tiling, cpu_offload=self.cpu_offload)
        return model, Generator(model, adapters=BatchAdapters(model.pipe, model.family, lora_dir=self.lora_dir,
                                                                embeddings_dir=self.embeddings_dir,
                                                                draft_lora=self.draft_lora),
                                reference_files=self.reference_files.get(model.family))

    def _generator_for(self, ref: str) -> Generator:
        """MODEL_ID stays loaded; one other allowed model (a user's choice) is kept beside it."""
        self.prepare()
        if ref == self.model_ref:
            return self._main_generator()
        if self._other is None or self._other[0] != ref:
            self._other = None  # free the previous one before loading the next
            self._other = (ref, self._load(ref)[1])
        return self._other[1]

    def _upscaler_instance(self) -> Upscaler:
        if self._upscaler is None:
            if self.weights_dir is None:
                raise TesseraError("Upscaling is not set up: UPSCALER_WEIGHTS_DIR is not configured.")
            self._upscaler = Upscaler(self.weights_dir, device=self.device, dtype=self.dtype, tile=self.upscale_tile,
                                      overlap=self.upscale_overlap, max_side=self.upscale_max_side)
        return self._upscaler

    def run(self, items: Sequence[WorkItem], control: BatchControl) -> list[WorkResult]:
        if items[0].kind == UPSCALE:
            return [self._upscale(index, item, control) for index, item in enumerate(items)]
        if JobKind(items[0].kind).answers_text:  # never batched (no request, so no batch key)
            return [self._answer(index, item, control) for index, item in enumerate(items)]
        return self._generate(items, control)

    def _answer(self, index: int, item: WorkItem, control: BatchControl) -> WorkResult:
        """/describe or /shorten: one forward pass or two, so progress is "started" and "done"."""
        if control.should_stop(index):
            return WorkResult(error=JobCancelled())
        try:
            control.on_step(index, 0, 1, None)
            if item.kind == JobKind.DESCRIBE:
                data = self.answers.describe(item.options)
            else:
                data = self.answers.shorten(self._generator_for(self.model_ref), item.options)
            control.on_step(index, 1, 1, None)
            return WorkResult(data=data)
        except Exception as error:
            if is_out_of_memory(error):
                raise
            return WorkResult(error=error)

    def _upscale(self, index: int, item: WorkItem, control: BatchControl) -> WorkResult:
        from PIL import Image

        if control.should_stop(index):
            return WorkResult(error=JobCancelled())
        try:
            scale = int(item.options.get("scale", 4))
            with Image.open(item.options["source"]) as source:
                source.load()
                upscaler = self._upscaler_instance()
                upscaler.check_scale(source.width, source.height, scale)
                control.on_step(index, 0, 1, None)
                image = upscaler.upscale(source, scale)
            control.on_step(index, 1, 1, None)
            return WorkResult(images=[image])
        except FileNotFoundError:
            return WorkResult(error=TesseraError("The image to upscale is no longer on disk (it may have been pruned)."))
        except Exception as error:
            if is_out_of_memory(error):
                raise
            return WorkResult(error=error)

    def _generate(self, items: Sequence[WorkItem], control: BatchControl) -> list[WorkResult]:
        requests: list[GenerationRequest] = []
        for item in items:
            if item.request is None:  # only upscales come without one, and they never get here
                raise ValueError(f"job {item.job_id} ({item.kind}) has no generation request")
            requests.append(item.request)
        generator = self._generator_for(requests[0].model)

        def on_step(index: int, progress: StepProgress) -> None:
            # No live preview of an image the safety checker has not seen yet.
            preview = None if requests[index].safety_check else progress.preview
            control.on_step(index, progress.step, progress.total, preview)

        outcomes = generator.generate_each(requests, on_step=on_step, should_stop=control.should_stop)
        results: list[WorkResult] = []
        for index, outcome in enumerate(outcomes):
            if isinstance(outcome, BaseException):
                results.append(WorkResult(error=outcome))
            elif control.should_stop(index) and not outcome:
                results.append(WorkResult(error=JobCancelled()))
            elif requests[index].safety_check:
                results.append(self._checked(list(outcome)))
            else:
                results.append(WorkResult(images=list(outcome)))
        return results

    def _checked(self, images: list[Image]) -> WorkResult:
        """Flagged images replaced by the notice; a checker that cannot load fails the job
        (its images are never shown unchecked)."""
        try:
            images, flagged = self.safety.apply(images)
        except Exception as error:
            if is_out_of_memory(error):
                raise
            return WorkResult(error=error)
        return WorkResult(images=images, flagged=flagged)

    def close(self) -> None:
        self._generator = None
        self.model = None
        self._other = None
        self._upscaler = None
        self.answers.close()
        self.safety.close()


class _Shifted:
    """A `BatchControl` view for a sub-batch starting at `offset` of the original batch."""

    def __init__(self, control: BatchControl, offset: int) -> None:
        self.control = control
        self.offset = offset

    def on_step(self, index: int, step: int, total: int, preview: Image | None) -> None:
        self.control.on_step(index + self.offset, step, total, preview)

    def should_stop(self, index: int) -> bool:
        return self.control.should_stop(index + self.offset)


def shifted(control: BatchControl, offset: int) -> BatchControl:
    return control if offset == 0 else _Shifted(control, offset)


def run_split(executor: Executor, items: Sequence[WorkItem], control: BatchControl,
              deliver: Callable[[int, WorkResult], None], *, offset: int = 0) -> None:
    """Run `items`, splitting the batch in halves on out-of-memory (down to single jobs) and
    running jobs alone when the whole batch fails, so one bad job fails by itself.

    `deliver(index, result)` is called once per item with its index in the original batch.
    Never raises: the worker thread must survive anything a batch does.
    """

    def attempt(part: Sequence[WorkItem], start: int) -> list[WorkResult]:
        results = executor.run(part, shifted(control, start))
        if len(results) != len(part):
            raise RuntimeError(f"executor returned {len(results)} results for {len(part)} jobs")
        return results

    def done(start: int, results: list[WorkResult]) -> None:
        for i, result in enumerate(results):
            deliver(start + i, result)

    def failed(part: Sequence[WorkItem], start: int, error: BaseException) -> None:
        if len(part) > 1:  # not out of memory: find the job that fails by running each alone
            log.warning("a batch of %d failed (%s); running its jobs one by one", len(part), error)
            for i, item in enumerate(part):
                split_on_oom([item], attempt, done, failed=failed, what="jobs", offset=start + i)
            return
        if is_out_of_memory(error) and JobKind(part[0].kind).answers_text:
            error = TesseraError(f"The GPU ran out of memory for this /{part[0].kind}; try again in a few minutes, "
                                 "when fewer images are being made.")
        elif is_out_of_memory(error):
            error = TesseraError(
                "The GPU ran out of memory for this image. Try a smaller size (--ar closer to 1:1) "
                "or a lower --quality."
            )
        deliver(start, WorkResult(error=error))

    split_on_oom(items, attempt, done, failed=failed, what="jobs", offset=offset)

"""Running out of device memory: how to recognise it, how to give memory back, how to split.

One home for these rules because three places meet them: the job executor (a batch of jobs),
the denoising loop (a batch of images, and a VAE call) and the upscaler's tiles. Each used to
carry its own test for "out of memory", and they had drifted apart (one knew MPS's wording,
another Python's `MemoryError`); a failure one of them recognised made another fail the job.

At engine's base, beside `engine.device`, so that diffusion, upscaling and the job system can
all use it without importing each other. Torch is imported inside the calls (heavy).
"""

from __future__ import annotations

import gc
import logging
from collections.abc import Callable, Sequence
from typing import TypeVar

__all__ = ["free_memory", "is_out_of_memory", "split_on_oom"]

log = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")

# How torch's allocators word it when they have no typed error to raise: CUDA's and HIP's
# ("CUDA out of memory"), MPS's ("MPS backend out of memory"), the CPU allocator's ("DefaultCPUAllocator:
# can't allocate memory", "not enough memory: you tried to allocate ...").
_OOM_WORDS = ("out of memory", "can't allocate memory", "not enough memory")


def is_out_of_memory(error: BaseException) -> bool:
    """Whether `error` is a device or the host running out of memory.

    `torch.OutOfMemoryError` (CUDA) by its name, so that this needs no torch import; the
    allocators' `RuntimeError`s by their words; Python's own `MemoryError`. Whatever answers
    True is worth retrying smaller (a half batch, a smaller tile); anything else is not.
    """
    if isinstance(error, MemoryError):
        return True
    if type(error).__name__ == "OutOfMemoryError":
        return True
    if not isinstance(error, RuntimeError):
        return False
    text = str(error).lower()
    return any(words in text for words in _OOM_WORDS)


def free_memory() -> None:
    """Give cached device memory back before a retry, so the smaller attempt can use it.

    Python's garbage first (the failed attempt's tensors may sit in reference cycles, e.g. a
    traceback's frames), then the CUDA or MPS caching allocator's unused blocks.
    """
    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    mps = getattr(torch, "mps", None)
    if mps is not None and torch.backends.mps.is_available():
        mps.empty_cache()


def split_on_oom(
    items: Sequence[T],
    run: Callable[[Sequence[T], int], R],
    done: Callable[[int, R], None],
    *,
    failed: Callable[[Sequence[T], int, BaseException], None] | None = None,
    what: str = "items",
    before_retry: Callable[[], None] | None = None,
    offset: int = 0,
) -> None:
    """Run `items` as one batch; when it runs out of memory, run each half the same way.

    `run(part, offset)` runs a contiguous part that starts at `offset` in the original batch
    and returns its outcome, which goes to `done(offset, outcome)` (outside the `try`, so an
    error in `done` is never mistaken for the batch's own). A batch of one that runs out of
    memory, and any other failure, goes to `failed(part, offset, error)`, or is raised when
    there is none. `before_retry` runs before the halves (e.g. `free_memory`).

    Halving keeps order and offsets, so every item reports at its place in the original
    batch, and never changes what an item computes: the executor's jobs and the generator's
    images each carry their own seed, so a half gives the same pixels as the whole.
    `KeyboardInterrupt` and `SystemExit` always pass through.
    """
    try:
        outcome = run(items, offset)
    except BaseException as error:
        if isinstance(error, (KeyboardInterrupt, SystemExit)):
            raise
        if len(items) > 1 and is_out_of_memory(error):
            if before_retry is not None:
                before_retry()
            half = len(items) // 2
            log.warning("out of memory on a batch of %d %s; retrying as %d + %d", len(items), what, half,
                        len(items) - half)
            for start, part in ((0, items[:half]), (half, items[half:])):
                split_on_oom(part, run, done, failed=failed, what=what, before_retry=before_retry,
                             offset=offset + start)
            return
        if failed is None:
            raise
        failed(items, offset, error)
        return
    done(offset, outcome)

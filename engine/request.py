"""CONTRACT STUB (being implemented): a fully resolved, reproducible generation request.

`resolve(expansion, defaults, profile, ...) -> GenerationRequest` applies user defaults and the
model profile to a parsed prompt. The request records everything needed to reproduce the
result; it is stored as JSON on the job (`to_json` / `from_json`) and sent to Redis workers.
"""

from __future__ import annotations

from dataclasses import dataclass

from engine.prompt import WeightedText

SEED_MAX = 4294967295


@dataclass(frozen=True)
class GenerationRequest:
    prompts: tuple[WeightedText, ...]  # `::` parts with weights as written (may be negative)
    negative: tuple[str, ...]  # --no items
    width: int
    height: int
    steps: int
    guidance: float
    seed: int  # image i of the grid uses (seed + i) mod 2**32
    sampler: str
    model: str
    count: int = 4  # images in the grid
    chaos: int = 0
    tile: bool = False
    stop: int | None = None  # percent of steps, 10-100
    init_image: str | None = None  # absolute path of an init image (image prompt, variation source)
    strength: float | None = None  # image-to-image strength when init_image is set
    ignored: tuple[str, ...] = ()  # parameters accepted but not honoured, listed back to the user

    def image_seed(self, index: int) -> int:
        return (self.seed + index) % (SEED_MAX + 1)

    def batch_key(self) -> tuple:
        """Requests with equal keys may run together as one batch."""
        return (self.model, self.width, self.height, self.steps, self.sampler, self.tile,
                self.init_image is None, self.stop)

    def to_json(self) -> dict: ...

    @classmethod
    def from_json(cls, data: dict) -> GenerationRequest: ...

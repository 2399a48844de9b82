"""Midjourney's prompt language: text, `::` weights, `--parameters`, `{a, b}` permutations.

Pure Python and fast (no torch): the bot parses every prompt on the event loop before it
queues anything, so a bad prompt is refused at once with a message fit for Discord.

CONTRACT (fixed; the parser is being written): `parse(text, limits) -> Prompt`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from engine.errors import PromptError

__all__ = ["Expansion", "Params", "Prompt", "PromptError", "PromptLimits", "WeightedText", "parse"]


@dataclass(frozen=True)
class WeightedText:
    """One `::` part of a multi-prompt: its text and its weight as written (default 1)."""

    text: str
    weight: float = 1.0


@dataclass(frozen=True)
class Params:
    """The `--parameters` of one expansion; `None` means "not given" (defaults come later)."""

    ar: str | None = None  # "W:H" as written, whole positive numbers
    seed: int | None = None
    quality: float | None = None
    stylize: int | None = None
    chaos: int | None = None
    weird: int | None = None
    stop: int | None = None
    repeat: int | None = None
    tile: bool = False
    iw: float | None = None
    style: str | None = None
    version: str | None = None
    # Accepted but not acted on by the parser: niji, turbo, fast, relax, sref, cref, sw, cw.
    # name -> value ("" for flags). Later stages list them back as ignored.
    extra: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Expansion:
    """One concrete prompt after permutation expansion: what a single job generates."""

    prompts: tuple[WeightedText, ...]
    negative: tuple[str, ...]
    images: tuple[str, ...]
    params: Params
    source: str  # this expansion's text as the user would have typed it (for display)

    def to_json(self) -> dict:
        """The `tessera parse` JSON shape of one expansion."""
        raise NotImplementedError

    @classmethod
    def from_json(cls, data: dict) -> Expansion:
        raise NotImplementedError


@dataclass(frozen=True)
class Prompt:
    """A parsed prompt: the verbatim text and one `Expansion` per permutation, in order.

    `jobs` is the number of jobs it makes (expansions x `--repeat`).
    """

    raw: str
    expansions: tuple[Expansion, ...]

    @property
    def jobs(self) -> int:
        return sum(e.params.repeat or 1 for e in self.expansions)

    def to_json(self) -> dict:
        return {"expansions": [e.to_json() for e in self.expansions]}


@dataclass(frozen=True)
class PromptLimits:
    """Limits that protect the bot (PROMPT_MAX_LENGTH, PROMPT_MAX_JOBS)."""

    max_length: int = 6000
    max_jobs: int = 40


def parse(text: str, limits: PromptLimits = PromptLimits()) -> Prompt:
    """Parse `text`; raise `PromptError` with a user-facing message when it is invalid."""
    raise NotImplementedError

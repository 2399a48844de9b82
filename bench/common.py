"""What every benchmark returns, and how the runner judges it."""

from __future__ import annotations

import statistics
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Literal


@dataclass(frozen=True)
class Result:
    name: str  # e.g. "prompt_parse_ms" (names are fixed by issue 10)
    value: float
    unit: str  # "ms", "x", "MB", "jobs/s", "slots"
    goal: float | None  # None: reported without a goal
    direction: Literal["<=", ">=", "<"] = "<="

    @property
    def ok(self) -> bool:
        if self.goal is None:
            return True
        if self.direction == "<=":
            return self.value <= self.goal
        if self.direction == "<":
            return self.value < self.goal
        return self.value >= self.goal

    def to_json(self) -> dict:
        data = asdict(self)
        data.pop("direction")
        data["ok"] = self.ok
        return data


def alternating_ratio(slow: Callable[[], float], fast: Callable[[], float], rounds: int) -> float:
    """The median of `rounds` paired ratios slow/fast, each pair run in alternating order.

    Each callable runs one side once and returns what it cost (seconds). A busy machine adds
    time to whichever side happens to run during the disturbance; running the two sides back
    to back, first one then the other, and taking the median of the per-pair ratios keeps one
    noisy moment from flipping the figure (the minimum of each side, taken apart, does not:
    the two minima can come from different moments of a machine's load).
    """
    if rounds < 1:
        raise ValueError("rounds must be at least 1")
    ratios = []
    for attempt in range(rounds):
        if attempt % 2 == 0:
            slow_cost = slow()
            fast_cost = fast()
        else:
            fast_cost = fast()
            slow_cost = slow()
        ratios.append(slow_cost / fast_cost)
    return statistics.median(ratios)

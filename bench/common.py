"""What every benchmark returns, and how the runner judges it."""

from __future__ import annotations

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

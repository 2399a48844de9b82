"""The benchmark runner's shared rules: ratios alternate their two sides and take the median."""

from __future__ import annotations

import pytest

from bench.common import alternating_ratio


def test_alternating_ratio_runs_sides_in_alternating_order_and_takes_the_median_pair() -> None:
    calls: list[str] = []
    slow_costs = iter([2.0, 2.0, 50.0, 2.0, 2.0])  # one disturbed run of the slow side
    fast_costs = iter([1.0, 1.0, 1.0, 1.0, 1.0])

    def slow() -> float:
        calls.append("slow")
        return next(slow_costs)

    def fast() -> float:
        calls.append("fast")
        return next(fast_costs)

    assert alternating_ratio(slow, fast, 5) == 2.0  # the outlier pair (50×) does not move the median
    assert calls == ["slow", "fast", "fast", "slow", "slow", "fast", "fast", "slow", "slow", "fast"]


def test_alternating_ratio_needs_a_round() -> None:
    with pytest.raises(ValueError):
        alternating_ratio(lambda: 1.0, lambda: 1.0, 0)

"""How fast the bot answers: `/imagine` arrival to Discord deferral, under a burst.

Through the test harness (real `discord.Interaction`s dispatched by the client's own
gateway path, every HTTP call captured instead of sent) with the real service, storage and
queue, and a no-op executor so the GPU does not hide the bot's own costs. 1,000 `/imagine`
interactions arrive at 200 per second from 200 users (far above any real server), then
1,000 more all at once. Printed: p50/p99 from arrival to the deferral request, and the event
loop's lag p99 while it all runs (a 5 ms ticker's lateness).
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import Result

ROOT = Path(__file__).resolve().parent.parent
TICK_S = 0.005


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


class LagMeter:
    """How late a 5 ms ticker wakes up: the event loop's responsiveness."""

    def __init__(self) -> None:
        self.lags: list[float] = []
        self._task: asyncio.Task[None] | None = None

    async def _tick(self) -> None:
        while True:
            started = time.perf_counter()
            await asyncio.sleep(TICK_S)
            self.lags.append(max(0.0, time.perf_counter() - started - TICK_S))

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._tick())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)


async def _run(model_dir: Path, count: int, rate: float | None) -> tuple[list[float], list[float]]:
    """(deferral delays in s, loop lags in s) for `count` interactions at `rate`/s (None: at once)."""
    sys.path.insert(0, str(ROOT))
    from bot.client import TesseraClient
    from bot.config import load_settings
    from bot.service import Tessera
    from engine.jobs.executor import NoOpExecutor
    from engine.jobs.model import JobState
    from tests.discord_harness import CapturedHTTP, Harness

    deferred: dict[str, float] = {}

    class StampedHTTP(CapturedHTTP):
        async def _answer(self, call: Any) -> Any:
            if call.is_callback and (call.json or {}).get("type") == 5:
                deferred.setdefault(call.token, time.perf_counter())
            return await super()._answer(call)

    with tempfile.TemporaryDirectory(prefix="tessera-bench-bot-") as tmp:
        settings = load_settings(model_id=str(model_dir), device="cpu", data_dir=Path(tmp),
                                 queue_max_per_user=count, queue_max_total=count * 2, queue_max_running_per_user=4)
        service = await Tessera.start(settings, executor=NoOpExecutor(size=8))
        client = TesseraClient(service, sync_commands=False)
        harness = await Harness.create(client, StampedHTTP())
        harness.http.calls = _Bounded()  # keep memory flat: only the stamps matter here
        payloads = [harness.command_payload("imagine", {"prompt": f"a lighthouse at dusk number {i} --ar 3:2"},
                                            user_id=10_000 + i % 200) for i in range(count)]
        arrivals: dict[str, float] = {}
        lag = LagMeter()
        lag.start()
        state = client._connection
        start = time.perf_counter()
        for i, payload in enumerate(payloads):
            due = start + (i / rate if rate else 0.0)
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            arrivals[payload["token"]] = due
            state.parse_interaction_create(payload)  # the gateway's INTERACTION_CREATE path
        deadline = time.perf_counter() + 120
        while len(deferred) < count and time.perf_counter() < deadline:
            await asyncio.sleep(0.01)
        # let every job run and every message reach its grid, still measuring the lag
        while time.perf_counter() < deadline:
            active = await service.storage.jobs.list(state=JobState.QUEUED, limit=1) + \
                await service.storage.jobs.list(state=JobState.RUNNING, limit=1)
            if not active and not client.tracker.jobs:
                break
            await asyncio.sleep(0.05)
        await client.tracker.idle()
        await lag.stop()
        await service.close()
        await harness.close()
    delays = [deferred[t] - arrivals[t] for t in arrivals if t in deferred]
    missing = count - len(delays)
    if missing:
        delays += [float("inf")] * missing
    return delays, lag.lags


class _Bounded(list):
    """A call list that forgets: the benchmark only needs the deferral stamps."""

    def append(self, item: Any) -> None:
        if len(self) > 64:
            self.clear()
        super().append(item)


def run(ctx: Any) -> list[Result]:
    count = 300 if ctx.quick else 1000
    model_dir = ctx.models["sd15"]
    delays, lags = asyncio.run(_run(model_dir, count, rate=200.0))
    burst, _ = asyncio.run(_run(model_dir, count, rate=None))
    ms = 1000.0
    return [
        Result("defer_p99_ms", _percentile(delays, 0.99) * ms, "ms", 100.0, "<"),
        Result("defer_p50_ms", statistics.median(delays) * ms, "ms", None),
        Result("bot_loop_lag_p99_ms", _percentile(lags, 0.99) * ms, "ms", 50.0, "<"),
        Result("defer_burst_p99_ms", _percentile(burst, 0.99) * ms, "ms", None),
    ]

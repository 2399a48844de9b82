"""Queue statistics for Prometheus: `/metrics` on 127.0.0.1:METRICS_PORT (off by default).

Only the loopback address is bound: metrics name users (by id) and load, and an operator
who wants them elsewhere puts a reverse proxy or a scraper on the same host. The numbers are
the ones `/info` shows (`JobQueue.stats()`), read at scrape time.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Any

from engine.jobs.queue import QueueStats

log = logging.getLogger(__name__)


def read_stats(stats: Callable[[], QueueStats], tries: int = 3) -> QueueStats:
    """Stats taken from the scrape thread while the loop may be changing them: retry a race."""
    for attempt in range(tries):
        try:
            return stats()
        except RuntimeError:  # "dictionary changed size during iteration"
            if attempt == tries - 1:
                raise
    raise AssertionError("unreachable")


class QueueCollector:
    """A prometheus_client collector that reads `stats()` on every scrape."""

    def __init__(self, stats: Callable[[], QueueStats]) -> None:
        self.stats = stats

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        s = read_stats(self.stats)
        yield GaugeMetricFamily("tessera_queue_waiting_jobs", "Jobs waiting in the queue", value=s.queued)
        yield GaugeMetricFamily("tessera_queue_running_jobs", "Jobs running now", value=s.running)
        per_user = GaugeMetricFamily("tessera_queue_user_jobs", "Jobs waiting or running per user", labels=["user"])
        for user, count in s.per_user.items():
            per_user.add_metric([str(user)], count)
        yield per_user
        yield GaugeMetricFamily("tessera_queue_mean_wait_seconds", "Mean wait of recent jobs", value=s.mean_wait_s)
        yield GaugeMetricFamily("tessera_queue_mean_run_seconds", "Mean run time of recent jobs", value=s.mean_run_s)
        yield GaugeMetricFamily("tessera_gpu_busy_fraction", "Share of time the GPU worker ran jobs",
                                value=s.busy_fraction)
        yield GaugeMetricFamily("tessera_workers", "GPU workers able to take jobs", value=s.workers)
        yield GaugeMetricFamily("tessera_model_ready", "1 once the model is loaded", value=1 if s.model_ready else 0)
        finished = CounterMetricFamily("tessera_jobs_finished", "Jobs finished since start", labels=["state"])
        finished.add_metric(["done"], s.done)
        finished.add_metric(["failed"], s.failed)
        finished.add_metric(["cancelled"], s.cancelled)
        yield finished


def render(stats: Callable[[], QueueStats]) -> bytes:
    """The text exposition format of the current stats (what `/metrics` serves)."""
    from prometheus_client import CollectorRegistry, generate_latest

    registry = CollectorRegistry(auto_describe=False)
    registry.register(QueueCollector(stats))
    return generate_latest(registry)


class MetricsServer:
    """`/metrics` over HTTP on 127.0.0.1 in a daemon thread (prometheus_client's WSGI server)."""

    def __init__(self, stats: Callable[[], QueueStats], *, port: int, host: str = "127.0.0.1") -> None:
        self.stats = stats
        self.port = port
        self.host = host
        self._server: Any = None
        self._thread: Any = None

    def start(self) -> None:
        from prometheus_client import CollectorRegistry, start_http_server

        registry = CollectorRegistry(auto_describe=False)
        registry.register(QueueCollector(self.stats))
        self._server, self._thread = start_http_server(self.port, addr=self.host, registry=registry)
        self.port = self._server.server_port
        log.info("Prometheus metrics on http://%s:%d/metrics", self.host, self.port)

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

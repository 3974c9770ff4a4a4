"""The background recording writer's counts as Prometheus series, read when Prometheus scrapes.

``confidence_router_recording_decisions_total{state}``: decisions queued, written, dropped (queue full or
closed) and failed (a sink raised), summed over the process's writers; and
``confidence_router_recording_queue_depth``: decisions waiting now. Nothing runs on the request path:
the collector reads the writers' counters at scrape time.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

from prometheus_client import REGISTRY, CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

__all__ = ["RecordingCollector", "register_recording_collector"]

STATES = ("queued", "written", "dropped", "failed")


class RecordingCollector:
    """A custom collector over :func:`~..human.recording.process_stats`."""

    def collect(self) -> Iterator[Any]:
        from ..human.recording import process_stats

        stats = process_stats()
        decisions = CounterMetricFamily("confidence_router_recording_decisions",
                                        "Decisions handed to the background writer, by what became of them",
                                        labels=["state"])
        for state in STATES:
            decisions.add_metric([state], stats[state])
        yield decisions
        yield GaugeMetricFamily("confidence_router_recording_queue_depth",
                                "Decisions waiting for the background writer", value=stats["depth"])


_registered: set[int] = set()
_lock = threading.Lock()


def register_recording_collector(registry: CollectorRegistry = REGISTRY) -> None:
    """Register the collector on ``registry`` once per process."""
    with _lock:
        if id(registry) not in _registered:
            registry.register(RecordingCollector())
            _registered.add(id(registry))

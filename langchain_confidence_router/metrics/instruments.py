"""The Prometheus series the router exports, defined once per registry.

Every name, label and bucket is here, so the exposition, the alert rules and the dashboard agree
on one list. Label values come from the operator's configuration (router names, tier names) or
from closed sets (route, outcome), never from request text.
"""

from __future__ import annotations

import threading
from typing import Any

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram

__all__ = ["CONFIDENCE_BUCKETS", "DECISION_BUCKETS", "RouterMetrics", "default_metrics"]

#: Confidence is a probability: 20 buckets of 0.05 (``le`` 0.05 .. 1.0).
CONFIDENCE_BUCKETS = tuple(round(0.05 * i, 2) for i in range(1, 21))
#: The router's own decision time in seconds; the SLO is 5 ms at p99 and the alert 20 ms.
DECISION_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 1.0)


class RouterMetrics:
    """The router's series on one registry (the process-wide default one unless told otherwise)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        reg: Any = registry if registry is not None else REGISTRY
        self.registry = reg
        self.requests = Counter(
            "confidence_router_requests", "Finished requests by route, outcome and answering model",
            ["router", "route", "outcome", "model"], registry=reg)
        self.escalations = Counter(
            "confidence_router_escalations", "Answers judged not confident enough, by the model that gave them",
            ["router", "model"], registry=reg)
        self.confidence = Histogram(
            "confidence_router_confidence", "Confidence of each scored answer, by model",
            ["router", "model"], buckets=CONFIDENCE_BUCKETS, registry=reg)
        self.cost = Counter(
            "confidence_router_cost_usd", "Spend on tier calls in USD, by model", ["router", "model"], registry=reg)
        self.early_aborts = Counter(
            "confidence_router_early_aborts", "Attempts cut by the early-abort rule, by the model that was cut",
            ["router", "model"], registry=reg)
        self.aborted_tokens = Counter(
            "confidence_router_aborted_tokens",
            "Output tokens received (and paid for) by attempts cut by early abort, by model",
            ["router", "model"], registry=reg)
        self.always_largest_cost = Counter(
            "confidence_router_always_largest_cost_usd",
            "Estimated spend in USD had the largest tier answered each compared request alone",
            ["router"], registry=reg)
        self.compared_cost = Counter(
            "confidence_router_compared_cost_usd",
            "Actual spend in USD of the requests counted in confidence_router_always_largest_cost_usd_total",
            ["router"], registry=reg)
        self.decision_seconds = Histogram(
            "confidence_router_decision_seconds",
            "The router's own time per request: total minus the time spent in upstream model calls",
            ["router"], buckets=DECISION_BUCKETS, registry=reg)
        self.queue_depth = Gauge(
            "confidence_router_human_queue_depth", "Pending review items in the human queue, by route",
            ["route"], registry=reg, multiprocess_mode="max")
        self.registry_version = Gauge(
            "confidence_router_registry_version",
            "Threshold-registry version in force, as the registry poller last applied it (0: none loaded yet, "
            "requests held)",
            ["router", "name"], registry=reg, multiprocess_mode="min")
        self.registry_stale = Gauge(
            "confidence_router_registry_stale",
            "1 while a last-known-good version is in force because the registry could not be read or applied",
            ["router", "name"], registry=reg, multiprocess_mode="max")
        self.queue_poll_errors = Counter(
            "confidence_router_human_queue_poll_errors", "Failed reads of the human queue depth", registry=reg)
        self._capacity: Gauge | None = None

    def set_human_daily_capacity(self, reviews_per_day: int) -> None:
        """Export the configured capacity (created on first use: no series, rather than a false 0, without one)."""
        with _lock:
            if self._capacity is None:
                self._capacity = Gauge(
                    "confidence_router_human_daily_capacity",
                    "Reviews per day the human team can do (metrics.human_daily_capacity)",
                    registry=self.registry, multiprocess_mode="max")
        self._capacity.set(reviews_per_day)


_default: RouterMetrics | None = None
_lock = threading.Lock()


def default_metrics() -> RouterMetrics:
    """The series on prometheus_client's default registry, created on first use (once per process)."""
    global _default
    with _lock:
        if _default is None:
            _default = RouterMetrics()
        return _default

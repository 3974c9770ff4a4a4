"""The drift monitor's figures as Prometheus gauges, for ``confidence-router monitor --every``.

ECE and PSI need labelled answers and a window of decisions from the store, so they are computed
by the scheduled monitor, not per request. Each run sets these gauges; a figure without enough
data is NaN (an alert comparing it never fires) and its ``*_samples`` gauge says why.
"""

from __future__ import annotations

import math
from typing import Any

from prometheus_client import REGISTRY, CollectorRegistry, Gauge, push_to_gateway

from ..human.monitor import MonitorReport

__all__ = ["MonitorGauges", "push_report"]


class MonitorGauges:
    """The monitor's gauges on one registry (the default one unless told otherwise)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        reg: Any = registry if registry is not None else REGISTRY
        self.registry = reg
        self.ece = Gauge("confidence_router_monitor_ece",
                         "ECE of labelled automated answers over the monitor's window, in the labelled binning",
                         ["binning", "bins"], registry=reg)
        self.ece_samples = Gauge("confidence_router_monitor_ece_samples",
                                 "Labelled automated answers behind confidence_router_monitor_ece", registry=reg)
        self.psi = Gauge("confidence_router_monitor_psi",
                         "PSI of the recent confidence distribution against the baseline", registry=reg)
        self.psi_samples = Gauge("confidence_router_monitor_psi_samples",
                                 "The smaller of the baseline and recent sample sizes behind the PSI", registry=reg)
        self.route_share = Gauge("confidence_router_monitor_route_share",
                                 "Share of each route over the monitor's window of decisions", ["route"], registry=reg)
        self.warnings = Gauge("confidence_router_monitor_warnings",
                              "Warnings the last run raised, by figure and level", ["kind", "level"], registry=reg)
        self.last_run = Gauge("confidence_router_monitor_last_run_timestamp_seconds",
                              "When the monitor last finished a run (Unix time)", registry=reg)

    def update(self, report: MonitorReport) -> None:
        # the report names its binning in words ("equal-width, 10 bins"); the labels keep its parts
        kind, _, count = report.ece_binning.partition(",")
        bins = count.strip().split(" ")[0] or str(report.bins)
        self.ece.labels(kind.strip().replace("-", "_"), bins).set(_value(report.ece))
        self.ece_samples.set(report.ece_n)
        self.psi.set(_value(report.psi))
        self.psi_samples.set(min(report.psi_n_baseline, report.psi_n_current))
        for route in {"automated", "human_assisted", "human_primary", "clarify", *report.route_shares}:
            self.route_share.labels(route).set(report.route_shares.get(route, 0.0))
        for kind in ("ece", "psi"):
            for level in ("warning", "alert"):
                self.warnings.labels(kind, level).set(
                    sum(1 for w in report.warnings if w.kind == kind and w.level == level))
        self.last_run.set(report.generated_at)


def _value(figure: float | None) -> float:
    return math.nan if figure is None or not math.isfinite(figure) else float(figure)


def push_report(report: MonitorReport, gateway: str, job: str = "confidence_router_monitor") -> None:
    """Push one report's gauges to a Prometheus Pushgateway (replacing the job's previous push)."""
    registry = CollectorRegistry()
    MonitorGauges(registry).update(report)
    push_to_gateway(gateway, job=job, registry=registry)

"""Human operations around routing: review queue and outcome store, monitoring, A/B arms, audit log.

All four take finished :class:`~langchain_confidence_router.core.trace.RequestTrace` objects; none
of them decides a route (that is the core policy's job). The store needs the ``store`` extra
(SQLAlchemy, psycopg); its names are imported lazily so the audit log and A/B helpers work without it.
"""

from __future__ import annotations

import importlib
from typing import Any

from .abtest import ArmComparison, ArmStats, ZTest, assign_arm, compare_arms, two_proportion_ztest
from .audit import AuditLog, audit_record, scrub
from .monitor import (
    Monitor,
    MonitorReport,
    MonitorWarning,
    baseline_from_store,
    compute_ece,
    compute_psi,
    confidence_histogram,
    load_baseline,
    reliability_bins,
)

_STORE_NAMES = (
    "DecisionRecord",
    "HandoffItem",
    "LabelRecord",
    "ReviewStore",
    "StoreError",
    "UnknownRequestError",
    "open_store",
)

__all__ = [
    "ArmComparison",
    "ArmStats",
    "AuditLog",
    "DecisionRecord",
    "HandoffItem",
    "LabelRecord",
    "Monitor",
    "MonitorReport",
    "MonitorWarning",
    "ReviewStore",
    "StoreError",
    "UnknownRequestError",
    "ZTest",
    "assign_arm",
    "audit_record",
    "baseline_from_store",
    "compare_arms",
    "compute_ece",
    "compute_psi",
    "confidence_histogram",
    "load_baseline",
    "open_store",
    "reliability_bins",
    "scrub",
    "two_proportion_ztest",
]


def __getattr__(name: str) -> Any:
    if name in _STORE_NAMES:
        return getattr(importlib.import_module(f"{__name__}.store"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

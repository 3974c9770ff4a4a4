"""A/B tests of routing thresholds: deterministic arm assignment and a per-arm comparison.

Assignment hashes the key (user, conversation or request id) with SHA-256, so a user stays in one arm
across requests, processes, hosts and Python versions (``hash()`` is salted per process and would
not). The policy assigns arms with :func:`langchain_confidence_router.core.human.assign_arm`; this
module's :func:`assign_arm` is that same function with argument checks, so offline analysis and the
running router always agree on who was in which arm.

The comparison answers "did the treatment thresholds change accuracy or the automation rate?" with
two-proportion z-tests (pooled standard error, two-sided p-value from ``math.erfc``; fine for the
hundreds-of-requests sizes an A/B test needs, not for a handful).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from ..core.human import assign_arm as _assign_arm

if TYPE_CHECKING:
    from .store import DecisionRecord, ReviewStore

__all__ = ["ArmComparison", "ArmStats", "ZTest", "assign_arm", "compare_arms", "two_proportion_ztest"]

ARMS = ("control", "treatment")


def assign_arm(key: str, treatment_share: float, salt: str = "confidence-router") -> str:
    """``"treatment"`` for about ``treatment_share`` of keys, ``"control"`` for the rest, deterministically.

    The bucket is the first 8 bytes of ``sha256(f"{salt}:{key}")`` read as a fraction of 2**64;
    changing ``salt`` reshuffles everyone (use a new salt per experiment).
    """
    if not isinstance(key, str):
        raise TypeError(f"key must be a str, not {type(key).__name__}")
    if not (isinstance(treatment_share, int | float) and 0.0 <= treatment_share <= 1.0):
        raise ValueError(f"treatment_share must be within 0..1 (got {treatment_share!r})")
    return _assign_arm(key, float(treatment_share), salt)


@dataclass(frozen=True)
class ZTest:
    """Two-proportion z-test: ``diff`` = second proportion - first, two-sided ``p_value``."""

    diff: float
    z: float
    p_value: float
    n1: int
    n2: int


def two_proportion_ztest(x1: int, n1: int, x2: int, n2: int) -> ZTest:
    """Pooled two-proportion z-test of x1/n1 against x2/n2 (NaN when either sample is empty)."""
    if n1 <= 0 or n2 <= 0:
        return ZTest(math.nan, math.nan, math.nan, n1, n2)
    p1, p2 = x1 / n1, x2 / n2
    pooled = (x1 + x2) / (n1 + n2)
    se = math.sqrt(pooled * (1.0 - pooled) * (1.0 / n1 + 1.0 / n2))
    if se == 0.0:  # both samples all-0 or all-1: identical proportions, no evidence of a difference
        return ZTest(p2 - p1, 0.0, 1.0, n1, n2)
    z = (p2 - p1) / se
    return ZTest(p2 - p1, z, math.erfc(abs(z) / math.sqrt(2.0)), n1, n2)


@dataclass(frozen=True)
class ArmStats:
    """One arm: volume, labelled accuracy (all routes and automated only), automation rate, cost."""

    arm: str
    n: int
    n_labelled: int
    n_correct: int
    accuracy: float | None
    n_automated: int
    automation_rate: float | None
    n_automated_labelled: int
    n_automated_correct: int
    automated_accuracy: float | None
    mean_cost_usd: float | None


@dataclass
class ArmComparison:
    """Per-arm statistics and, when there are two arms, the tests of treatment against control."""

    arms: dict[str, ArmStats]
    control: str | None = None
    treatment: str | None = None
    tests: dict[str, ZTest] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "arms": {name: asdict(s) for name, s in self.arms.items()},
            "control": self.control,
            "treatment": self.treatment,
            "tests": {name: asdict(t) for name, t in self.tests.items()},
        }


#: Per-arm counts, as ``ReviewStore.arm_counts`` returns them and :func:`_count_rows` computes them.
COUNT_FIELDS = ("n", "n_labelled", "n_correct", "n_automated", "n_automated_labelled", "n_automated_correct",
                "cost_sum", "cost_n")


def _count_rows(rows: Iterable[DecisionRecord]) -> dict[str, dict[str, float]]:
    counts: dict[str, dict[str, float]] = {}
    for r in rows:
        if r.arm is None:
            continue
        c = counts.setdefault(r.arm, dict.fromkeys(COUNT_FIELDS, 0))
        auto = r.route == "automated"
        c["n"] += 1
        c["n_automated"] += auto
        if r.correct is not None:
            c["n_labelled"] += 1
            c["n_correct"] += bool(r.correct)
            c["n_automated_labelled"] += auto
            c["n_automated_correct"] += auto and bool(r.correct)
        if r.cost_usd is not None:
            c["cost_sum"] += r.cost_usd
            c["cost_n"] += 1
    return counts


def _stats(arm: str, c: Mapping[str, float]) -> ArmStats:
    def ratio(num: float, den: float) -> float | None:
        return num / den if den else None

    return ArmStats(
        arm=arm,
        n=int(c["n"]),
        n_labelled=int(c["n_labelled"]),
        n_correct=int(c["n_correct"]),
        accuracy=ratio(c["n_correct"], c["n_labelled"]),
        n_automated=int(c["n_automated"]),
        automation_rate=ratio(c["n_automated"], c["n"]),
        n_automated_labelled=int(c["n_automated_labelled"]),
        n_automated_correct=int(c["n_automated_correct"]),
        automated_accuracy=ratio(c["n_automated_correct"], c["n_automated_labelled"]),
        mean_cost_usd=ratio(c["cost_sum"], c["cost_n"]),
    )


def compare_arms(
    source: ReviewStore | Iterable[DecisionRecord],
    *,
    since: float | datetime | None = None,
    control: str = "control",
    treatment: str = "treatment",
) -> ArmComparison:
    """Compare the arms recorded in a store (or in given decisions); requests without an arm are left out.

    Tests (treatment - control): ``accuracy`` over labelled requests, ``automated_accuracy`` over
    labelled automated answers (the error rate that ships without a person; the one a threshold
    change moves) and ``automation_rate`` over all requests. Accuracy is only as unbiased as the
    labelling: label a random sample of each arm, not only what reviewers happened to see.
    """
    if hasattr(source, "arm_counts"):  # a store: aggregate in SQL, not row by row in Python
        counts = source.arm_counts(since)
    else:
        counts = _count_rows(r for r in source if since is None or r.ts >= _epoch(since))
    stats = {arm: _stats(arm, counts[arm]) for arm in sorted(counts)}
    result = ArmComparison(stats)
    if control in stats and treatment in stats:
        a, b = control, treatment
    elif len(stats) == 2:
        a, b = sorted(stats)
    else:
        return result
    result.control, result.treatment = a, b
    sa, sb = stats[a], stats[b]
    result.tests = {
        "accuracy": two_proportion_ztest(sa.n_correct, sa.n_labelled, sb.n_correct, sb.n_labelled),
        "automated_accuracy": two_proportion_ztest(sa.n_automated_correct, sa.n_automated_labelled,
                                                   sb.n_automated_correct, sb.n_automated_labelled),
        "automation_rate": two_proportion_ztest(sa.n_automated, sa.n, sb.n_automated, sb.n),
    }
    return result


def _epoch(value: float | datetime) -> float:
    return value.timestamp() if isinstance(value, datetime) else float(value)

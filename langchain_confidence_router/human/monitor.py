"""Is the confidence still trustworthy? Calibration error, drift and route shares from the store.

* **ECE** (expected calibration error) of *automated* answers that carry a label, over the last
  ``window`` labelled ones (by request time): 10 equal-width bins on [0, 1] (bin k holds
  ``k/10 <= c < (k+1)/10``, the last one also holds 1.0); ``sum_b n_b/N * |accuracy_b - mean_conf_b|``.
  Automated answers are what no person checks, so their calibration is the one that matters; it
  needs spot-check labels (``ReviewStore.record(..., spot_check=True)`` on a random few percent).
* **PSI** (population stability index) of the confidence distribution, last ``window`` decisions
  against a baseline: 10 quantile bins of the baseline (deciles; duplicate edges merged), bin
  proportions below ``eps`` = 1e-4 raised to it (empty bins stay finite), ``sum (q - p) ln(q / p)``.
  A drifting distribution means the traffic or a model changed and the thresholds may be stale.
* **Route and model shares** over the last ``window`` decisions, and the A/B arm comparison over
  the whole store (an experiment's verdict needs all of its requests, not the latest few).

Default warning levels: ECE > 0.08 warns; PSI > 0.1 warns and > 0.2 alerts (the usual PSI bands:
< 0.1 stable, 0.1-0.2 moderate shift, > 0.2 major shift). Warnings need ``min_samples`` (30) values;
fewer are reported but do not warn. Each warning goes to ``logging`` (WARNING, or ERROR for alerts,
logger ``langchain_confidence_router.human.monitor``) and to an optional callback.
"""

from __future__ import annotations

import gzip
import json
import logging
import math
import os
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from ..core.calibration import CALIBRATION_FORMAT
from ..core.errors import ConfigError
from ..evaluation import metrics
from ..evaluation.metrics import Binning, binning_label
from .abtest import ArmComparison, compare_arms

if TYPE_CHECKING:
    from .store import DecisionRecord, ReviewStore

__all__ = [
    "DEFAULT_ECE_WARN",
    "DEFAULT_PSI_ALERT",
    "DEFAULT_PSI_WARN",
    "Monitor",
    "MonitorReport",
    "MonitorWarning",
    "baseline_from_store",
    "compute_ece",
    "compute_psi",
    "confidence_histogram",
    "load_baseline",
    "reliability_bins",
]

logger = logging.getLogger(__name__)

DEFAULT_ECE_WARN = 0.08
DEFAULT_PSI_WARN = 0.1
DEFAULT_PSI_ALERT = 0.2
DEFAULT_BINS = 10
#: The monitor's ECE (and so ``DEFAULT_ECE_WARN``) uses 10 equal-width bins; ``report``/``tune`` use 15 equal-mass.
DEFAULT_BINNING: Binning = "equal_width"
DEFAULT_WINDOW = 500
DEFAULT_MIN_SAMPLES = 30
PSI_EPS = 1e-4
#: Pseudo-samples drawn from a histogram baseline given as proportions rather than counts.
_HISTOGRAM_SAMPLES = 10_000

ArrayLike = Sequence[float] | np.ndarray


# ------------------------------------------------------------------------------------------ pure metrics


def _unit_interval(values: ArrayLike, name: str) -> np.ndarray:
    arr = np.asarray(values, dtype=float).ravel()
    if arr.size and (not np.all(np.isfinite(arr)) or arr.min() < 0.0 or arr.max() > 1.0):
        raise ValueError(f"{name} must be finite values within 0..1")
    return arr


def compute_ece(confidence: ArrayLike, correct: ArrayLike, bins: int = DEFAULT_BINS,
                binning: Binning = DEFAULT_BINNING) -> float:
    """Expected calibration error (:func:`..evaluation.metrics.ece`) with the monitor's default of
    ``bins`` **equal-width** bins; NaN for no data. Values must lie in 0..1."""
    conf = _unit_interval(confidence, "confidence")
    y = np.asarray(correct, dtype=float).ravel()
    if conf.shape != y.shape:
        raise ValueError(f"confidence and correct differ in length ({conf.size} vs {y.size})")
    return metrics.ece(conf, y, bins, binning=binning)


def reliability_bins(confidence: ArrayLike, correct: ArrayLike, bins: int = DEFAULT_BINS,
                     binning: Binning = DEFAULT_BINNING) -> list[dict[str, Any]]:
    """The per-bin table behind :func:`compute_ece`: range, count, mean confidence, accuracy."""
    conf = _unit_interval(confidence, "confidence")
    return metrics.reliability_table(conf, np.asarray(correct, dtype=float).ravel(), bins, binning=binning)


def compute_psi(baseline: ArrayLike, current: ArrayLike, bins: int = DEFAULT_BINS, eps: float = PSI_EPS) -> float:
    """Population stability index of ``current`` against ``baseline``; NaN when either is empty.

    Bins: the baseline's ``bins``-quantiles (duplicate edges from tied values merged, so fewer bins
    are possible); a value equal to an edge goes to the upper bin. Proportions below ``eps`` are
    raised to ``eps``. ``PSI = sum_i (q_i - p_i) * ln(q_i / p_i)`` (p baseline, q current).
    """
    if bins < 1:
        raise ValueError("bins must be >= 1")
    b = np.asarray(baseline, dtype=float).ravel()
    c = np.asarray(current, dtype=float).ravel()
    b, c = b[np.isfinite(b)], c[np.isfinite(c)]
    if b.size == 0 or c.size == 0:
        return math.nan
    edges = np.unique(np.quantile(b, np.linspace(0.0, 1.0, bins + 1)[1:-1]))
    k = edges.size + 1
    p = np.bincount(np.searchsorted(edges, b, side="right"), minlength=k) / b.size
    q = np.bincount(np.searchsorted(edges, c, side="right"), minlength=k) / c.size
    p, q = np.maximum(p, eps), np.maximum(q, eps)
    return float(np.sum((q - p) * np.log(q / p)))


# ------------------------------------------------------------------------------------------ baselines


def _from_histogram(hist: Mapping[str, Any]) -> np.ndarray:
    """Pseudo-samples spread evenly inside each bin of ``{"edges": [...], "counts": [...]}``."""
    edges = np.asarray(hist["edges"], dtype=float)
    counts = np.asarray(hist["counts"], dtype=float)
    if edges.size != counts.size + 1 or np.any(counts < 0) or np.any(np.diff(edges) <= 0):
        raise ValueError("a histogram needs increasing 'edges' and one non-negative count per bin")
    if not np.allclose(counts, np.round(counts)) or counts.sum() <= 1.0 + 1e-9:  # proportions, not counts
        counts = counts / counts.sum() * _HISTOGRAM_SAMPLES
    counts = np.round(counts).astype(int)
    parts = [lo + (np.arange(n) + 0.5) * (hi - lo) / n for lo, hi, n in zip(edges[:-1], edges[1:], counts, strict=True)
             if n > 0]
    return np.concatenate(parts) if parts else np.empty(0)


def _from_mapping(data: Mapping[str, Any]) -> np.ndarray:
    if data.get("format") == CALIBRATION_FORMAT:
        data = data.get("fitted") or {}
    for key in ("confidences", "confidence"):
        if isinstance(data.get(key), list):
            return np.asarray(data[key], dtype=float)
    for key in ("confidence_histogram", "histogram"):
        if isinstance(data.get(key), Mapping):
            return _from_histogram(data[key])
    raise ValueError("no 'confidences' list or 'histogram' {edges, counts} found"
                     " (a calibration file keeps it under 'fitted')")


def load_baseline(path: str | os.PathLike[str]) -> np.ndarray:
    """Baseline confidences from a file.

    Accepted: a JSON list of numbers; a JSON object (or a calibration file's ``fitted`` section) with
    ``confidences`` or ``histogram: {edges, counts}``; JSONL(.gz) rows with a ``confidence`` field
    (e.g. an ``export_labels`` file or recorded runs); or plain text, one number per line.
    """
    p = Path(path)
    try:
        if p.name.endswith((".jsonl", ".jsonl.gz")):
            opener = gzip.open if p.name.endswith(".gz") else open
            with opener(p, "rt", encoding="utf-8") as fh:
                rows = [json.loads(line) for line in fh if line.strip()]
            values = [r.get("confidence") for r in rows if isinstance(r, dict)]
            arr = np.asarray([v for v in values if v is not None], dtype=float)
        else:
            text = p.read_text(encoding="utf-8")
            if p.suffix == ".json" or text.lstrip().startswith(("[", "{")):
                data = json.loads(text)
                arr = np.asarray(data, dtype=float) if isinstance(data, list) else _from_mapping(data)
            else:
                arr = np.asarray([float(line) for line in text.split() if line.strip()], dtype=float)
    except OSError as exc:
        raise ConfigError(f"cannot read baseline ({exc.strerror or exc})", source=str(p)) from None
    except (ValueError, TypeError, KeyError) as exc:
        raise ConfigError(f"invalid baseline: {exc}", source=str(p)) from None
    arr = arr[np.isfinite(arr)]
    if arr.size == 0:
        raise ConfigError("the baseline holds no confidence values", source=str(p))
    return arr


def confidence_histogram(confidences: ArrayLike, bins: int = 50) -> dict[str, list[float]]:
    """``{"edges", "counts"}`` of confidences on [0, 1] (equal-width): what to keep in a calibration
    file's ``fitted`` (as ``histogram``) so :func:`load_baseline` can use the fitting data as the drift baseline."""
    return metrics.confidence_histogram(_unit_interval(confidences, "confidences"), bins, binning="equal_width")


def baseline_from_store(store: ReviewStore, n: int = DEFAULT_WINDOW) -> np.ndarray:
    """Confidences of the first ``n`` recorded decisions (a baseline when none was fitted)."""
    return np.asarray([r.confidence for r in store.decisions(first=n) if r.confidence is not None], dtype=float)


# ------------------------------------------------------------------------------------------ the monitor


@dataclass(frozen=True)
class MonitorWarning:
    """One threshold crossed: ``kind`` ece|psi, ``level`` warning|alert."""

    kind: str
    level: Literal["warning", "alert"]
    value: float
    threshold: float
    message: str


@dataclass
class MonitorReport:
    """Everything one monitoring pass found; ``to_dict()`` is the ``--json`` output."""

    generated_at: float
    window: int
    bins: int
    n_decisions: int
    n_window: int
    ece: float | None
    ece_n: int
    ece_binning: str
    psi: float | None
    psi_n_baseline: int
    psi_n_current: int
    psi_baseline: str
    route_shares: dict[str, float]
    route_counts: dict[str, int]
    model_shares: dict[str, float]
    arms: ArmComparison | None
    reliability: list[dict[str, Any]] = field(default_factory=list)
    warnings: list[MonitorWarning] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["arms"] = self.arms.to_dict() if self.arms is not None else None
        return _json_safe(data)


def _json_safe(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


class Monitor:
    """Computes a :class:`MonitorReport` from a store and raises warnings past the thresholds.

    ``baseline``: confidences to compare the recent distribution with (array, list, or a path for
    :func:`load_baseline`); by default the first ``window`` decisions in the store, and the recent
    window then excludes them so the two never overlap.
    """

    def __init__(
        self,
        store: ReviewStore,
        *,
        window: int = DEFAULT_WINDOW,
        baseline: ArrayLike | str | os.PathLike[str] | None = None,
        bins: int = DEFAULT_BINS,
        binning: Binning = DEFAULT_BINNING,
        ece_warn: float = DEFAULT_ECE_WARN,
        psi_warn: float = DEFAULT_PSI_WARN,
        psi_alert: float = DEFAULT_PSI_ALERT,
        min_samples: int = DEFAULT_MIN_SAMPLES,
        on_warning: Callable[[MonitorWarning], None] | None = None,
    ) -> None:
        if window < 1:
            raise ValueError("window must be >= 1")
        self.store = store
        self.window = window
        self.bins = bins
        self.binning = binning
        binning_label(binning, bins)  # rejects an unknown binning here rather than at the first report
        self.ece_warn = ece_warn
        self.psi_warn = psi_warn
        self.psi_alert = psi_alert
        self.min_samples = min_samples
        self.on_warning = on_warning
        if isinstance(baseline, str | os.PathLike):
            self.baseline_source = f"file {os.fspath(baseline)}"
            self.baseline: np.ndarray | None = load_baseline(baseline)
        elif baseline is not None:
            self.baseline_source = "given"
            self.baseline = np.asarray(baseline, dtype=float)
        else:
            self.baseline_source = f"first {window} decisions in the store"
            self.baseline = None

    def report(self) -> MonitorReport:
        """Compute the figures and the warnings they imply (without emitting them)."""
        notes: list[str] = []
        recent = self.store.decisions(last=self.window)
        n_total = self.store.count()["decisions"]

        # ECE of labelled automated answers
        labelled = [r for r in self.store.decisions(route="automated", labelled=True, last=self.window)
                    if r.confidence is not None]
        conf = np.asarray([r.confidence for r in labelled], dtype=float)
        hits = np.asarray([bool(r.correct) for r in labelled], dtype=float)
        ece = compute_ece(conf, hits, self.bins, self.binning) if labelled else None
        if len(labelled) < self.min_samples:
            notes.append(f"ECE from {len(labelled)} labelled automated answer(s); warnings need {self.min_samples}"
                         " (label a random sample of automated answers: record(..., spot_check=True))")

        # PSI of the recent confidence distribution
        psi, n_base, n_cur = self._psi(recent, notes)

        # route and model shares
        route_counts = Counter(r.route for r in recent)
        model_counts = Counter(r.final_model or "(none)" for r in recent)
        n = len(recent)
        comparison = compare_arms(self.store)  # the whole experiment, not just the window
        arms = comparison if comparison.arms else None

        report = MonitorReport(
            generated_at=time.time(), window=self.window, bins=self.bins, n_decisions=n_total, n_window=n,
            ece=ece, ece_n=len(labelled), ece_binning=binning_label(self.binning, self.bins),
            psi=psi, psi_n_baseline=n_base, psi_n_current=n_cur,
            psi_baseline=self.baseline_source,
            route_shares={k: v / n for k, v in sorted(route_counts.items())},
            route_counts=dict(sorted(route_counts.items())),
            model_shares={k: v / n for k, v in model_counts.most_common()},
            arms=arms,
            reliability=reliability_bins(conf, hits, self.bins, self.binning) if labelled else [],
            notes=notes,
        )
        report.warnings = self._warnings(report)
        return report

    def _psi(self, recent: list[DecisionRecord], notes: list[str]) -> tuple[float | None, int, int]:
        if self.baseline is not None:
            base = self.baseline
            current = [r.confidence for r in recent if r.confidence is not None]
        else:
            first = self.store.decisions(first=self.window)
            seen = {r.request_id for r in first}
            base = np.asarray([r.confidence for r in first if r.confidence is not None], dtype=float)
            current = [r.confidence for r in recent if r.confidence is not None and r.request_id not in seen]
        base = base[np.isfinite(base)]
        if base.size == 0 or not current:
            notes.append("PSI needs a baseline and recent decisions beyond it"
                         f" (baseline {base.size}, recent {len(current)})")
            return None, int(base.size), len(current)
        if min(base.size, len(current)) < self.min_samples:
            notes.append(f"PSI from {base.size} baseline and {len(current)} recent value(s); warnings need "
                         f"{self.min_samples} of each")
        return compute_psi(base, current, self.bins), int(base.size), len(current)

    def _warnings(self, r: MonitorReport) -> list[MonitorWarning]:
        out: list[MonitorWarning] = []
        if r.ece is not None and r.ece_n >= self.min_samples and r.ece > self.ece_warn:
            out.append(MonitorWarning("ece", "warning", r.ece, self.ece_warn,
                                      f"ECE of automated answers is {r.ece:.3f} over the last {r.ece_n} labelled "
                                      f"(> {self.ece_warn:g}): confidence is miscalibrated; recalibrate from labels"))
        if r.psi is not None and min(r.psi_n_baseline, r.psi_n_current) >= self.min_samples:
            if r.psi > self.psi_alert:
                out.append(MonitorWarning("psi", "alert", r.psi, self.psi_alert,
                                          f"PSI of confidence is {r.psi:.3f} (> {self.psi_alert:g}): the distribution"
                                          " shifted a lot; check models and traffic, re-tune thresholds"))
            elif r.psi > self.psi_warn:
                out.append(MonitorWarning("psi", "warning", r.psi, self.psi_warn,
                                          f"PSI of confidence is {r.psi:.3f} (> {self.psi_warn:g}): moderate shift"))
        return out

    def check(self) -> MonitorReport:
        """:meth:`report`, then emit each warning to ``logging`` and the callback (whose errors are logged)."""
        report = self.report()
        for w in report.warnings:
            logger.log(logging.ERROR if w.level == "alert" else logging.WARNING, "%s", w.message)
            if self.on_warning is not None:
                try:
                    self.on_warning(w)
                except Exception:  # a broken pager hook must not stop monitoring
                    logger.exception("monitor warning callback failed")
        return report

"""Metrics over numpy arrays: how well a signal separates right from wrong, and how honest a probability is.

* AUROC: the probability that a random right answer scores above a random wrong one (ties count
  one half); rank based, so any monotone calibration leaves it unchanged.
* ECE: expected calibration error with **equal-mass bins** by default (15 bins, each holding the
  same number of answers, so sparse regions of the confidence range cannot hide behind a few
  answers); ``binning="equal_width"`` gives the classic equal-width bins on [0, 1] (a value ``c``
  goes to bin ``floor(c * bins)``, the last bin closed). This module is the one implementation of
  ECE, reliability bins and confidence histograms: the human monitor, ``report``, ``evaluate`` and
  ``tune`` all call it and state which binning they used.
* Brier score: mean squared error of the probability against the 0/1 outcome.

NaN entries (a signal that could not be computed) are left out of every metric.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

__all__ = [
    "DEFAULT_BINS",
    "ReliabilityBins",
    "auroc",
    "binning_label",
    "brier",
    "confidence_histogram",
    "ece",
    "rankdata",
    "reliability_bins",
    "reliability_table",
]

DEFAULT_BINS = 15
#: "mass"/"width" are older spellings of "equal_mass"/"equal_width".
Binning = Literal["equal_mass", "equal_width", "mass", "width"]
_CANONICAL = {"equal_mass": "equal_mass", "mass": "equal_mass", "equal_width": "equal_width", "width": "equal_width"}


def _binning(binning: str) -> str:
    try:
        return _CANONICAL[binning]
    except KeyError:
        raise ValueError(f"binning must be 'equal_width' or 'equal_mass', not {binning!r}") from None


def binning_label(binning: str, bins: int) -> str:
    """How an ECE was binned, for reports: ``"equal-mass, 15 bins"``."""
    return f"{_binning(binning).replace('_', '-')}, {bins} bins"


def _clean(score: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    s = np.asarray(score, dtype=float).ravel()
    t = np.asarray(y, dtype=float).ravel()
    if s.shape != t.shape:
        raise ValueError(f"scores and labels differ in length ({s.size} vs {t.size})")
    keep = ~np.isnan(s)
    return s[keep], t[keep]


def rankdata(x: np.ndarray) -> np.ndarray:
    """Ranks 1..n with ties given their average rank (as scipy.stats.rankdata 'average')."""
    x = np.asarray(x, dtype=float)
    order = np.argsort(x, kind="mergesort")
    xs = x[order]
    n = xs.size
    if n == 0:
        return np.zeros(0)
    boundaries = np.flatnonzero(np.diff(xs) != 0) + 1
    starts = np.concatenate(([0], boundaries))
    ends = np.concatenate((boundaries, [n]))
    avg = (starts + ends + 1) / 2.0  # average of ranks start+1 .. end
    ranks_sorted = np.repeat(avg, ends - starts)
    out = np.empty(n)
    out[order] = ranks_sorted
    return out


def auroc(score: np.ndarray, correct: np.ndarray) -> float:
    """Area under the ROC curve of ``score`` for predicting ``correct``; NaN if a class is empty."""
    s, y = _clean(score, correct)
    pos = y > 0.5
    n1 = int(pos.sum())
    n0 = int(s.size - n1)
    if n1 == 0 or n0 == 0:
        return float("nan")
    ranks = rankdata(s)
    return float((ranks[pos].sum() - n1 * (n1 + 1) / 2.0) / (n1 * n0))


def brier(prob: np.ndarray, correct: np.ndarray) -> float:
    """Mean squared difference between the probability and the 0/1 outcome."""
    p, y = _clean(prob, correct)
    return float(np.mean((p - y) ** 2)) if p.size else float("nan")


@dataclass(frozen=True)
class ReliabilityBins:
    """Per bin: mean predicted probability, observed accuracy, count (the reliability diagram's data)."""

    confidence: np.ndarray
    accuracy: np.ndarray
    count: np.ndarray
    binning: str

    @property
    def ece(self) -> float:
        n = self.count.sum()
        if n == 0:
            return float("nan")
        return float(np.sum(self.count / n * np.abs(self.accuracy - self.confidence)))


def _groups(p: np.ndarray, bins: int, kind: str) -> list[tuple[float, float, np.ndarray]]:
    """``(low, high, indices)`` per bin; equal-width keeps its empty bins, equal-mass has none."""
    if kind == "equal_mass":
        order = np.argsort(p, kind="mergesort")
        parts = [g for g in np.array_split(order, min(bins, p.size)) if g.size]
        return [(float(p[g].min()), float(p[g].max()), g) for g in parts]
    # floor(c * bins): 0.3 lands in bin 3 of 10 (np.linspace edges would put it in bin 2 by rounding)
    idx = np.clip((np.clip(p, 0.0, 1.0) * bins).astype(np.int64), 0, bins - 1)
    return [(b / bins, (b + 1) / bins, np.flatnonzero(idx == b)) for b in range(bins)]


def reliability_bins(prob: np.ndarray, correct: np.ndarray, bins: int = DEFAULT_BINS,
                     binning: Binning = "equal_mass") -> ReliabilityBins:
    """Bin the probabilities (equal-mass by default) and compare each bin's mean with its accuracy.

    Empty bins are left out; ``binning`` is stored in its canonical form (equal_mass|equal_width).
    """
    if bins < 1:
        raise ValueError("bins must be >= 1")
    kind = _binning(binning)
    p, y = _clean(prob, correct)
    groups = [g for _, _, g in _groups(p, bins, kind) if g.size] if p.size else []
    conf = np.array([p[g].mean() for g in groups])
    acc = np.array([y[g].mean() for g in groups])
    count = np.array([g.size for g in groups], dtype=float)
    return ReliabilityBins(conf, acc, count, kind)


def reliability_table(prob: np.ndarray, correct: np.ndarray, bins: int = DEFAULT_BINS,
                      binning: Binning = "equal_mass") -> list[dict[str, float | int | None]]:
    """The same bins as rows ``{low, high, n, confidence, accuracy}`` (JSON-ready; equal-width rows
    include the empty bins, with ``None`` for their means)."""
    if bins < 1:
        raise ValueError("bins must be >= 1")
    kind = _binning(binning)
    p, y = _clean(prob, correct)
    if p.size == 0:
        return []
    return [{"low": lo, "high": hi, "n": int(g.size),
             "confidence": float(p[g].mean()) if g.size else None,
             "accuracy": float(y[g].mean()) if g.size else None}
            for lo, hi, g in _groups(p, bins, kind)]


def ece(prob: np.ndarray, correct: np.ndarray, bins: int = DEFAULT_BINS, binning: Binning = "equal_mass") -> float:
    """Expected calibration error: sum over bins of (bin share) * |accuracy - mean probability|."""
    return reliability_bins(prob, correct, bins, binning).ece


def confidence_histogram(prob: np.ndarray, bins: int = 50, binning: Binning = "equal_width") -> dict[str, list[float]]:
    """``{"edges", "counts"}`` of probabilities clipped to [0, 1]: equal-width edges on [0, 1], or
    equal-mass edges (the sample's quantiles, ties merged, so fewer bins are possible). NaN is left out."""
    if bins < 1:
        raise ValueError("bins must be >= 1")
    p = np.asarray(prob, dtype=float).ravel()
    p = np.clip(p[~np.isnan(p)], 0.0, 1.0)
    if _binning(binning) == "equal_mass" and p.size:
        edges = np.unique(np.quantile(p, np.linspace(0.0, 1.0, bins + 1)))
        counts, edges = np.histogram(p, bins=edges if edges.size > 1 else 1)
    else:
        counts, edges = np.histogram(p, bins=bins, range=(0.0, 1.0))
    return {"edges": [round(float(e), 6) for e in edges], "counts": [int(c) for c in counts]}

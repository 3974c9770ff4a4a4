"""Metrics over numpy arrays: how well a signal separates right from wrong, and how honest a probability is.

* AUROC: the probability that a random right answer scores above a random wrong one (ties count
  one half); rank based, so any monotone calibration leaves it unchanged.
* ECE: expected calibration error with **equal-mass bins** by default (15 bins, each holding the
  same number of answers, so sparse regions of the confidence range cannot hide behind a few
  answers); ``binning="width"`` gives the classic equal-width bins on [0, 1].
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
    "brier",
    "ece",
    "rankdata",
    "reliability_bins",
]

DEFAULT_BINS = 15
Binning = Literal["mass", "width"]


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


def reliability_bins(prob: np.ndarray, correct: np.ndarray, bins: int = DEFAULT_BINS,
                     binning: Binning = "mass") -> ReliabilityBins:
    """Bin the probabilities (equal-mass by default) and compare each bin's mean with its accuracy."""
    p, y = _clean(prob, correct)
    if p.size == 0:
        empty = np.zeros(0)
        return ReliabilityBins(empty, empty, empty, binning)
    if binning == "mass":
        order = np.argsort(p, kind="mergesort")
        groups = [g for g in np.array_split(order, min(bins, p.size)) if g.size]
    elif binning == "width":
        edges = np.linspace(0.0, 1.0, bins + 1)
        idx = np.clip(np.searchsorted(edges, np.clip(p, 0.0, 1.0), side="right") - 1, 0, bins - 1)
        groups = [np.flatnonzero(idx == b) for b in range(bins)]
        groups = [g for g in groups if g.size]
    else:
        raise ValueError(f"binning must be 'mass' or 'width', not {binning!r}")
    conf = np.array([p[g].mean() for g in groups])
    acc = np.array([y[g].mean() for g in groups])
    count = np.array([g.size for g in groups], dtype=float)
    return ReliabilityBins(conf, acc, count, binning)


def ece(prob: np.ndarray, correct: np.ndarray, bins: int = DEFAULT_BINS, binning: Binning = "mass") -> float:
    """Expected calibration error: sum over bins of (bin share) * |accuracy - mean probability|."""
    return reliability_bins(prob, correct, bins, binning).ece

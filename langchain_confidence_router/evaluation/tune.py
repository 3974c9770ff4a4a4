"""Choose the chain, the signal and per-model thresholds with a finite-sample accuracy guarantee.

The problem: among sub-chains of the candidate models (in their configured order), confidence
signals (each calibrated per model) and per-model thresholds, find the cheapest cascade whose
accuracy meets a target, so that "accuracy >= target" holds with probability >= 1 - delta over the
draw of the tuning data. The loss is 1{the returned answer is wrong}; the target is either absolute
(``target_accuracy``) or relative to the largest (last) candidate (``max_accuracy_drop``).

The method is Learn-then-Test (Angelopoulos, Bates et al. 2021) with fixed-sequence testing:

1. Candidate configurations are put on a *path* ordered from conservative to aggressive without
   looking at the labels that will test them:

   * ``split`` mode (general): the tuning items are split at random into a selection part A and a
     certification part B (``select_fraction`` of the items in A). On A, each calibration is fitted,
     and for every (signal, sub-chain) the cost/error frontier is traced (per-model thresholds by
     coordinate descent on cost + mu * errors for a sweep of mu, plus a greedy walk over quantile
     thresholds that fills the frontier's non-convex gaps). All frontier points are merged,
     Pareto-filtered and sorted by their error on A: that is the path. Choosing the chain and the
     signal happens here, on A only, so the test on B needs no multiplicity correction.
   * ``quantile`` mode (relative target, three or more candidates, monotone calibrations): one path per
     sub-chain ending at the largest model and per distinct ranking of its gated models' answers;
     at each step every gated tier accepts the same share of the tuning items by its own confidence
     quantile (label-free, so every item certifies); the paths share delta by Bonferroni, or with
     ``path_select_fraction`` one path is chosen on a part of the items and certified on the rest.
   * ``direct`` mode (two candidates, monotone calibrations): the path for each signal is simply
     the small model's threshold from high to low, an order fixed before any label is seen, so the
     tuning items need no selection part. Signals that rank answers identically count once; when
     several remain, one is chosen on a random part of the items (its AUROC for "safe to accept":
     at most ``family_select_fraction`` of them, and no more than the certification can spare
     without tolerating fewer bad items) and certified on the rest; with ``family_select_fraction=0`` all are
     certified on all items and share delta (Bonferroni).

2. Along each path, configurations are tested in order on the certification items at level
   delta / (number of families), stopping at the first one not certified (fixed-sequence testing
   controls the family-wise error, so every certified configuration meets the target
   simultaneously with probability >= 1 - delta). The cheapest certified configuration (mean cost
   over all tuning items) is returned, unless its saving over the largest model alone is within one
   standard error.

The tests:

* absolute target: H0 "error rate > 1 - target", exact binomial p-value (Clopper-Pearson), or
  Hoeffding-Bentkus (``bound="hoeffding_bentkus"``).
* relative target: H0 "accuracy(largest) - accuracy(cascade) > max_accuracy_drop". The largest
  model's accuracy is itself unknown, so the test is paired: per item D = 1{cascade wrong} -
  1{largest wrong}, Tango's score statistic with an exact tail and the discordance rate handled by
  Berger-Boos (see :mod:`.bounds`). This bounds the *difference* directly instead of subtracting two separate
  bounds, which would need the cascade to beat the largest model to certify anything.

With no target, ``cost_quality_tradeoff`` t picks the configuration maximising
(1 - t) * accuracy - t * cost / cost(largest) on the tuning data (no guarantee claimed).
"""

from __future__ import annotations

import datetime as _dt
import functools
import itertools
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from ..core.calibration import Calibration
from ..core.config import ModelSpec, RouterConfig, load_config, parse_config
from ..core.errors import ConfigError
from ..core.signals import LOGPROB_SIGNALS
from ..core.tiers import Tier, build_tiers, order_models
from .bounds import (
    binomial_pvalue,
    clopper_pearson_lower,
    hoeffding_bentkus_pvalue,
    paired_drop_pvalue,
    paired_drop_ucb,
)
from .calibrate import fit_calibration, predict_array, score_array
from .matrix import RunMatrix
from .metrics import auroc, rankdata
from .progress import track
from .replay import ReplayOutcome, replay_arrays

__all__ = [
    "CALIBRATE_CHOICES",
    "Candidate",
    "TuneError",
    "TuneResult",
    "candidate_models",
    "tune",
    "write_tuned_config",
]

CALIBRATE_CHOICES = ("platt", "isotonic", "temperature", "combiner", "none")
_MONOTONE = frozenset({"platt", "temperature", "none"})


class TuneError(ConfigError):
    """Tuning cannot proceed (bad arguments or data); the message says what to change."""


@dataclass(frozen=True)
class Family:
    """One way of scoring every candidate model: a signal (or a combiner) and its calibrations."""

    name: str
    signal: str
    calibrate: str
    calibrations: dict[str, Calibration | None]
    conf: np.ndarray  # (n_tune, n_candidates) confidence compared with thresholds


@dataclass(frozen=True)
class Candidate:
    """A cascade: a family, a sub-chain (indices into the candidates) and its thresholds."""

    family: int
    chain: tuple[int, ...]
    thresholds: tuple[float, ...]


@dataclass
class _Stats:
    accuracy: float
    cost: float
    errors: int
    n: int
    n_plus: int = 0
    n_minus: int = 0


@dataclass
class TuneResult:
    """The chosen cascade, the calibrations it needs and the evidence for it."""

    models: list[str]
    thresholds: list[float]
    signal: str
    calibrate: str
    calibrations: dict[str, Calibration | None]
    evidence: dict[str, Any]
    candidates: list[str]
    path: list[dict[str, Any]] = field(default_factory=list)

    def tiers(self, base: RouterConfig | None = None) -> list[Tier]:
        """Core tiers for this result (in memory, no files), e.g. to replay it on held-out items."""
        specs = {s.name: s for s in (base.models if base else [])}
        out = []
        for i, (name, t) in enumerate(zip(self.models, self.thresholds, strict=True)):
            spec = specs.get(name) or ModelSpec(name=name)
            out.append(Tier(index=i, name=name, spec=spec, method=self.signal, threshold=t,
                            token_filter=(base.confidence.token_filter if base else "stop"),
                            calibration=self.calibrations.get(name)))
        return out


# ----------------------------------------------------------------------------- candidates


def candidate_models(matrix: RunMatrix, base: RouterConfig | None, models: Sequence[str] | None) -> list[str]:
    """Candidate models in escalation order: ``models`` as given, else the base configuration's
    ``models:`` in its escalation order, else the recorded models from cheapest to dearest."""
    if models:
        names = list(models)
    elif base is not None and base.models:
        names = [s.name for s in order_models(list(base.models), base)[0]]
    else:
        names = sorted(matrix.models, key=lambda m: float(np.nanmean(matrix.cost[:, matrix.index(m)])))
    missing = [m for m in names if m not in matrix.models]
    if missing:
        raise TuneError(f"model(s) {', '.join(missing)} have no recorded runs; recorded: {', '.join(matrix.models)}")
    if len(set(names)) != len(names):
        raise TuneError(f"a model is listed twice in {names}")
    return names


def _default_signals(matrix: RunMatrix, names: Sequence[str]) -> list[str]:
    available = set(matrix.available_signals(names))
    return [s for s in LOGPROB_SIGNALS if s in available]


def _mean_brier(fam: Family) -> float:
    scores = [float(c.fitted.get("brier") or math.inf) for c in fam.calibrations.values() if c is not None]
    return float(np.mean(scores)) if scores else math.inf


def _same_ranking(a: np.ndarray, b: np.ndarray) -> bool:
    """True when two confidence columns order every answer identically (ties included)."""
    na, nb = np.isnan(a), np.isnan(b)
    if not np.array_equal(na, nb):
        return False
    return bool(np.array_equal(rankdata(a[~na]), rankdata(b[~nb])))


def _fit_families(matrix: RunMatrix, names: Sequence[str], signals: Sequence[str], methods: Sequence[str],
                  fit_rows: np.ndarray, l2: float) -> list[Family]:
    families: list[Family] = []
    correct_fit = matrix.correct[fit_rows]
    for method in methods:
        if method == "combiner":
            if len(signals) < 1:
                continue
            cals: dict[str, Calibration | None] = {}
            cols = []
            for name in names:
                raw = matrix.raw(name)
                fit_raw = {s: raw[s][fit_rows] for s in signals}
                cal = fit_calibration("combiner", fit_raw, correct_fit[:, matrix.index(name)],
                                      signals=list(signals), model=name, l2=l2)
                cals[name] = cal
                present = np.any([~np.isnan(v) for v in raw.values()], axis=0)  # no logprobs: missing, as live
                cols.append(np.where(present, predict_array(cal, {s: raw[s] for s in signals}), np.nan))
            families.append(Family("combiner(" + ",".join(signals) + ")", signals[0], "combiner", cals,
                                   np.column_stack(cols)))
            continue
        for signal in signals:
            cals = {}
            cols = []
            for name in names:
                raw = matrix.raw(name)
                if method == "none":
                    cals[name] = None
                    cols.append(score_array(signal, raw[signal]))
                    continue
                cal = fit_calibration(method, {signal: raw[signal][fit_rows]},
                                      correct_fit[:, matrix.index(name)], signal=signal, model=name)
                cals[name] = cal
                cols.append(predict_array(cal, {signal: raw[signal]}))
            families.append(Family(f"{signal}/{method}", signal, method, cals, np.column_stack(cols)))
    return families


# ----------------------------------------------------------------------------- frontier search


def _continuation(dec: np.ndarray, thresholds: np.ndarray, cost: np.ndarray, wrong: np.ndarray, mu: float
                  ) -> list[np.ndarray]:
    """V[k][i]: cost of tiers k.. plus mu * error, for an item that reaches tier k (last tier answers)."""
    n_tiers = dec.shape[1]
    values: list[np.ndarray] = [np.empty(0)] * (n_tiers + 1)
    v = cost[:, -1] + mu * wrong[:, -1]
    values[n_tiers - 1] = v
    for k in range(n_tiers - 2, -1, -1):
        accept = dec[:, k] >= thresholds[k]
        v = cost[:, k] + np.where(accept, mu * wrong[:, k], v)
        values[k] = v
    return values


def _best_threshold(conf: np.ndarray, gain: np.ndarray) -> float:
    """Threshold on ``conf`` minimising the sum of ``gain`` over accepted items (may accept none)."""
    finite = np.isfinite(conf)
    c, g = conf[finite], gain[finite]
    if c.size == 0:
        return math.inf
    order = np.argsort(-c, kind="mergesort")
    cs, gs = c[order], np.cumsum(g[order])
    # only cut between distinct values: the last index of each run of equal values
    last_of_run = np.flatnonzero(np.append(cs[1:] != cs[:-1], True))
    totals = gs[last_of_run]
    best = int(np.argmin(totals))
    if totals[best] >= 0.0:
        return math.inf
    i = last_of_run[best]
    if i + 1 < cs.size:
        return float(0.5 * (cs[i] + cs[i + 1]))
    return 0.0 if cs[i] > 0 else float(cs[i])


def _frontier(dec: np.ndarray, cost: np.ndarray, wrong: np.ndarray, mus: np.ndarray, sweeps: int = 4
              ) -> list[tuple[float, ...]]:
    """Per-model thresholds along the cost/error frontier of one chain, by coordinate descent per mu."""
    n_tiers = dec.shape[1]
    if n_tiers == 1:
        return [(0.0,)]
    t = np.full(n_tiers, math.inf)
    t[-1] = -math.inf
    found: list[tuple[float, ...]] = []
    for mu in mus:
        for _ in range(sweeps):
            changed = False
            for k in range(n_tiers - 1):
                reach = np.ones(dec.shape[0], dtype=bool)
                for j in range(k):
                    reach &= ~(dec[:, j] >= t[j])
                values = _continuation(dec, t, cost, wrong, mu)
                gain = mu * wrong[reach, k] - values[k + 1][reach]
                new = _best_threshold(dec[reach, k], gain)
                if new != t[k]:
                    t[k] = new
                    changed = True
            if not changed:
                break
        found.append((*tuple(float(x) for x in t[:-1]), 0.0))
    return found


def _fast_stats(dec: np.ndarray, thresholds: np.ndarray, cumcost: np.ndarray, wrong: np.ndarray
                ) -> tuple[float, float]:
    """(error rate, mean cost) of a chain where the last tier always answers (search-time shortcut)."""
    accept = dec >= thresholds[None, :]
    accept[:, -1] = True
    stop = np.argmax(accept, axis=1)
    rows = np.arange(dec.shape[0])
    return float(wrong[rows, stop].mean()), float(cumcost[rows, stop].mean())


def _greedy_frontier(dec: np.ndarray, cost: np.ndarray, wrong: np.ndarray, grid: int = 100
                     ) -> list[tuple[float, ...]]:
    """A dense conservative-to-aggressive path of per-model thresholds for one chain.

    Start from "escalate everything"; at each step lower one tier's threshold to its next grid value
    (quantiles of that tier's confidence), choosing the move that adds the fewest errors per unit of
    cost saved. The Lagrangian sweep finds only the convex hull of the frontier; this fills the gaps.
    """
    n_tiers = dec.shape[1]
    if n_tiers == 1:
        return [(0.0,)]
    cumcost = np.cumsum(cost, axis=1)
    levels: list[np.ndarray] = []
    for k in range(n_tiers - 1):
        col = dec[:, k]
        col = col[np.isfinite(col)]
        if col.size == 0:
            levels.append(np.zeros(0))
            continue
        distinct = np.unique(col)
        qs = np.unique(np.quantile(col, np.linspace(1.0, 0.0, grid + 1)[1:], method="lower"))[::-1]
        idx = np.searchsorted(distinct, qs)
        lower = np.where(idx > 0, distinct[np.maximum(idx - 1, 0)], 0.0)
        cuts = np.where(idx > 0, 0.5 * (qs + lower), 0.0)
        levels.append(np.unique(cuts)[::-1])
    pos = [-1] * (n_tiers - 1)

    def thresholds_of(p: list[int]) -> np.ndarray:
        t = [levels[k][i] if i >= 0 else math.inf for k, i in enumerate(p)]
        return np.array([*t, -math.inf])

    err, cst = _fast_stats(dec, thresholds_of(pos), cumcost, wrong)
    found = [(*[float(x) for x in thresholds_of(pos)[:-1]], 0.0)]
    while True:
        best: tuple[float, int, float, float] | None = None
        for k in range(n_tiers - 1):
            if pos[k] + 1 >= levels[k].size:
                continue
            trial = list(pos)
            trial[k] += 1
            e2, c2 = _fast_stats(dec, thresholds_of(trial), cumcost, wrong)
            saved = cst - c2
            if saved <= 0:
                pos[k] += 1  # no item moves at this step: skip the level silently
                best = (-math.inf, -1, err, cst) if best is None else best
                continue
            ratio = (e2 - err) / saved
            if best is None or ratio < best[0]:
                best = (ratio, k, e2, c2)
        if best is None:
            break
        _, k, e2, c2 = best
        if k < 0:
            continue
        pos[k] += 1
        err, cst = e2, c2
        found.append((*[float(x) for x in thresholds_of(pos)[:-1]], 0.0))
    return found


def _normalise_candidate(family: int, chain: tuple[int, ...], thresholds: tuple[float, ...]) -> Candidate:
    """Drop tiers that never accept (an infinite threshold): skipping them is the same, but cheaper."""
    keep = [i for i, t in enumerate(thresholds[:-1]) if math.isfinite(t)] + [len(chain) - 1]
    chain2 = tuple(chain[i] for i in keep)
    th = (*tuple(min(max(thresholds[i], 0.0), 1.0) for i in keep[:-1]), 0.0)
    return Candidate(family, chain2, th)


# ----------------------------------------------------------------------------- evaluation of candidates


@dataclass(frozen=True)
class _Problem:
    families: list[Family]
    correct: np.ndarray  # (n, M) candidates
    cost: np.ndarray
    settings: Any
    largest: int

    def outcome(self, cand: Candidate, rows: np.ndarray) -> ReplayOutcome:
        fam = self.families[cand.family]
        cols = list(cand.chain)
        lim = self.settings.limits
        return replay_arrays(
            fam.conf[np.ix_(rows, cols)], cand.thresholds, self.correct[np.ix_(rows, cols)],
            self.cost[np.ix_(rows, cols)], missing_logprobs=self.settings.missing_logprobs,
            final_fallback=self.settings.final_fallback, max_attempts=lim.max_attempts,
            cost_budget_usd=lim.cost_budget_usd,
        )

    def stats(self, cand: Candidate, rows: np.ndarray) -> _Stats:
        out = self.outcome(cand, rows)
        ref = self.correct[rows, self.largest]
        d = (~out.correct).astype(int) - (~ref).astype(int)
        return _Stats(out.accuracy, out.mean_cost, int((~out.correct).sum()), int(rows.size),
                      int((d == 1).sum()), int((d == -1).sum()))


def _visibly_cheaper(problem: _Problem, cand: Candidate, rows: np.ndarray) -> bool:
    """True when the candidate's mean cost is below the largest model's by more than one standard error."""
    diff = problem.outcome(cand, rows).cost - problem.cost[rows, problem.largest]
    se = float(diff.std(ddof=1) / math.sqrt(diff.size)) if diff.size > 1 else 0.0
    return float(diff.mean()) + se < 0.0


@functools.lru_cache(maxsize=8192)
def _paired_pvalue(n: int, n_plus: int, n_minus: int, eps: float, level: float) -> float:
    """The exact paired p-value costs milliseconds; paths often revisit the same counts."""
    return paired_drop_pvalue(n, n_plus, n_minus, eps, level=level)


def _pvalue(st: _Stats, *, relative: bool, level_value: float, level: float, bound: str) -> float:
    if relative:
        return _paired_pvalue(st.n, st.n_plus, st.n_minus, level_value, level)
    alpha = level_value
    if bound == "hoeffding_bentkus":
        return hoeffding_bentkus_pvalue(st.errors / max(st.n, 1), st.n, alpha)
    return binomial_pvalue(st.errors, st.n, alpha)


_MIN_SELECT = 20  # items: below this an AUROC says next to nothing about which signal is better


def _budget(n: int, p_value: Any, level: float) -> int:
    """The most "bad" items (worse than the largest, none better; or errors) among ``n`` that still certify
    at ``level`` (-1: none). The p-value grows with the count, so a bisection finds it."""
    lo, hi = -1, n
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if p_value(n, mid) <= level:
            lo = mid
        else:
            hi = mid - 1
    return lo


def _sparing_select_size(n: int, cap: int, p_value: Any, level: float) -> int:
    """The largest selection part (at most ``cap`` items) whose removal leaves the certification part's
    budget of bad items unchanged, but at least ``_MIN_SELECT`` items (or ``cap`` if smaller).

    The budget is discrete: at a 1-point target and level 0.05, 500 items (and 479) tolerate one "worse"
    item and 478 none, so a 20% selection part (100 items) would cost the whole budget, 21 items nothing.
    Computed from n, the target and the level only (no label).
    """
    full = _budget(n, p_value, level)
    lo, hi = 0, cap
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if _budget(n - mid, p_value, level) >= full:
            lo = mid
        else:
            hi = mid - 1
    return max(lo, min(_MIN_SELECT, cap))


def _direct_paths(families: list[Family], sub: RunMatrix, names: Sequence[str], rng: np.random.Generator,
                  family_select_fraction: float, max_path: int, p_value: Any = None, level: float = 0.05
                  ) -> tuple[list[list[Candidate]], np.ndarray, np.ndarray]:
    """Direct mode: per signal, the small model's threshold from high to low (an order no label decides).

    Returns the paths and the (selection, certification) rows: all items certify, unless several
    signals rank answers differently, in which case one is picked on a random part by its AUROC
    for "safe to accept" (not: small wrong and largest right) and the rest certifies. The part is
    at most ``family_select_fraction`` of the items, and only as many as the certification can spare
    (:func:`_sparing_select_size`, with ``p_value(n, bad_items)`` the certification's test) when given.
    """
    n, largest = sub.n, len(names) - 1
    all_rows = np.arange(n)
    select_rows = certify_rows = all_rows
    kept: list[int] = []
    for f, fam in enumerate(families):
        first = fam.calibrations.get(names[0])
        if first is not None and first.method == "platt" and float(first.params["a"]) <= 0:
            # A decreasing fit would reverse the path's order on the strength of the labels: keep the
            # label-free order (the signal's own score) by thresholding the uncalibrated score instead.
            conf = fam.conf.copy()
            conf[:, 0] = score_array(fam.signal, sub.signals[fam.signal][:, 0])
            fam = families[f] = Family(fam.name, fam.signal, fam.calibrate, {**fam.calibrations, names[0]: None},
                                       conf)
        if any(_same_ranking(fam.conf[:, 0], families[g].conf[:, 0]) for g in kept):
            continue
        kept.append(f)
    if len(kept) > 1 and family_select_fraction > 0:
        perm = rng.permutation(n)
        n_sel = max(1, round(family_select_fraction * n))
        if p_value is not None:
            n_sel = _sparing_select_size(n, n_sel, p_value, level)
        select_rows, certify_rows = np.sort(perm[:n_sel]), np.sort(perm[n_sel:])
        safe = ~(~sub.correct[select_rows, 0] & sub.correct[select_rows, largest])
        kept = [max(kept, key=lambda f: np.nan_to_num(auroc(families[f].conf[select_rows, 0], safe), nan=0.0))]
    paths = []
    for f in kept:
        path = [Candidate(f, (largest,), (0.0,))]
        if len(names) == 2:
            c0 = families[f].conf[:, 0]
            values = np.unique(c0[np.isfinite(c0)])[::-1]
            if values.size > max_path:
                values = values[np.unique(np.linspace(0, values.size - 1, max_path).round().astype(int))]
            cuts = [float(0.5 * (a + b)) for a, b in itertools.pairwise(values)] + [0.0]
            path += [Candidate(f, (0, 1), (t, 0.0)) for t in cuts]
        paths.append(path)
    return paths, select_rows, certify_rows


def _quantile_paths(families: list[Family], sub: RunMatrix, names: Sequence[str], steps: int
                    ) -> list[list[Candidate]]:
    """Quantile mode: one path per (family, sub-chain ending at the largest model).

    Every gated tier accepts the same share a of the tuning items by its own confidence (its threshold
    is that tier's (1 - a)-quantile of confidence over all tuning items); a grows from 0 ("accept
    nothing": the largest alone) to 1. Quantiles of confidence are computed without labels and a
    strictly increasing calibration does not change which items a quantile accepts, so the path's
    order is fixed before any label is looked at: fixed-sequence testing may use every tuning item.
    """
    largest = len(names) - 1
    smaller = range(largest)
    chains = [(*c, largest) for r in range(1, largest + 1) for c in itertools.combinations(smaller, r)]
    shares = np.linspace(0.0, 1.0, steps + 1)[1:]
    ranking = _ranking_classes(families, largest)
    paths = []
    seen_paths: set[tuple[tuple[int, ...], tuple[int, ...]]] = set()
    for f, fam in enumerate(families):
        for chain in chains:
            gated = chain[:-1]
            key = (chain, tuple(ranking[f][j] for j in gated))
            if key in seen_paths:  # another signal orders these tiers' answers alike: the same path
                continue
            seen_paths.add(key)
            qs = []
            for j in gated:
                col = fam.conf[:, j]
                col = col[np.isfinite(col)]
                qs.append(np.quantile(col, 1.0 - shares, method="higher") if col.size else np.full(shares.size, np.inf))
            path = [Candidate(f, (largest,), (0.0,))]
            seen = {path[0]}
            for k in range(shares.size):
                cand = _normalise_candidate(f, chain, (*(float(q[k]) for q in qs), 0.0))
                if cand not in seen:
                    seen.add(cand)
                    path.append(cand)
            paths.append(path)
    return paths


def _ranking_classes(families: list[Family], n_gated: int) -> list[list[int]]:
    """classes[f][j]: the first family whose confidence for model j orders every answer as family f's does.

    Two families in the same class on a chain's gated models accept the same items at every quantile,
    so their paths are one hypothesis sequence and need no share of delta each. Label-free (rankings only).
    """
    classes: list[list[int]] = []
    for f, fam in enumerate(families):
        row = []
        for j in range(n_gated):
            same = next((g for g in range(f)
                         if classes[g][j] == g and _same_ranking(fam.conf[:, j], families[g].conf[:, j])), f)
            row.append(same)
        classes.append(row)
    return classes


def _label_free_families(families: list[Family], sub: RunMatrix, names: Sequence[str]) -> list[Family]:
    """A calibration fitted as decreasing would let labels reverse a path's order: threshold the
    signal's own score for that model instead (its ranking is fixed before any label is seen)."""
    out = []
    for fam in families:
        conf, cals = fam.conf.copy(), dict(fam.calibrations)
        for j, name in enumerate(names):
            cal = cals.get(name)
            if cal is not None and cal.method == "platt" and float(cal.params["a"]) <= 0:
                conf[:, j] = score_array(fam.signal, sub.signals[fam.signal][:, j])
                cals[name] = None
        out.append(Family(fam.name, fam.signal, fam.calibrate, cals, conf))
    return out


def _split_path(problem: _Problem, sub: RunMatrix, select_rows: np.ndarray, n_mu: int, grid: int, max_path: int,
                progress: bool | None) -> list[Candidate]:
    """Split mode: every (family, sub-chain) frontier traced on the selection rows, merged, Pareto-filtered
    and ordered by selection-row error (conservative first)."""
    families, settings, largest = problem.families, problem.settings, problem.largest
    wrong = (~sub.correct).astype(float)
    mean_cost = float(np.mean(sub.cost[select_rows, largest]))
    mus = mean_cost * np.logspace(3, -2.5, n_mu)
    pool: set[Candidate] = set()
    m = sub.correct.shape[1]
    chains = [c for r in range(1, m + 1) for c in itertools.combinations(range(m), r)]
    jobs = [(f, c) for f in range(len(families)) for c in chains]
    miss_value = math.inf if settings.missing_logprobs == "accept" else -math.inf
    for f, chain in track(jobs, "tracing frontiers", enabled=progress):
        cols = list(chain)
        dec = families[f].conf[np.ix_(select_rows, cols)]
        dec = np.where(np.isnan(dec), miss_value, dec)
        c_sel, w_sel = sub.cost[np.ix_(select_rows, cols)], wrong[np.ix_(select_rows, cols)]
        for th in _frontier(dec, c_sel, w_sel, mus) + _greedy_frontier(dec, c_sel, w_sel, grid):
            pool.add(_normalise_candidate(f, chain, th))
    scored = []
    for cand in pool:
        st = problem.stats(cand, select_rows)
        scored.append((1.0 - st.accuracy, st.cost, cand))
    scored.sort(key=lambda x: (x[0], x[1], len(x[2].chain)))  # equal outcomes: the shorter chain
    frontier: list[Candidate] = []
    best_cost = math.inf
    for _err, c, cand in scored:
        if c < best_cost - 1e-15:
            frontier.append(cand)
            best_cost = c
    if len(frontier) > max_path:
        idx = np.unique(np.linspace(0, len(frontier) - 1, max_path).round().astype(int))
        frontier = [frontier[i] for i in idx]
    return frontier


def _select_one_path(problem: _Problem, paths: list[list[Candidate]], rng: np.random.Generator, fraction: float, *,
                     relative: bool, level_value: float, delta: float, bound: str
                     ) -> tuple[list[list[Candidate]], np.ndarray, np.ndarray]:
    """Spend a random ``fraction`` of the items on choosing one path; the rest certify it at the full delta.

    The alternative to splitting delta over every path (Bonferroni): better when items are plentiful and
    paths many, worse when items are few (see docs/evaluation.md). Returns ([path], select, certify rows).
    """
    if not 0.05 <= fraction <= 0.95:
        raise TuneError(f"path_select_fraction (--path-select-fraction) must be 0 or in [0.05, 0.95], got {fraction}")
    n = problem.correct.shape[0]
    perm = rng.permutation(n)
    n_sel = round(fraction * n)
    select_rows, certify_rows = np.sort(perm[:n_sel]), np.sort(perm[n_sel:])
    path = _pick_path(problem, paths, select_rows, certify_rows.size, relative=relative, level_value=level_value,
                      level=delta, bound=bound)
    return [path], select_rows, certify_rows


def _pick_path(problem: _Problem, paths: list[list[Candidate]], rows: np.ndarray, n_certify: int, *,
               relative: bool, level_value: float, level: float, bound: str) -> list[Candidate]:
    """The path that promises the cheapest certified configuration, judged on the selection ``rows`` only.

    The counts seen on the selection rows are scaled to ``n_certify`` items and tested at ``level``; a path's
    promise is its cheapest configuration (cost on the selection rows) that would pass. Walking each path to
    its first scaled failure instead measured worse: on a small selection part one discordant item scales to
    several and stops every path at its first step, so the choice was a coin toss.
    """
    scale = n_certify / max(rows.size, 1)
    best: tuple[float, int] | None = None
    for p_i, path in enumerate(paths):
        cheapest = math.inf
        for cand in path:
            st = problem.stats(cand, rows)
            if st.cost >= cheapest:
                continue
            scaled = _Stats(st.accuracy, st.cost, round(st.errors * scale), n_certify,
                            round(st.n_plus * scale), round(st.n_minus * scale))
            trivial = relative and cand.chain == (problem.largest,) and st.n_plus == 0 and st.n_minus == 0
            if trivial or _pvalue(scaled, relative=relative, level_value=level_value, level=level,
                                  bound=bound) <= level:
                cheapest = st.cost
        key = (cheapest, p_i)
        if best is None or key < best:
            best = key
    assert best is not None
    return paths[best[1]]


def _certify(problem: _Problem, paths: list[list[Candidate]], rows: np.ndarray, names: Sequence[str], *,
             relative: bool, level_value: float, level: float, bound: str
             ) -> tuple[list[dict[str, Any]], list[tuple[Candidate, float]], list[dict[str, Any]]]:
    """Fixed-sequence testing along each path at ``level``: every configuration before the first
    failure is certified. Returns the tested rows, the certified (configuration, p-value) pairs and,
    per path that stopped, the row where it stopped (with the drop's upper bound)."""
    table: list[dict[str, Any]] = []
    certified: list[tuple[Candidate, float]] = []
    stops: list[dict[str, Any]] = []
    for p_i, path in enumerate(paths):
        for step, cand in enumerate(path):
            st = problem.stats(cand, rows)
            trivial = relative and cand.chain == (problem.largest,) and st.n_plus == 0 and st.n_minus == 0
            p = 0.0 if trivial else _pvalue(st, relative=relative, level_value=level_value, level=level, bound=bound)
            ok = p <= level
            table.append(_row(p_i, step, cand, problem.families, names, st, p, ok))
            if not ok:
                if relative:
                    table[-1]["drop_upper_bound"] = _r(paired_drop_ucb(st.n, st.n_plus, st.n_minus, level))
                stops.append(table[-1])
                break
            certified.append((cand, p))
    return table, certified, stops


# ----------------------------------------------------------------------------- the tuner


def tune(
    matrix: RunMatrix,
    base: RouterConfig | None = None,
    *,
    models: Sequence[str] | None = None,
    target_accuracy: float | None = None,
    max_accuracy_drop: float | None = None,
    delta: float = 0.05,
    calibrate: str | Sequence[str] = "platt",
    signals: Sequence[str] | None = None,
    mode: str = "auto",
    select_fraction: float = 0.3,
    family_select_fraction: float = 0.2,
    bound: str = "binomial",
    seed: int = 0,
    max_path: int = 200,
    quantile_steps: int = 100,
    path_select_fraction: float = 0.0,
    n_mu: int = 40,
    grid: int = 100,
    l2: float = 1.0,
    progress: bool | None = None,
) -> TuneResult:
    """Tune a cascade on ``matrix`` (the tuning items). See the module docstring for the method."""
    base = base if base is not None else parse_config({})
    settings = base.confidence
    if target_accuracy is not None and max_accuracy_drop is not None:
        raise TuneError("give either target_accuracy or max_accuracy_drop, not both")
    if target_accuracy is not None and not 0.0 < target_accuracy <= 1.0:
        raise TuneError(f"target_accuracy must be in (0, 1], got {target_accuracy}")
    if max_accuracy_drop is not None and not -1.0 < max_accuracy_drop < 1.0:
        raise TuneError(f"max_accuracy_drop must be in (-1, 1), got {max_accuracy_drop}")
    if not 0.0 < delta < 1.0:
        raise TuneError(f"delta must be in (0, 1), got {delta}")
    if bound not in ("binomial", "hoeffding_bentkus"):
        raise TuneError(f"bound must be binomial or hoeffding_bentkus, got {bound!r}")
    methods = [calibrate] if isinstance(calibrate, str) else list(calibrate)
    methods = [m.strip() for part in methods for m in part.split(",") if m.strip()]
    bad = [m for m in methods if m not in CALIBRATE_CHOICES]
    if bad or not methods:
        raise TuneError(f"unknown calibration method(s) {bad}; choose from {', '.join(CALIBRATE_CHOICES)}")
    names = candidate_models(matrix, base, models)
    sub = matrix.select(names)
    sigs = list(signals) if signals else _default_signals(sub, names)
    # self_verify / consistency only when asked for: they cost extra calls that a recorded answer's
    # cost_usd does not include unless the collector added them
    tunable = (*LOGPROB_SIGNALS, "self_verify", "consistency")
    unknown = [s for s in sigs if s not in tunable]
    if unknown:
        raise TuneError(f"signal(s) {unknown} are not computed by the router at run time; "
                        f"choose from {', '.join(tunable)}")
    absent = [s for s in sigs if s not in sub.signals]
    if absent:
        raise TuneError(f"signal(s) {absent} are not in the recorded runs (recorded: {', '.join(sub.signals)})")
    if not sigs:
        opt_in = [s for s in ("self_verify", "consistency") if s in sub.available_signals(names)]
        if opt_in:
            raise TuneError(f"no logprob signal is recorded for every candidate model, but {', '.join(opt_in)} "
                            f"is; these cost extra calls, so tuning uses them only when asked: pass "
                            f"--signals {','.join(opt_in)} (signals=[...] in Python)")
        raise TuneError("no confidence signal is recorded for every candidate model; record logprobs or signals")
    n = sub.n
    if n < 20:
        raise TuneError(f"only {n} items answered by every candidate model; tuning needs labelled items")
    rng = np.random.default_rng(seed)
    has_target = target_accuracy is not None or max_accuracy_drop is not None
    relative = max_accuracy_drop is not None
    largest = len(names) - 1

    monotone = all(m in _MONOTONE for m in methods)
    if mode == "auto":
        if has_target and len(names) <= 2 and monotone:
            mode = "direct"
        elif relative and monotone:
            mode = "quantile"
        else:
            mode = "split"
    if mode not in ("direct", "split", "quantile"):
        raise TuneError(f"mode must be auto, direct, quantile or split, got {mode!r}")
    if not has_target:  # nothing to certify: trace the frontier on every tuning item
        mode = "split"
        select_rows = certify_rows = np.arange(n)
    elif mode == "direct":
        if len(names) > 2 or any(m not in _MONOTONE for m in methods):
            raise TuneError("direct mode needs at most two candidate models and a monotone calibration "
                            "(platt, temperature or none); use split mode")
        select_rows = certify_rows = np.arange(n)
    elif mode == "quantile":
        if not monotone:
            raise TuneError("quantile mode needs a monotone calibration (platt, temperature or none); use split mode")
        select_rows = certify_rows = np.arange(n)
    else:
        if not 0.05 <= select_fraction <= 0.95:
            raise TuneError(f"select_fraction must be in [0.05, 0.95], got {select_fraction}")
        perm = rng.permutation(n)
        n_sel = round(select_fraction * n)
        select_rows, certify_rows = np.sort(perm[:n_sel]), np.sort(perm[n_sel:])

    families = _fit_families(sub, names, sigs, methods, select_rows, l2)
    # Among signals that rank answers alike, the dedup below keeps the first: put the best-calibrated first
    # (it changes what thresholds mean, not which answers any threshold accepts).
    families.sort(key=_mean_brier)
    if mode == "split":  # signals that rank every model's answers alike give the same cascades: keep one
        distinct: list[Family] = []
        for fam in families:
            if not any(all(_same_ranking(fam.conf[select_rows, j], g.conf[select_rows, j]) for j in range(len(names)))
                       for g in distinct):
                distinct.append(fam)
        families = distinct
    problem = _Problem(families, sub.correct, sub.cost, settings, largest)

    # ---- paths (conservative -> aggressive), one per family in direct mode, one merged in split mode
    if mode == "direct":
        lv = float(max_accuracy_drop if relative else 1.0 - float(target_accuracy))  # type: ignore[arg-type]

        def bad_items_pvalue(n_items: int, k: int) -> float:
            return _pvalue(_Stats(0.0, 0.0, k, n_items, k, 0), relative=relative, level_value=lv, level=delta,
                           bound=bound)

        paths, select_rows, certify_rows = _direct_paths(families, sub, names, rng, family_select_fraction, max_path,
                                                         bad_items_pvalue, delta)
    elif mode == "quantile":
        families = _label_free_families(families, sub, names)
        problem = _Problem(families, sub.correct, sub.cost, settings, largest)
        paths = _quantile_paths(families, sub, names, quantile_steps)
        if path_select_fraction > 0 and len(paths) > 1 and has_target:
            lv = max_accuracy_drop if relative else 1.0 - float(target_accuracy)  # type: ignore[arg-type]
            paths, select_rows, certify_rows = _select_one_path(
                problem, paths, rng, path_select_fraction, relative=relative, level_value=float(lv), delta=delta,
                bound=bound)
    else:
        paths = [_split_path(problem, sub, select_rows, n_mu, grid, max_path, progress)]
    path_families = [sorted({c.family for c in path}) for path in paths]

    # ---- certification (or, without a target, selection by cost_quality_tradeoff)
    all_rows = np.arange(n)
    ref_acc = float(sub.correct[:, largest].mean())
    ref_cost = float(sub.cost[:, largest].mean())
    table: list[dict[str, Any]] = []
    certified: list[tuple[Candidate, float]] = []
    stops: list[dict[str, Any]] = []
    m_fam = max(1, len(paths))
    level = delta / m_fam
    if has_target:
        level_value = max_accuracy_drop if relative else 1.0 - float(target_accuracy)  # type: ignore[arg-type]
        table, certified, stops = _certify(problem, paths, certify_rows, names, relative=relative,
                                           level_value=float(level_value), level=level, bound=bound)
    chosen: Candidate
    p_chosen: float | None = None
    if has_target:
        if certified:
            chosen, p_chosen = min(certified, key=lambda cp: (problem.stats(cp[0], all_rows).cost, -len(cp[0].chain)))
            alone = next(((c, p) for c, p in certified if c.chain == (largest,)), None)
            if alone is not None and chosen is not alone[0] and not _visibly_cheaper(problem, chosen, all_rows):
                chosen, p_chosen = alone  # a saving within the noise is not worth the extra calls
        else:
            chosen = Candidate(0, (largest,), (0.0,))
    else:
        t = settings.cost_quality_tradeoff
        pool_all = [c for path in paths for c in path]

        def utility(c: Candidate) -> float:
            st = problem.stats(c, all_rows)
            return (1.0 - t) * st.accuracy - t * st.cost / max(ref_cost, 1e-300)

        chosen = max(pool_all, key=lambda c: (round(utility(c), 12), -len(c.chain)))
    fam = families[chosen.family]
    full = problem.stats(chosen, all_rows)
    cert = problem.stats(chosen, certify_rows)
    outcome = problem.outcome(chosen, all_rows)
    evidence = _evidence(
        names=names, n=n, select_rows=select_rows, certify_rows=certify_rows, mode=mode, seed=seed,
        target_accuracy=target_accuracy, max_accuracy_drop=max_accuracy_drop, delta=delta, level=level,
        m_fam=m_fam, bound=bound, families=families, path_families=path_families, paths=paths,
        certified=certified, chosen=chosen, p_chosen=p_chosen, full=full, cert=cert, ref_acc=ref_acc,
        ref_cost=ref_cost, outcome=outcome, has_target=has_target, relative=relative, sub=sub,
        cost_quality_tradeoff=settings.cost_quality_tradeoff, stops=stops,
    )
    chain_names = [names[i] for i in chosen.chain]
    return TuneResult(
        models=chain_names, thresholds=list(chosen.thresholds), signal=fam.signal, calibrate=fam.calibrate,
        calibrations={m: fam.calibrations.get(m) for m in chain_names}, evidence=evidence, candidates=names,
        path=table,
    )


def _row(p_i: int, step: int, cand: Candidate, families: list[Family], names: Sequence[str], st: _Stats,
         p: float, ok: bool) -> dict[str, Any]:
    return {
        "path": p_i, "step": step, "family": families[cand.family].name,
        "models": [names[i] for i in cand.chain], "thresholds": [round(t, 6) for t in cand.thresholds],
        "certify_accuracy": round(st.accuracy, 6), "certify_cost": st.cost,
        "estimated_drop": round((st.n_plus - st.n_minus) / max(st.n, 1), 6),
        "n_cascade_worse": st.n_plus, "n_cascade_better": st.n_minus, "p_value": p, "certified": ok,
    }


def _r(x: float | None, digits: int = 6) -> float | None:
    return None if x is None or not math.isfinite(x) else round(float(x), digits)


def _evidence(**kw: Any) -> dict[str, Any]:
    names = kw["names"]
    chosen: Candidate = kw["chosen"]
    families: list[Family] = kw["families"]
    full: _Stats = kw["full"]
    cert: _Stats = kw["cert"]
    outcome: ReplayOutcome = kw["outcome"]
    relative, has_target = kw["relative"], kw["has_target"]
    n, delta = kw["n"], kw["delta"]
    ref_acc, ref_cost = kw["ref_acc"], kw["ref_cost"]
    served = outcome.served
    ev: dict[str, Any] = {
        "method": "learn-then-test, fixed-sequence testing" if has_target else "cost_quality_tradeoff (no target)",
        "tuned_at": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "n": int(n),
        "mode": kw["mode"],
        "n_select": int(kw["select_rows"].size),
        "n_certify": int(kw["certify_rows"].size),
        "split_seed": kw["seed"],
        "candidates": list(names),
        "largest_model": names[-1],
        "families": [f.name for f in families],
    }
    if has_target:
        if relative:
            ev["target"] = {"kind": "relative", "max_accuracy_drop": kw["max_accuracy_drop"],
                            "reference_model": names[-1], "reference_accuracy_tuning": _r(ref_acc),
                            "target_accuracy_estimate": _r(ref_acc - kw["max_accuracy_drop"])}
            ev["bound"] = ("paired test of the accuracy drop versus the largest model: exact tail of Tango's score "
                           "statistic, discordance rate by Berger-Boos (gamma = level/20)")
            ev["guarantee"] = (f"with probability >= {1 - delta:g} over the tuning sample: accuracy(cascade) >= "
                               f"accuracy({names[-1]}) - {kw['max_accuracy_drop']:g} on this traffic")
        else:
            ev["target"] = {"kind": "absolute", "accuracy": kw["target_accuracy"]}
            ev["bound"] = "exact binomial (Clopper-Pearson)" if kw["bound"] == "binomial" else "Hoeffding-Bentkus"
            ev["guarantee"] = (f"with probability >= {1 - delta:g} over the tuning sample: accuracy(cascade) >= "
                               f"{kw['target_accuracy']:g} on this traffic")
        ev["delta"] = delta
        ev["families_tested"] = kw["m_fam"]
        ev["tested"] = sorted({families[f].name for fs in kw["path_families"] for f in fs})
        ev["level_per_family"] = _r(kw["level"], 8)
        ev["path_length"] = int(sum(len(p) for p in kw["paths"]))
        ev["certified_configurations"] = len(kw["certified"])
        ev["certified"] = bool(kw["certified"])
        ev["p_value"] = _r(kw["p_chosen"], 8)
        if relative:
            ev["certify_split"] = {
                "n": cert.n, "accuracy": _r(cert.accuracy), "accuracy_drop": _r((cert.n_plus - cert.n_minus) / cert.n),
                "n_cascade_worse": cert.n_plus, "n_cascade_better": cert.n_minus,
                "drop_upper_bound": _r(paired_drop_ucb(cert.n, cert.n_plus, cert.n_minus, delta)),
            }
        else:
            ev["certify_split"] = {
                "n": cert.n, "accuracy": _r(cert.accuracy),
                "accuracy_lower_bound": _r(clopper_pearson_lower(cert.n - cert.errors, cert.n, delta)),
            }
        ev["stopped_at"] = kw["stops"]
        ev["largest_alone"] = chosen.chain == (len(names) - 1,)
        if not kw["certified"] or ev["largest_alone"]:
            ev["note"] = ("no cascade cheaper than the largest model was certified at this target; the largest "
                          "model alone is returned (see stopped_at: where each tested path stopped and why)")
    else:
        ev["cost_quality_tradeoff"] = kw["cost_quality_tradeoff"]
        ev["guarantee"] = "none (no target given)"
    ev["signal"] = families[chosen.family].signal
    ev["calibration"] = families[chosen.family].calibrate
    ev["family"] = families[chosen.family].name
    ev["expected"] = {
        "accuracy": _r(full.accuracy),
        "cost_usd": _r(full.cost, 12),
        "largest_accuracy": _r(ref_acc),
        "largest_cost_usd": _r(ref_cost, 12),
        "accuracy_drop": _r(ref_acc - full.accuracy),
        "savings": _r(1.0 - full.cost / ref_cost) if ref_cost > 0 else None,
        "escalation_rate": _r(float(np.mean(outcome.calls > 1))),
        "served_share": {names[c]: _r(float(np.mean(served == i)))
                         for i, c in enumerate(chosen.chain)},
        "on": "all tuning items",
    }
    return ev


# ----------------------------------------------------------------------------- output


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name)


def _price_fields(model: str) -> dict[str, float]:
    from .converters import PRICES

    price = PRICES.get(model)
    if price is None:
        return {}
    return {"input_cost_per_token": float(f"{price.input_per_m / 1e6:.12g}"),
            "output_cost_per_token": float(f"{price.output_per_m / 1e6:.12g}")}


def write_tuned_config(result: TuneResult, base: RouterConfig | None, out: str | Path,
                       extra_evidence: Mapping[str, Any] | None = None) -> Path:
    """Write the tuned YAML and its calibration files next to it; the file is checked by loading it back."""
    out_path = Path(out)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    base = base if base is not None else parse_config({})
    # a registry: section is left out: the tuned file carries thresholds, and is what gets pushed there
    data = base.model_dump(mode="json", exclude={"evidence", "registry"}, exclude_none=True, exclude_unset=True)
    conf = data.setdefault("algorithm", {}).setdefault("confidence", {})
    conf["escalation_order"] = "declared"
    conf["confidence_method"] = result.signal
    specs = {s.name: s for s in base.models}
    models = []
    stem = out_path.name
    for suffix in (".yaml", ".yml", ".json"):
        stem = stem.removesuffix(suffix)
    for name, threshold in zip(result.models, result.thresholds, strict=True):
        entry = (specs[name].model_dump(mode="json", exclude_none=True, exclude_unset=True) if name in specs
                 else {"name": name})
        if "input_cost_per_token" not in entry and "output_cost_per_token" not in entry:
            entry.update(_price_fields(name))
        entry["threshold"] = float(threshold)  # exact: the certified value, not a rounded one
        entry["confidence_method"] = result.signal
        cal = result.calibrations.get(name)
        if cal is not None:
            fname = f"{stem}.{_safe(name)}.calibration.json"
            cal.save(out_path.parent / fname)
            entry["calibration"] = fname
        else:
            entry.pop("calibration", None)
        models.append(entry)
    data["models"] = models
    evidence = dict(result.evidence)
    evidence.update(extra_evidence or {})
    data["evidence"] = evidence
    header = ("# Tuned by `confidence-router tune`: chain, per-model thresholds and calibrations chosen on labelled\n"
              "# runs; `evidence` says how and with what guarantee. Re-tune rather than edit thresholds by hand.\n")
    out_path.write_text(header + yaml.safe_dump(data, sort_keys=False, allow_unicode=True), encoding="utf-8")
    build_tiers(load_config(out_path))  # fail here, not in production, if the file does not load
    return out_path

"""Reference points a tuned cascade is judged against, over aligned ``(n_items, n_models)`` arrays.

* :func:`oracle` -- the cheapest model that answers each item correctly (the cheapest model when
  none does): the lower bound on cost at the best possible accuracy.
* :func:`random_routing` -- escalate at random with the cascade's own per-tier escalation rates,
  ignoring confidence; its expected accuracy and cost, computed exactly (no sampling noise).
* :func:`shared_threshold_search` -- one threshold on the uncalibrated 0..1 score for every tier of
  the full chain (the vLLM Semantic Router style), fitted empirically to a target.
* :func:`grid_search` -- an exhaustive grid over sub-chains and per-model thresholds (quantiles of
  each model's confidence), fitted empirically to a target: the best a tuner without a guarantee
  can do on the tuning data, so its held-out accuracy shows what overfitting costs.

The two searches pick, on the data they are given, the cheapest configuration whose accuracy is at
least ``target`` (no bound: they are the baselines without a guarantee).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = [
    "GridChoice",
    "fast_cascade",
    "grid_search",
    "oracle",
    "random_routing",
    "shared_threshold_search",
]


def oracle(correct: np.ndarray, cost: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per item (correct, cost) of the cheapest correct model, else the cheapest model (wrong)."""
    correct = np.asarray(correct, dtype=bool)
    masked = np.where(correct, cost, np.inf)
    best = masked.min(axis=1)
    any_right = correct.any(axis=1)
    return any_right, np.where(any_right, best, cost.min(axis=1))


def random_routing(escalation_rates: Sequence[float], correct: np.ndarray, cost: np.ndarray) -> tuple[float, float]:
    """Expected (accuracy, mean cost) when tier k escalates at random with probability ``escalation_rates[k]``.

    Columns are the tiers in order; the last tier always answers. Each tier's accuracy and cost are
    its mean over all items (random routing is independent of the item).
    """
    acc = np.asarray(correct, dtype=float).mean(axis=0)
    mean_cost = np.asarray(cost, dtype=float).mean(axis=0)
    reach = 1.0
    exp_acc = exp_cost = 0.0
    n_tiers = acc.size
    for k in range(n_tiers):
        exp_cost += reach * mean_cost[k]
        stop = 1.0 if k == n_tiers - 1 else 1.0 - float(escalation_rates[k])
        exp_acc += reach * stop * acc[k]
        reach *= 1.0 - stop
    return exp_acc, exp_cost


def fast_cascade(conf: np.ndarray, thresholds: Sequence[float], correct: np.ndarray, cost: np.ndarray
                 ) -> tuple[np.ndarray, np.ndarray]:
    """(correct, cost) per item of a chain where tier k accepts when conf >= threshold and the last
    tier always answers; a NaN confidence escalates. The searches' fast path (replay is exact)."""
    n, n_tiers = conf.shape
    with np.errstate(invalid="ignore"):
        accept = conf >= np.asarray([*list(thresholds)[: n_tiers - 1], -np.inf])[None, :]
    accept[:, -1] = True
    stop = np.argmax(accept, axis=1)
    rows = np.arange(n)
    return np.asarray(correct, dtype=bool)[rows, stop], np.cumsum(cost, axis=1)[rows, stop]


@dataclass(frozen=True)
class GridChoice:
    """A configuration picked by a search: columns of the chain and their thresholds (last is 0)."""

    chain: tuple[int, ...]
    thresholds: tuple[float, ...]
    signal: str
    accuracy: float
    cost: float


def shared_threshold_search(conf: np.ndarray, correct: np.ndarray, cost: np.ndarray, target: float,
                            signal: str = "", levels: int = 400) -> GridChoice | None:
    """One threshold for every tier of the full chain: the cheapest one reaching ``target`` accuracy."""
    pooled = conf[:, :-1][np.isfinite(conf[:, :-1])]
    if pooled.size == 0:
        return None
    candidates = np.unique(np.quantile(pooled, np.linspace(0.0, 1.0, levels), method="lower"))
    best: GridChoice | None = None
    n_tiers = conf.shape[1]
    for t in [*candidates.tolist(), np.inf]:
        th = (float(t),) * (n_tiers - 1) + (0.0,)
        ok, c = fast_cascade(conf, th, correct, cost)
        acc, mean_cost = float(ok.mean()), float(c.mean())
        if acc >= target and (best is None or mean_cost < best.cost):
            best = GridChoice(tuple(range(n_tiers)), th, signal, acc, mean_cost)
    return best


def _grid_levels(col: np.ndarray, g: int) -> np.ndarray:
    finite = col[np.isfinite(col)]
    if finite.size == 0:
        return np.array([np.inf])
    return np.unique(np.quantile(finite, np.linspace(0.0, 1.0, g + 1)[1:], method="lower"))


def grid_search(conf: np.ndarray, correct: np.ndarray, cost: np.ndarray, target: float, signal: str = "",
                levels: Sequence[int] = (40, 16, 10, 7, 5), chunk: int = 1024) -> GridChoice | None:
    """Every sub-chain (in column order) x a quantile grid per non-final tier; cheapest reaching ``target``.

    ``levels[k]`` is the grid size per tier for chains with k + 1 thresholds (coarser for long chains
    so the product stays tractable: 40, 16^2, 10^3, 7^4, 5^5 combinations).
    """
    n, m = conf.shape
    correct = np.asarray(correct, dtype=bool)
    best: GridChoice | None = None
    for r in range(1, m + 1):
        for chain in itertools.combinations(range(m), r):
            cols = list(chain)
            c_conf, c_ok, c_cost = conf[:, cols], correct[:, cols].astype(np.float64), cost[:, cols]
            cum = np.cumsum(c_cost, axis=1)
            if r == 1:
                acc, mean_cost = float(c_ok[:, 0].mean()), float(cum[:, 0].mean())
                if acc >= target and (best is None or mean_cost < best.cost):
                    best = GridChoice(chain, (0.0,), signal, acc, mean_cost)
                continue
            g = levels[min(r - 2, len(levels) - 1)]
            grids = [_grid_levels(c_conf[:, k], g) for k in range(r - 1)]
            # lvl[i, k]: how many grid thresholds item i passes at tier k (accept iff lvl > j)
            lvl = np.column_stack([np.searchsorted(grids[k], np.where(np.isnan(c_conf[:, k]), -np.inf,
                                                                       c_conf[:, k]), side="right")
                                   for k in range(r - 1)])
            combos = np.array(list(itertools.product(*[range(len(gk)) for gk in grids])), dtype=np.int64)
            for start in range(0, combos.shape[0], chunk):
                js = combos[start:start + chunk]
                active = np.ones((js.shape[0], n), dtype=bool)
                acc_sum = np.zeros(js.shape[0])
                cost_sum = np.zeros(js.shape[0])
                for k in range(r - 1):
                    acc_k = active & (lvl[None, :, k] > js[:, k, None])
                    f = acc_k.astype(np.float64)
                    acc_sum += f @ c_ok[:, k]
                    cost_sum += f @ cum[:, k]
                    active &= ~acc_k
                f = active.astype(np.float64)
                acc_sum += f @ c_ok[:, -1]
                cost_sum += f @ cum[:, -1]
                acc_v, cost_v = acc_sum / n, cost_sum / n
                feasible = np.flatnonzero(acc_v >= target - 1e-12)
                if feasible.size == 0:
                    continue
                i = feasible[np.argmin(cost_v[feasible])]
                if best is None or cost_v[i] < best.cost:
                    th = (*tuple(float(grids[k][js[i, k]]) for k in range(r - 1)), 0.0)
                    best = GridChoice(chain, th, signal, float(acc_v[i]), float(cost_v[i]))
    return best

"""Shared protocol of the tuning benchmarks on real recorded runs (../shared/data).

For each dataset: split the items 50/50 at random (``--splits`` times, 20 by default); on the tuning
half run the package's tuner (``max_accuracy_drop=0.01, delta=0.05``) and two baselines without
a guarantee, each aimed at the same target (accuracy >= largest model's tuning accuracy - 1 point):

* ``shared``: one threshold on the uncalibrated 0..1 score for every tier of the full chain in size
  order (vLLM Semantic Router style), the cheapest reaching the target on the tuning half;
* ``grid``: an exhaustive grid over sub-chains x per-model thresholds (quantile grids), the cheapest
  reaching the target on the tuning half;
* ``margin_grid``: the same grid, keeping a configuration only if its paired drop versus the largest
  plus 1.64 standard errors is <= 1 point, the cheapest kept.

Each is then replayed (exact policy semantics) on the other half and reported: savings versus
always-largest, share of the oracle's savings, realised accuracy drop versus the largest model on
the same half (mean, share of splits above 2 points, worst).
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
# ../shared/data beside the checkout (a git worktree one level deeper looks one folder further up)
DATA = next((p for p in (REPO.parent / "shared" / "data", REPO.parents[1] / "shared" / "data") if p.is_dir()),
            REPO.parent / "shared" / "data")
sys.path.insert(0, str(REPO))

from langchain_confidence_router.core.config import parse_config  # noqa: E402
from langchain_confidence_router.evaluation.baselines import (  # noqa: E402
    GridChoice,
    _grid_levels,
    grid_search,
    oracle,
    shared_threshold_search,
)
from langchain_confidence_router.evaluation.calibrate import score_array  # noqa: E402
from langchain_confidence_router.evaluation.matrix import RunMatrix, build_matrix, runtime_signals  # noqa: E402
from langchain_confidence_router.evaluation.progress import track  # noqa: E402
from langchain_confidence_router.evaluation.replay import replay_arrays, replay_tiers  # noqa: E402
from langchain_confidence_router.evaluation.tune import tune  # noqa: E402

DROP = 0.01
DELTA = 0.05
METHODS = ("tuner", "shared", "grid", "margin_grid")
MARGIN_Z = 1.64
PLAUT4 = ("Llama3-8b", "Mixtral", "Llama3-70b", "gpt-4-turbo")


@dataclass
class Dataset:
    """A benchmark dataset: how to load it and which ladder of models to cascade."""

    key: str
    title: str
    load: Callable[[Path], Any]
    models: Sequence[str]


def datasets() -> dict[str, Dataset]:
    from langchain_confidence_router.evaluation import converters as cv

    return {
        "mmlu_pro_qwen2.5": Dataset("mmlu_pro_qwen2.5", "MMLU-Pro, Qwen2.5-Instruct 3B/7B/14B/32B (Tao et al.)",
                                    lambda d: cv.convert_tao_mmlu_pro(d, "qwen2.5"), cv.TAO_QWEN25_LADDER),
        "mmlu_pro_llama3": Dataset("mmlu_pro_llama3", "MMLU-Pro, Llama 3.2 1B/3B, 3.1 8B/70B/405B (Tao et al.)",
                                   lambda d: cv.convert_tao_mmlu_pro(d, "llama3"), cv.TAO_LLAMA3_LADDER),
        "mmlu_llama3": Dataset("mmlu_llama3", "MMLU, Llama-3 8B -> 70B, answer-letter MSP (Plaut et al.)",
                               lambda d: cv.convert_plaut(d, "MMLU", ("Llama3-8b", "Llama3-70b")),
                               ("Llama3-8b", "Llama3-70b")),
        "arc_plaut4": Dataset("arc_plaut4", "ARC, Llama3-8b, Mixtral, Llama3-70b, gpt-4-turbo (Plaut)",
                              lambda d: cv.convert_plaut(d, "ARC", PLAUT4), PLAUT4),
        "mmlu_plaut4": Dataset("mmlu_plaut4", "MMLU, Llama3-8b, Mixtral, Llama3-70b, gpt-4-turbo (Plaut)",
                               lambda d: cv.convert_plaut(d, "MMLU", PLAUT4), PLAUT4),
        "sciq_llama3.1": Dataset("sciq_llama3.1", "SciQ, Llama-3.1 8B -> 70B, option probabilities (LifeEval)",
                                 lambda d: cv.convert_lifeeval(d, "SciQ"),
                                 ("Meta-Llama-3.1-8B-Instruct", "Meta-Llama-3.1-70B-Instruct")),
        "boolq_llama3.1": Dataset("boolq_llama3.1", "BoolQ, Llama-3.1 8B -> 70B, option probabilities (LifeEval)",
                                  lambda d: cv.convert_lifeeval(d, "BoolQ"),
                                  ("Meta-Llama-3.1-8B-Instruct", "Meta-Llama-3.1-70B-Instruct")),
    }


@dataclass
class SplitResult:
    method: str
    accuracy: float
    cost: float
    largest_accuracy: float
    largest_cost: float
    oracle_cost: float
    detail: str = ""

    @property
    def drop(self) -> float:
        return self.largest_accuracy - self.accuracy

    @property
    def savings(self) -> float:
        return 1.0 - self.cost / self.largest_cost

    @property
    def oracle_share(self) -> float:
        gap = self.largest_cost - self.oracle_cost
        return (self.largest_cost - self.cost) / gap if gap > 0 else float("nan")


@dataclass
class BenchResult:
    dataset: Dataset
    n_items: int
    splits: list[dict[str, SplitResult]] = field(default_factory=list)
    seconds: float = 0.0

    def summary(self, method: str) -> dict[str, float]:
        rows = [s[method] for s in self.splits]
        drops = np.array([r.drop for r in rows])
        return {
            "savings": float(np.mean([r.savings for r in rows])),
            "oracle_share": float(np.nanmean([r.oracle_share for r in rows])),
            "drop_mean": float(drops.mean()),
            "drop_gt_2pts": float(np.mean(drops > 0.02)),
            "drop_max": float(drops.max()),
            "accuracy": float(np.mean([r.accuracy for r in rows])),
            "largest_accuracy": float(np.mean([r.largest_accuracy for r in rows])),
        }


def _choice_on_test(choice: Any, conf_te: np.ndarray, te: RunMatrix) -> tuple[float, float]:
    cols = list(choice.chain)
    out = replay_arrays(conf_te[:, cols], choice.thresholds, te.correct[:, cols], te.cost[:, cols])
    return out.accuracy, out.mean_cost


def margin_grid_search(conf: np.ndarray, correct: np.ndarray, cost: np.ndarray, max_drop: float, signal: str = "",
                       levels: Sequence[int] = (40, 16, 10, 7, 5), chunk: int = 512) -> GridChoice | None:
    """The grid of ``grid_search`` (sub-chains x per-tier quantile thresholds), keeping a configuration only
    if its paired drop versus the largest (last column) plus 1.64 standard errors is <= ``max_drop``;
    the cheapest kept. A strong baseline without a finite-sample guarantee (no multiplicity correction)."""
    n, m = conf.shape
    wrong = ~np.asarray(correct, dtype=bool)
    d_all = wrong.astype(np.float64) - wrong[:, -1:].astype(np.float64)  # paired D per item if tier k answers
    best: GridChoice | None = None

    def keep(d_sum: np.ndarray, d2_sum: np.ndarray) -> np.ndarray:
        mean = d_sum / n
        se = np.sqrt(np.maximum(d2_sum / n - mean**2, 0.0) / max(n - 1, 1))
        return mean + MARGIN_Z * se <= max_drop + 1e-12

    for r in range(1, m + 1):
        for chain in itertools.combinations(range(m), r):
            cols = list(chain)
            c_conf, d, cum = conf[:, cols], d_all[:, cols], np.cumsum(cost[:, cols], axis=1)
            d2 = np.abs(d)
            if r == 1:
                if keep(np.array([d[:, 0].sum()]), np.array([d2[:, 0].sum()]))[0]:
                    c = float(cum[:, 0].mean())
                    if best is None or c < best.cost:
                        best = GridChoice(chain, (0.0,), signal, float(1 - wrong[:, cols[0]].mean()), c)
                continue
            g = levels[min(r - 2, len(levels) - 1)]
            grids = [_grid_levels(c_conf[:, k], g) for k in range(r - 1)]
            lvl = np.column_stack([np.searchsorted(grids[k], np.where(np.isnan(c_conf[:, k]), -np.inf, c_conf[:, k]),
                                                   side="right") for k in range(r - 1)])
            combos = np.array(list(itertools.product(*[range(len(gk)) for gk in grids])), dtype=np.int64)
            for start in range(0, combos.shape[0], chunk):
                js = combos[start:start + chunk]
                active = np.ones((js.shape[0], n), dtype=bool)
                d_sum, d2_sum, cost_sum = np.zeros(js.shape[0]), np.zeros(js.shape[0]), np.zeros(js.shape[0])
                for k in range(r):
                    acc_k = active & (lvl[None, :, k] > js[:, k, None]) if k < r - 1 else active
                    f = acc_k.astype(np.float64)
                    d_sum += f @ d[:, k]
                    d2_sum += f @ d2[:, k]
                    cost_sum += f @ cum[:, k]
                    active = active & ~acc_k
                ok = np.flatnonzero(keep(d_sum, d2_sum))
                if ok.size == 0:
                    continue
                i = ok[np.argmin(cost_sum[ok])]
                if best is None or cost_sum[i] / n < best.cost:
                    th = (*tuple(float(grids[k][js[i, k]]) for k in range(r - 1)), 0.0)
                    best = GridChoice(chain, th, signal, float(1 - (d_sum[i] / n + wrong[:, -1].mean())),
                                      float(cost_sum[i] / n))
    return best


def run_split(matrix: RunMatrix, models: Sequence[str], seed: int, tuner_kwargs: dict[str, Any]
              ) -> dict[str, SplitResult]:
    """One random 50/50 split: tune every method on one half, replay them on the other."""
    rng = np.random.default_rng(10_000 + seed)
    perm = rng.permutation(matrix.n)
    half = matrix.n // 2
    tr, te = matrix.take(np.sort(perm[:half])), matrix.take(np.sort(perm[half:]))
    tr, te = tr.select(models), te.select(models)
    big = len(models) - 1
    la, lc = float(te.correct[:, big].mean()), float(te.cost[:, big].mean())
    oc = float(oracle(te.correct, te.cost)[1].mean())
    out: dict[str, SplitResult] = {}
    base = parse_config({})
    res = tune(tr, base, models=list(models), max_accuracy_drop=DROP, delta=DELTA, seed=seed, **tuner_kwargs)
    o = replay_tiers(res.tiers(base), base.confidence, te)
    out["tuner"] = SplitResult("tuner", o.accuracy, o.mean_cost, la, lc, oc,
                               f"{res.evidence['family']} {res.models} {[round(t, 3) for t in res.thresholds]}")
    target = float(tr.correct[:, big].mean()) - DROP
    signals = runtime_signals(tr.available_signals(models))
    searches = (("shared", shared_threshold_search), ("grid", grid_search),
                ("margin_grid", lambda c, ok, cost, _t, sig: margin_grid_search(c, ok, cost, DROP, sig)))
    for name, search in searches:
        best = None
        best_conf_te = None
        for sig in signals:
            conf_tr = np.column_stack([score_array(sig, tr.signals[sig][:, j]) for j in range(len(models))])
            choice = search(conf_tr, tr.correct, tr.cost, target, sig)
            if choice is not None and (best is None or choice.cost < best.cost):
                best = choice
                best_conf_te = np.column_stack([score_array(sig, te.signals[sig][:, j]) for j in range(len(models))])
        if best is None or best_conf_te is None:  # target unreachable even in-sample: always-largest
            out[name] = SplitResult(name, la, lc, la, lc, oc, "always-largest")
            continue
        acc, cost = _choice_on_test(best, best_conf_te, te)
        out[name] = SplitResult(name, acc, cost, la, lc, oc,
                                f"{best.signal} {[models[i] for i in best.chain]} "
                                f"{[round(t, 3) for t in best.thresholds]}")
    return out


def run_dataset(ds: Dataset, splits: int, tuner_kwargs: dict[str, Any], verbose: bool = False) -> BenchResult:
    t0 = time.perf_counter()
    runs = ds.load(DATA)
    matrix = build_matrix(runs, list(ds.models))
    result = BenchResult(ds, matrix.n)
    for s in track(range(splits), f"{ds.key}: splits"):
        r = run_split(matrix, ds.models, s, tuner_kwargs)
        result.splits.append(r)
        if verbose:
            print(f"  split {s:2d}: " + "; ".join(
                f"{k} drop {v.drop * 100:+.2f} sav {v.savings * 100:5.1f}% [{v.detail}]" for k, v in r.items()),
                file=sys.stderr)
    result.seconds = time.perf_counter() - t0
    return result


def table(results: Sequence[BenchResult]) -> str:
    """Markdown table of every figure, plus the target verdicts with their numbers."""
    lines = [
        "| dataset | items | method | savings vs largest | share of oracle savings | mean drop (pts) | "
        "splits with drop > 2 pts | worst drop (pts) | accuracy (largest) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    verdicts = []
    for res in results:
        sums = {m: res.summary(m) for m in METHODS}
        for m in METHODS:
            s = sums[m]
            lines.append(
                f"| {res.dataset.key} | {res.n_items} | {m} | {s['savings'] * 100:.1f}% | "
                f"{s['oracle_share'] * 100:.1f}% | {s['drop_mean'] * 100:.2f} | {s['drop_gt_2pts'] * 100:.0f}% | "
                f"{s['drop_max'] * 100:.2f} | {s['accuracy']:.4f} ({s['largest_accuracy']:.4f}) |"
            )
        t = sums["tuner"]
        checks = [
            ("mean drop <= 1 pt", t["drop_mean"] <= 0.01, f"{t['drop_mean'] * 100:.2f} pts"),
            ("drop > 2 pts in <= 10% of splits", t["drop_gt_2pts"] <= 0.10, f"{t['drop_gt_2pts'] * 100:.0f}%"),
        ]
        mg = sums["margin_grid"]
        checks.append(("savings >= margin grid's", t["savings"] >= mg["savings"] - 1e-9,
                       f"{t['savings'] * 100:.1f}% vs margin grid {mg['savings'] * 100:.1f}%"))
        verdicts.append(f"* **{res.dataset.key}**: " + "; ".join(
            f"{name}: {'MET' if ok else 'NOT MET'} ({why})" for name, ok, why in checks))
    return "\n".join(lines) + "\n\n" + "\n".join(verdicts) + "\n"


def main(keys: Sequence[str] | None = None, argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--datasets", default=",".join(keys or datasets()), help="comma-separated dataset keys")
    parser.add_argument("--splits", type=int, default=20)
    parser.add_argument("--markdown", help="also write the table to this file")
    parser.add_argument("--json", help="write per-split figures to this JSON file")
    parser.add_argument("--verbose", action="store_true", help="print each split's choices")
    parser.add_argument("--tuner", default="{}", help="extra tune() keywords as JSON, e.g. "
                                                     "'{\"select_fraction\": 0.3}'")
    args = parser.parse_args(argv)
    if not DATA.is_dir():
        print(f"SKIPPED: the shared data folder {DATA} is absent; these benchmarks need the real recorded runs.")
        return 0
    all_sets = datasets()
    chosen = [k.strip() for k in args.datasets.split(",") if k.strip()]
    unknown = [k for k in chosen if k not in all_sets]
    if unknown:
        parser.error(f"unknown dataset(s) {unknown}; choose from {', '.join(all_sets)}")
    kwargs = json.loads(args.tuner)
    from langchain_confidence_router.evaluation.converters import PRICES

    results = []
    for key in chosen:
        ds = all_sets[key]
        print(f"## {ds.title}")
        print("prices (USD per 1M tokens, input/output): " + "; ".join(
            f"{m} {PRICES[m].input_per_m:g}/{PRICES[m].output_per_m:g}" for m in ds.models))
        res = run_dataset(ds, args.splits, kwargs, args.verbose)
        results.append(res)
        print(f"{res.n_items} items, {args.splits} splits, {res.seconds:.0f} s")
    text = table(results)
    print(text)
    if args.markdown:
        Path(args.markdown).write_text(text, encoding="utf-8")
    if args.json:
        payload = {r.dataset.key: [{m: vars(s[m]) for m in METHODS} for s in r.splits] for r in results}
        Path(args.json).write_text(json.dumps(payload, indent=1), encoding="utf-8")
    return 0

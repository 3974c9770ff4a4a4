"""Plots and a small HTML page showing how a configuration behaves on recorded runs.

* ``reliability_<model>.png`` -- reliability diagram per model: the tier's 0..1 score before
  calibration and its calibrated probability after (the configured calibration, else Platt
  cross-fitted on these runs), equal-mass bins.
* ``signals_<model>.png`` -- histograms of the tier's signal (raw units) for right and wrong
  answers, with the threshold mapped back into those units (a combiner shows its probability).
* ``tradeoff.png`` -- accuracy against mean cost and against the share escalated past the first
  tier: the cascade's deferral curve (every tier's threshold swept through its quantiles), random
  routing at the same escalation rates, each single model, the oracle and the configured cascade.
* ``index.html`` -- the figures and the table of :func:`evaluate_config`.

matplotlib is imported lazily (the ``report`` extra) with the non-interactive Agg backend.
"""

from __future__ import annotations

import html
import math
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..core.config import RouterConfig
from ..core.errors import ConfidenceRouterError
from ..core.tiers import Tier, build_tiers
from .baselines import random_routing
from .calibrate import score_array
from .evaluate import _cross_fitted_platt, baseline_models, confidence_columns, evaluate_config
from .matrix import RunMatrix, build_matrix
from .metrics import DEFAULT_BINS, binning_label, reliability_bins
from .replay import replay_arrays
from .runs import RecordedRuns

__all__ = ["ReportError", "deferral_curve", "raw_threshold", "write_report"]


_LOGPROB_VALUED = frozenset({"avg_logprob", "min_logprob", "bottom_percent", "lowest_group", "tail"})


class ReportError(ConfidenceRouterError):
    """The report cannot be drawn (matplotlib missing, nothing to plot)."""


def _pyplot() -> Any:
    try:
        import matplotlib
    except ImportError:  # pragma: no cover - depends on the environment
        raise ReportError("the report needs matplotlib: pip install 'langchain-confidence-router[report]'") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name)


def deferral_curve(conf: np.ndarray, correct: np.ndarray, cost: np.ndarray, points: int = 41
                   ) -> dict[str, np.ndarray]:
    """Sweep every non-final tier's threshold through the same quantile level of its confidence.

    Returns arrays over the sweep: accuracy, mean cost, share escalated past the first tier, and the
    expected accuracy/cost of random routing at the same per-tier escalation rates.
    """
    n_tiers = conf.shape[1]
    acc, cst, esc, r_acc, r_cost = [], [], [], [], []
    for level in np.linspace(0.0, 1.0, points):
        th = []
        for k in range(n_tiers - 1):
            col = conf[:, k][np.isfinite(conf[:, k])]
            th.append(float(np.quantile(col, level)) if col.size else np.inf)
            if level >= 1.0:
                th[-1] = np.inf
        out = replay_arrays(conf, [*th, 0.0], correct, cost)
        acc.append(out.accuracy)
        cst.append(out.mean_cost)
        esc.append(float(np.mean(out.calls > 1)))
        rates = [float(np.mean(out.calls[out.calls > k] > k + 1)) if np.any(out.calls > k) else 1.0
                 for k in range(n_tiers - 1)]
        ra, rc = random_routing(rates, correct, cost)
        r_acc.append(ra)
        r_cost.append(rc)
    return {k: np.asarray(v) for k, v in
            {"accuracy": acc, "cost": cst, "escalated": esc, "random_accuracy": r_acc, "random_cost": r_cost}.items()}


def _raw_from_score(signal: str, s: float) -> float:
    """Inverse of the 0..1 score map for one signal (where it is invertible)."""
    s = min(max(s, 1e-12), 1 - 1e-12)
    if signal == "avg_logprob":
        return 3.0 * s - 3.0
    if signal == "margin":
        return -3.0 * math.log(1.0 - s)
    if signal in ("min_logprob", "bottom_percent", "lowest_group", "tail"):
        return math.log(s)
    if signal == "entropy":
        return 1.0 - s
    return s


def raw_threshold(tier: Tier) -> float | None:
    """The tier's threshold in raw-signal units (None for a combiner or when it cannot be inverted)."""
    tau = tier.threshold
    cal = tier.calibration
    if cal is None:
        return _raw_from_score(tier.method, tau)
    if cal.method == "platt":
        a, b = float(cal.params["a"]), float(cal.params["b"])
        t = min(max(tau, 1e-12), 1 - 1e-12)
        return None if a == 0 else (math.log(t / (1 - t)) - b) / a
    if cal.method == "temperature":
        t = min(max(tau, 1e-12), 1 - 1e-12)
        s = 1.0 / (1.0 + math.exp(-float(cal.params["temperature"]) * math.log(t / (1 - t))))
        return _raw_from_score(str(cal.signal), s)
    if cal.method == "isotonic":
        xs, ys = list(cal.params["x"]), list(cal.params["y"])
        hits = [x for x, y in zip(xs, ys, strict=True) if y >= tau]
        return min(hits) if hits and ys[-1] >= ys[0] else (max(hits) if hits else None)
    return None


def _reliability(plt: Any, path: Path, model: str, before: np.ndarray | None, after: np.ndarray | None,
                 y: np.ndarray, label_after: str) -> None:
    fig, ax = plt.subplots(figsize=(4.6, 4.2), dpi=110)
    ax.plot([0, 1], [0, 1], color="0.6", lw=1, ls="--", label="perfect calibration")
    for probs, label, marker in ((before, "before (0..1 score)", "o"), (after, label_after, "s")):
        if probs is None or np.all(np.isnan(probs)):
            continue
        bins = reliability_bins(probs, y, DEFAULT_BINS, binning="equal_mass")
        ax.plot(bins.confidence, bins.accuracy, marker=marker, ms=4, lw=1.2, label=f"{label}, ECE {bins.ece:.3f}")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("predicted probability of a correct answer")
    ax.set_ylabel("observed accuracy")
    ax.set_title(f"Reliability: {model}", fontsize=10)
    ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _histogram(plt: Any, path: Path, model: str, values: np.ndarray, y: np.ndarray, threshold: float | None,
               what: str) -> None:
    fig, ax = plt.subplots(figsize=(5.2, 3.6), dpi=110)
    ok = np.isfinite(values)
    edges = np.linspace(float(np.min(values[ok])), float(np.max(values[ok])), 31) if ok.any() else np.linspace(0, 1, 31)
    if edges[0] == edges[-1]:
        edges = np.linspace(edges[0] - 0.5, edges[0] + 0.5, 31)
    ax.hist(values[ok & y], bins=edges, alpha=0.6, color="tab:green", label=f"right ({int((ok & y).sum())})")
    ax.hist(values[ok & ~y], bins=edges, alpha=0.6, color="tab:red", label=f"wrong ({int((ok & ~y).sum())})")
    if threshold is not None and np.isfinite(threshold):
        ax.axvline(threshold, color="k", lw=1.2, ls="--", label=f"threshold {threshold:.3g}")
    ax.set_xlabel(what)
    ax.set_ylabel("answers")
    ax.set_title(f"Confidence of right and wrong answers: {model}", fontsize=10)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _tradeoff(plt: Any, path: Path, curve: dict[str, np.ndarray] | None, report: dict[str, Any],
              singles: list[tuple[str, float, float]]) -> None:
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10.5, 4.2), dpi=110)
    if curve is not None:
        ax1.plot(curve["cost"], curve["accuracy"], color="tab:blue", lw=1.5, label="cascade, thresholds swept")
        ax1.plot(curve["random_cost"], curve["random_accuracy"], color="tab:orange", lw=1.2, ls="--",
                 label="random routing, same escalation")
        ax2.plot(curve["escalated"], curve["accuracy"], color="tab:blue", lw=1.5, label="cascade (confidence)")
        ax2.plot(curve["escalated"], curve["random_accuracy"], color="tab:orange", lw=1.2, ls="--",
                 label="random routing")
    for name, acc, cost in singles:
        ax1.scatter([cost], [acc], color="0.3", s=18, zorder=3)
        ax1.annotate(name, (cost, acc), fontsize=6, xytext=(3, -8), textcoords="offset points")
    ax1.scatter([report["oracle_cost"]], [report["oracle_accuracy"]], marker="^", color="tab:green", s=40,
                zorder=4, label="oracle (cheapest correct model)")
    ax1.scatter([report["cost"]], [report["accuracy"]], marker="*", color="tab:red", s=120, zorder=5,
                label=f"configured cascade (savings {100 * (report['savings'] or 0):.1f}%)")
    ax2.scatter([report["escalation_rate"]], [report["accuracy"]], marker="*", color="tab:red", s=120, zorder=5,
                label="configured cascade")
    ax2.axhline(report["largest_accuracy"], color="0.5", lw=1, ls=":", label=f"always {report['largest_model']}")
    ax1.set_xlabel("mean cost per request (USD)")
    ax1.set_ylabel("accuracy")
    ax1.set_title("Cost and accuracy", fontsize=10)
    ax2.set_xlabel("share of requests escalated past the first tier (deferral rate)")
    ax2.set_ylabel("accuracy")
    ax2.set_title("Deferral curve", fontsize=10)
    ax1.legend(fontsize=7, loc="lower right")
    ax2.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _table_html(report: dict[str, Any]) -> str:
    def pct(x: float | None) -> str:
        return "n/a" if x is None else f"{100 * x:.1f}%"

    rows = "".join(
        f"<tr><td>{html.escape(name)}</td><td>{row['accuracy']:.4f}</td><td>{row['cost']:.4g}</td>"
        f"<td>{pct(row['savings'])}</td><td>{pct(row['oracle_savings_captured'])}</td></tr>"
        for name, row in report["baselines"].items())
    tiers = "".join(
        f"<li>{html.escape(m)}: answered {pct(report['served_share'][m])}"
        + (f", escalated {pct(report['escalation_rate_per_tier'][m])} of what it saw"
           if m in report["escalation_rate_per_tier"] else "") + "</li>"
        for m in report["models"])
    return (
        "<table><tr><th>policy</th><th>accuracy</th><th>mean cost (USD)</th><th>savings vs largest</th>"
        f"<th>share of oracle savings</th></tr>{rows}</table>"
        f"<p>{report['n']} items. Accuracy drop versus {html.escape(report['largest_model'])}: "
        f"{100 * report['accuracy_drop']:+.2f} points; escalation rate {pct(report['escalation_rate'])}.</p>"
        f"<ul>{tiers}</ul>"
    )


def write_report(config: RouterConfig, runs: RecordedRuns | RunMatrix, out_dir: str | Path, *,
                 candidates: Sequence[str] | None = None, title: str | None = None) -> list[Path]:
    """Write the PNGs and ``index.html`` into ``out_dir``; returns the files written."""
    plt = _pyplot()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tiers, _ = build_tiers(config)
    ladder = list(candidates) if candidates else baseline_models(config, runs.models, tiers)
    involved = ladder + [t.name for t in tiers if t.name not in ladder]
    matrix = runs.select(involved) if isinstance(runs, RunMatrix) else build_matrix(runs, involved, config)
    report = evaluate_config(config, matrix, candidates=ladder)
    files: list[Path] = []
    conf = confidence_columns(tiers, matrix)
    for k, tier in enumerate(tiers):
        y = matrix.correct[:, matrix.index(tier.name)]
        raw = matrix.raw(tier.name)
        signal = tier.calibration.signal if tier.calibration is not None and tier.calibration.signal else tier.method
        before = score_array(signal, raw[signal]) if signal in raw else None
        if tier.calibration is not None:
            after, label = conf[:, k], f"after ({tier.calibration.method}, from the configuration)"
        elif signal in raw:
            after, label = _cross_fitted_platt(raw[signal], y.astype(float)), "after (Platt, cross-fitted here)"
        else:
            after, label = None, ""
        path = out / f"reliability_{_safe(tier.name)}.png"
        _reliability(plt, path, tier.name, before, after, y, label)
        files.append(path)
        path = out / f"signals_{_safe(tier.name)}.png"
        final = k == len(tiers) - 1
        if (tier.calibration is not None and tier.calibration.method == "combiner") or signal not in raw:
            values, what, th = conf[:, k], "calibrated confidence (combiner)", None if final else tier.threshold
        else:
            values, what, th = raw[signal], f"{signal} (raw value)", None if final else raw_threshold(tier)
            if signal in _LOGPROB_VALUED and np.nanmax(values) <= 0:  # mass piles up just below 0: log scale
                values = np.log10(np.maximum(-values, 1e-8))
                th = None if th is None else math.log10(max(-th, 1e-8))
                what = f"log10(-{signal})  (left = more confident)"
        _histogram(plt, path, tier.name, values, y, th, what)
        files.append(path)
    sub = matrix.select([t.name for t in tiers])
    curve = deferral_curve(conf, sub.correct, sub.cost) if len(tiers) > 1 else None
    lad = matrix.select(ladder)
    singles = [(m, float(lad.correct[:, j].mean()), float(lad.cost[:, j].mean())) for j, m in enumerate(ladder)]
    path = out / "tradeoff.png"
    _tradeoff(plt, path, curve, report, singles)
    files.append(path)
    heading = html.escape(title or f"Confidence router report: {' -> '.join(report['models'])}")
    images = "".join(f'<figure><img src="{f.name}" alt="{html.escape(f.stem)}"></figure>' for f in files)
    page = (
        "<!doctype html><html><head><meta charset='utf-8'><title>" + heading + "</title><style>"
        "body{font-family:sans-serif;max-width:1100px;margin:2em auto}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}figure{display:inline-block;margin:6px}"
        "img{max-width:100%}</style></head><body>"
        f"<h1>{heading}</h1>{_table_html(report)}{images}"
        f"<p>ECE binning: {binning_label('equal_mass', DEFAULT_BINS)}. Costs are per request in USD.</p>"
        "</body></html>\n"
    )
    index = out / "index.html"
    index.write_text(page, encoding="utf-8")
    files.append(index)
    return files

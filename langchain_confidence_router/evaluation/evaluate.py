"""Judge a configuration on held-out recorded runs, side by side with the reference points.

:func:`evaluate_config` replays the configured cascade (the same decisions as the live policy) and
reports, on the same items: always-smallest, always-largest, the cascade, random routing at the
cascade's own per-tier escalation rates, and the oracle (cheapest correct model); plus, per model
and signal, AUROC and ECE before and after calibration.

Which models are "smallest", "largest" and the oracle's choices: the tuned file's
``evidence.candidates`` when the runs have them (a tuned sub-chain is then still compared with
the full ladder it was chosen from), else the configured chain.

JSON keys (``confidence-router evaluate --json``), all figures per request, costs in USD:

==========================  ===============================================================
key                         meaning
==========================  ===============================================================
n                           items evaluated (answered by every model involved)
models                      the cascade's tiers in escalation order
candidates                  the ladder the baselines use (smallest first, largest last)
accuracy, cost              the cascade's accuracy and mean cost
largest_model               the last candidate
largest_accuracy/_cost      always the largest model
smallest_accuracy/_cost     always the smallest model
oracle_accuracy/_cost       cheapest correct model per item (cheapest model if none is right)
random_accuracy/_cost       random routing at the cascade's per-tier escalation rates (expected)
savings                     1 - cost / largest_cost
oracle_savings              1 - oracle_cost / largest_cost
oracle_savings_captured     (largest_cost - cost) / (largest_cost - oracle_cost)
accuracy_drop               largest_accuracy - accuracy
escalation_rate             share of requests that called more than one tier
escalation_rate_per_tier    per non-final tier: share of the requests it saw that it escalated
served_share                per tier: share of requests it answered
fallback_rate               share answered by final_fallback (no tier was confident)
failed                      requests that ended without an answer
calls_per_request           mean number of tiers called
baselines                   {name: {accuracy, cost, savings, oracle_savings_captured}}
signals                     {model: {signal: {n, auroc, ece_before, ece_after, brier_after}}}
                            (ece_before: the signal's 0..1 score as a probability; ece_after:
                            Platt, 2-fold cross-fitted on these items)
calibration                 {model: {method, inputs, auroc, ece_before, ece_after, brier}} for
                            tiers whose configuration has a calibration file (applied as is)
ece_binning                 how ECE bins ("equal-mass, 15 bins")
early_abort                 null unless a non-final tier has ``early_abort`` (and the runs carry
                            token logprobs): the same configuration with and without the rule.
                            aborted_share, accuracy_without, accuracy_change, cost_without,
                            output_tokens(_without), output_tokens_saved (per request),
                            latency_ms(_without) and latency_saved_share (estimated: recorded
                            latency_ms / tokens_out per token), escalated_p50_latency_ms
                            (_without) over the requests that escalate without the rule, and
                            per_tier {aborted_share, mean_abort_token, wrongly_aborted (answers
                            the tier would have served)}
==========================  ===============================================================
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ..core.config import RouterConfig
from ..core.signals import LOWER_IS_CONFIDENT
from ..core.tiers import Tier, build_tiers
from .baselines import oracle, random_routing
from .calibrate import fit_platt, predict_array, score_array
from .early_abort import abort_savings, abort_table, has_rules
from .matrix import RunMatrix, build_matrix
from .metrics import DEFAULT_BINS, auroc, binning_label, brier, ece
from .replay import ReplayOutcome, replay_tiers, tier_confidence
from .runs import RecordedRuns

__all__ = ["EVALUATE_KEYS", "baseline_models", "evaluate_config", "signal_table"]

EVALUATE_KEYS = (
    "n", "models", "candidates", "accuracy", "cost", "largest_model", "largest_accuracy", "largest_cost",
    "smallest_model", "smallest_accuracy", "smallest_cost", "oracle_accuracy", "oracle_cost", "random_accuracy",
    "random_cost", "savings", "oracle_savings", "oracle_savings_captured", "accuracy_drop", "escalation_rate",
    "escalation_rate_per_tier", "served_share", "fallback_rate", "failed", "calls_per_request", "baselines",
    "signals", "calibration", "ece_binning", "early_abort",
)


def baseline_models(config: RouterConfig, recorded: Sequence[str], tiers: Sequence[Tier]) -> list[str]:
    """The ladder for baselines: evidence.candidates if all were recorded, else the chain itself."""
    chain = [t.name for t in tiers]
    evidence = config.evidence or {}
    candidates = [str(m) for m in evidence.get("candidates") or []]
    if candidates and all(m in recorded for m in candidates):
        return candidates + [m for m in chain if m not in candidates]
    return chain


def _f(x: float) -> float | None:
    return None if x is None or not np.isfinite(x) else float(x)


def _cross_fitted_platt(raw: np.ndarray, y: np.ndarray, seed: int = 0) -> np.ndarray:
    """Platt probabilities where each half is predicted by a map fitted on the other half."""
    out = np.full(raw.shape, np.nan)
    ok = np.flatnonzero(~np.isnan(raw))
    if ok.size < 20 or len(np.unique(y[ok])) < 2:
        return out
    perm = np.random.default_rng(seed).permutation(ok)
    halves = (perm[: perm.size // 2], perm[perm.size // 2:])
    for fit, pred in (halves, halves[::-1]):
        if len(np.unique(y[fit])) < 2:
            return np.full(raw.shape, np.nan)
        a, b = fit_platt(raw[fit], y[fit])
        x = np.where(raw[pred] == -np.inf, -1e6, raw[pred])
        out[pred] = 1.0 / (1.0 + np.exp(-(a * x + b)))
    return out


def signal_table(matrix: RunMatrix, models: Sequence[str]) -> dict[str, dict[str, dict[str, Any]]]:
    """Per model and recorded signal: n, AUROC (oriented so higher means more confident), ECE of the 0..1
    score, ECE/Brier after cross-fitted Platt."""
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for model in models:
        y = matrix.correct[:, matrix.index(model)]
        raw = matrix.raw(model)
        rows: dict[str, dict[str, Any]] = {}
        for name, values in raw.items():
            have = ~np.isnan(values)
            if not have.any():
                continue
            after = _cross_fitted_platt(values, y.astype(float))
            oriented = -values if name in LOWER_IS_CONFIDENT else values
            rows[name] = {
                "n": int(have.sum()),
                "auroc": _f(auroc(oriented, y)),
                "ece_before": _f(ece(score_array(name, values), y)),
                "ece_after": _f(ece(after, y)),
                "brier_after": _f(brier(after, y)),
            }
        out[model] = rows
    return out


def _calibration_table(tiers: Sequence[Tier], matrix: RunMatrix) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for tier in tiers:
        cal = tier.calibration
        if cal is None:
            continue
        raw = matrix.raw(tier.name)
        y = matrix.correct[:, matrix.index(tier.name)]
        prob = predict_array(cal, {s: raw[s] for s in cal.inputs if s in raw}) if all(
            s in raw for s in cal.inputs) or cal.method == "combiner" else np.full(matrix.n, np.nan)
        before_signal = cal.signal if cal.method != "combiner" else tier.method
        before = score_array(str(before_signal), raw[str(before_signal)]) if before_signal in raw else None
        out[tier.name] = {
            "method": cal.method,
            "inputs": list(cal.inputs),
            "id": cal.id,
            "auroc": _f(auroc(prob, y)),
            "ece_before": _f(ece(before, y)) if before is not None else None,
            "ece_after": _f(ece(prob, y)),
            "brier": _f(brier(prob, y)),
        }
    return out


def _rates(outcome: ReplayOutcome, n_tiers: int) -> tuple[list[float], list[float]]:
    escalation, served = [], []
    for k in range(n_tiers):
        reached = outcome.calls > k
        served.append(float(np.mean(outcome.served == k)) if outcome.served.size else 0.0)
        if k < n_tiers - 1:
            escalation.append(float(np.mean(outcome.calls[reached] > k + 1)) if reached.any() else 0.0)
    return escalation, served


def evaluate_config(config: RouterConfig, runs: RecordedRuns | RunMatrix, *, candidates: Sequence[str] | None = None,
                    progress: bool | None = None) -> dict[str, Any]:
    """Replay ``config`` on ``runs`` and compute every figure of the module table (a JSON-ready dict)."""
    tiers, _ = build_tiers(config)
    settings = config.confidence
    recorded = runs.models
    ladder = list(candidates) if candidates else baseline_models(config, recorded, tiers)
    involved = ladder + [t.name for t in tiers if t.name not in ladder]
    matrix = runs.select(involved) if isinstance(runs, RunMatrix) else build_matrix(runs, involved, config,
                                                                                     progress=progress)
    aborts = abort_table(tiers, settings, runs, matrix) if has_rules(tiers) and isinstance(runs, RecordedRuns) \
        else None
    outcome = replay_tiers(tiers, settings, matrix, aborts)
    chain = [t.name for t in tiers]
    lad = matrix.select(ladder)
    small, big = ladder[0], ladder[-1]
    acc_col = lad.correct.mean(axis=0)
    cost_col = lad.cost.mean(axis=0)
    o_ok, o_cost = oracle(matrix.correct, matrix.cost)
    escalation, served = _rates(outcome, len(tiers))
    ch = matrix.select(chain)
    r_acc, r_cost = random_routing(escalation, ch.correct, ch.cost)
    largest_cost = float(cost_col[-1])
    oracle_cost = float(o_cost.mean())
    gap = largest_cost - oracle_cost

    def summary(acc: float, cost: float) -> dict[str, float | None]:
        return {"accuracy": _f(acc), "cost": _f(cost), "savings": _f(1 - cost / largest_cost) if largest_cost else None,
                "oracle_savings_captured": _f((largest_cost - cost) / gap) if gap > 0 else None}

    report: dict[str, Any] = {
        "n": matrix.n,
        "models": chain,
        "candidates": ladder,
        "accuracy": outcome.accuracy,
        "cost": outcome.mean_cost,
        "largest_model": big,
        "largest_accuracy": float(acc_col[-1]),
        "largest_cost": largest_cost,
        "smallest_model": small,
        "smallest_accuracy": float(acc_col[0]),
        "smallest_cost": float(cost_col[0]),
        "oracle_accuracy": float(o_ok.mean()),
        "oracle_cost": oracle_cost,
        "random_accuracy": r_acc,
        "random_cost": r_cost,
        "savings": _f(1.0 - outcome.mean_cost / largest_cost) if largest_cost else None,
        "oracle_savings": _f(1.0 - oracle_cost / largest_cost) if largest_cost else None,
        "oracle_savings_captured": _f((largest_cost - outcome.mean_cost) / gap) if gap > 0 else None,
        "accuracy_drop": float(acc_col[-1]) - outcome.accuracy,
        "escalation_rate": float(np.mean(outcome.calls > 1)),
        "escalation_rate_per_tier": {t.name: r for t, r in zip(tiers[:-1], escalation, strict=True)},
        "served_share": {t.name: s for t, s in zip(tiers, served, strict=True)},
        "fallback_rate": float(np.mean(~outcome.accepted & ~outcome.failed)),
        "failed": int(outcome.failed.sum()),
        "calls_per_request": float(outcome.calls.mean()),
        "baselines": {
            "always_smallest": summary(float(acc_col[0]), float(cost_col[0])),
            "always_largest": summary(float(acc_col[-1]), largest_cost),
            "cascade": summary(outcome.accuracy, outcome.mean_cost),
            "random_routing": summary(r_acc, r_cost),
            "oracle": summary(float(o_ok.mean()), oracle_cost),
        },
        "signals": signal_table(matrix, involved),
        "calibration": _calibration_table(tiers, matrix),
        "ece_binning": binning_label("equal_mass", DEFAULT_BINS),
        "early_abort": None if aborts is None else abort_savings(tiers, outcome,
                                                                 replay_tiers(tiers, settings, matrix), aborts),
    }
    return report


def confidence_columns(tiers: Sequence[Tier], matrix: RunMatrix) -> np.ndarray:
    """``(n, n_tiers)`` confidences the policy would compare with each tier's threshold."""
    sub = matrix.select([t.name for t in tiers])
    return np.column_stack([tier_confidence(t, sub.raw(t.name), sub.n) for t in tiers])

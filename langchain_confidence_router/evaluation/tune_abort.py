"""Fit the early-abort rules of a configuration on recorded runs, with a guarantee on the accuracy they cost.

The configuration's chain and thresholds stay as they are; only ``early_abort`` on its gated tiers is
chosen. The guarantee is the tuner's: with probability at least ``1 - delta`` over the certification
items, the accuracy drop of the configuration *with* the rules versus the same configuration *without*
them is at most ``max_accuracy_drop`` (the paired test of :mod:`.bounds`: per item
D = 1{wrong with abort} - 1{wrong without}).

How (Learn-then-Test with fixed-sequence testing, as ``tune``'s split mode):

1. Items are split at random: a *select* part and a *certify* part.
2. Every gated tier gets the same shape of rule: ``after_tokens = a`` and ``below = s * threshold``.
   On the select part, ``a`` is chosen (from ``after_tokens`` candidates) as the one saving the most
   estimated latency (output tokens when no latency was recorded) at the largest scale ``s`` whose
   observed drop there is within the bound.
3. On the certify part, scales are tested in increasing order (most conservative first) and the last
   one whose p-value is at most ``delta`` before the first failure is kept: fixed-sequence testing needs
   no multiplicity correction because the order was fixed before looking at these items.

The running confidence of every recorded prefix is computed once per tier and item by the router's own
:class:`~langchain_confidence_router.core.abort.AbortTracker` (``check_every: 1``, one token per chunk);
where a rule fires is then a lookup, and the chosen rules are replayed once more through the exact
:func:`.early_abort.abort_table` for the reported figures.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from ..core.abort import guarantee
from ..core.config import EarlyAbort, RouterConfig, load_config
from ..core.errors import ConfigError
from ..core.policy import CascadePolicy, TierCall
from ..core.tiers import Tier, build_tiers
from .bounds import paired_drop_pvalue
from .early_abort import AbortTable, abort_savings, abort_table, aborted_cost, request_totals
from .matrix import RunMatrix, build_matrix
from .replay import ReplayOutcome, replay_tiers
from .runs import RecordedRuns

__all__ = ["AbortTuneResult", "running_confidences", "tune_abort", "write_abort_config"]

DEFAULT_AFTER = (2, 4, 8, 16, 32)
DEFAULT_SCALES = tuple(float(s) for s in np.round(np.linspace(0.05, 1.0, 20), 2))


@dataclass
class AbortTuneResult:
    """The chosen rules by tier name (empty: none could be certified) and the evidence."""

    rules: dict[str, EarlyAbort]
    evidence: dict[str, Any] = field(default_factory=dict)


def running_confidences(policy: CascadePolicy, tier: Tier, entries: Sequence[Any]) -> np.ndarray:
    """The router's running confidence after each token of a recorded answer (NaN: not judged yet), from a
    tracker the policy builds for a rule that never fires (bound 0)."""
    probe = replace(tier, spec=tier.spec.model_copy(update={"early_abort": EarlyAbort(after_tokens=1, below=0.0)}))
    tracker = policy.abort_tracker(TierCall(probe, 0, False, None, 0, "tune"))
    assert tracker is not None, f"{tier.name} cannot be gated"
    out = np.full(len(entries), np.nan)
    for n, entry in enumerate(entries):
        tracker.feed([entry.model_dump() if hasattr(entry, "model_dump") else entry])
        if tracker.confidence is not None:
            out[n] = tracker.confidence
    return out


def _first_below(traj: np.ndarray, after: int, bound: float) -> int:
    """The token (1-based) where a rule (after, bound) fires on a trajectory; 0 when it never does."""
    if traj.size < after:
        return 0
    with np.errstate(invalid="ignore"):
        hits = np.flatnonzero(traj[after - 1:] < bound)
    return int(hits[0]) + after if hits.size else 0


def _table(base: AbortTable, trajs: dict[int, list[np.ndarray]], tiers: Sequence[Tier], after: int,
           scale: float, rows: np.ndarray, matrix: RunMatrix) -> AbortTable:
    """An abort table for rules (after, scale * threshold) on every gated tier, for ``rows`` only."""
    at = np.zeros((rows.size, len(tiers)), dtype=np.int64)
    cost = base.cost[rows].copy()
    for k, per_item in trajs.items():
        tier = tiers[k]
        bound = min(scale * tier.threshold, tier.threshold)
        j = matrix.index(tier.name)
        for r, i in enumerate(rows):
            fired = _first_below(per_item[i], after, bound)
            if fired:
                at[r, k] = fired
                cost[r, k] = aborted_cost(tier, base.tokens_in[i, k], fired, float(matrix.cost[i, j]),
                                          base.tokens_out[i, k])
    return AbortTable(at, base.tokens_out[rows], base.latency_ms[rows], cost, base.tokens_in[rows])


def _stats(tiers: Sequence[Tier], settings: Any, sub: RunMatrix, table: AbortTable, without: ReplayOutcome
           ) -> tuple[int, int, float]:
    """(cases the rule made wrong, cases it made right, mean saving) on these rows."""
    with_abort = replay_tiers(tiers, settings, sub, table)
    worse = int((~with_abort.correct & without.correct).sum())
    better = int((with_abort.correct & ~without.correct).sum())
    t1, l1 = request_totals(with_abort.calls, table, with_abort.aborted)
    t0, l0 = request_totals(without.calls, table, np.zeros_like(table.aborted))
    have_latency = bool(np.isfinite(table.latency_ms).any())
    saving = float((l0 - l1).mean()) if have_latency else float((t0 - t1).mean())
    return worse, better, saving


def tune_abort(config: RouterConfig, runs: RecordedRuns, *, max_accuracy_drop: float, delta: float = 0.05,
               after_tokens: Sequence[int] = DEFAULT_AFTER, scales: Sequence[float] = DEFAULT_SCALES,
               select_fraction: float = 0.3, seed: int = 0) -> AbortTuneResult:
    """Choose and certify early-abort rules for ``config``'s gated tiers (see the module docstring)."""
    if not 0.0 <= max_accuracy_drop < 1.0:
        raise ConfigError(f"--max-accuracy-drop must be within [0, 1) (got {max_accuracy_drop!r})")
    if not 0.0 < delta < 1.0:
        raise ConfigError(f"--delta must be within (0, 1) (got {delta!r})")
    tiers, _ = build_tiers(config.model_copy(update={"models": [
        m.model_copy(update={"early_abort": None}) for m in config.models]}))
    settings = config.confidence
    gated = [k for k, t in enumerate(tiers[:-1]) if t.method in _logprob_methods()]
    if not gated:
        raise ConfigError("tune-abort: no tier before the last one uses a logprob signal; nothing to abort")
    matrix = build_matrix(runs, [t.name for t in tiers], config)
    base = abort_table(tiers, settings, runs, matrix)  # no rules: the recorded totals
    policy = CascadePolicy(list(tiers), settings)
    trajs: dict[int, list[np.ndarray]] = {}
    for k in gated:
        per_item = []
        for item in matrix.item_ids:
            record = runs.get(item, tiers[k].name)
            entries = record.logprobs if record is not None and record.logprobs else []
            per_item.append(running_confidences(policy, tiers[k], entries))
        trajs[k] = per_item

    rng = np.random.default_rng(seed)
    perm = rng.permutation(matrix.n)
    n_select = max(1, round(select_fraction * matrix.n))
    select, certify = np.sort(perm[:n_select]), np.sort(perm[n_select:])
    scales = sorted(float(s) for s in scales)

    # 1. select `after` on the select part: the most saving within the bound there
    sel = matrix.take(select)
    sel_without = replay_tiers(tiers, settings, sel)
    best: tuple[float, int] | None = None
    for after in sorted({int(a) for a in after_tokens}):
        for scale in reversed(scales):
            worse, better, saving = _stats(tiers, settings, sel, _table(base, trajs, tiers, after, scale, select,
                                                                          matrix), sel_without)
            if worse - better <= max_accuracy_drop * sel.n:
                if saving > 0 and (best is None or saving > best[0]):
                    best = (saving, after)
                break

    # 2. fixed-sequence test of the scales on the certify part
    path: list[dict[str, Any]] = []
    chosen: float | None = None
    after = best[1] if best is not None else 0
    if best is not None:
        cert = matrix.take(certify)
        cert_without = replay_tiers(tiers, settings, cert)
        for scale in scales:
            table = _table(base, trajs, tiers, after, scale, certify, matrix)
            worse, better, saving = _stats(tiers, settings, cert, table, cert_without)
            p = paired_drop_pvalue(cert.n, worse, better, max_accuracy_drop, level=delta)
            path.append({"scale": scale, "n_worse": worse, "n_better": better, "saving": round(saving, 6),
                         "p_value": float(p)})
            if p > delta:
                break
            chosen = scale

    rules: dict[str, EarlyAbort] = {}
    if chosen is not None:
        for k in gated:
            rules[tiers[k].name] = EarlyAbort(after_tokens=after, below=min(chosen * tiers[k].threshold,
                                                                             tiers[k].threshold))
    evidence: dict[str, Any] = {
        "method": "split + fixed-sequence testing of below = scale * threshold (most conservative first), paired "
                  "test of the accuracy drop versus the same configuration without early abort",
        "guarantee": (f"with probability >= {1 - delta:g}: accuracy drop versus no early abort <= "
                      f"{max_accuracy_drop:g}") if rules else "none: no rule could be certified",
        "max_accuracy_drop": max_accuracy_drop, "delta": delta, "n": matrix.n, "n_select": int(select.size),
        "n_certify": int(certify.size), "after_tokens": after or None, "scale": chosen, "seed": seed, "path": path,
        "conservative": {tiers[k].name: guarantee(tiers[k].method, tiers[k].token_filter,
                                                  tiers[k].calibration).why for k in gated},
    }
    if best is None:
        evidence["note"] = "no rule saved anything within the bound on the select items"
    if rules:
        tuned = config.model_copy(update={"models": [
            m.model_copy(update={"early_abort": rules.get(m.name)}) for m in config.models]})
        tuned_tiers, _ = build_tiers(tuned)
        table = abort_table(tuned_tiers, settings, runs, matrix)
        outcome = replay_tiers(tuned_tiers, settings, matrix, table)
        evidence["expected"] = abort_savings(tuned_tiers, outcome, replay_tiers(tuned_tiers, settings, matrix),
                                             table)
    return AbortTuneResult(rules, evidence)


def _logprob_methods() -> frozenset[str]:
    from ..core.signals import LOGPROB_SIGNALS

    return frozenset(LOGPROB_SIGNALS)


def write_abort_config(result: AbortTuneResult, config: RouterConfig, out: str | Path) -> Path:
    """The configuration with the fitted rules (``early_abort`` on the gated tiers) and the evidence under
    ``evidence.early_abort``; calibration paths are rewritten relative to the new file; checked by loading."""
    out_path = Path(out)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    data = config.model_dump(mode="json", exclude_none=True, exclude_unset=True)
    for entry, spec in zip(data.get("models", []), config.models, strict=True):
        rule = result.rules.get(spec.name)
        entry.pop("early_abort", None)
        if rule is not None:
            entry["early_abort"] = rule.model_dump(mode="json")
        if spec.calibration:
            entry["calibration"] = os.path.relpath(config.resolve_path(spec.calibration), out_path.parent.resolve())
    evidence = dict(config.evidence or {})
    evidence["early_abort"] = result.evidence
    data["evidence"] = evidence
    header = ("# early_abort fitted by `confidence-router tune-abort`; evidence.early_abort says how and with what\n"
              "# guarantee. Re-run it after re-tuning thresholds: the bounds are fractions of them.\n")
    out_path.write_text(header + yaml.safe_dump(data, sort_keys=False, allow_unicode=True), encoding="utf-8")
    build_tiers(load_config(out_path))
    return out_path

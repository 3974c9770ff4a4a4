"""Early abort offline: where the rule fires on each recorded answer, and what it saves.

The router watches a gated tier's answer token by token and abandons it once the prefix is below the
rule's bound (``core/abort.py``). Recorded runs carry each answer's token logprobs, so the same
:class:`~langchain_confidence_router.core.abort.AbortTracker`, built by the same policy method, is fed
the recorded tokens one at a time (as a stream delivers them) to find the token where it would fire.
Vectorised replay then treats that attempt as escalated, priced by the tokens received, and never as a
fallback answer, exactly as the policy does.

What an aborted attempt costs (in order of preference): the tier's configured per-token prices on the
recorded prompt tokens and the tokens received; else the recorded cost prorated by tokens received /
recorded output tokens. Its latency is estimated as the recorded latency prorated the same way
(recorded ``latency_ms`` / ``tokens_out`` per token): time to first token is counted per token too, so
the saving on a very short prefix is slightly overstated.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..core.abort import first_abort
from ..core.config import ConfidenceSettings
from ..core.policy import CascadePolicy, TierCall
from ..core.tiers import Tier
from .matrix import RunMatrix
from .runs import RecordedRuns

__all__ = ["AbortTable", "abort_savings", "abort_table", "aborted_cost", "has_rules", "request_totals"]


@dataclass(frozen=True)
class AbortTable:
    """Per item (rows) and tier (columns, escalation order).

    ``at``: the token where the rule fires on the recorded answer (0: it lets the answer through, or the
    tier has no rule); ``tokens_out`` and ``latency_ms``: the recorded whole answer (NaN: unknown);
    ``cost``: what the aborted attempt costs (only meaningful where ``at > 0``); ``tokens_in``: the recorded
    prompt tokens (NaN: unknown).
    """

    at: np.ndarray
    tokens_out: np.ndarray
    latency_ms: np.ndarray
    cost: np.ndarray
    tokens_in: np.ndarray

    @property
    def aborted(self) -> np.ndarray:
        return self.at > 0

    def without(self) -> AbortTable:
        """The same recorded answers with no rule anywhere (the baseline of every saving)."""
        return AbortTable(np.zeros_like(self.at), self.tokens_out, self.latency_ms, self.cost, self.tokens_in)


def has_rules(tiers: Sequence[Tier]) -> bool:
    """Whether any non-final tier has an early-abort rule (the last tier is never gated)."""
    return any(t.spec.early_abort is not None for t in tiers[:-1])


def abort_table(tiers: Sequence[Tier], settings: ConfidenceSettings, runs: RecordedRuns, matrix: RunMatrix
                ) -> AbortTable:
    """Run each tier's rule over the recorded answers of ``matrix``'s items (token by token)."""
    n, n_tiers = matrix.n, len(tiers)
    at = np.zeros((n, n_tiers), dtype=np.int64)
    tokens_out = np.full((n, n_tiers), np.nan)
    latency = np.full((n, n_tiers), np.nan)
    cost = np.full((n, n_tiers), np.nan)
    tokens_in = np.full((n, n_tiers), np.nan)
    policy = CascadePolicy(list(tiers), settings)  # builds trackers exactly as a live request's policy does
    for k, tier in enumerate(tiers):
        j = matrix.index(tier.name)
        call = TierCall(tier=tier, attempt=k, final=False, timeout_s=None, top_logprobs=settings.top_logprobs,
                        request_id="replay")
        for i, item in enumerate(matrix.item_ids):
            record = runs.get(item, tier.name)
            if record is None:
                continue
            received = record.tokens_out if record.tokens_out is not None else (
                len(record.logprobs) if record.logprobs else None)
            if received is not None:
                tokens_out[i, k] = received
            if record.latency_ms is not None:
                latency[i, k] = record.latency_ms
            if record.tokens_in is not None:
                tokens_in[i, k] = record.tokens_in
            tracker = policy.abort_tracker(call)
            if tracker is None or not record.logprobs:
                continue
            fired = first_abort(tracker, [e.model_dump() for e in record.logprobs])
            if fired is None:
                continue
            at[i, k] = fired
            cost[i, k] = aborted_cost(tier, record.tokens_in, fired, float(matrix.cost[i, j]), received)
    return AbortTable(at, tokens_out, latency, cost, tokens_in)


def aborted_cost(tier: Tier, tokens_in: float | None, received: int, recorded_cost: float,
                 recorded_tokens: float | None) -> float:
    """What an attempt cut after ``received`` tokens costs: configured prices, else the recorded cost
    prorated by tokens."""
    spec = tier.spec
    if spec.input_cost_per_token is not None or spec.output_cost_per_token is not None:
        prompt = 0.0 if tokens_in is None or np.isnan(tokens_in) else tokens_in
        return prompt * (spec.input_cost_per_token or 0.0) + received * (spec.output_cost_per_token or 0.0)
    if recorded_tokens and not np.isnan(recorded_tokens):
        return recorded_cost * min(1.0, received / recorded_tokens)
    return recorded_cost


def request_totals(calls: np.ndarray, table: AbortTable, aborted: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per request: output tokens paid for and estimated latency (ms), over the tiers it called in order."""
    n, n_tiers = table.at.shape
    tokens = np.zeros(n)
    latency = np.zeros(n)
    per_token = np.divide(table.latency_ms, table.tokens_out, out=np.full_like(table.latency_ms, np.nan),
                          where=table.tokens_out > 0)
    for k in range(n_tiers):
        called = calls > k
        cut = called & aborted[:, k]
        whole = called & ~aborted[:, k]
        tokens[whole] += np.nan_to_num(table.tokens_out[whole, k])
        tokens[cut] += table.at[cut, k]
        latency[whole] += np.nan_to_num(table.latency_ms[whole, k])
        latency[cut] += np.nan_to_num(per_token[cut, k] * table.at[cut, k])
    return tokens, latency


def abort_savings(tiers: Sequence[Tier], with_abort: Any, without: Any, table: AbortTable) -> dict[str, Any]:
    """The ``early_abort`` block of the evaluation report: the same configuration with and without the rule."""
    t1, l1 = request_totals(with_abort.calls, table, with_abort.aborted)
    t0, l0 = request_totals(without.calls, table, np.zeros_like(table.aborted))
    escalated = without.calls > 1
    have_latency = bool(np.isfinite(table.latency_ms).any())

    def share(a: float, b: float) -> float | None:
        return float(1.0 - a / b) if b > 0 else None

    per_tier = {}
    for k, tier in enumerate(tiers[:-1]):
        if tier.spec.early_abort is None:
            continue
        reached = with_abort.calls > k
        cut = reached & with_abort.aborted[:, k]
        per_tier[tier.name] = {
            "aborted_share": float(cut.sum() / reached.sum()) if reached.any() else 0.0,
            "mean_abort_token": float(table.at[cut, k].mean()) if cut.any() else None,
            "wrongly_aborted": int((cut & (without.served == k)).sum()),
        }
    return {
        "aborted_share": float(with_abort.aborted.any(axis=1).mean()) if with_abort.aborted.size else 0.0,
        "accuracy_without": without.accuracy,
        "accuracy_change": with_abort.accuracy - without.accuracy,
        "cost_without": without.mean_cost,
        "output_tokens": float(t1.mean()),
        "output_tokens_without": float(t0.mean()),
        "output_tokens_saved": float((t0 - t1).mean()),
        "latency_ms": float(l1.mean()) if have_latency else None,
        "latency_ms_without": float(l0.mean()) if have_latency else None,
        "latency_saved_share": share(float(l1.mean()), float(l0.mean())) if have_latency else None,
        "escalated_p50_latency_ms": float(np.median(l1[escalated])) if have_latency and escalated.any() else None,
        "escalated_p50_latency_ms_without": float(np.median(l0[escalated])) if have_latency and escalated.any()
        else None,
        "per_tier": per_tier,
    }

"""Hedging offline: what ``hedge_after_ms`` would have done to latency, answers and cost on recorded runs.

Each recorded run carries ``latency_ms``; a request's timeline is rebuilt from them with the live drivers'
rules (``core/hedge.py``, documented in docs/configuration.md):

* the current attempt started at ``t`` answers at ``t + latency``; when that is later than
  ``t + hedge_after_ms`` and the policy would call the next tier, the next tier's call starts at
  ``t + hedge_after_ms`` (at most one hedge at a time);
* a hedge that answers first and is acceptable wins at once; otherwise the earlier answer is judged first:
  accepted, it wins; rejected, the hedge (already running) is the next attempt, timed from its own start;
* without a hedge, the next tier starts when the rejected answer came.

A tier with ``early_abort`` is cut where its rule fires on the recorded tokens (found by the same tracker
as :func:`.early_abort.abort_table`), unless its call is the last one: the cut attempt ends at the recorded
latency prorated by the tokens received, costs what :func:`.early_abort.aborted_cost` says, is never
accepted nor the fallback answer, and counts as a rejected answer under the rules above (a running hedge
becomes the next attempt; with none yet, the next tier starts when the cut came), as the live drivers do.

Decisions use the same confidences and thresholds as :func:`.replay.replay_tiers`, so with no
``hedge_after_ms`` anywhere the answers, calls and costs equal replay's (tests assert it) and the latency is
the sum of the called tiers' recorded latencies. A hedge can change the answer: when the later tier answers
first and is acceptable it wins even if the earlier tier would have been accepted, so accuracy is reported
too. A cancelled call is counted at its full recorded cost (an upper bound: a provider bills the prompt
and the tokens generated before the cancel).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..core.config import RouterConfig
from ..core.engine import Cascade
from ..core.errors import ConfigError
from .early_abort import abort_table, has_rules
from .matrix import RunMatrix
from .replay import _tiers_of, tier_confidence
from .runs import RecordedRuns

__all__ = ["HedgedReplay", "latency_matrix", "replay_hedged", "replay_hedged_arrays"]


@dataclass(frozen=True)
class HedgedReplay:
    """Per item: tier served (-1: failed), end-to-end latency (ms), cost (USD, hedges at full cost),
    correct, tier calls made (hedges included), whether a hedge was started, and whether the request
    needed more than its first tier (escalated or hedged); ``aborted`` (items x tiers): the tier's attempt was
    cut by early abort."""

    served: np.ndarray
    latency_ms: np.ndarray
    cost: np.ndarray
    correct: np.ndarray
    calls: np.ndarray
    hedged: np.ndarray
    escalated: np.ndarray
    aborted: np.ndarray | None = None

    @property
    def accuracy(self) -> float:
        return float(self.correct.mean()) if self.correct.size else float("nan")

    def percentile(self, q: float, mask: np.ndarray | None = None) -> float:
        values = self.latency_ms if mask is None else self.latency_ms[mask]
        return float(np.percentile(values, q)) if values.size else float("nan")


def latency_matrix(runs: RecordedRuns, matrix: RunMatrix, models: Sequence[str] | None = None) -> np.ndarray:
    """The recorded ``latency_ms`` aligned with ``matrix`` (items x models); a run without one is an error."""
    names = list(models) if models is not None else matrix.models
    out = np.empty((matrix.n, len(names)))
    for i, item in enumerate(matrix.item_ids):
        for j, model in enumerate(names):
            record = runs.get(item, model)
            if record is None or record.latency_ms is None:
                raise ConfigError(f"run of model {model!r} on item {item!r} has no latency_ms: hedging cannot be "
                                  "replayed without recorded latencies")
            out[i, j] = record.latency_ms
    return out


def replay_hedged_arrays(
    conf: np.ndarray,
    thresholds: Sequence[float],
    correct: np.ndarray,
    cost: np.ndarray,
    latency_ms: np.ndarray,
    hedge_after_ms: Sequence[float | None],
    *,
    missing_logprobs: str = "escalate",
    final_fallback: str = "best",
    max_attempts: int | None = None,
    cost_budget_usd: float | None = None,
    abort_at: np.ndarray | None = None,
    abort_ms: np.ndarray | None = None,
    abort_cost: np.ndarray | None = None,
) -> HedgedReplay:
    """The cascade over ``(n, L)`` arrays (tiers in escalation order) with each tier's ``hedge_after_ms``.

    ``abort_at`` (``(n, L)``, 0 = never) is where each tier's early-abort rule fires, ``abort_ms`` and
    ``abort_cost`` when the cut attempt ends (from its start) and what it costs; all three or none."""
    conf = np.asarray(conf, dtype=float)
    n, n_tiers = conf.shape
    cut = np.zeros((n, n_tiers), dtype=bool) if abort_at is None else np.asarray(abort_at) > 0
    if cut.any() and (abort_ms is None or abort_cost is None):
        raise ConfigError("abort_at needs abort_ms and abort_cost")
    miss = np.isnan(conf)
    with np.errstate(invalid="ignore"):
        passes = conf >= np.asarray(thresholds, dtype=float)[None, :]
    accept = (miss | passes) if missing_logprobs == "accept" else (~miss & passes)
    fails = miss if missing_logprobs == "fail" else np.zeros_like(miss)
    out = {k: np.zeros(n, dtype=t) for k, t in (("served", np.int64), ("latency", float), ("cost", float),
                                                 ("calls", np.int64), ("hedged", bool), ("escalated", bool))}
    aborted = np.zeros((n, n_tiers), dtype=bool)
    for i in range(n):
        served, end, spent, calls, hedged = _one(
            accept[i], fails[i], conf[i], cost[i], latency_ms[i], hedge_after_ms, final_fallback, max_attempts,
            cost_budget_usd, cut[i], None if abort_ms is None else abort_ms[i],
            None if abort_cost is None else abort_cost[i], aborted[i])
        out["served"][i], out["latency"][i], out["cost"][i] = served, end, spent
        out["calls"][i], out["hedged"][i] = calls, hedged
        out["escalated"][i] = calls > 1
    served = out["served"]
    right = np.zeros(n, dtype=bool)
    ok = served >= 0
    right[ok] = np.asarray(correct)[np.flatnonzero(ok), served[ok]]
    return HedgedReplay(served, out["latency"], out["cost"], right, out["calls"], out["hedged"], out["escalated"],
                        aborted)


def _one(accept: np.ndarray, fails: np.ndarray, conf: np.ndarray, cost: np.ndarray, latency: np.ndarray,
         hedge_after: Sequence[float | None], final_fallback: str, max_attempts: int | None,
         budget: float | None, cut: np.ndarray, cut_ms: np.ndarray | None, cut_cost: np.ndarray | None,
         aborted: np.ndarray) -> tuple[int, float, float, int, bool]:
    """One request's timeline: (tier served or -1, end time, cost, calls, hedged); ``aborted`` is filled in."""
    n_tiers = len(conf)
    if cut.any():  # tier k's call is number k (a hedge takes the number the sequential call would have)
        final = np.arange(n_tiers) >= (n_tiers - 1 if max_attempts is None else min(n_tiers, max_attempts) - 1)
        cut = cut & ~final
    if cut.any():
        assert cut_ms is not None and cut_cost is not None
        latency = np.where(cut, cut_ms, latency)
        cost = np.where(cut, cut_cost, cost)
        accept = accept & ~cut
        fails = fails & ~cut
    start, spent, judged, calls, hedged = 0.0, 0.0, 0.0, 0, False  # judged: cost of the answers reported
    answers: list[int] = []  # rejected tiers, for final_fallback
    k, end = 0, 0.0
    running = False  # tier k's call is already running (started as a hedge)
    while k < n_tiers:
        if not running:
            if (max_attempts is not None and calls >= max_attempts) or (budget is not None and judged >= budget):
                break
            calls += 1
            spent += cost[k]
        answered = start + latency[k]
        done = max(answered, end)  # a held hedge answer is judged once the earlier one was
        after = hedge_after[k]
        hedge_start = hedge_done = np.inf
        # hedged when still unanswered after hedge_after_ms (counted from its own start) and once it is the
        # current attempt (a hedge whose answer is already in is reported at once instead)
        if (after is not None and answered > max(start + after, end) and k + 1 < n_tiers
                and (max_attempts is None or calls + 1 <= max_attempts) and (budget is None or judged < budget)):
            hedged = True
            calls += 1
            spent += cost[k + 1]
            hedge_start = max(start + after, end)
            hedge_done = hedge_start + latency[k + 1]
            if hedge_done < done and accept[k + 1]:
                return k + 1, hedge_done, spent, calls, hedged  # the hedge answered first, acceptable: it wins
        end = done
        judged += cost[k]
        if cut[k]:  # cut by early abort: rejected, and never the fallback answer
            aborted[k] = True
        else:
            if fails[k]:
                return -1, end, spent, calls, hedged
            if accept[k]:
                return k, end, spent, calls, hedged  # judged first and accepted (a running hedge is cancelled)
            answers.append(k)
        if np.isfinite(hedge_start):
            if budget is not None and judged >= budget:
                break  # the budget stops the request: the hedge is cancelled
            k, start, running = k + 1, hedge_start, True  # the hedge is the next attempt, already running
        else:
            k, start, running = k + 1, done, False
    if not answers:
        return -1, end, spent, calls, hedged
    if final_fallback == "last":
        return answers[-1], end, spent, calls, hedged
    effective = [(-1.0 if np.isnan(conf[a]) else conf[a], a) for a in answers]
    return max(effective)[1], end, spent, calls, hedged  # ties favour the later tier, as the policy does


def replay_hedged(config: RouterConfig | Cascade, runs: RecordedRuns, matrix: RunMatrix,
                  hedge_after_ms: Sequence[float | None] | None = None) -> HedgedReplay:
    """Replay a configuration with hedging on recorded runs; ``hedge_after_ms`` (one per tier, in escalation
    order) overrides the models' own settings, e.g. to compare several values."""
    tiers, settings = _tiers_of(config)
    if not tiers:
        raise ConfigError("the configuration lists no models to replay")
    names = [t.name for t in tiers]
    sub = matrix.select(names)
    conf = np.column_stack([tier_confidence(t, sub.raw(t.name), sub.n) for t in tiers])
    after = list(hedge_after_ms) if hedge_after_ms is not None else [t.spec.hedge_after_ms for t in tiers]
    if len(after) != len(tiers):
        raise ConfigError(f"hedge_after_ms: expected one value per tier ({len(tiers)}), got {len(after)}")
    limits = settings.limits
    latency = latency_matrix(runs, sub, names)
    cuts: dict[str, np.ndarray] = {}
    if has_rules(tiers):  # the early-abort rules, where they fire on the recorded tokens
        table = abort_table(tiers, settings, runs, sub)
        per_token = np.divide(latency, table.tokens_out, out=np.full_like(latency, np.nan),
                              where=table.tokens_out > 0)
        cuts = {"abort_at": table.at, "abort_cost": table.cost,
                "abort_ms": np.where(table.at > 0, np.nan_to_num(per_token * table.at), latency)}
    return replay_hedged_arrays(conf, [t.threshold for t in tiers], sub.correct, sub.cost, latency, after,
                                missing_logprobs=settings.missing_logprobs, final_fallback=settings.final_fallback,
                                max_attempts=limits.max_attempts, cost_budget_usd=limits.cost_budget_usd, **cuts)

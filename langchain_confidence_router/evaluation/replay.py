"""Replay a cascade offline on recorded runs, with the live router's decision semantics.

Two replays that must agree (tests assert it):

* :func:`replay_arrays` / :func:`replay_tiers`: vectorised numpy over all items at once, used by
  tuning, evaluation and benchmarks (thousands of configurations per second).
* :func:`replay_with_policy`: drives the real :class:`~langchain_confidence_router.core.CascadePolicy`
  item by item, feeding it each recorded answer, as the adapters do with live answers.

Semantics mirrored from the policy: confidence = calibration(raw signals) if the tier has a
calibration, else the tier method's 0..1 score; ``confidence >= threshold`` accepts; a missing
confidence follows ``missing_logprobs`` (escalate / accept / fail); ``max_attempts`` and
``cost_budget_usd`` stop the cascade early; past the last tier ``final_fallback`` returns the most
confident answer (``best``; ties and missing confidences favour the later tier) or the ``last``.
The cost of a request is the sum over every tier it called. A tier with ``early_abort`` (and not the last
call) is abandoned where the rule fires on its recorded tokens (:mod:`.early_abort` finds the token): it
escalates, costs what was received, and is never the fallback answer.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from ..core import drive
from ..core.config import ConfidenceSettings, RouterConfig
from ..core.engine import Cascade
from ..core.errors import CascadeError, ConfigError
from ..core.policy import CascadePolicy, Fail, Finish, TierCall, TierResult
from ..core.tiers import Tier, build_tiers
from ..core.tokens import TokenLogprobs
from .calibrate import predict_array, score_array
from .early_abort import AbortTable, aborted_cost
from .matrix import RunMatrix
from .runs import RecordedRuns

__all__ = [
    "ReplayOutcome",
    "replay_arrays",
    "replay_config",
    "replay_request",
    "replay_tiers",
    "replay_with_policy",
    "tier_confidence",
]


@dataclass(frozen=True)
class ReplayOutcome:
    """Per item: which tier answered (-1: none), how many tiers were called, total cost, right or wrong,
    whether the request failed and whether its answer was accepted (False: a final_fallback answer)."""

    served: np.ndarray
    calls: np.ndarray
    cost: np.ndarray
    correct: np.ndarray
    failed: np.ndarray
    accepted: np.ndarray
    aborted: np.ndarray | None = None  # (n, n_tiers): the tier's attempt was cut by early abort

    @property
    def accuracy(self) -> float:
        return float(self.correct.mean()) if self.correct.size else float("nan")

    @property
    def mean_cost(self) -> float:
        return float(self.cost.mean()) if self.cost.size else float("nan")


def tier_confidence(tier: Tier, raw: dict[str, np.ndarray], n: int) -> np.ndarray:
    """The confidence the policy would compare with the tier's threshold, for every item (NaN = none).

    An answer with no signal at all had no logprobs: the policy treats it as missing before any
    calibration, so even a combiner (which imputes missing inputs) gives NaN there.
    """
    if tier.calibration is not None:
        cal = tier.calibration
        inputs = {s: raw[s] for s in cal.inputs if s in raw}
        if cal.method != "combiner" and str(cal.signal) not in inputs:
            return np.full(n, np.nan)
        if cal.method == "combiner" and not inputs:
            inputs = {cal.signals[0]: np.full(n, np.nan)}
        prob = predict_array(cal, inputs)
        if cal.method == "combiner":
            present = np.zeros(n, dtype=bool)
            for values in raw.values():
                present |= ~np.isnan(values)
            prob = np.where(present, prob, np.nan)
        return prob
    if tier.method not in raw:
        return np.full(n, np.nan)
    return score_array(tier.method, raw[tier.method])


def replay_arrays(
    conf: np.ndarray,
    thresholds: Sequence[float],
    correct: np.ndarray,
    cost: np.ndarray,
    *,
    missing_logprobs: str = "escalate",
    final_fallback: str = "best",
    max_attempts: int | None = None,
    cost_budget_usd: float | None = None,
    abort_at: np.ndarray | None = None,
    abort_cost: np.ndarray | None = None,
) -> ReplayOutcome:
    """Vectorised cascade over ``(n, L)`` arrays whose columns are the tiers in escalation order.

    ``abort_at`` (``(n, L)``, 0 = never) is where each tier's early-abort rule fires on each answer and
    ``abort_cost`` what the cut attempt costs; a tier's rule applies unless its call is the last one."""
    conf = np.asarray(conf, dtype=float)
    n, n_tiers = conf.shape
    cut = np.zeros((n, n_tiers), dtype=bool)
    done = np.zeros(n, dtype=bool)
    failed = np.zeros(n, dtype=bool)
    stopped = np.zeros(n, dtype=bool)
    served = np.full(n, -1, dtype=np.int64)
    calls = np.zeros(n, dtype=np.int64)
    spent = np.zeros(n)
    best_conf = np.full(n, -np.inf)
    best_idx = np.full(n, -1, dtype=np.int64)
    for k in range(n_tiers):
        active = ~done & ~failed & ~stopped
        if max_attempts is not None and k >= max_attempts:
            break
        if cost_budget_usd is not None:
            stopped |= active & (spent >= cost_budget_usd)
            active &= ~stopped
        if not active.any():
            break
        final = k == n_tiers - 1 or (max_attempts is not None and k + 1 >= max_attempts)
        aborted = active & (abort_at[:, k] > 0) if abort_at is not None and not final else np.zeros(n, dtype=bool)
        cut[:, k] = aborted
        step_cost = cost[:, k] if not aborted.any() else np.where(aborted, abort_cost[:, k], cost[:, k])  # type: ignore[index]
        spent[active] = spent[active] + step_cost[active]
        calls[active] += 1
        c = conf[:, k]
        miss = np.isnan(c)
        with np.errstate(invalid="ignore"):
            passes = c >= float(thresholds[k])
        accept = active & (miss | passes) if missing_logprobs == "accept" else active & ~miss & passes
        accept &= ~aborted
        fail = active & miss & ~aborted if missing_logprobs == "fail" else np.zeros(n, dtype=bool)
        failed |= fail
        served[accept] = k
        done |= accept
        escalate = active & ~accept & ~fail & ~aborted  # a cut answer is never the fallback
        effective = np.where(miss, -1.0, c)
        update = escalate & (effective >= best_conf) if final_fallback == "best" else escalate
        best_conf[update] = effective[update]
        best_idx[update] = k
    fallback = ~done & ~failed
    has = best_idx >= 0
    served[fallback & has] = best_idx[fallback & has]
    failed |= fallback & ~has
    ok = served >= 0
    right = np.zeros(n, dtype=bool)
    right[ok] = np.asarray(correct)[np.flatnonzero(ok), served[ok]]
    return ReplayOutcome(served, calls, spent, right, failed, done.copy(), cut)


def _tiers_of(config: RouterConfig | Cascade) -> tuple[list[Tier], ConfidenceSettings]:
    if isinstance(config, Cascade):
        return config.tiers, config.config.confidence
    tiers, _ = build_tiers(config)
    return tiers, config.confidence


def replay_tiers(tiers: Sequence[Tier], settings: ConfidenceSettings, matrix: RunMatrix,
                 aborts: AbortTable | None = None) -> ReplayOutcome:
    """Replay resolved tiers (their order, methods, calibrations, thresholds) on a run matrix; with
    ``aborts`` (from :func:`.early_abort.abort_table`) their early-abort rules apply too."""
    sub = matrix.select([t.name for t in tiers])
    conf = np.column_stack([tier_confidence(t, sub.raw(t.name), sub.n) for t in tiers])
    limits = settings.limits
    return replay_arrays(
        conf, [t.threshold for t in tiers], sub.correct, sub.cost,
        missing_logprobs=settings.missing_logprobs, final_fallback=settings.final_fallback,
        max_attempts=limits.max_attempts, cost_budget_usd=limits.cost_budget_usd,
        abort_at=aborts.at if aborts is not None else None, abort_cost=aborts.cost if aborts is not None else None,
    )


def replay_config(config: RouterConfig | Cascade, matrix: RunMatrix) -> ReplayOutcome:
    """Replay a configuration (its ``models:`` list resolved by the core) on a run matrix."""
    tiers, settings = _tiers_of(config)
    if not tiers:
        raise ConfigError("the configuration lists no models to replay")
    return replay_tiers(tiers, settings, matrix)


class _RecordedSignalsPolicy(CascadePolicy):
    """The real policy, except that answers without logprobs are scored from recorded raw signals."""

    injected: dict[str, float | None] | None = None

    def _score(self, attempt: Any, tier: Tier, tokens: TokenLogprobs, filter_name: str) -> None:
        if self.injected is None:
            super()._score(attempt, tier, tokens, filter_name)
            return
        from ..core.signals import score_from_raw

        raw = dict(self.injected)
        attempt.token_filter = filter_name
        attempt.raw_signals = raw
        attempt.signals = {k: score_from_raw(k, v) for k, v in raw.items()}
        attempt.score = attempt.signals.get(tier.method)
        attempt.confidence = tier.calibration.predict(raw) if tier.calibration is not None else attempt.score


_DUMMY_LOGPROBS = [{"token": "x", "logprob": -0.1, "top_logprobs": [{"token": "x", "logprob": -0.1}]}]


def replay_with_policy(
    config: RouterConfig | Cascade, runs: RecordedRuns, matrix: RunMatrix, item_ids: Sequence[str] | None = None
) -> ReplayOutcome:
    """Drive the real :class:`CascadePolicy` once per item with the recorded answers (slow, exact).

    Rows with ``logprobs`` are scored by the policy itself; rows with only recorded ``signals`` have
    those raw values injected in place of the policy's own signal computation.
    """
    tiers, settings = _tiers_of(config)
    cascade = config if isinstance(config, Cascade) else Cascade.from_config(config)
    ids = list(item_ids) if item_ids is not None else matrix.item_ids
    row_of = {item: i for i, item in enumerate(matrix.item_ids)}
    col_of = {t.name: matrix.index(t.name) for t in tiers}
    n = len(ids)
    served = np.full(n, -1, dtype=np.int64)
    calls = np.zeros(n, dtype=np.int64)
    spent = np.zeros(n)
    right = np.zeros(n, dtype=bool)
    failed = np.zeros(n, dtype=bool)
    accepted = np.zeros(n, dtype=bool)
    for r, item in enumerate(ids):
        i = row_of[item]
        policy = _RecordedSignalsPolicy(tiers, settings, config_hash=cascade.config_hash)
        missing: list[ConfigError] = []
        answer = _recorded_answers(policy, runs, matrix, item, i, col_of, missing)
        action = drive.run(policy, _RecordedIO(answer, stream=False))
        if missing:  # a run missing from the recording is a mistake, not a failed request
            raise missing[0]
        trace = policy.trace
        calls[r] = len(trace.attempts)
        spent[r] = trace.total_cost_usd
        if isinstance(action, Finish):
            served[r] = action.attempt.tier
            right[r] = bool(matrix.correct[i, col_of[action.attempt.model]])
            accepted[r] = action.attempt.decision == "accept"
        else:
            assert isinstance(action.error, CascadeError)
            failed[r] = True
    return ReplayOutcome(served, calls, spent, right, failed, accepted)


def _recorded_answers(policy: _RecordedSignalsPolicy, runs: RecordedRuns, matrix: RunMatrix, item: str, i: int,
                      col_of: dict[str, int], missing: list[ConfigError]) -> drive.CallFn:
    """A call function answering each tier call with the recorded run of that tier on ``item``."""

    def answer(call: TierCall) -> TierResult:
        record = runs.get(item, call.tier.name)
        if record is None:
            missing.append(ConfigError(f"no recorded run of {call.tier.name!r} on item {item!r}"))
            raise missing[-1]
        j = col_of[call.tier.name]
        logprobs: Any
        if record.logprobs:
            policy.injected = None
            logprobs = [e.model_dump() for e in record.logprobs]
        elif not record.signals:  # nothing recorded: the policy's own missing-logprobs path
            policy.injected = None
            logprobs = None
        else:
            policy.injected = {k: float(v[i, j]) if not np.isnan(v[i, j]) else None
                               for k, v in matrix.signals.items()}
            logprobs = _DUMMY_LOGPROBS
        return TierResult(text="answer", logprobs=logprobs, cost_usd=float(matrix.cost[i, j]),
                          tokens_in=record.tokens_in, tokens_out=record.tokens_out,
                          extra={"signals_only": policy.injected is not None})

    return answer


class _RecordedLive:
    """A recorded answer replayed as the final tier's live stream: one chunk, visible if it has text."""

    def __init__(self, answer: drive.CallFn, call: TierCall) -> None:
        self.answer = answer
        self.call = call
        self.recorded: TierResult | None = None
        self.visible = False

    def open(self) -> list[str]:
        self.recorded = self.answer(self.call)
        return [self.recorded.text]

    def add(self, chunk: str) -> str | None:
        if chunk:
            self.visible = True
            return chunk
        return None

    def result(self) -> TierResult:
        assert self.recorded is not None
        return replace(self.recorded, streamed=True)


class _RecordedGated:
    """A recorded answer replayed as a gated tier's hidden stream: one token per chunk, as providers send."""

    def __init__(self, answer: drive.CallFn, call: TierCall) -> None:
        self.answer = answer
        self.call = call
        self.recorded: TierResult | None = None
        self.entries: list[Any] = []
        self.received = 0
        self.tool_call = False

    def open(self) -> list[Any]:
        self.recorded = self.answer(self.call)
        self.tool_call = bool(self.recorded.tool_calls)
        content = self.recorded.logprobs
        content = content.get("content") if isinstance(content, dict) else content
        self.entries = [] if self.recorded.extra.get("signals_only") else list(content or [])
        return self.entries or [None]  # an answer without logprobs arrives whole, and is judged whole

    def add(self, entry: Any) -> list[Any] | None:
        if entry is None:
            return None
        self.received += 1
        return [entry]

    def result(self) -> TierResult:
        recorded = self.recorded
        assert recorded is not None
        if self.received >= len(self.entries):
            return recorded
        tier = self.call.tier
        recorded_tokens = recorded.tokens_out or len(self.entries)
        cost = aborted_cost(tier, recorded.tokens_in, self.received, recorded.cost_usd or 0.0, recorded_tokens) \
            if recorded.cost_usd is not None or tier.spec.output_cost_per_token is not None else None
        text = "".join(str(e.get("token", "")) if isinstance(e, dict) else "" for e in self.entries[:self.received])
        return replace(recorded, text=text, logprobs={"content": self.entries[:self.received]},
                       tokens_out=self.received, cost_usd=cost)


class _RecordedIO(drive.AttemptIO):
    def __init__(self, answer: drive.CallFn, stream: bool) -> None:
        self.answer = answer
        self.stream = stream

    def call(self, call: TierCall) -> TierResult:
        return self.answer(call)

    def gated(self, call: TierCall) -> _RecordedGated:
        return _RecordedGated(self.answer, call)

    def live(self, call: TierCall) -> _RecordedLive | None:
        if self.stream and call.final and call.purpose in ("answer", "clarify"):
            return _RecordedLive(self.answer, call)
        return None


def replay_request(cascade: Cascade, answer: drive.CallFn, *, stream: bool = False,
                   **policy_kwargs: Any) -> Finish | Fail:
    """Replay one request: the real policy, driven by the adapters' own loop, with recorded answers.

    ``answer(call)`` returns the recorded :class:`TierResult` of each tier call (or raises its recorded
    error). With ``stream=True`` the final tier is replayed as the adapters stream it live, so its answer
    counts as already delivered. ``policy_kwargs`` go to :meth:`Cascade.policy` (request text,
    conversation, user, thresholds)."""
    policy, io = cascade.policy(**policy_kwargs), _RecordedIO(answer, stream)
    if not stream:
        return drive.run(policy, io)
    chunks = drive.drive(policy, io)
    while True:
        try:
            next(chunks)
        except StopIteration as stop:
            return stop.value

"""The escalation decision as a pure state machine (sans-I/O, like h11).

The policy never calls a model. It says what to do next (:class:`CallTier`, :class:`Finish` or
:class:`Fail`) and is told what happened (:meth:`CascadePolicy.on_result`,
:meth:`CascadePolicy.on_error`). Both adapters and both drivers share it, so a routing decision
can never differ between LangChain and LiteLLM.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from .abort import AbortTracker
from .config import NO_LOGPROB_METHODS, ConfidenceSettings
from .errors import (
    AllTiersFailedError,
    CascadeError,
    LogprobError,
    MissingLogprobsError,
    TierCallError,
    describe_exception,
    status_code_of,
)
from .filters import apply_filter
from .human import (
    CLARIFY_LEDGER,
    ArmSettings,
    ClarifyState,
    HumanSettings,
    PreCallDecision,
    assign_arm,
    check_triggers,
    route_for,
    thresholds_for,
)
from .nologprob import majority, verify_confidence
from .signals import SignalParams, compute_signals
from .tiers import Tier
from .tokens import TokenLogprobs, normalize_logprobs
from .trace import AttemptTrace, Purpose, RequestTrace

logger = logging.getLogger("langchain_confidence_router")

#: Called once per request when it ends (answer, handoff or error): (trace, request text, answer text).
Observer = Callable[[RequestTrace, str, str | None], None]

SKIPPABLE_KINDS = frozenset({"timeout", "connection", "rate_limit", "server", "bad_response", "empty"})


class EmptyAnswerError(Exception):
    """A tier returned neither text nor a tool call."""


@dataclass(frozen=True, slots=True)
class TierCall:
    """What the policy asks an adapter to do: call ``tier`` once.

    ``attempt`` numbers the calls of a request (0, 1, ...); the policy's record of this call is
    ``policy.attempt_trace(call.attempt)``. A ``verify`` call names the answer it judges in ``judges``.
    """

    tier: Tier
    attempt: int
    final: bool
    timeout_s: float | None
    top_logprobs: int
    request_id: str
    purpose: Purpose = "answer"
    judges: int | None = None
    instruction: str | None = None
    samples: int = 1
    temperature: float | None = None
    max_tokens: int | None = None
    answer_text: str | None = None


@dataclass(slots=True)
class TierResult:
    """What an adapter reports back from one tier call."""

    text: str = ""
    logprobs: Any = None
    tokens_in: int | None = None
    tokens_out: int | None = None
    cost_usd: float | None = None
    raw: Any = None
    tool_calls: list[Any] | None = None
    ttft_ms: float | None = None
    streamed: bool = False
    #: ``tokens_in`` was counted from the prompt by the adapter (a cut stream reports no usage)
    tokens_in_estimated: bool = False
    samples: list[TierResult] | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class CallTier:
    """Call ``call`` next. ``settled`` (on every action): the call numbers whose records the report that
    produced this action made final, in closing order; an answer waiting for its judge is not among them."""

    call: TierCall
    settled: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class Finish:
    """The request is done. ``result`` is None when it went to a human before any model answered."""

    result: TierResult | None
    attempt: AttemptTrace
    trace: RequestTrace
    settled: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class Fail:
    error: CascadeError
    settled: tuple[int, ...] = ()


Action = CallTier | Finish | Fail


@dataclass(frozen=True, slots=True)
class ClarifyClaim:
    """A clarifying question the policy wants to ask once ``state`` grants it one of ``key``'s ``limit``.

    The drive loop settles it (:meth:`CascadePolicy.on_claim`) before making the clarify call: directly,
    or in a worker thread on async paths when the state does I/O. Only requests whose confidence lands
    in the clarify band ever carry one."""

    state: ClarifyState
    key: str
    limit: int


def classify_error(exc: BaseException) -> str:
    """Sort an upstream failure into a kind that decides whether ``on_error: skip`` skips it."""
    if isinstance(exc, EmptyAnswerError):
        return "empty"
    if isinstance(exc, LogprobError):
        return "bad_response"
    code = status_code_of(exc)
    name = type(exc).__name__.lower()
    if isinstance(exc, TimeoutError) or "timeout" in name or code == 408:
        return "timeout"
    if code == 429 or "ratelimit" in name:
        return "rate_limit"
    if code is not None and code >= 500:
        return "server"
    if code is not None and 400 <= code < 500:
        return "client"
    if isinstance(exc, ConnectionError) or any(w in name for w in ("connect", "protocol", "incomplete", "readerror")):
        return "connection"  # refused, reset, or a stream cut half way (httpx.RemoteProtocolError)
    if "json" in name or "decode" in name or "validation" in name or "parse" in name:
        return "bad_response"
    return "other"


class CascadePolicy:
    """Decides, for one request, which tier to call next and which answer to return."""

    def __init__(
        self,
        tiers: Sequence[Tier],
        settings: ConfidenceSettings,
        *,
        request_id: str | None = None,
        config_hash: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        thresholds: Mapping[str, float] | None = None,
        human: HumanSettings | None = None,
        request_text: str | None = None,
        conversation: str | None = None,
        user: str | None = None,
        clarify_count: int | None = None,
        clarify_ledger: ClarifyState = CLARIFY_LEDGER,
        observers: Sequence[Observer] = (),
        registry: Mapping[str, Any] | None = None,
        arm_tiers: Mapping[str, tuple[int, Sequence[Tier]]] | None = None,
        hold: str | None = None,
    ) -> None:
        """``registry``: the threshold-registry status for the trace; ``arm_tiers``: the tiers (and registry
        version) of A/B arms that name one; ``hold``: why every request goes to ``human_assisted`` (no
        registry version could be loaded at start-up)."""
        if not tiers:
            raise ValueError("a cascade needs at least one tier")
        self.tiers = list(tiers)
        self.settings = settings
        self.human = human if human is not None and human.enabled else None
        self.request_text = request_text or ""
        self.conversation = conversation
        self.user = user
        self._ledger = clarify_ledger
        self._observers = tuple(observers)
        self._final_text: str | None = None
        self._clarify_count = clarify_count
        self._clarifying = False
        #: A clarify claim to settle before the next call (see :class:`ClarifyClaim`); None almost always.
        self.pending_claim: ClarifyClaim | None = None
        self._clarify: CallTier | None = None
        self._pre = PreCallDecision()
        self._arm: ArmSettings | None = None
        self._hold = hold
        self.trace = RequestTrace(config_hash=config_hash, metadata=dict(metadata or {}),
                                  registry=dict(registry) if registry is not None else None)
        if request_id:
            self.trace.request_id = request_id
        self.thresholds = self._arm_thresholds(arm_tiers) | dict(thresholds or {})
        self._params = SignalParams(
            logprob_weight=settings.hybrid_weights.logprob_weight,
            margin_weight=settings.hybrid_weights.margin_weight,
            bottom_percent=settings.signal_params.bottom_percent,
            group_window=settings.signal_params.group_window,
            tail_tokens=settings.signal_params.tail_tokens,
        )
        self._answers: list[tuple[AttemptTrace, TierResult]] = []
        self._recorded: set[int] = set()
        self._pending_verify: tuple[AttemptTrace, TierResult, bool] | None = None
        self._by_call: dict[int, AttemptTrace] = {}
        self._streamed: TierResult | None = None  # an answer that already reached the user
        self._next = 0
        self._t0 = time.perf_counter()
        self._done = False
        #: whether any tier has an early-abort rule (drivers skip the gated path entirely when not)
        self.gates = any(t.spec.early_abort is not None for t in self.tiers)
        #: whether any tier hedges (the drivers take their concurrent path only then)
        self.hedging = any(t.spec.hedge_after_ms is not None for t in self.tiers)
        self._hedge: TierCall | None = None  # a hedge in flight that no report has adopted or cancelled yet
        self._hedged: set[int] = set()  # call numbers started as hedges
        self._closing = False  # the request ended while a hedge was in flight: closed once it is cancelled

    # ---------------------------------------------------------------- transitions

    def start(self) -> Action:
        if self.human is not None:
            try:
                self._pre = check_triggers(self.request_text, self.human)
            except Exception as exc:  # a user classifier failed: be conservative, let a person look
                self._pre = PreCallDecision("trigger_error", "human_assisted", True)
                self.trace.reasons.append(f"trigger check failed ({describe_exception(exc)}); routed to a human")
            if self._pre.route is None and self._hold is not None:
                self._pre = PreCallDecision("registry_unavailable", "human_assisted", True)
                self.trace.reasons.append(f"no threshold-registry version in force ({self._hold}); routed to a human")
            if self._pre.route is not None and not self._pre.draft:
                return self._handoff_before_any_call()
        return self._next_action()

    def on_result(
        self, call: TierCall, result: TierResult, latency_ms: float | None = None, *, committed: bool = False
    ) -> Action:
        """Judge one answer. ``committed`` means it already reached the user (streamed live)."""
        if committed:
            self._streamed = result
        return self._settled(call, self._judge(call, result, latency_ms, committed))

    def on_error(self, call: TierCall, exc: BaseException, latency_ms: float | None = None, *,
                 committed: bool = False) -> Action:
        """Record a failed call. ``committed`` means part of its answer already reached the user (a live
        stream cut half way): no other answer can follow those tokens, so the request fails, whatever
        ``on_error`` says, and the trace says so."""
        return self._settled(call, self._error(call, exc, latency_ms, committed))

    def abort_tracker(self, call: TierCall) -> AbortTracker | None:
        """The early-abort tracker for a gated call (an answer that may still be rejected, on a tier with
        ``early_abort`` and a logprob method); None: call it whole, as without the rule."""
        tier = call.tier
        rule = tier.spec.early_abort
        if rule is None or call.final or call.purpose != "answer" or tier.method in NO_LOGPROB_METHODS:
            return None
        return AbortTracker(rule, method=tier.method, token_filter=tier.token_filter,
                            threshold=self.thresholds.get(tier.name, tier.threshold), params=self._params,
                            calibration=tier.calibration, answer_pattern=self.settings.answer_pattern)

    def on_aborted(self, call: TierCall, partial: TierResult, latency_ms: float | None,
                   tracker: AbortTracker) -> Action:
        """Record an attempt the early-abort rule cut off and escalate. ``partial`` holds what was received
        (``tokens_out``: the tokens paid for; ``tokens_in``: the adapter's estimate from the prompt, when it
        could make one, flagged ``tokens_in_estimated``). The partial answer is never returned, not even as a
        fallback."""
        attempt = self._attempt(call, latency_ms, partial)
        if partial.cost_usd is None and partial.tokens_in is None and call.tier.spec.input_cost_per_token:
            attempt.cost_usd = None  # no prompt usage and no estimate of it: the cost is not known
        attempt.aborted_at_token = tracker.fired_at
        attempt.has_logprobs = True
        self._score(attempt, call.tier, tracker.prefix(), call.tier.token_filter)
        attempt.decision = "escalate"
        attempt.reason = tracker.reason()
        self._record(attempt)
        self.trace.reasons.append(f"{attempt.model}: {attempt.reason}")
        return self._settled(call, self._next_action())

    # ---------------------------------------------------------------- hedging (the drivers run it)

    def speculate(self, call: TierCall) -> TierCall | None:
        """The answer call this policy would make next if ``call`` (in flight, not reported yet) were
        rejected; None when that is not knowable now or not a plain next-tier call: ``call`` is a side call
        (verify, sample vote, clarify) or judged through one (self_verify), a clarifying question could come
        first, there is no next tier (or only a human), ``max_attempts`` or the cost budget is reached.
        A pure look: the driver decides whether to start it, then says so with :meth:`on_hedge`."""
        if self._done or self._hedge is not None or call.purpose != "answer" or call.tier.method == "self_verify":
            return None
        if self.human is not None and self.human.clarify.enabled:
            return None
        index = call.tier.index + 1
        attempts = len(self.trace.attempts) + 1  # the call in flight will be recorded first
        limits = self.settings.limits
        if index >= len(self.tiers) or (limits.max_attempts is not None and attempts >= limits.max_attempts):
            return None
        if limits.cost_budget_usd is not None and self.trace.total_cost_usd >= limits.cost_budget_usd:
            return None
        return self._tier_call(index, attempts)

    def on_hedge(self, call: TierCall) -> None:
        """``call`` (from :meth:`speculate`) was started while the earlier attempt still runs. When that one
        is rejected the policy asks for this very call (the driver waits for it instead of calling again);
        when it is accepted, or the request ends otherwise, the trace stays open until the driver reports
        the hedge with :meth:`on_cancelled`."""
        self._hedge = call
        self._hedged.add(call.attempt)

    def preview(self, call: TierCall, result: TierResult) -> bool:
        """Whether :meth:`on_result` would accept this answer as it stands. A pure look (nothing is recorded)
        for a hedge that answered before the attempt it hedges: it wins at once only if it is acceptable.
        Answers that need a side call (self_verify, consistency) or are unscorable are not previewed."""
        tier = call.tier
        if call.purpose != "answer" or tier.method in NO_LOGPROB_METHODS:
            return False
        if not result.text.strip() and not result.tool_calls:
            return False
        try:
            tokens = normalize_logprobs(result.logprobs)
        except LogprobError:
            return False
        is_tool_call = bool(result.tool_calls) and not result.text.strip()
        if is_tool_call and self.settings.tool_calls != "score":
            return self.settings.tool_calls == "accept"
        scratch = AttemptTrace(tier=tier.index, model=tier.name, method=tier.method,
                               threshold=self.thresholds.get(tier.name, tier.threshold))
        if tokens is not None and len(tokens) > 0:
            self._score(scratch, tier, tokens, "tool_call_args" if is_tool_call else tier.token_filter)
        if scratch.confidence is None:
            return self.settings.missing_logprobs == "accept"
        return scratch.confidence >= (scratch.threshold or 0.0)

    def on_cancelled(self, call: TierCall, latency_ms: float | None = None, result: TierResult | None = None,
                     error: BaseException | None = None) -> Action | None:
        """Record an attempt the driver stopped (or whose answer it no longer needs) as ``cancelled``: billed
        from ``result``'s usage when it had answered, from what a hidden stream had received (its tokens so far
        and its prompt as the adapter counted it, ``tokens_in_estimated``), else of unknown cost.

        * the hedge, after the request ended: closes the trace; returns None (the request's action stands);
        * the attempt a hedge overtook (the hedge answered first and :meth:`preview` accepted it): returns
          the next action, which is the hedge's call, to be reported as usual."""
        attempt = self._attempt(call, latency_ms, result)
        attempt.decision = "cancelled"
        if result is not None and result.cost_usd is None and result.tokens_in is None \
                and call.tier.spec.input_cost_per_token:
            attempt.cost_usd = None  # a stream cut before usage, its prompt not counted: the cost is not known
        if error is not None:
            attempt.error = describe_exception(error)
            attempt.error_kind = classify_error(error)
        if call is self._hedge:  # the hedge, not needed
            self._hedge = None
            winner = self.trace.final_model
            if not self._done:
                attempt.reason = "cancelled: not needed (the policy asked for another call)"
            elif winner:
                attempt.reason = f"cancelled: {winner} answered first ({self.trace.outcome})"
            else:
                attempt.reason = f"cancelled: the request ended ({self.trace.outcome})"
            self._record(attempt)
            self.trace.reasons.append(f"{call.tier.name}: {attempt.reason}")
            if self._closing:
                self._closing = False
                self._close()
            return None
        hedge = self._hedge
        name = hedge.tier.name if hedge is not None else "a later tier"
        attempt.reason = f"cancelled: {name}, started as a hedge, answered first with an acceptable answer"
        self._record(attempt)
        self.trace.reasons.append(f"{call.tier.name}: {attempt.reason}")
        return self._settled(call, self._next_action())

    @property
    def hedge_in_flight(self) -> TierCall | None:
        """The hedge started with :meth:`on_hedge` that no report has adopted or cancelled yet."""
        return self._hedge

    def attempt_trace(self, number: int) -> AttemptTrace | None:
        """The record of call number ``number`` (``TierCall.attempt``), once that call was reported."""
        return self._by_call.get(number)

    def _settled(self, call: TierCall, action: Action) -> Action:
        """Stamp ``action`` with the calls whose records this report made final."""
        if isinstance(action, CallTier) and action.call.judges == call.attempt:
            return action  # the answer waits for its judge's verdict
        settled = (call.attempt, call.judges) if call.judges is not None else (call.attempt,)
        if isinstance(action, CallTier):  # plain constructors: dataclasses.replace costs microseconds here
            return CallTier(action.call, settled)
        if isinstance(action, Finish):
            return Finish(action.result, action.attempt, action.trace, settled)
        return Fail(action.error, settled)

    def _judge(self, call: TierCall, result: TierResult, latency_ms: float | None, committed: bool) -> Action:
        if call.purpose == "verify":
            return self._verified(call, result, latency_ms)
        attempt = self._attempt(call, latency_ms, result)
        if call.purpose == "clarify":
            return self._clarified(attempt, result)
        if call.purpose == "sample":
            picked = self._pick_majority(attempt, result)
            if picked is None:
                return self._failed(call, attempt, EmptyAnswerError("no sample had a readable answer"))
            result = picked
        if not result.text.strip() and not result.tool_calls:
            return self._failed(call, attempt, EmptyAnswerError("the answer is empty"), committed, result)
        try:
            tokens = normalize_logprobs(result.logprobs)
        except LogprobError as exc:
            return self._failed(call, attempt, exc, committed, result)
        attempt.has_logprobs = tokens is not None and len(tokens) > 0
        is_tool_call = bool(result.tool_calls) and not result.text.strip()
        attempt.tool_call = is_tool_call
        if is_tool_call and self.settings.tool_calls != "score":
            accept = self.settings.tool_calls == "accept"
            reason = f"tool call (tool_calls: {self.settings.tool_calls})"
            return self._judged(attempt, result, accept, reason, committed)
        tier = call.tier
        if tokens is not None and len(tokens) > 0:
            self._score(attempt, tier, tokens, "tool_call_args" if is_tool_call else tier.token_filter)
        if tier.method == "self_verify":
            self._record(attempt)
            self._pending_verify = (attempt, result, committed)
            return self._verify_call(call, result)
        if tier.method == "consistency":
            self._apply_method_score(attempt, tier, "consistency")
        elif not attempt.has_logprobs:
            return self._missing(attempt, result, "the answer has no logprobs", committed)
        if attempt.confidence is None:
            why = f"{attempt.method} could not be computed (margin and entropy need top_logprobs >= 2)"
            return self._missing(attempt, result, why, committed)
        return self._threshold_decision(attempt, result, committed)

    def _threshold_decision(self, attempt: AttemptTrace, result: TierResult, committed: bool) -> Action:
        threshold = attempt.threshold if attempt.threshold is not None else 0.0
        confidence = attempt.confidence if attempt.confidence is not None else 0.0
        accept = confidence >= threshold
        relation = ">=" if accept else "<"
        reason = f"confidence {confidence:.3f} {relation} threshold {threshold:.3f}"
        return self._judged(attempt, result, accept, reason, committed)

    # ---------------------------------------------------------------- methods without logprobs

    def _apply_method_score(self, attempt: AttemptTrace, tier: Tier, name: str) -> None:
        raw = attempt.raw_signals.get(name)
        attempt.score = raw
        if tier.calibration is not None and raw is not None:
            attempt.confidence = tier.calibration.predict(attempt.raw_signals)
        else:
            attempt.confidence = raw

    def _pick_majority(self, attempt: AttemptTrace, result: TierResult) -> TierResult | None:
        samples = [s for s in (result.samples or [result]) if s.text.strip()]
        if not samples:
            return None
        settings = self.settings.consistency
        compare = settings.compare
        if compare not in ("exact", "numeric", "choice"):
            from .human import load_callable

            compare = load_callable(compare)  # type: ignore[assignment]
        index, share, groups = majority([s.text for s in samples], compare)
        share = share * len(samples) / max(len(result.samples or [result]), 1)
        chosen = samples[index]
        attempt.raw_signals["consistency"] = share
        attempt.signals["consistency"] = share
        attempt.n_samples = len(result.samples or [result])
        attempt.n_groups = len(groups)
        chosen_result = TierResult(
            text=chosen.text, logprobs=chosen.logprobs, tokens_in=result.tokens_in, tokens_out=result.tokens_out,
            cost_usd=result.cost_usd, raw=chosen.raw, tool_calls=chosen.tool_calls, ttft_ms=result.ttft_ms,
        )
        return chosen_result

    def _verify_call(self, call: TierCall, result: TierResult) -> CallTier:
        settings = self.settings.self_verify
        judge = next((t for t in self.tiers if t.name == settings.judge), call.tier)
        return CallTier(TierCall(
            tier=judge, attempt=len(self.trace.attempts), final=False,
            timeout_s=self.settings.limits.attempt_timeout_s, top_logprobs=settings.top_logprobs,
            request_id=self.trace.request_id, purpose="verify", judges=call.attempt,
            instruction=settings.prompt.replace("{answer}", result.text), temperature=0.0,
            max_tokens=settings.max_tokens, answer_text=result.text,
        ))

    def _verified(self, call: TierCall, result: TierResult | None, latency_ms: float | None,
                  error: BaseException | None = None) -> Action:
        assert self._pending_verify is not None, "a verify result arrived without a pending answer"
        answer_attempt, answer_result, committed = self._pending_verify
        self._pending_verify = None
        judge = self._attempt(call, latency_ms, result)
        if error is not None or result is None:
            judge.decision = "error"
            judge.error = describe_exception(error) if error else "no result"
            judge.error_kind = classify_error(error) if error else "empty"
            self._record(judge)
            return self._missing(answer_attempt, answer_result, f"the judge failed ({judge.error})", committed)
        confidence, how = verify_confidence(result.text, result.logprobs)
        judge.decision = "accept"
        judge.reason = f"judge replied {result.text.strip()[:40]!r}; read as {how}"
        judge.raw_signals = {"self_verify": confidence}
        self._record(judge)
        answer_attempt.raw_signals["self_verify"] = confidence
        answer_attempt.signals["self_verify"] = confidence
        self._apply_method_score(answer_attempt, self.tiers[answer_attempt.tier], "self_verify")
        if answer_attempt.confidence is None:
            return self._missing(answer_attempt, answer_result, "the judge's reply could not be read", committed)
        return self._threshold_decision(answer_attempt, answer_result, committed)

    def _record(self, attempt: AttemptTrace) -> None:
        if id(attempt) not in self._recorded:
            self._recorded.add(id(attempt))
            self.trace.add_attempt(attempt)

    def _error(self, call: TierCall, exc: BaseException, latency_ms: float | None, committed: bool) -> Action:
        if call.purpose == "verify":
            return self._verified(call, None, latency_ms, error=exc)
        attempt = self._attempt(call, latency_ms, None)
        if committed:
            return self._broken_stream(call, attempt, exc)
        if call.purpose == "clarify":  # no question could be written: carry on escalating
            attempt.decision = "error"
            attempt.error = describe_exception(exc)
            attempt.reason = "clarifying question failed; escalating instead"
            self._record(attempt)
            return self._next_action()
        return self._failed(call, attempt, exc)

    def _broken_stream(self, call: TierCall, attempt: AttemptTrace, exc: BaseException) -> Action:
        attempt.decision = "error"
        attempt.error = describe_exception(exc)
        attempt.error_kind = classify_error(exc)
        attempt.status_code = status_code_of(exc)
        attempt.streamed = True
        attempt.reason = "failed after its answer had started streaming; nothing else can follow it"
        self._record(attempt)
        return self._fail(TierCallError(f"{call.tier.name} failed after its answer had started streaming: "
                                        f"{attempt.error}", self.trace, cause=exc, status_code=attempt.status_code))

    # ---------------------------------------------------------------- internals

    def _attempt(self, call: TierCall, latency_ms: float | None, result: TierResult | None) -> AttemptTrace:
        tier = call.tier
        attempt = AttemptTrace(
            tier=tier.index,
            model=tier.name,
            method=tier.method,
            threshold=self.thresholds.get(tier.name, tier.threshold),
            calibration=tier.calibration.id if tier.calibration else None,
            latency_ms=latency_ms,
        )
        self._by_call[call.attempt] = attempt
        if call.attempt in self._hedged:
            attempt.hedged = True
        if call.purpose in ("answer", "sample") and attempt.threshold is not None:
            self.trace.thresholds[tier.name] = attempt.threshold
            if attempt.calibration:
                self.trace.calibrations[tier.name] = attempt.calibration
        if result is not None:
            attempt.tokens_in = result.tokens_in
            attempt.tokens_in_estimated = result.tokens_in_estimated and result.tokens_in is not None
            attempt.tokens_out = result.tokens_out
            attempt.cost_usd = result.cost_usd if result.cost_usd is not None else tier.cost(
                result.tokens_in, result.tokens_out
            )
            attempt.ttft_ms = result.ttft_ms
            attempt.streamed = result.streamed
        if call.purpose in ("answer", "sample"):
            self._next = tier.index + 1
        else:
            attempt.purpose = call.purpose
        return attempt

    def _score(self, attempt: AttemptTrace, tier: Tier, tokens: TokenLogprobs, filter_name: str) -> None:
        filtered = apply_filter(tokens, filter_name, answer_pattern=self.settings.answer_pattern)
        values = compute_signals(filtered.tokens, None, self._params)
        attempt.token_filter = filter_name
        attempt.filter_fell_back = filtered.fell_back
        attempt.n_tokens = filtered.n_total
        attempt.n_scored_tokens = len(filtered.tokens)
        attempt.raw_signals = values.raw | attempt.raw_signals
        attempt.signals = values.score | attempt.signals
        if tier.method in NO_LOGPROB_METHODS:
            return
        attempt.score = values.score.get(tier.method)
        if tier.calibration is not None:
            attempt.confidence = tier.calibration.predict(values.raw)
        else:
            attempt.confidence = attempt.score

    def _missing(self, attempt: AttemptTrace, result: TierResult, why: str, committed: bool) -> Action:
        policy = self.settings.missing_logprobs
        if policy == "fail":
            attempt.decision = "error"
            attempt.reason = f"{why} (missing_logprobs: fail)"
            self._record(attempt)
            return self._fail(MissingLogprobsError(f"{attempt.model}: {why} and missing_logprobs is 'fail'",
                                                   self.trace))
        return self._judged(attempt, result, policy == "accept", f"{why} (missing_logprobs: {policy})", committed)

    def _judged(
        self, attempt: AttemptTrace, result: TierResult, accept: bool, reason: str, committed: bool
    ) -> Action:
        attempt.reason = reason
        if accept:
            attempt.decision = "accept"
            self._record(attempt)
            return self._finish(attempt, result, "accepted", f"{attempt.model}: {reason}")
        if committed:
            attempt.decision = "fallback"
            self._record(attempt)
            return self._finish(attempt, result, "fallback", f"{attempt.model}: {reason}; already streamed live")
        attempt.decision = "escalate"
        self._record(attempt)
        self.trace.reasons.append(f"{attempt.model}: {reason}")
        self._answers.append((attempt, result))
        clarify = self._clarify_call(attempt)
        return clarify if clarify is not None else self._next_action()

    def _failed(self, call: TierCall, attempt: AttemptTrace, exc: BaseException, committed: bool = False,
                result: TierResult | None = None) -> Action:
        kind = classify_error(exc)
        attempt.error = describe_exception(exc)
        attempt.error_kind = kind
        attempt.status_code = status_code_of(exc)
        if committed and result is not None:
            # the tokens already reached the user: nothing else can follow them, so this answer stands
            attempt.decision = "fallback"
            attempt.reason = f"{kind} after streaming live; the streamed answer stands"
            self._record(attempt)
            return self._finish(attempt, result, "fallback", f"{attempt.model}: {attempt.reason}: {attempt.error}")
        attempt.decision = "error"
        self._record(attempt)
        settings = self.settings
        if settings.on_error == "fail":
            attempt.reason = "error (on_error: fail)"
            return self._fail(TierCallError(f"{call.tier.name} failed: {attempt.error}", self.trace,
                                            cause=exc, status_code=attempt.status_code))
        if kind in ("client", "other") and not settings.skip_client_errors:
            attempt.reason = f"{kind} error is not skipped (set skip_client_errors to skip it)"
            return self._fail(TierCallError(f"{call.tier.name} failed: {attempt.error}", self.trace,
                                            cause=exc, status_code=attempt.status_code))
        attempt.reason = f"{kind} error skipped (on_error: skip)"
        self.trace.reasons.append(f"{call.tier.name}: {attempt.reason}: {attempt.error}")
        return self._next_action()

    def _next_action(self) -> Action:
        limits = self.settings.limits
        attempts = len(self.trace.attempts)
        if self._next >= len(self.tiers):
            return self._give_up("no tier was confident" if self._answers else "")
        if limits.max_attempts is not None and attempts >= limits.max_attempts:
            return self._give_up(f"max_attempts {limits.max_attempts} reached")
        if limits.cost_budget_usd is not None and self.trace.total_cost_usd >= limits.cost_budget_usd:
            return self._give_up(f"cost budget {limits.cost_budget_usd:g} USD reached")
        hedge = self._hedge
        if hedge is not None and hedge.tier.index == self._next and hedge.attempt == attempts:
            self._hedge = None
            return CallTier(hedge)  # already running: the driver waits for it instead of calling again
        return CallTier(self._tier_call(self._next, attempts))

    def _tier_call(self, index: int, attempts: int) -> TierCall:
        """The answer call to tier ``index`` as call number ``attempts``."""
        limits = self.settings.limits
        tier = self.tiers[index]
        final = index == len(self.tiers) - 1 or (
            limits.max_attempts is not None and attempts + 1 >= limits.max_attempts
        )
        call = TierCall(
            tier=tier,
            attempt=attempts,
            final=final,
            timeout_s=limits.attempt_timeout_s,
            top_logprobs=self.settings.top_logprobs,
            request_id=self.trace.request_id,
        )
        if tier.method == "consistency":
            c = self.settings.consistency
            call = replace(call, purpose="sample", samples=c.samples, temperature=c.temperature)
        return call

    def _give_up(self, why: str) -> Action:
        if why:
            self.trace.reasons.append(why)
        if not self._answers:
            return self._fail(AllTiersFailedError(
                f"no tier produced an answer ({len(self.trace.attempts)} attempt(s) failed): "
                + "; ".join(f"{a.model}: {a.error}" for a in self.trace.attempts if a.error),
                self.trace, status_code=_common_status(self.trace)))
        if self.settings.final_fallback == "last":
            attempt, result = self._answers[-1]
        else:  # best: highest confidence; ties and unscored answers favour the later (larger) tier
            attempt, result = max(
                reversed(self._answers), key=lambda p: -1.0 if p[0].confidence is None else p[0].confidence
            )
        attempt.decision = "fallback"
        return self._finish(attempt, result, "fallback",
                            f"returned {attempt.model} (final_fallback: {self.settings.final_fallback})")

    def _finish(self, attempt: AttemptTrace, result: TierResult, outcome: str, reason: str) -> Action:
        if self._streamed is not None and result is not self._streamed:
            return self._undeliverable(attempt)
        trace = self.trace
        trace.outcome = outcome  # type: ignore[assignment]
        trace.final_tier = attempt.tier
        trace.final_model = attempt.model
        trace.confidence = attempt.confidence
        trace.ttft_ms = attempt.ttft_ms
        trace.reasons.append(reason)
        if self.human is not None:
            self._route(attempt, result, outcome)
        self._final_text = result.text
        self._close()
        return Finish(result, attempt, trace)

    # ---------------------------------------------------------------- human routing

    def _arm_thresholds(self, arm_tiers: Mapping[str, tuple[int, Sequence[Tier]]] | None) -> dict[str, float]:
        ab = self.human.ab_test if self.human is not None else None
        if ab is None:
            return {}
        key = {"user": self.user, "conversation": self.conversation}.get(ab.key) or self.trace.request_id
        arm = assign_arm(key, ab.treatment_share, ab.salt)
        self.trace.arm = arm
        self._arm = ab.treatment if arm == "treatment" else ab.control
        if self._arm.registry_version is not None:
            pinned = (arm_tiers or {}).get(arm)
            if self.trace.registry is None:
                self.trace.registry = {}
            registry = self.trace.registry
            if pinned is not None:
                registry["version"], tiers = pinned
                self.tiers = list(tiers)
            else:  # not loaded (registry unreachable since start-up): the promoted version, said so
                registry["arm_error"] = f"arm {arm}: registry version {self._arm.registry_version} is not loaded"
                self.trace.reasons.append(registry["arm_error"] + "; the promoted version was used")
        return dict(self._arm.model_thresholds)

    def _route(self, attempt: AttemptTrace, result: TierResult, outcome: str) -> None:
        """Decide who handles the answer: automated, human-assisted or human-primary."""
        assert self.human is not None
        trace = self.trace
        thresholds, source = thresholds_for(self.request_text, self.human, self._arm)
        trace.thresholds["human.automate"] = thresholds.automate
        trace.thresholds["human.assist"] = thresholds.assist
        tier = self.tiers[attempt.tier] if attempt.tier < len(self.tiers) else None
        conf = attempt.confidence
        if tier is not None and tier.calibration_error:
            route, trigger = "human_assisted", "calibration_unavailable"
            trace.reasons.append(f"calibration of {tier.name} could not be loaded ({tier.calibration_error}); "
                                 "routed to human review")
        elif self._pre.route is not None:
            route, trigger = self._pre.route, self._pre.trigger
        elif conf is None:
            route, trigger = "human_assisted", "confidence_unavailable"
        elif outcome == "fallback" and self.human.triggers.no_confident_model:
            route = "human_primary" if conf < thresholds.assist else "human_assisted"
            trigger = "no_confident_model"
        else:
            route = route_for(conf, thresholds)
            trigger = None if route == "automated" else f"confidence ({source} thresholds)"
        trace.route = route  # type: ignore[assignment]
        trace.trigger = trigger
        if route != "automated":
            trace.reasons.append(f"route {route}: {trigger}")
            if self.human.store_text:
                trace.draft = result.text

    def _handoff_before_any_call(self) -> Action:
        trace = self.trace
        trace.route = self._pre.route  # type: ignore[assignment]
        trace.trigger = self._pre.trigger
        trace.outcome = "handoff"
        trace.reasons.append(f"route {self._pre.route}: {self._pre.trigger} (before any model call)")
        self._close()
        return Finish(None, AttemptTrace(tier=-1, model="human", decision="accept", reason=str(self._pre.trigger)),
                      trace)

    def _clarify_call(self, attempt: AttemptTrace) -> CallTier | None:
        human = self.human
        if human is None or not human.clarify.enabled or self._clarifying or attempt.confidence is None:
            return None
        lo, hi = human.clarify.band
        limit = human.clarify.max_per_conversation
        if not lo <= attempt.confidence < hi or limit <= 0:
            return None  # the count is read (a round trip for a shared state) only inside the band
        if self._clarify_count is not None:  # the caller keeps the count itself
            if self._clarify_count >= limit:
                return None
        elif self.conversation is not None:
            self.pending_claim = ClarifyClaim(self._ledger, self.conversation, limit)
        self._clarifying = True
        name = human.clarify.model or attempt.model
        tier = next((t for t in self.tiers if t.name == name), self.tiers[attempt.tier])
        self._clarify = CallTier(TierCall(tier=tier, attempt=len(self.trace.attempts), final=True,
                                          timeout_s=self.settings.limits.attempt_timeout_s, top_logprobs=0,
                                          request_id=self.trace.request_id, purpose="clarify",
                                          instruction=human.clarify.prompt))
        return self._clarify

    def on_claim(self, granted: bool | BaseException) -> Action:
        """Report the outcome of :attr:`pending_claim`: granted (ask), refused, or the state's error.

        Refused or unreachable, no question is asked and the request escalates as if the band did not
        exist; an unreachable state says so in the trace (asking twice is worse than escalating once)."""
        claim, self.pending_claim = self.pending_claim, None
        assert claim is not None and self._clarify is not None, "on_claim without a pending claim"
        if granted is True:
            return self._clarify
        self._clarifying = False
        if isinstance(granted, BaseException):
            why = describe_exception(granted) or type(granted).__name__
            self.trace.reasons.append(f"clarify state ({claim.state.name}) unreachable ({why}); "
                                      "escalated instead of asking")
            logger.warning("clarify state %s unreachable for request %s: %s; escalating",
                           claim.state.name, self.trace.request_id, why)
        else:
            self.trace.reasons.append(f"conversation already had {claim.limit} clarifying question(s); escalated")
        return self._next_action()

    def _clarified(self, attempt: AttemptTrace, result: TierResult) -> Action:
        attempt.decision = "accept"
        attempt.reason = "clarifying question instead of escalating"
        self._record(attempt)
        source = self._answers[-1][0]
        trace = self.trace
        trace.outcome = "clarify"
        trace.route = "clarify"
        trace.trigger = "clarify"
        trace.final_tier = attempt.tier
        trace.final_model = attempt.model
        trace.confidence = source.confidence
        trace.reasons.append(f"{source.model}: confidence {source.confidence:.3f} in the clarify band; asked instead")
        if self.pending_claim is not None:  # driven by hand, past the claim: count the question now
            claim, self.pending_claim = self.pending_claim, None
            try:
                claim.state.claim(claim.key, claim.limit)
            except Exception:
                logger.exception("clarify state %s: counting request %s failed", claim.state.name,
                                 self.trace.request_id)
        self._final_text = result.text
        self._close()
        return Finish(result, attempt, trace)

    def _undeliverable(self, chosen: AttemptTrace) -> Action:
        """Another answer was chosen after one had already streamed to the user: it cannot follow those
        tokens, so the request fails (two answers are never mixed)."""
        live = next((a for a in reversed(self.trace.attempts) if a.streamed), None)
        name = live.model if live is not None else "the final tier"
        reason = f"{name} had already streamed its answer; {chosen.model}'s answer cannot be delivered after it"
        return self._fail(TierCallError(reason, self.trace, status_code=live.status_code if live else None))

    def _fail(self, error: CascadeError) -> Action:
        self.trace.outcome = "error"
        self.trace.reasons.append(str(error))
        self._close()
        return Fail(error)

    def _close(self) -> None:
        self._done = True
        if self._hedge is not None:  # the hedge's record comes first: on_cancelled closes the trace
            self._closing = True
            return
        self.trace.total_latency_ms = (time.perf_counter() - self._t0) * 1000.0
        for observer in self._observers:
            try:
                observer(self.trace, self.request_text, self._final_text)
            except Exception:  # recording must never break a request; the failure is logged
                logger.exception("trace observer %r failed for request %s", observer, self.trace.request_id)

    @property
    def done(self) -> bool:
        return self._done


def _common_status(trace: RequestTrace) -> int | None:
    codes = {a.status_code for a in trace.attempts if a.status_code is not None}
    return codes.pop() if len(codes) == 1 else (503 if codes else None)

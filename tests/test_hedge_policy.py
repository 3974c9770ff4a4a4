"""The policy's side of hedging, sans-I/O: what it would hedge, what it previews, how it records a loser.

The concurrency itself (threads, tasks, cancelled connections) is tested through both adapters in
tests/test_hedging.py; here the policy is fed answers directly, as the drivers feed it.
"""

from __future__ import annotations

from typing import Any

import pytest

from langchain_confidence_router.core import CallTier, Cascade, Finish, RequestTrace, TierResult, parse_config
from langchain_confidence_router.core.errors import ConfigError


def lp(value: float, gap: float = 5.0, n: int = 3) -> dict:
    return {"content": [{"token": f"t{i}", "logprob": value,
                         "top_logprobs": [{"token": f"t{i}", "logprob": value}, {"token": "x", "logprob": value - gap}]}
                        for i in range(n)]}


SURE = TierResult(text="sure", logprobs=lp(-0.01), tokens_in=10, tokens_out=3)
UNSURE = TierResult(text="unsure", logprobs=lp(-1.5, 0.2), tokens_in=10, tokens_out=3)
BARE = TierResult(text="no logprobs", tokens_in=10, tokens_out=3)
TOOL = TierResult(text="", tool_calls=[{"name": "f", "args": {}}], tokens_in=10, tokens_out=3)
PRICED = {"input_cost_per_token": 1e-6, "output_cost_per_token": 2e-6}


def cascade(*models: dict[str, Any], human: dict[str, Any] | None = None, **confidence: Any) -> Cascade:
    specs = list(models) or [{"name": "s", "hedge_after_ms": 100, **PRICED}, {"name": "m", **PRICED},
                             {"name": "l", **PRICED}]
    cfg: dict[str, Any] = {"algorithm": {"confidence": {"escalation_order": "declared", **confidence}},
                           "models": specs}
    if human is not None:
        cfg["human"] = human
    return Cascade.from_config(parse_config(cfg))


def first_call(policy: Any) -> Any:
    action = policy.start()
    assert isinstance(action, CallTier)
    return action.call


def hedged(policy: Any) -> tuple[Any, Any]:
    """Start ``policy``; its first call and the next tier's call, started as that call's hedge."""
    call = first_call(policy)
    hedge = policy.speculate(call)
    assert hedge is not None
    policy.on_hedge(hedge)
    return call, hedge


def test_hedge_after_ms_is_off_by_default_and_must_be_positive() -> None:
    plain = cascade({"name": "s"}, {"name": "l"})
    assert plain.tiers[0].spec.hedge_after_ms is None and not plain.policy().hedging
    assert cascade().policy().hedging
    with pytest.raises(ConfigError, match=r"models\.0\.hedge_after_ms"):
        cascade({"name": "s", "hedge_after_ms": 0}, {"name": "l"})


def test_speculate_names_the_next_tier_as_the_next_call_number() -> None:
    policy = cascade().policy()
    call = first_call(policy)
    hedge = policy.speculate(call)
    assert hedge is not None and hedge.tier.name == "m" and hedge.attempt == 1 and not hedge.final
    assert policy.trace.attempts == []  # a pure look


@pytest.mark.parametrize(("settings", "why"), [
    ({"limits": {"max_attempts": 1}}, "max_attempts"),
    ({"human": {"enabled": True, "clarify": {"enabled": True, "band": [0.2, 0.5]}}}, "a question could come first"),
])
def test_speculate_declines_when_the_next_call_is_not_knowable(settings: dict[str, Any], why: str) -> None:
    policy = cascade(**settings).policy()
    assert policy.speculate(first_call(policy)) is None, why


def test_speculate_declines_past_the_last_tier_and_for_a_self_verify_tier() -> None:
    policy = cascade({"name": "s"}).policy()
    assert policy.speculate(first_call(policy)) is None
    verify = cascade({"name": "s", "confidence_method": "self_verify"}, {"name": "l"}).policy()
    assert verify.speculate(first_call(verify)) is None


def test_max_attempts_makes_the_hedge_final() -> None:
    policy = cascade(limits={"max_attempts": 2}).policy()
    hedge = policy.speculate(first_call(policy))
    assert hedge is not None and hedge.final


@pytest.mark.parametrize("result", [SURE, UNSURE, BARE, TOOL])
@pytest.mark.parametrize("settings", [{}, {"missing_logprobs": "accept"}, {"tool_calls": "escalate"},
                                      {"confidence_method": "avg_logprob", "threshold": 0.5}])
def test_preview_agrees_with_the_decision(result: TierResult, settings: dict[str, Any]) -> None:
    """What the driver previews for a hedge that answered first is what the policy then decides."""
    policy = cascade(**settings).policy()
    call = first_call(policy)
    previewed = policy.preview(call, result)
    assert policy.trace.attempts == []
    action = policy.on_result(call, result, 5.0)
    accepted = isinstance(action, Finish) and action.attempt.decision == "accept"
    assert previewed == accepted


def test_rejected_answer_adopts_the_running_hedge() -> None:
    policy = cascade().policy()
    call, hedge = hedged(policy)
    action = policy.on_result(call, UNSURE, 300.0)
    assert isinstance(action, CallTier) and action.call is hedge  # the same call: waited for, not repeated
    finish = policy.on_result(hedge, SURE, 200.0)
    assert isinstance(finish, Finish)
    assert [(a.model, a.decision, a.hedged) for a in policy.trace.attempts] == [
        ("s", "escalate", False), ("m", "accept", True)]


def test_accepted_answer_keeps_the_trace_open_until_the_hedge_is_recorded() -> None:
    cas = cascade()
    seen: list[list[tuple[str, str | None]]] = []
    cas.add_observer(lambda trace, _req, _ans: seen.append([(a.model, a.decision) for a in trace.attempts]))
    policy = cas.policy()
    call, hedge = hedged(policy)
    finish = policy.on_result(call, SURE, 300.0)
    assert isinstance(finish, Finish) and seen == []  # not closed yet: the hedge is still running
    assert policy.on_cancelled(hedge, 150.0) is None
    assert seen == [[("s", "accept"), ("m", "cancelled")]]
    trace: RequestTrace = finish.trace
    loser = trace.attempts[1]
    assert loser.hedged and "s answered first" in loser.reason and loser.latency_ms == 150.0
    assert trace.reasons[-1] == f"m: {loser.reason}"
    assert loser.cost_usd is None and not trace.cost_complete  # cancelled before any usage came back
    assert trace.total_latency_ms is not None


def test_a_hedge_that_had_answered_is_billed_from_its_usage() -> None:
    policy = cascade().policy()
    call, hedge = hedged(policy)
    policy.on_result(call, SURE, 300.0)
    policy.on_cancelled(hedge, 120.0, UNSURE)
    loser = policy.trace.attempts[1]
    assert loser.cost_usd == pytest.approx(10 * 1e-6 + 3 * 2e-6) and policy.trace.cost_complete
    assert policy.trace.total_cost_usd == pytest.approx(2 * loser.cost_usd)


def test_a_hedge_that_had_failed_does_not_make_the_cost_incomplete() -> None:
    policy = cascade().policy()
    call, hedge = hedged(policy)
    policy.on_result(call, SURE, 300.0)
    policy.on_cancelled(hedge, 20.0, None, ConnectionError("refused"))
    loser = policy.trace.attempts[1]
    assert loser.decision == "cancelled" and loser.error_kind == "connection" and policy.trace.cost_complete


def test_overtaken_attempt_is_cancelled_and_the_hedge_reported_next() -> None:
    policy = cascade().policy()
    call, hedge = hedged(policy)
    assert policy.preview(hedge, SURE)
    action = policy.on_cancelled(call, 400.0)
    assert isinstance(action, CallTier) and action.call is hedge and action.settled == (0,)
    finish = policy.on_result(hedge, SURE, 150.0)
    assert isinstance(finish, Finish) and finish.trace.final_model == "m"
    first = finish.trace.attempts[0]
    assert (first.decision, first.hedged) == ("cancelled", False) and "m, started as a hedge" in first.reason


def test_a_budget_spent_by_the_earlier_attempt_cancels_the_hedge() -> None:
    policy = cascade(limits={"cost_budget_usd": 1e-5}).policy()
    call, hedge = hedged(policy)
    action = policy.on_result(call, UNSURE, 300.0)  # costs 1.6e-5: the budget is spent, no more escalation
    assert isinstance(action, Finish) and action.trace.outcome == "fallback"
    assert policy.on_cancelled(hedge, 300.0) is None
    assert [a.decision for a in action.trace.attempts] == ["fallback", "cancelled"]


def test_an_adapter_hook_failing_after_the_answer_still_closes_the_trace() -> None:
    """Driven by core/hedge.py with plain call functions: the head answers after its hedge started, the
    adapter's end hook then raises; the request's trace is still closed with the hedge recorded."""
    import asyncio

    from langchain_confidence_router.core import drive

    cas = cascade({"name": "s", "hedge_after_ms": 20, **PRICED}, {"name": "l", **PRICED})
    seen: list[list[str | None]] = []
    cas.add_observer(lambda trace, _req, _ans: seen.append([a.decision for a in trace.attempts]))

    class FailingEnd(drive.AsyncAttemptIO):
        async def call(self, call: Any) -> TierResult:
            await asyncio.sleep(0.1 if call.tier.name == "s" else 5.0)
            return SURE

        async def end(self, step: Any) -> None:
            if isinstance(step.action, Finish):
                raise RuntimeError("callback failed")

    with pytest.raises(RuntimeError, match="callback failed"):
        asyncio.run(drive.arun(cas.policy(), FailingEnd()))
    assert seen == [["accept", "cancelled"]]

"""Every decision path of the escalation policy, through both drivers."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable

import pytest

from langchain_confidence_router.core import (
    AllTiersFailedError,
    CallTier,
    Cascade,
    Fail,
    Finish,
    MissingLogprobsError,
    TierCall,
    TierCallError,
    TierResult,
    parse_config,
)
from langchain_confidence_router.core.policy import classify_error


def lp(value: float, gap: float = 5.0, n: int = 3) -> dict:
    return {"content": [{"token": f"t{i}", "logprob": value,
                         "top_logprobs": [{"token": f"t{i}", "logprob": value}, {"token": "x", "logprob": value - gap}]}
                        for i in range(n)]}


SURE = lp(-0.01)          # hybrid ~ 0.90
UNSURE = lp(-1.5, 0.2)    # hybrid ~ 0.28


class HTTPError(Exception):
    def __init__(self, status_code: int) -> None:
        super().__init__(f"HTTP {status_code}")
        self.status_code = status_code


def cascade(**confidence: object) -> Cascade:
    cfg = {"algorithm": {"confidence": {"escalation_order": "declared", **confidence}},
           "models": [{"name": "s", "input_cost_per_token": 1e-6, "output_cost_per_token": 2e-6},
                      {"name": "m"}, {"name": "l"}]}
    return Cascade.from_config(parse_config(cfg))


Behaviour = dict[str, TierResult | BaseException]


def caller(behaviour: Behaviour) -> tuple[Callable[[TierCall], TierResult], list[TierCall]]:
    calls: list[TierCall] = []

    def call(c: TierCall) -> TierResult:
        calls.append(c)
        outcome = behaviour[c.tier.name]
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome

    return call, calls


def answer(logprobs: object = SURE, text: str = "ok", **kw: object) -> TierResult:
    return TierResult(text=text, logprobs=logprobs, tokens_in=10, tokens_out=3, **kw)  # type: ignore[arg-type]


def run(c: Cascade, behaviour: Behaviour) -> tuple[Finish, list[TierCall]]:
    call, calls = caller(behaviour)
    return c.run(call), calls


def test_first_confident_tier_is_accepted() -> None:
    done, calls = run(cascade(), {"s": answer(SURE, "small"), "m": answer(), "l": answer()})
    assert [c.tier.name for c in calls] == ["s"]
    assert done.result.text == "small" and done.trace.outcome == "accepted"
    a = done.trace.attempts[0]
    assert a.decision == "accept" and a.confidence >= 0.72 and a.threshold == 0.72
    assert a.cost_usd == pytest.approx(10 * 1e-6 + 3 * 2e-6)  # from the model's prices
    assert done.trace.total_cost_usd == pytest.approx(a.cost_usd)
    assert set(a.signals) >= {"avg_logprob", "margin", "hybrid", "entropy", "tail"}
    json.loads(done.trace.model_dump_json())


def test_unsure_tiers_escalate_until_a_confident_one() -> None:
    done, calls = run(cascade(), {"s": answer(UNSURE), "m": answer(UNSURE), "l": answer(SURE, "large")})
    assert [c.tier.name for c in calls] == ["s", "m", "l"]
    assert [c.final for c in calls] == [False, False, True]
    assert [a.decision for a in done.trace.attempts] == ["escalate", "escalate", "accept"]
    assert done.result.text == "large" and done.trace.final_model == "l"


def test_nobody_confident_returns_the_best_by_default() -> None:
    mid = lp(-0.8, 1.0)
    done, _ = run(cascade(), {"s": answer(UNSURE, "s"), "m": answer(mid, "m"), "l": answer(UNSURE, "l")})
    assert done.trace.outcome == "fallback" and done.result.text == "m"
    assert [a.decision for a in done.trace.attempts] == ["escalate", "fallback", "escalate"]


def test_nobody_confident_last() -> None:
    done, _ = run(cascade(final_fallback="last"), {"s": answer(lp(-0.8, 1.0), "s"), "m": answer(UNSURE, "m"),
                                                   "l": answer(UNSURE, "l")})
    assert done.result.text == "l"


def test_per_request_thresholds_override() -> None:
    c = cascade()
    call, _calls = caller({"s": answer(UNSURE), "m": answer(), "l": answer()})
    done = c.run(call, thresholds={"s": 0.1})
    assert done.trace.final_model == "s" and done.trace.attempts[0].threshold == 0.1


@pytest.mark.parametrize("policy", ["escalate", "accept", "fail"])
def test_missing_logprobs_policy(policy: str) -> None:
    behaviour: Behaviour = {"s": answer(None, "no-lp"), "m": answer(SURE, "m"), "l": answer()}
    if policy == "fail":
        with pytest.raises(MissingLogprobsError) as info:
            run(cascade(missing_logprobs=policy), behaviour)
        assert info.value.trace.attempts[0].decision == "error"
        return
    done, _ = run(cascade(missing_logprobs=policy), behaviour)
    assert done.result.text == ("no-lp" if policy == "accept" else "m")
    assert "no logprobs" in done.trace.attempts[0].reason


def test_margin_without_alternatives_follows_missing_policy() -> None:
    one_alt = {"content": [{"token": "a", "logprob": -0.01, "top_logprobs": [{"token": "a", "logprob": -0.01}]}]}
    done, _ = run(cascade(), {"s": answer(one_alt), "m": answer(SURE, "m"), "l": answer()})
    assert done.trace.final_model == "m" and "top_logprobs >= 2" in done.trace.attempts[0].reason


@pytest.mark.parametrize(("mode", "expected"), [("accept", "s"), ("escalate", "m")])
def test_tool_call_only_answers(mode: str, expected: str) -> None:
    tool = answer(None, "", tool_calls=[{"name": "f", "arguments": "{}"}])
    done, _ = run(cascade(tool_calls=mode), {"s": tool, "m": answer(SURE, "m"), "l": answer()})
    assert done.trace.final_model == expected and done.trace.attempts[0].tool_call


def test_tool_call_scored_on_argument_tokens() -> None:
    entries = [{"token": tok, "logprob": v, "top_logprobs": [{"token": tok, "logprob": v}, {"token": "z",
                                                                                      "logprob": v - 0.2}]}
               for tok, v in [('{"', -0.001), ("city", -0.001), ('":', -0.001), (' "', -0.001), ("Par", -2.0),
                              ("is", -2.0), ('"}', -0.001)]]
    tool = answer({"content": entries}, "", tool_calls=[{"name": "weather"}])
    done, _ = run(cascade(tool_calls="score"), {"s": tool, "m": answer(SURE, "m"), "l": answer()})
    first = done.trace.attempts[0]
    assert first.token_filter == "tool_call_args" and first.n_scored_tokens == 2 and first.decision == "escalate"


@pytest.mark.parametrize("exc", [TimeoutError("slow"), ConnectionError("refused"), HTTPError(429), HTTPError(503)])
def test_skip_transient_errors(exc: BaseException) -> None:
    done, _calls = run(cascade(), {"s": exc, "m": answer(SURE, "m"), "l": answer()})
    assert done.trace.final_model == "m"
    err = done.trace.attempts[0]
    assert err.decision == "error" and err.error and "skipped" in err.reason


@pytest.mark.parametrize("status", [400, 401, 403, 404])
def test_client_errors_are_not_skipped_unless_asked(status: int) -> None:
    with pytest.raises(TierCallError) as info:
        run(cascade(), {"s": HTTPError(status), "m": answer(), "l": answer()})
    assert info.value.status_code == status and info.value.trace.attempts[0].status_code == status
    done, _ = run(cascade(skip_client_errors=True), {"s": HTTPError(status), "m": answer(SURE, "m"), "l": answer()})
    assert done.trace.final_model == "m"


def test_on_error_fail_stops_at_first_error_with_trace() -> None:
    with pytest.raises(TierCallError) as info:
        run(cascade(on_error="fail"), {"s": answer(UNSURE), "m": HTTPError(500), "l": answer()})
    trace = info.value.trace
    assert [a.decision for a in trace.attempts] == ["escalate", "error"] and trace.outcome == "error"
    assert isinstance(info.value.cause, HTTPError)


def test_all_tiers_failed() -> None:
    with pytest.raises(AllTiersFailedError) as info:
        run(cascade(), {"s": HTTPError(500), "m": TimeoutError(), "l": HTTPError(502)})
    assert len(info.value.trace.attempts) == 3 and info.value.trace.outcome == "error"


def test_failed_last_tier_falls_back_to_an_earlier_answer() -> None:
    done, _ = run(cascade(), {"s": answer(UNSURE, "s"), "m": answer(UNSURE, "m"), "l": HTTPError(500)})
    assert done.trace.outcome == "fallback" and done.trace.final_model in ("s", "m")


@pytest.mark.parametrize("bad", [answer(None, "  "), answer({"content": [{"token": "a", "logprob": float("nan")}]}),
                                 answer({"content": [{"token": "a", "logprob": 0.5}]})])
def test_empty_answers_and_bad_logprobs_are_skippable_errors(bad: TierResult) -> None:
    done, _ = run(cascade(), {"s": bad, "m": answer(SURE, "m"), "l": answer()})
    assert done.trace.attempts[0].decision == "error" and done.trace.final_model == "m"
    assert done.trace.attempts[0].error_kind in ("empty", "bad_response")


def test_limits_max_attempts_and_budget() -> None:
    done, calls = run(cascade(limits={"max_attempts": 2}), {"s": answer(UNSURE), "m": answer(UNSURE), "l": answer()})
    assert len(calls) == 2 and calls[1].final and done.trace.outcome == "fallback"
    assert any("max_attempts" in r for r in done.trace.reasons)
    expensive = answer(UNSURE, cost_usd=0.5)
    done, calls = run(cascade(limits={"cost_budget_usd": 0.4}), {"s": expensive, "m": answer(), "l": answer()})
    assert len(calls) == 1 and any("budget" in r for r in done.trace.reasons)


def test_streamed_final_answer_is_committed() -> None:
    c = cascade()
    policy = c.policy()
    action = policy.start()
    for _ in range(2):
        assert isinstance(action, CallTier)
        action = policy.on_result(action.call, answer(UNSURE))
    assert isinstance(action, CallTier) and action.call.final
    action = policy.on_result(action.call, answer(UNSURE, "live", streamed=True), committed=True)
    assert isinstance(action, Finish) and action.result.text == "live"
    assert action.attempt.decision == "fallback" and "streamed live" in action.trace.reasons[-1]


def test_async_driver_agrees_and_enforces_timeout() -> None:
    c = cascade(limits={"attempt_timeout_s": 0.05})

    async def acall(call: TierCall) -> TierResult:
        if call.tier.name == "s":
            await asyncio.sleep(5)
        return answer(SURE, call.tier.name)

    done = asyncio.run(c.arun(acall))
    first = done.trace.attempts[0]
    assert first.error_kind == "timeout" and "attempt_timeout_s" in first.error
    assert first.latency_ms < 2000 and done.trace.final_model == "m"


def test_classify_error() -> None:
    assert classify_error(HTTPError(500)) == "server"
    assert classify_error(HTTPError(408)) == "timeout"
    assert classify_error(HTTPError(422)) == "client"
    assert classify_error(ValueError("bug")) == "other"
    assert classify_error(json.JSONDecodeError("x", "", 0)) == "bad_response"


def test_committed_stream_with_bad_logprobs_stands_and_notes_the_error() -> None:
    c = cascade()
    policy = c.policy()
    action = policy.start()
    action = policy.on_result(action.call, answer(UNSURE, "s"))
    action = policy.on_result(action.call, answer(UNSURE, "m"))
    assert isinstance(action, CallTier) and action.call.final
    bad = answer({"content": [{"token": "a", "logprob": float("nan")}]}, "streamed")
    action = policy.on_result(action.call, bad, committed=True)
    assert isinstance(action, Finish) and action.result.text == "streamed"
    assert action.attempt.decision == "fallback" and action.attempt.error_kind == "bad_response"


@pytest.mark.parametrize("on_error", ["skip", "fail"])
def test_a_stream_broken_after_tokens_went_out_fails_the_request(on_error: str) -> None:
    """Under skip too: an earlier answer cannot follow tokens the caller already has."""
    import httpx

    policy = cascade(on_error=on_error).policy()
    action = policy.on_result(policy.start().call, answer(UNSURE, "s"))
    action = policy.on_result(action.call, answer(UNSURE, "m"))
    assert isinstance(action, CallTier) and action.call.final
    action = policy.on_error(action.call, httpx.RemoteProtocolError("peer closed connection"), 12.0, committed=True)
    assert isinstance(action, Fail) and action.error.trace is policy.trace
    last = policy.trace.attempts[-1]
    assert (last.decision, last.error_kind, last.streamed) == ("error", "connection", True)
    assert policy.trace.outcome == "error" and "started streaming" in policy.trace.reasons[-1]


def test_a_stream_broken_before_any_token_went_out_falls_back_under_skip() -> None:
    import httpx

    policy = cascade().policy()
    action = policy.on_result(policy.start().call, answer(UNSURE, "s"))
    action = policy.on_result(action.call, answer(UNSURE, "m"))
    action = policy.on_error(action.call, httpx.RemoteProtocolError("peer closed connection"), committed=False)
    assert isinstance(action, Finish) and action.trace.outcome == "fallback"


def test_stream_cut_half_way_is_a_connection_error() -> None:
    import httpx

    assert classify_error(httpx.RemoteProtocolError("peer closed connection")) == "connection"


def test_stream_accumulator_counts_tokens_without_usage() -> None:
    from langchain_confidence_router.core import StreamAccumulator

    acc = StreamAccumulator()
    acc.add("", None)
    acc.add("Par", [{"token": "Par", "logprob": -0.1}])
    acc.add("is", [{"token": "is", "logprob": -0.2}])
    result = acc.result()
    assert result.text == "Paris" and result.tokens_out == 2 and result.streamed and result.ttft_ms is not None
    acc.add(None, None, tokens_out=7)
    assert acc.result().tokens_out == 7  # real usage wins

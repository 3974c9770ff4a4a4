"""Confidence without logprobs: self-verification and sample consistency in the shared policy."""

from __future__ import annotations

import math

import pytest

from langchain_confidence_router.core import Cascade, ConfigError, TierCall, TierResult, parse_config
from langchain_confidence_router.core.nologprob import majority, p_yes, verify_confidence


def judge_logprobs(first: str, p_first: float, other: str) -> dict:
    return {"content": [{"token": first, "logprob": math.log(p_first), "top_logprobs": [
        {"token": first, "logprob": math.log(p_first)}, {"token": other, "logprob": math.log(1 - p_first)}]}]}


def test_p_yes_from_judge_logprobs() -> None:
    assert p_yes(judge_logprobs("Yes", 0.8, "No")) == pytest.approx(0.8)
    assert p_yes(judge_logprobs(" no", 0.7, " yes")) == pytest.approx(0.3)
    # renormalised over yes/no: other alternatives do not count
    entries = {"content": [{"token": "yes", "logprob": math.log(0.5), "top_logprobs": [
        {"token": "yes", "logprob": math.log(0.5)}, {"token": "maybe", "logprob": math.log(0.3)},
        {"token": "no", "logprob": math.log(0.2)}]}]}
    assert p_yes(entries) == pytest.approx(0.5 / 0.7)
    assert p_yes({"content": [{"token": "Paris", "logprob": -0.1, "top_logprobs": []}]}) is None


@pytest.mark.parametrize(("text", "expected", "how"), [
    ("yes", 1.0, "text"), ("No.", 0.0, "text"), ("0.85", 0.85, "number"), ("70%", 0.7, "number"),
    ("Confidence: 0.6", 0.6, "number"), ("the answer is 42", None, "unreadable"),
    ("maybe", None, "unreadable"), ("", None, "unreadable")])
def test_verify_without_logprobs_parses_the_reply(text: str, expected: float | None, how: str) -> None:
    value, read_as = verify_confidence(text, None)
    assert read_as == how and (value == pytest.approx(expected) if expected is not None else value is None)


def test_majority_by_comparison() -> None:
    assert majority(["Paris", "paris.", " PARIS ", "Lyon"], "exact")[:2] == (0, 0.75)
    assert majority(["It is 42", "42.0", "forty-two", "41"], "numeric")[1] == 0.5
    assert majority(["The answer is B", "B) because", "(C)", "answer: b"], "choice")[1] == 0.75
    index, share, groups = majority(["a", "b", "c"], lambda x, y: True)
    assert (index, share, len(groups)) == (0, 1.0, 1)
    assert majority(["no number", "none"], "numeric")[1] == 0.0


def cascade(method: str, **extra: object) -> Cascade:
    cfg = {"algorithm": {"confidence": {"escalation_order": "declared", "confidence_method": method,
                                        "threshold": 0.7, **extra}},
           "models": [{"name": "small"}, {"name": "large", "confidence_method": "avg_logprob"}]}
    return Cascade.from_config(parse_config(cfg))


SURE = {"content": [{"token": "x", "logprob": -0.01, "top_logprobs": [{"token": "x", "logprob": -0.01}]}]}


@pytest.mark.parametrize(("judge", "expected_model"), [("yes", "small"), ("no", "large")])
def test_self_verify_through_the_policy(judge: str, expected_model: str) -> None:
    calls: list[TierCall] = []

    def call(tc: TierCall) -> TierResult:
        calls.append(tc)
        if tc.purpose == "verify":
            assert tc.answer_text == "Paris" and "Paris" in (tc.instruction or "") and tc.max_tokens
            return TierResult(text=judge, logprobs=judge_logprobs(judge, 0.9, "no" if judge == "yes" else "yes"),
                              tokens_in=20, tokens_out=1, cost_usd=0.001)
        return TierResult(text="Paris" if tc.tier.name == "small" else "Paris!", logprobs=SURE if
                          tc.tier.name == "large" else None, cost_usd=0.002)

    done = cascade("self_verify").run(call)
    assert done.trace.final_model == expected_model
    assert [(a.model, a.purpose) for a in done.trace.attempts][:2] == [("small", "answer"), ("small", "verify")]
    first = done.trace.attempts[0]
    assert first.raw_signals["self_verify"] == pytest.approx(0.9 if judge == "yes" else 0.1)
    assert done.trace.total_cost_usd >= 0.003  # the judge's cost is part of the trace


def test_self_verify_judge_failure_follows_missing_policy() -> None:
    def call(tc: TierCall) -> TierResult:
        if tc.purpose == "verify":
            raise TimeoutError("judge too slow")
        return TierResult(text="a", logprobs=SURE)

    done = cascade("self_verify").run(call)
    assert done.trace.final_model == "large" and "judge failed" in done.trace.attempts[0].reason


def test_named_judge_must_be_a_model() -> None:
    with pytest.raises(ConfigError, match=r"self_verify\.judge"):
        cascade("self_verify", self_verify={"judge": "gpt-judge"})
    c = cascade("self_verify", self_verify={"judge": "large"})
    seen = []

    def call(tc: TierCall) -> TierResult:
        seen.append((tc.tier.name, tc.purpose))
        return TierResult(text="yes" if tc.purpose == "verify" else "ans", logprobs=SURE)

    c.run(call)
    assert seen[:2] == [("small", "answer"), ("large", "verify")]


@pytest.mark.parametrize(("texts", "expected_model", "share"), [
    (["42", "42", "42", "41", "42"], "small", 0.8), (["1", "2", "3", "1", "4"], "large", 0.4)])
def test_consistency_through_the_policy(texts: list[str], expected_model: str, share: float) -> None:
    def call(tc: TierCall) -> TierResult:
        if tc.purpose == "sample":
            assert tc.samples == 5 and tc.temperature == 0.7
            return TierResult(text="", samples=[TierResult(text=t) for t in texts], tokens_out=10, cost_usd=0.005)
        return TierResult(text="large answer", logprobs=SURE)

    done = cascade("consistency", consistency={"compare": "numeric"}).run(call)
    first = done.trace.attempts[0]
    assert first.raw_signals["consistency"] == pytest.approx(share) and first.n_samples == 5
    assert done.trace.final_model == expected_model
    if expected_model == "small":
        assert done.result.text == "42" and first.cost_usd == 0.005


def test_consistency_calibrated(tmp_path: object) -> None:
    from langchain_confidence_router.core import Calibration

    cal = Calibration(method="platt", signal="consistency", params={"a": 10.0, "b": -9.0}, model="small")
    cfg = parse_config({"algorithm": {"confidence": {"escalation_order": "declared",
                                                     "confidence_method": "consistency", "threshold": 0.5}},
                        "models": [{"name": "small"}]})
    c = Cascade.from_config(cfg)
    tier = c.tiers[0]
    object.__setattr__(tier, "calibration", cal)
    done = c.run(lambda tc: TierResult(text="", samples=[TierResult(text="a")] * 4 + [TierResult(text="b")]))
    assert done.trace.attempts[0].confidence == pytest.approx(1 / (1 + math.exp(-(10 * 0.8 - 9))))

"""The early-abort rule (core/abort.py), the policy's report of an aborted attempt, and the drive loop's
gated attempt, without any network: the tier answers are logprob sequences fed as a stream would be."""

from __future__ import annotations

import math
import random
from collections.abc import Iterator
from typing import Any

import pytest

from langchain_confidence_router.core import Cascade, ConfigError, TierCall, TierResult, drive, parse_config
from langchain_confidence_router.core.abort import AbortTracker, first_abort, guarantee
from langchain_confidence_router.core.calibration import Calibration
from langchain_confidence_router.core.config import EarlyAbort
from langchain_confidence_router.core.signals import SignalParams


def entries(logprobs: list[float], words: list[str] | None = None) -> list[dict[str, Any]]:
    words = words or [f" w{i}" for i in range(len(logprobs))]
    return [{"token": w, "logprob": lp, "top_logprobs": [{"token": w, "logprob": lp},
                                                         {"token": "alt", "logprob": lp - 1.0}]}
            for w, lp in zip(words, logprobs, strict=True)]


def config(method: str = "min_logprob", *, threshold: float = 0.5, below: float = 0.5, after: int = 3,
           token_filter: str = "all", **rule: Any) -> dict[str, Any]:
    return {"algorithm": {"confidence": {"confidence_method": method, "threshold": threshold,
                                         "token_filter": token_filter}},
            "models": [{"name": "small", "early_abort": {"after_tokens": after, "below": below, **rule}},
                       {"name": "large"}]}


def tracker(method: str = "min_logprob", below: float = 0.5, after: int = 3, threshold: float = 0.5,
            token_filter: str = "all", calibration: Any = None, every: int = 1) -> AbortTracker:
    return AbortTracker(EarlyAbort(after_tokens=after, below=below, check_every=every), method=method,
                        token_filter=token_filter, threshold=threshold, params=SignalParams(),
                        calibration=calibration)


# ---------------------------------------------------------------------------- the rule


def test_fires_at_after_tokens_when_the_start_is_already_bad() -> None:
    t = tracker(after=4)
    assert first_abort(t, entries([-3.0] * 10)) == 4
    assert t.reason() == "early abort at token 4: running min_logprob 0.050 < below 0.500"


def test_a_confident_answer_is_never_aborted() -> None:
    for method in ("min_logprob", "avg_logprob", "lowest_group", "tail", "hybrid"):
        t = tracker(method, below=0.5, threshold=0.5)
        assert first_abort(t, entries([-0.01] * 50)) is None, method
        assert t.confidence is not None and t.confidence >= 0.5


def test_fires_on_the_first_bad_token_after_the_minimum() -> None:
    lps = [-0.01] * 6 + [-4.0] + [-0.01] * 5
    assert first_abort(tracker(after=2), entries(lps)) == 7
    # check_every=4 from token 2 on: checks at 2, 6, 10 -> the dip at 7 is seen at 10
    assert first_abort(tracker(after=2, every=4), entries(lps)) == 10


def test_chunks_of_several_tokens_are_judged_when_they_arrive() -> None:
    assert first_abort(tracker(after=3), entries([-3.0] * 10), chunk_tokens=4) == 4


def test_no_abort_while_the_filter_keeps_nothing() -> None:
    # punctuation only: the stop filter would fall back to all tokens, which says nothing about the answer
    t = tracker(after=1, token_filter="stop")
    assert first_abort(t, entries([-5.0] * 3, [",", ".", "!"])) is None
    assert t.feed(entries([-5.0], [" word"]))
    assert t.fired_at == 4


def test_lowest_group_waits_for_a_full_window() -> None:
    t = AbortTracker(EarlyAbort(after_tokens=1, below=0.5), method="lowest_group", token_filter="all",
                     threshold=0.5, params=SignalParams(group_window=5))
    assert first_abort(t, entries([-3.0] * 8)) == 5


def test_the_threshold_in_force_caps_the_bound() -> None:
    t = tracker(below=0.5, threshold=0.2)
    assert t.bound == 0.2
    assert first_abort(t, entries([-1.0] * 10)) is None  # exp(-1) = 0.37: below 0.5 but not below 0.2


def test_a_tool_call_stands_the_rule_down() -> None:
    t = tracker(after=1)
    t.disable()
    assert first_abort(t, entries([-5.0] * 5)) is None


def test_guarantee_names_the_conservative_configurations() -> None:
    assert guarantee("min_logprob", "stop").conservative
    assert guarantee("lowest_group", "all").conservative
    for method in ("avg_logprob", "hybrid", "margin", "tail", "bottom_percent", "entropy", "geometric_mean"):
        assert not guarantee(method, "all").conservative, method
    assert not guarantee("min_logprob", "answer").conservative
    platt = Calibration("platt", {"a": 2.0, "b": 0.1}, signal="min_logprob")
    assert guarantee("min_logprob", "all", platt).conservative
    assert not guarantee("min_logprob", "all", Calibration("platt", {"a": -2.0, "b": 0.1},
                                                           signal="min_logprob")).conservative


@pytest.mark.parametrize("method,token_filter,calibrated",
                         [("min_logprob", "all", False), ("min_logprob", "stop", False),
                          ("min_logprob", "stop", True), ("lowest_group", "stop", False)])
def test_conservative_rules_only_abort_answers_the_policy_rejects(method: str, token_filter: str,
                                                                  calibrated: bool) -> None:
    """Property check: for a provably conservative rule, every aborted answer, completed, is rejected."""
    rng = random.Random(7)
    cal = Calibration("platt", {"a": 1.5, "b": 0.8}, signal=method) if calibrated else None
    cascade = Cascade.from_config(config(method, token_filter=token_filter, threshold=0.45, below=0.45))
    tier = cascade.tiers[0]
    if cal is not None:
        tier = type(tier)(**{**tier.__dict__, "calibration": cal})
    fired = 0
    for _ in range(300):
        n = rng.randint(1, 60)
        lps = [-abs(rng.gauss(0, 0.8)) * (3 if rng.random() < 0.05 else 1) for _ in range(n)]
        words = [rng.choice([" a", " b", ",", ".", " c"]) for _ in range(n)]
        t = AbortTracker(EarlyAbort(after_tokens=rng.randint(1, 5), below=0.45), method=method,
                         token_filter=token_filter, threshold=0.45, params=SignalParams(group_window=4),
                         calibration=cal)
        if first_abort(t, entries(lps, words), chunk_tokens=rng.randint(1, 3)) is None:
            continue
        fired += 1
        policy = cascade.policy()
        policy._params = SignalParams(group_window=4)
        policy.tiers[0] = tier
        call = TierCall(tier=tier, attempt=0, final=False, timeout_s=None, top_logprobs=2, request_id="r")
        policy.start()
        policy.on_result(call, TierResult(text="".join(words), logprobs={"content": entries(lps, words)}))
        assert policy.trace.attempts[0].decision == "escalate", (lps, words)
    assert fired > 30  # the property was exercised


@pytest.mark.parametrize("method", ["min_logprob", "avg_logprob", "hybrid", "tail", "entropy", "bottom_percent"])
def test_the_running_confidence_is_the_policys_confidence_of_the_prefix(method: str) -> None:
    cascade = Cascade.from_config(config(method, below=0.0, threshold=0.5, token_filter="stop"))
    rng = random.Random(3)
    lps = [-abs(rng.gauss(0, 1)) for _ in range(30)]
    words = [rng.choice([" x", " y", ","]) for _ in range(30)]
    t = AbortTracker(EarlyAbort(after_tokens=1, below=0.0), method=method, token_filter="stop", threshold=0.5,
                     params=SignalParams())
    for k in range(1, 31):
        t.feed(entries(lps[k - 1:k], words[k - 1:k]))
        policy = cascade.policy()
        policy.start()
        call = TierCall(tier=cascade.tiers[0], attempt=0, final=False, timeout_s=None, top_logprobs=2,
                        request_id="r")
        policy.on_result(call, TierResult(text="".join(words[:k]),
                                          logprobs={"content": entries(lps[:k], words[:k])}))
        expected = policy.trace.attempts[0].confidence
        got = t.score()
        if policy.trace.attempts[0].filter_fell_back:
            assert got is None
        else:
            assert got is not None and expected is not None and math.isclose(got, expected, rel_tol=1e-12)


# ---------------------------------------------------------------------------- configuration


def test_config_rejects_a_bound_above_the_threshold() -> None:
    with pytest.raises(ConfigError) as err:
        Cascade.from_config(config(threshold=0.4, below=0.6))
    assert err.value.fields == ["models.0.early_abort.below"]
    assert "models[0].early_abort.below" in str(err.value)


def test_config_rejects_early_abort_on_a_method_without_logprobs() -> None:
    cfg = config()
    cfg["models"][0]["confidence_method"] = "self_verify"
    with pytest.raises(ConfigError) as err:
        Cascade.from_config(cfg)
    assert err.value.fields == ["models.0.early_abort"]


@pytest.mark.parametrize("field,value", [("after_tokens", 0), ("below", 1.5), ("check_every", 0)])
def test_config_names_a_bad_rule_field(field: str, value: Any) -> None:
    cfg = config()
    cfg["models"][0]["early_abort"][field] = value
    with pytest.raises(ConfigError) as err:
        parse_config(cfg)
    assert f"models.0.early_abort.{field}" in str(err.value)


# ---------------------------------------------------------------------------- the drive loop


class Hidden:
    """A gated stream fed from a list of per-token entries; counts what it handed out and whether it was closed."""

    def __init__(self, items: list[dict[str, Any]]) -> None:
        self.items = items
        self.got: list[dict[str, Any]] = []
        self.closed = False
        self.tool_call = False

    def open(self) -> Iterator[dict[str, Any]]:
        def gen() -> Iterator[dict[str, Any]]:
            try:
                yield from self.items
            finally:
                self.closed = True
        return gen()

    def add(self, chunk: dict[str, Any]) -> list[dict[str, Any]]:
        self.got.append(chunk)
        return [chunk]

    def result(self) -> TierResult:
        self.closed_when_judged = self.closed  # the connection is released before the policy decides
        return TierResult(text="".join(e["token"] for e in self.got), logprobs={"content": self.got},
                          tokens_in=10, tokens_out=len(self.got))


class IO(drive.AttemptIO):
    def __init__(self, answers: dict[str, list[float]]) -> None:
        self.answers = answers
        self.hidden: dict[str, Hidden] = {}
        self.whole: list[str] = []

    def call(self, call: TierCall) -> TierResult:
        self.whole.append(call.tier.name)
        lps = self.answers[call.tier.name]
        return TierResult(text="ok", logprobs={"content": entries(lps)}, tokens_in=10, tokens_out=len(lps))

    def gated(self, call: TierCall) -> Hidden:
        self.hidden[call.tier.name] = Hidden(entries(self.answers[call.tier.name]))
        return self.hidden[call.tier.name]


def priced(cfg: dict[str, Any]) -> dict[str, Any]:
    for m in cfg["models"]:
        m.update(input_cost_per_token=1e-6, output_cost_per_token=2e-6)
    return cfg


def test_run_aborts_closes_the_stream_and_escalates() -> None:
    cascade = Cascade.from_config(priced(config(after=3)))
    io = IO({"small": [-4.0] * 40, "large": [-0.01] * 5})
    action = drive.run(cascade.policy(), io)
    assert isinstance(action, drive.Finish) and action.trace.final_model == "large"
    first = action.trace.attempts[0]
    assert (first.decision, first.aborted_at_token, first.tokens_out) == ("escalate", 3, 3)
    assert first.reason.startswith("early abort at token 3: running min_logprob")
    assert first.cost_usd == pytest.approx(10 * 1e-6 + 3 * 2e-6)
    assert io.hidden["small"].closed_when_judged and len(io.hidden["small"].got) == 3
    assert io.whole == ["large"]  # the final tier is never gated
    assert action.trace.attempts[1].aborted_at_token is None


def test_run_lets_a_confident_gated_answer_through() -> None:
    cascade = Cascade.from_config(config())
    io = IO({"small": [-0.01] * 40, "large": [-0.01] * 5})
    action = drive.run(cascade.policy(), io)
    assert isinstance(action, drive.Finish) and action.trace.final_model == "small"
    assert action.trace.attempts[0].aborted_at_token is None and action.trace.attempts[0].tokens_out == 40
    assert io.whole == []


def test_an_aborted_answer_is_never_the_fallback() -> None:
    cascade = Cascade.from_config(config(after=2))
    io = IO({"small": [-4.0] * 10, "large": [-5.0] * 5})  # large is not confident either
    action = drive.run(cascade.policy(), io)
    assert isinstance(action, drive.Finish)
    assert action.trace.outcome == "fallback" and action.trace.final_model == "large"


def test_without_a_rule_no_tier_is_gated() -> None:
    cfg = config()
    del cfg["models"][0]["early_abort"]
    io = IO({"small": [-4.0] * 10, "large": [-0.01] * 5})
    drive.run(Cascade.from_config(cfg).policy(), io)
    assert io.hidden == {} and io.whole == ["small", "large"]


async def test_async_drive_aborts_and_acloses_the_stream() -> None:
    closed: list[bool] = []

    class AsyncHidden(Hidden):
        async def open(self) -> Any:  # type: ignore[override]
            async def gen() -> Any:
                try:
                    for item in self.items:
                        yield item
                finally:
                    closed.append(True)
            return gen()

    class AIO(drive.AsyncAttemptIO):
        async def call(self, call: TierCall) -> TierResult:
            return TierResult(text="ok", logprobs={"content": entries([-0.01] * 3)})

        def gated(self, call: TierCall) -> AsyncHidden:
            return AsyncHidden(entries([-4.0] * 30))

    action = await drive.arun(Cascade.from_config(config(after=5)).policy(), AIO())
    assert isinstance(action, drive.Finish) and action.trace.final_model == "large"
    assert action.trace.attempts[0].aborted_at_token == 5 and closed == [True]


def test_validate_says_which_rules_are_provably_conservative(tmp_path: Any, capsys: Any) -> None:
    from langchain_confidence_router.cli import main

    path = tmp_path / "c.yaml"
    path.write_text("""
algorithm: {confidence: {confidence_method: min_logprob, threshold: 0.3}}
models:
  - {name: small, early_abort: {after_tokens: 4, below: 0.3}}
  - {name: mid, confidence_method: tail, threshold: 0.7, early_abort: {after_tokens: 8, below: 0.5}}
  - {name: large, early_abort: {after_tokens: 4, below: 0.3}}
""")
    assert main(["validate", str(path)]) == 0
    lines = [line.strip() for line in capsys.readouterr().out.splitlines() if "early_abort" in line]
    assert lines[0].startswith("early_abort: after 4 tokens, abort below 0.3") and "; provably conservative" in lines[0]
    assert "not provably conservative: tune and certify it (tail judges the last tokens" in lines[1]
    assert lines[2] == "early_abort: ignored (the last tier is never gated)"

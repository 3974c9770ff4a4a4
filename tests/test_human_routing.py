"""Human escalation in the shared policy: two thresholds, four triggers, clarify, conservative fallback, A/B."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from langchain_confidence_router.core import Cascade, TierCall, TierResult, parse_config
from langchain_confidence_router.core.human import (
    ClarifyLedger,
    assign_arm,
    default_frustration,
)
from langchain_confidence_router.human.recording import flush_all


def entries(value: float, gap: float) -> dict:
    return {"content": [{"token": f"w{i}", "logprob": value, "top_logprobs": [
        {"token": f"w{i}", "logprob": value}, {"token": "z", "logprob": value - gap}]} for i in range(4)]}


# avg_logprob scores: (lp + 3) / 3
def conf(c: float) -> dict:
    return entries(3 * c - 3, 1.0)


def cascade(human: dict, **confidence: object) -> Cascade:
    cfg = {"algorithm": {"confidence": {"escalation_order": "declared", "confidence_method": "avg_logprob",
                                        "threshold": 0.7, **confidence}},
           "models": [{"name": "small"}, {"name": "large"}], "human": human}
    return Cascade.from_config(parse_config(cfg))


def run(c: Cascade, text: str, confs: dict[str, float], **kw: object) -> tuple[object, list[TierCall]]:
    calls: list[TierCall] = []

    def call(tc: TierCall) -> TierResult:
        calls.append(tc)
        if tc.purpose == "clarify":
            return TierResult(text="Which account do you mean?", tokens_in=5, tokens_out=5)
        return TierResult(text=f"answer from {tc.tier.name}", logprobs=conf(confs[tc.tier.name]))

    return c.run(call, request_text=text, **kw), calls


HUMAN = {"thresholds": {"automate": 0.8, "assist": 0.5}}


@pytest.mark.parametrize(("large_conf", "route"), [(0.95, "automated"), (0.8, "automated"), (0.79, "human_assisted"),
                                                    (0.5, "human_assisted"), (0.49, "human_primary")])
def test_two_thresholds_split_three_tiers(large_conf: float, route: str) -> None:
    human = {**HUMAN, "triggers": {"no_confident_model": False}}
    done, _ = run(cascade(human, threshold=0.0), "what is 2+2", {"small": large_conf, "large": large_conf})
    assert done.trace.route == route
    assert done.trace.thresholds["human.automate"] == 0.8 and done.trace.thresholds["human.assist"] == 0.5


def test_no_confident_model_hands_off() -> None:
    done, calls = run(cascade(HUMAN), "what is 2+2", {"small": 0.6, "large": 0.65})
    assert len(calls) == 2 and done.trace.outcome == "fallback"
    assert done.trace.route == "human_assisted" and done.trace.trigger == "no_confident_model"
    done, _ = run(cascade(HUMAN), "what is 2+2", {"small": 0.3, "large": 0.2})
    assert done.trace.route == "human_primary"


@pytest.mark.parametrize("text", ["I want to speak to a human", "Can I talk with a real person please?",
                                  "connect me to an agent", "live agent"])
def test_asking_for_a_person_is_honoured_before_any_call(text: str) -> None:
    done, calls = run(cascade(HUMAN), text, {"small": 0.99, "large": 0.99})
    assert calls == [] and done.result is None
    assert done.trace.route == "human_primary" and done.trace.trigger == "human_request"
    assert done.trace.outcome == "handoff"


def test_topic_rules_keywords_regex_and_draft() -> None:
    human = {**HUMAN, "store_text": True, "triggers": {"topics": [
        {"name": "legal", "keywords": ["lawsuit", "attorney"], "route": "human_primary"},
        {"name": "deletion", "patterns": [r"delete\s+(my\s+)?account"], "draft": False}]}}
    done, calls = run(cascade(human), "My attorney says the invoice is wrong", {"small": 0.99, "large": 0.99})
    assert done.trace.route == "human_primary" and done.trace.trigger == "topic:legal"
    assert len(calls) == 1 and done.trace.draft == "answer from small"  # confident AI draft goes along
    done, calls = run(cascade(human), "please DELETE my account now", {"small": 0.99, "large": 0.99})
    assert calls == [] and done.trace.trigger == "topic:deletion" and done.trace.route == "human_assisted"


def test_topic_classifier_callable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "my_topics.py").write_text("def classify(text):\n    return 'fraud' if 'stolen' in text else None\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    human = {**HUMAN, "triggers": {"topic_classifier": "my_topics:classify"}}
    done, _ = run(cascade(human), "my card was stolen", {"small": 0.99, "large": 0.99})
    assert done.trace.trigger == "topic:fraud" and done.trace.route == "human_assisted"
    done, _ = run(cascade(human), "hello", {"small": 0.99, "large": 0.99})
    assert done.trace.route == "automated"


def test_frustration_default_and_pluggable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert default_frustration("This is RIDICULOUS and USELESS!!") >= 0.6
    assert default_frustration("Thanks, how do I reset my password?") == 0.0
    done, _ = run(cascade(HUMAN), "this is ridiculous, still not working!!", {"small": 0.99, "large": 0.99})
    assert done.trace.trigger == "frustration" and done.trace.route == "human_assisted"
    (tmp_path / "senti.py").write_text("def score(text):\n    return 1.0 if 'meh' in text else 0.0\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    human = {**HUMAN, "triggers": {"frustration": {"detector": "senti:score"}}}
    done, _ = run(cascade(human), "meh", {"small": 0.99, "large": 0.99})
    assert done.trace.trigger == "frustration"


def test_domain_thresholds() -> None:
    human = {**HUMAN, "triggers": {"no_confident_model": False},
             "domains": [{"name": "billing", "keywords": ["invoice"], "thresholds": {"automate": 0.97, "assist": 0.6}}]}
    done, _ = run(cascade(human), "why is my invoice higher", {"small": 0.9, "large": 0.9})
    assert done.trace.route == "human_assisted" and "domain:billing" in done.trace.trigger
    done, _ = run(cascade(human), "how do I log in", {"small": 0.9, "large": 0.9})
    assert done.trace.route == "automated"


def test_clarify_first_at_most_once_per_conversation() -> None:
    ledger = ClarifyLedger()
    human = {**HUMAN, "clarify": {"enabled": True, "band": [0.4, 0.6], "model": "large"}}
    c = cascade(human)

    def go() -> tuple[object, list[TierCall]]:
        calls: list[TierCall] = []

        def call(tc: TierCall) -> TierResult:
            calls.append(tc)
            if tc.purpose == "clarify":
                return TierResult(text="Which account do you mean?")
            return TierResult(text="x", logprobs=conf({"small": 0.5, "large": 0.9}[tc.tier.name]))

        policy = c.policy(request_text="close it", conversation="conv-1")
        policy._ledger = ledger  # an isolated ledger for the test
        from langchain_confidence_router.core import run_policy

        return run_policy(policy, call), calls

    done, calls = go()
    assert [(tc.tier.name, tc.purpose) for tc in calls] == [("small", "answer"), ("large", "clarify")]
    assert calls[1].instruction and done.result.text == "Which account do you mean?"
    assert done.trace.route == "clarify" and done.trace.outcome == "clarify"
    assert [a.purpose for a in done.trace.attempts] == ["answer", "clarify"]
    done, calls = go()  # second time in the same conversation: escalate instead
    assert [tc.purpose for tc in calls] == ["answer", "answer"] and done.trace.route == "automated"


def test_conservative_fallback_when_calibration_cannot_load(tmp_path: Path) -> None:
    bad = tmp_path / "broken.json"
    bad.write_text("{not json")
    cfg = {"algorithm": {"confidence": {"escalation_order": "declared", "confidence_method": "avg_logprob"}},
           "models": [{"name": "small", "calibration": str(bad)}], "human": HUMAN}
    c = Cascade.from_config(parse_config(cfg))
    assert c.tiers[0].calibration_error and "broken.json" in c.tiers[0].calibration_error
    done = c.run(lambda tc: TierResult(text="x", logprobs=conf(0.99)), request_text="hi")
    assert done.trace.route == "human_assisted" and done.trace.trigger == "calibration_unavailable"
    # without humans in the loop a broken calibration is a configuration error, loudly
    cfg.pop("human")
    with pytest.raises(Exception, match=r"broken\.json"):
        Cascade.from_config(parse_config(cfg))


def test_missing_confidence_routes_to_assisted() -> None:
    done, _ = run(cascade(HUMAN, missing_logprobs="accept"), "hi", {"small": 0.9, "large": 0.9})
    assert done.trace.route == "automated"
    c = cascade(HUMAN, missing_logprobs="accept")
    done = c.run(lambda tc: TierResult(text="no logprobs"), request_text="hi")
    assert done.trace.route == "human_assisted" and done.trace.trigger == "confidence_unavailable"


def test_ab_arms_are_deterministic_and_apply_their_thresholds() -> None:
    human = {**HUMAN, "triggers": {"no_confident_model": False}, "ab_test": {
        "key": "user", "treatment_share": 0.5, "salt": "s1",
        "control": {"model_thresholds": {"small": 0.99}},
        "treatment": {"model_thresholds": {"small": 0.5}, "thresholds": {"automate": 0.6, "assist": 0.3}}}}
    c = cascade(human)
    users = [f"user-{i}" for i in range(40)]
    arms = {u: assign_arm(u, 0.5, "s1") for u in users}
    for u in users[:10]:
        done, calls = run(c, "hi", {"small": 0.7, "large": 0.7}, user=u)
        assert done.trace.arm == arms[u]
        expected_calls = 1 if arms[u] == "treatment" else 2
        assert len(calls) == expected_calls
    share = sum(assign_arm(f"k{i}", 0.2, "x") == "treatment" for i in range(10_000)) / 10_000
    assert 0.18 < share < 0.22
    code = "from langchain_confidence_router.core.human import assign_arm; print(assign_arm('user-7', 0.5, 's1'))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == arms["user-7"]


def test_human_config_errors_name_the_field() -> None:
    from langchain_confidence_router.core import ConfigError

    with pytest.raises(ConfigError, match=r"human\.thresholds.*must not exceed"):
        parse_config({"human": {"thresholds": {"automate": 0.4, "assist": 0.6}}})
    with pytest.raises(ConfigError, match=r"human\.clarify\.band"):
        parse_config({"human": {"clarify": {"band": [0.7, 0.2]}}})


def test_trace_is_json_with_route_fields() -> None:
    done, _ = run(cascade(HUMAN), "what is 2+2", {"small": 0.6, "large": 0.65})
    data = json.loads(done.trace.model_dump_json())
    assert data["route"] == "human_assisted" and data["trigger"] == "no_confident_model"
    assert data["thresholds"]["small"] == 0.7


def test_store_and_audit_log_record_every_request_including_failures(tmp_path: Path) -> None:
    from langchain_confidence_router.core import AllTiersFailedError
    from langchain_confidence_router.human import open_store

    human = {**HUMAN, "store": str(tmp_path / "reviews.db"), "audit_log": str(tmp_path / "audit.jsonl"),
             "spot_check_rate": 0.0}
    c = cascade(human)
    done, _ = run(c, "what is 2+2", {"small": 0.6, "large": 0.65})  # handed off
    done2, _ = run(c, "what is 3+3", {"small": 0.99, "large": 0.99})  # automated

    def failing(tc: TierCall) -> TierResult:
        raise ConnectionError("down")

    with pytest.raises(AllTiersFailedError) as info:
        c.run(failing, request_text="secret question sk-test-123456")
    assert flush_all(10)  # recording is written in the background
    store = open_store(str(tmp_path / "reviews.db"))
    assert {i.request_id for i in store.pending(10)} == {done.trace.request_id}
    lines = [json.loads(line) for line in (tmp_path / "audit.jsonl").read_text().splitlines()]
    assert [line["request_id"] for line in lines] == [done.trace.request_id, done2.trace.request_id,
                                                      info.value.trace.request_id]
    text = (tmp_path / "audit.jsonl").read_text()
    assert "what is 2+2" not in text and "sk-test-123456" not in text

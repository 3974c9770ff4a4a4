"""Early abort offline: vectorised replay agrees with the real policy fed recorded tokens one by one, aborted
attempts are priced by the tokens received, and `evaluate` reports what the rule saves."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from langchain_confidence_router.commands.evaluate import render
from langchain_confidence_router.core import Cascade, TierCall, TierResult, parse_config
from langchain_confidence_router.evaluation.early_abort import abort_table
from langchain_confidence_router.evaluation.evaluate import evaluate_config
from langchain_confidence_router.evaluation.matrix import build_matrix
from langchain_confidence_router.evaluation.replay import replay_request, replay_tiers, replay_with_policy
from langchain_confidence_router.evaluation.runs import RecordedRuns, RunRecord
from langchain_confidence_router.evaluation.synthetic import make_runs


@pytest.fixture(scope="module")
def runs() -> RecordedRuns:
    return make_runs(160, seed=5, missing_rate=0.05)


def config(method: str = "min_logprob", thresholds: tuple[float, float, float] = (0.6, 0.6, 0.5),
           rules: tuple[Any, Any] = ((2, 0.6), (3, 0.5)), **settings: Any) -> Any:
    models = []
    for name, t, rule in zip(("tiny", "medium", "large"), thresholds, (*rules, None), strict=True):
        spec: dict[str, Any] = {"name": name, "threshold": t}
        if rule is not None:
            spec["early_abort"] = {"after_tokens": rule[0], "below": rule[1]}
        models.append(spec)
    return parse_config({"algorithm": {"confidence": {"confidence_method": method, "escalation_order": "declared",
                                                      "token_filter": "all", **settings}}, "models": models})


CASES = [
    ("min_logprob", (0.6, 0.6, 0.5), {}),
    ("avg_logprob", (0.8, 0.85, 0.5), {}),
    ("hybrid", (0.7, 0.75, 0.5), {"final_fallback": "last"}),
    ("min_logprob", (0.6, 0.6, 0.5), {"limits": {"max_attempts": 2}}),  # medium is then final: never gated
    ("tail", (0.65, 0.65, 0.5), {"missing_logprobs": "accept"}),
]


@pytest.mark.parametrize(("method", "thresholds", "settings"), CASES)
def test_vectorised_replay_with_abort_equals_the_policy(runs: RecordedRuns, method: str,
                                                        thresholds: tuple[float, float, float],
                                                        settings: dict[str, Any]) -> None:
    rules = ((2, min(0.6, thresholds[0])), (3, min(0.5, thresholds[1])))
    cfg = config(method, thresholds, rules, **settings)
    cascade = Cascade.from_config(cfg)
    matrix = build_matrix(runs, ["tiny", "medium", "large"], cfg)
    table = abort_table(cascade.tiers, cfg.confidence, runs, matrix)
    fast = replay_tiers(cascade.tiers, cfg.confidence, matrix, table)
    slow = replay_with_policy(cfg, runs, matrix)
    assert fast.aborted is not None and fast.aborted.any()  # the rule did fire on these runs
    assert np.array_equal(fast.served, slow.served)
    assert np.array_equal(fast.calls, slow.calls)
    assert np.allclose(fast.cost, slow.cost, rtol=1e-12, atol=1e-15)
    assert np.array_equal(fast.correct, slow.correct) and np.array_equal(fast.failed, slow.failed)
    assert np.array_equal(fast.accepted, slow.accepted)
    if "max_attempts" in settings:
        assert not fast.aborted[:, 1].any()


def test_the_policy_replay_records_where_the_rule_fired(runs: RecordedRuns) -> None:
    cfg = config()
    cascade = Cascade.from_config(cfg)
    matrix = build_matrix(runs, ["tiny", "medium", "large"], cfg)
    table = abort_table(cascade.tiers, cfg.confidence, runs, matrix)
    i = int(np.flatnonzero(table.at[:, 0])[0])
    item = matrix.item_ids[i]

    def answer(call: TierCall) -> TierResult:
        record = runs.get(item, call.tier.name)
        assert record is not None and record.logprobs
        return TierResult(text="x", logprobs={"content": [e.model_dump() for e in record.logprobs]},
                          tokens_in=record.tokens_in, tokens_out=record.tokens_out, cost_usd=record.cost_usd)

    action = replay_request(cascade, answer)
    first = action.trace.attempts[0]  # type: ignore[union-attr]
    assert first.aborted_at_token == table.at[i, 0] and first.tokens_out == table.at[i, 0]
    assert first.decision == "escalate" and first.reason.startswith(f"early abort at token {table.at[i, 0]}")


def test_a_conservative_rule_never_cuts_an_answer_that_would_be_accepted(runs: RecordedRuns) -> None:
    cfg = config("min_logprob", (0.55, 0.6, 0.5), ((1, 0.55), (1, 0.6)))
    cascade = Cascade.from_config(cfg)
    matrix = build_matrix(runs, ["tiny", "medium", "large"], cfg)
    table = abort_table(cascade.tiers, cfg.confidence, runs, matrix)
    with_abort = replay_tiers(cascade.tiers, cfg.confidence, matrix, table)
    without = replay_tiers(cascade.tiers, cfg.confidence, matrix)
    assert with_abort.aborted is not None and with_abort.aborted.sum() > 20
    for k in (0, 1):
        accepted_here = without.accepted & (without.served == k)
        assert not (with_abort.aborted[:, k] & accepted_here).any()


def test_an_aborted_attempt_costs_its_prompt_and_the_tokens_received() -> None:
    bad = [{"token": f" t{i}", "logprob": -3.0, "top_logprobs": [{"token": f" t{i}", "logprob": -3.0}]}
           for i in range(20)]
    good = [{"token": " ok", "logprob": -0.01, "top_logprobs": [{"token": " ok", "logprob": -0.01}]}]
    runs = RecordedRuns([
        RunRecord(item_id="a", model="tiny", correct=False, logprobs=bad, tokens_in=100, tokens_out=20,
                  latency_ms=400.0),
        RunRecord(item_id="a", model="large", correct=True, logprobs=good, tokens_in=100, tokens_out=1,
                  latency_ms=100.0, cost_usd=1e-3),
    ])
    cfg = parse_config({"algorithm": {"confidence": {"confidence_method": "min_logprob", "threshold": 0.5,
                                                     "token_filter": "all"}},
                        "models": [{"name": "tiny", "input_cost_per_token": 1e-6, "output_cost_per_token": 4e-6,
                                    "early_abort": {"after_tokens": 5, "below": 0.5}},
                                   {"name": "large"}]})
    report = evaluate_config(cfg, runs)
    block = report["early_abort"]
    assert report["cost"] == pytest.approx(100 * 1e-6 + 5 * 4e-6 + 1e-3)
    assert block["cost_without"] == pytest.approx(100 * 1e-6 + 20 * 4e-6 + 1e-3)
    assert (block["output_tokens"], block["output_tokens_without"], block["output_tokens_saved"]) == (6, 21, 15)
    assert block["latency_ms"] == pytest.approx(400 / 20 * 5 + 100)
    assert block["latency_ms_without"] == pytest.approx(500)
    assert block["escalated_p50_latency_ms"] == pytest.approx(200)
    assert block["per_tier"]["tiny"] == {"aborted_share": 1.0, "mean_abort_token": 5.0, "wrongly_aborted": 0}


def test_evaluate_reports_the_savings_and_renders_them(runs: RecordedRuns) -> None:
    report = evaluate_config(config(), runs)
    block = report["early_abort"]
    assert block["aborted_share"] > 0 and block["output_tokens_saved"] > 0
    assert block["output_tokens_without"] - block["output_tokens"] == pytest.approx(block["output_tokens_saved"])
    assert 0 < block["latency_saved_share"] < 1
    assert block["escalated_p50_latency_ms"] < block["escalated_p50_latency_ms_without"]
    assert report["accuracy"] - block["accuracy_without"] == pytest.approx(block["accuracy_change"])
    assert "early abort:" in render(report) and "tiny: cut" in render(report)
    plain = config(rules=(None, None))
    assert evaluate_config(plain, runs)["early_abort"] is None

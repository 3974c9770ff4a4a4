"""`tune-abort`: early-abort rules fitted on recorded runs, certified against the same config without them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from langchain_confidence_router.cli import main
from langchain_confidence_router.core import Cascade, load_config, parse_config
from langchain_confidence_router.evaluation.early_abort import abort_table
from langchain_confidence_router.evaluation.matrix import build_matrix
from langchain_confidence_router.evaluation.runs import RecordedRuns, RunRecord, write_runs
from langchain_confidence_router.evaluation.synthetic import make_runs
from langchain_confidence_router.evaluation.tune_abort import _table, running_confidences, tune_abort

BASE = {"algorithm": {"confidence": {"confidence_method": "avg_logprob", "escalation_order": "declared",
                                     "token_filter": "all"}},
        "models": [{"name": "tiny", "threshold": 0.8}, {"name": "medium", "threshold": 0.8}, {"name": "large"}]}


def entry(lp: float, i: int) -> dict[str, Any]:
    return {"token": f" t{i}", "logprob": lp, "top_logprobs": [{"token": f" t{i}", "logprob": lp}]}


def slow_starters(n: int, *, small_right: bool, seed: int = 0) -> RecordedRuns:
    """Small answers that start unsure and end sure (accepted whole: mean score 0.87 >= 0.8); half the items
    are plainly sure from the start. On the slow starters the small model is right iff ``small_right``."""
    rng = np.random.default_rng(seed)
    records = []
    for i in range(n):
        slow = rng.random() < 0.5
        lps = [-3.0] * 3 + [-0.01] * 20 if slow else [-0.01] * 23
        small_correct = small_right if slow else True
        for model, right, answer in (("tiny", small_correct, lps), ("large", not small_correct or not slow,
                                                                     [-0.01] * 5)):
            records.append(RunRecord(item_id=f"i{i}", model=model, correct=bool(right), cost_usd=1e-5,
                                     logprobs=[entry(lp, t) for t, lp in enumerate(answer)], tokens_in=30,
                                     tokens_out=len(answer), latency_ms=10.0 * len(answer)))
    return RecordedRuns(records)


TWO = parse_config({"algorithm": BASE["algorithm"], "models": [{"name": "tiny", "threshold": 0.8}, {"name": "large"}]})


def test_a_rule_that_would_cut_right_answers_is_not_certified() -> None:
    result = tune_abort(TWO, slow_starters(300, small_right=True), max_accuracy_drop=0.01, delta=0.05,
                        after_tokens=(2, 4))
    assert result.rules == {}
    assert result.evidence["guarantee"].startswith("none")
    assert result.evidence["note"] == "no rule saved anything within the bound on the select items"


def test_a_rule_that_cuts_wrong_answers_is_certified_and_saves_latency() -> None:
    result = tune_abort(TWO, slow_starters(300, small_right=False), max_accuracy_drop=0.01, delta=0.05,
                        after_tokens=(2, 4))
    rule = result.rules["tiny"]
    assert rule.after_tokens == 2 and 0 < rule.below <= 0.8
    expected = result.evidence["expected"]
    assert expected["accuracy_change"] >= 0 and expected["latency_saved_share"] > 0.2
    assert "avg_logprob is an average" in result.evidence["conservative"]["tiny"]


def test_the_fast_lookup_equals_the_routers_tracker() -> None:
    runs = make_runs(120, seed=4)
    config = parse_config(BASE)
    cascade = Cascade.from_config(config)
    tiers = cascade.tiers
    matrix = build_matrix(runs, ["tiny", "medium", "large"], config)
    policy = cascade.policy()
    trajs = {k: [running_confidences(policy, tiers[k], runs.get(item, tiers[k].name).logprobs or [])  # type: ignore[union-attr]
                 for item in matrix.item_ids] for k in (0, 1)}
    base = abort_table(tiers, config.confidence, runs, matrix)
    rows = np.arange(matrix.n)
    for after, scale in ((1, 0.5), (3, 0.9), (5, 1.0)):
        fast = _table(base, trajs, tiers, after, scale, rows, matrix)
        ruled = parse_config({**BASE, "models": [
            {"name": "tiny", "threshold": 0.8, "early_abort": {"after_tokens": after, "below": 0.8 * scale}},
            {"name": "medium", "threshold": 0.8, "early_abort": {"after_tokens": after, "below": 0.8 * scale}},
            {"name": "large"}]})
        exact = abort_table(Cascade.from_config(ruled).tiers, ruled.confidence, runs, matrix)
        assert np.array_equal(fast.at, exact.at) and fast.at.any()
        assert np.allclose(fast.cost[fast.at > 0], exact.cost[exact.at > 0])


def test_cli_writes_a_loadable_config_with_the_rules(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    runs_path = tmp_path / "runs.jsonl"
    write_runs(slow_starters(200, small_right=False), runs_path)
    config_path = tmp_path / "base.yaml"
    import yaml

    config_path.write_text(yaml.safe_dump({"algorithm": BASE["algorithm"],
                                           "models": [{"name": "tiny", "threshold": 0.8}, {"name": "large"}]}))
    out = tmp_path / "sub" / "tuned.yaml"
    assert main(["tune-abort", "--runs", str(runs_path), "--config", str(config_path), "--out", str(out),
                 "--max-accuracy-drop", "0.01", "--after-tokens", "2,4"]) == 0
    printed = capsys.readouterr().out
    assert "tiny: early_abort after_tokens 2" in printed and "guarantee: with probability >= 0.95" in printed
    tuned = load_config(out)
    assert tuned.models[0].early_abort is not None and tuned.models[1].early_abort is None
    assert tuned.evidence is not None and tuned.evidence["early_abort"]["after_tokens"] == 2

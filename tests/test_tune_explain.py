"""``tune`` explains itself: where each path stopped, the tested path as a table, the "largest model
alone" case in ``evaluate``, and the error for runs that record only opt-in (non-logprob) signals."""

from __future__ import annotations

import numpy as np
import pytest

from langchain_confidence_router.commands.evaluate import render
from langchain_confidence_router.evaluation.matrix import RunMatrix
from langchain_confidence_router.evaluation.tune import TuneError, tune


def _matrix(n: int, rng: np.random.Generator, gap: float, signals: tuple[str, ...] = ("avg_logprob",)) -> RunMatrix:
    skill = np.array([0.0, 0.5, 0.5 + gap])
    difficulty = rng.normal(0.0, 1.0, (n, 1))
    correct = rng.random((n, 3)) < 1.0 / (1.0 + np.exp(-2.0 * (skill - difficulty)))
    certainty = 1.0 / (1.0 + np.exp(-(skill - difficulty + 0.8 * correct + rng.normal(0.0, 0.7, (n, 3)))))
    raw = {"avg_logprob": np.log(certainty), "self_verify": certainty, "consistency": certainty}
    cost = np.broadcast_to(np.array([1.0, 3.0, 10.0]), (n, 3)).copy()
    return RunMatrix(["a", "b", "c"], [str(i) for i in range(n)], correct, cost, {s: raw[s] for s in signals})


def test_nothing_certified_says_where_each_path_stopped() -> None:
    # the largest model is far better: no cascade can stay within 0.5 point of it
    result = tune(_matrix(600, np.random.default_rng(1), gap=2.0), max_accuracy_drop=0.005, calibrate="none")
    ev = result.evidence
    assert ev["mode"] == "quantile" and ev["largest_alone"] is True and result.models == ["c"]
    assert "largest model alone" in ev["note"]
    assert len(ev["stopped_at"]) == ev["families_tested"] == 3  # one path per sub-chain ending at "c"
    for stop in ev["stopped_at"]:
        assert stop["certified"] is False and stop["step"] >= 1
        assert stop["drop_upper_bound"] > 0.005 and stop["n_cascade_worse"] >= stop["n_cascade_better"]
    assert [r for r in result.path if not r["certified"]] == ev["stopped_at"]


def test_quantile_paths_certify_a_cheap_cascade_when_one_exists() -> None:
    result = tune(_matrix(3000, np.random.default_rng(2), gap=0.05), max_accuracy_drop=0.02, calibrate="none")
    assert result.evidence["largest_alone"] is False and result.evidence["expected"]["savings"] > 0.2
    assert len(result.models) >= 2


def test_signals_that_rank_answers_alike_share_one_path() -> None:
    # bottom_percent carries the same numbers as min_logprob here: the same ranking, so the same paths;
    # they must not take a share of delta each. A signal with its own noise ranks differently: its own paths.
    rng = np.random.default_rng(4)
    m = _matrix(800, rng, gap=0.3)
    alike = RunMatrix(m.models, m.item_ids, m.correct, m.cost,
                      {"min_logprob": m.signals["avg_logprob"], "bottom_percent": m.signals["avg_logprob"].copy()})
    ev = tune(alike, max_accuracy_drop=0.01, calibrate="none").evidence
    assert len(ev["families"]) == 2
    assert ev["families_tested"] == 3  # one path per sub-chain ending at the largest model, not 6
    other = m.signals["avg_logprob"] + rng.normal(0.0, 0.3, m.signals["avg_logprob"].shape)
    apart = RunMatrix(m.models, m.item_ids, m.correct, m.cost, {"min_logprob": m.signals["avg_logprob"],
                                                               "bottom_percent": other})
    assert tune(apart, max_accuracy_drop=0.01, calibrate="none").evidence["families_tested"] == 6


def test_only_opt_in_signals_recorded_names_them_and_the_flag() -> None:
    sample = _matrix(300, np.random.default_rng(3), gap=0.3, signals=("self_verify", "consistency"))
    with pytest.raises(TuneError) as err:
        tune(sample, max_accuracy_drop=0.01)
    msg = str(err.value)
    assert "self_verify" in msg and "consistency" in msg and "--signals" in msg
    assert "no confidence signal is recorded" not in msg
    assert tune(sample, max_accuracy_drop=0.01, signals=["self_verify"], calibrate="none").signal == "self_verify"


def test_evaluate_says_largest_model_alone() -> None:
    report = {"n": 10, "models": ["c"], "largest_model": "c", "baselines": {}, "accuracy_drop": 0.0,
              "escalation_rate": 0.0, "fallback_rate": 0.0, "calls_per_request": 1.0,
              "escalation_rate_per_tier": {}, "served_share": {}, "ece_binning": "", "signals": {},
              "calibration": {}}
    assert "the largest model alone" in render(report)
    assert "largest model alone" not in render({**report, "models": ["a", "c"]})

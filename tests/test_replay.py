"""Offline replay agrees with the real CascadePolicy; baselines and the evaluation report are consistent."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from langchain_confidence_router.core.config import parse_config
from langchain_confidence_router.evaluation.baselines import (
    fast_cascade,
    grid_search,
    oracle,
    random_routing,
    shared_threshold_search,
)
from langchain_confidence_router.evaluation.calibrate import fit_calibration
from langchain_confidence_router.evaluation.evaluate import EVALUATE_KEYS, evaluate_config
from langchain_confidence_router.evaluation.matrix import build_matrix
from langchain_confidence_router.evaluation.replay import replay_config, replay_with_policy
from langchain_confidence_router.evaluation.runs import RecordedRuns, RunRecord
from langchain_confidence_router.evaluation.synthetic import make_runs


@pytest.fixture(scope="module")
def runs() -> RecordedRuns:
    return make_runs(150, seed=3, missing_rate=0.08)


def _config(tmp_path: Path, settings: dict[str, Any], thresholds: tuple[float, ...], methods: tuple[str, ...],
            calibrations: dict[str, str] | None = None, order: str = "declared") -> Any:
    models = []
    for name, t, m, size in zip(("tiny", "medium", "large"), thresholds, methods, ("1b", "7b", "70b"), strict=True):
        spec: dict[str, Any] = {"name": name, "threshold": t, "confidence_method": m, "size": size}
        if calibrations and name in calibrations:
            spec["calibration"] = calibrations[name]
        models.append(spec)
    if order != "declared":
        models = models[::-1]  # declared backwards: the core must reorder them by size
    data = {"algorithm": {"confidence": {"escalation_order": order, **settings}}, "models": models}
    path = tmp_path / "c.yaml"
    import yaml

    path.write_text(yaml.safe_dump(data))
    from langchain_confidence_router.core.config import load_config

    return load_config(path)


def _assert_same(a: Any, b: Any) -> None:
    assert np.array_equal(a.served, b.served)
    assert np.array_equal(a.calls, b.calls)
    assert np.allclose(a.cost, b.cost, rtol=0, atol=1e-15)
    assert np.array_equal(a.correct, b.correct)
    assert np.array_equal(a.failed, b.failed)
    assert np.array_equal(a.accepted, b.accepted)


CASES = [
    ({}, (0.55, 0.6, 0.0), ("hybrid", "avg_logprob", "margin"), "declared"),
    ({"final_fallback": "last", "missing_logprobs": "accept"}, (0.7, 0.75, 0.9), ("avg_logprob",) * 3, "declared"),
    ({"missing_logprobs": "fail", "token_filter": "all"}, (0.5, 0.8, 0.3), ("tail", "min_logprob", "entropy"),
     "small_to_large"),
    ({"limits": {"max_attempts": 2}}, (0.8, 0.9, 0.2), ("bottom_percent", "lowest_group", "hybrid"), "declared"),
    ({"limits": {"cost_budget_usd": 3e-5}}, (0.9, 0.9, 0.95), ("geometric_mean",) * 3, "declared"),
]


@pytest.mark.parametrize(("settings", "thresholds", "methods", "order"), CASES)
def test_vectorised_replay_equals_real_policy(runs: RecordedRuns, tmp_path: Path, settings: dict[str, Any],
                                             thresholds: tuple[float, ...], methods: tuple[str, ...],
                                             order: str) -> None:
    config = _config(tmp_path, settings, thresholds, methods, order=order)
    matrix = build_matrix(runs, ["tiny", "medium", "large"], config)
    fast = replay_config(config, matrix)
    slow = replay_with_policy(config, runs, matrix)
    _assert_same(fast, slow)
    assert 0 < fast.accepted.sum() < matrix.n or settings  # the case exercises real decisions


def test_replay_with_calibrations_equals_real_policy(runs: RecordedRuns, tmp_path: Path) -> None:
    matrix = build_matrix(runs, ["tiny", "medium", "large"], parse_config({}))
    files = {}
    specs = {"tiny": ("platt", "avg_logprob"), "medium": ("isotonic", "margin"), "large": ("combiner", None)}
    for name, (method, signal) in specs.items():
        raw = matrix.raw(name)
        y = matrix.correct[:, matrix.index(name)]
        cal = fit_calibration(method, raw, y, signal=signal, signals=["avg_logprob", "tail", "margin"], model=name)
        cal.save(tmp_path / f"{name}.json")
        files[name] = f"{name}.json"
    config = _config(tmp_path, {}, (0.6, 0.7, 0.5), ("avg_logprob", "margin", "avg_logprob"), files)
    fast = replay_config(config, matrix)
    slow = replay_with_policy(config, runs, matrix)
    _assert_same(fast, slow)


def test_replay_from_recorded_signals_only(runs: RecordedRuns, tmp_path: Path) -> None:
    """Rows without logprobs but with recorded signals are judged the same way by both replays."""
    matrix = build_matrix(runs, ["tiny", "medium", "large"], parse_config({}))
    records = []
    for r in runs:
        i, j = matrix.item_ids.index(r.item_id), matrix.index(r.model)
        sig = {k: float(v[i, j]) for k, v in matrix.signals.items() if np.isfinite(v[i, j])}
        records.append(RunRecord(item_id=r.item_id, model=r.model, correct=r.correct, cost_usd=r.cost_usd,
                                 signals=sig or None))
    only = RecordedRuns(records)
    config = _config(tmp_path, {}, (0.55, 0.6, 0.0), ("avg_logprob", "margin", "hybrid"))
    m2 = build_matrix(only, ["tiny", "medium", "large"], config)
    _assert_same(replay_config(config, m2), replay_with_policy(config, only, m2))


def test_missing_cost_is_priced_from_the_config(tmp_path: Path) -> None:
    runs = RecordedRuns([RunRecord(item_id="a", model="tiny", correct=True, tokens_in=10, tokens_out=5)])
    config = parse_config({"models": [{"name": "tiny", "input_cost_per_token": 1e-6, "output_cost_per_token": 2e-6}]})
    assert build_matrix(runs, ["tiny"], config).cost[0, 0] == pytest.approx(10e-6 + 10e-6)
    from langchain_confidence_router.core.errors import ConfigError

    with pytest.raises(ConfigError, match="no cost_usd"):
        build_matrix(runs, ["tiny"], None)


# ----------------------------------------------------------------------------- baselines


def test_oracle_is_the_cheapest_correct_model() -> None:
    correct = np.array([[True, True], [False, True], [False, False]])
    cost = np.array([[1.0, 5.0], [1.0, 5.0], [2.0, 5.0]])
    ok, c = oracle(correct, cost)
    assert ok.tolist() == [True, True, False]
    assert c.tolist() == [1.0, 5.0, 2.0]


def test_random_routing_expectation_matches_simulation() -> None:
    rng = np.random.default_rng(0)
    correct = rng.random((4000, 3)) < [0.5, 0.7, 0.9]
    cost = rng.uniform(0.5, 1.5, (4000, 3)) * [1, 3, 10]
    rates = [0.6, 0.3]
    acc, mean_cost = random_routing(rates, correct, cost)
    sims = []
    for _ in range(200):
        u = rng.random((4000, 2))
        stop = np.where(u[:, 0] >= rates[0], 0, np.where(u[:, 1] >= rates[1], 1, 2))
        rows = np.arange(4000)
        sims.append((correct[rows, stop].mean(), np.cumsum(cost, axis=1)[rows, stop].mean()))
    sim_acc, sim_cost = np.mean(sims, axis=0)
    assert acc == pytest.approx(sim_acc, abs=0.003)
    assert mean_cost == pytest.approx(sim_cost, rel=0.003)


def test_grid_search_finds_the_brute_force_optimum() -> None:
    rng = np.random.default_rng(1)
    n = 300
    correct = rng.random((n, 3)) < [0.55, 0.7, 0.85]
    conf = np.clip(0.3 + 0.4 * correct + rng.normal(0, 0.2, (n, 3)), 0, 1)
    cost = np.tile([1.0, 3.0, 10.0], (n, 1))
    target = 0.8
    levels = (8, 5)
    best = grid_search(conf, correct, cost, target, levels=levels)
    assert best is not None
    brute = None
    for r in range(1, 4):
        for chain in itertools.combinations(range(3), r):
            cols = list(chain)
            grids = [np.unique(np.quantile(conf[:, c], np.linspace(0, 1, levels[min(r - 2, 1)] + 1)[1:],
                                           method="lower")) for c in cols[:-1]]
            for th in itertools.product(*grids):
                ok, c = fast_cascade(conf[:, cols], [*th, 0.0], correct[:, cols], cost[:, cols])
                if ok.mean() >= target and (brute is None or c.mean() < brute):
                    brute = c.mean()
    assert best.cost == pytest.approx(brute)
    assert best.accuracy >= target


def test_shared_threshold_search_reaches_target_or_gives_up() -> None:
    rng = np.random.default_rng(2)
    correct = rng.random((500, 2)) < [0.6, 0.9]
    conf = np.clip(0.3 + 0.4 * correct + rng.normal(0, 0.15, (500, 2)), 0, 1)
    cost = np.tile([1.0, 10.0], (500, 1))
    choice = shared_threshold_search(conf, correct, cost, 0.85)
    assert choice is not None and choice.accuracy >= 0.85
    threshold = choice.thresholds[0]
    assert np.isfinite(threshold) and choice.thresholds == (threshold, 0.0)

    def outcome(t: float) -> tuple[float, float]:  # by hand: the small tier answers when conf >= t
        small = conf[:, 0] >= t
        return (float(np.where(small, correct[:, 0], correct[:, 1]).mean()),
                float(np.where(small, 1.0, 11.0).mean()))

    assert (choice.accuracy, choice.cost) == pytest.approx(outcome(threshold))
    # Against every distinct confidence (the search tries 400 quantiles of them): nothing reaching the
    # target is cheaper, and the search is within two items' escalations of the exact optimum.
    exact = min(c for a, c in map(outcome, [*np.unique(conf[:, 0]), np.inf]) if a >= 0.85)
    assert exact - 1e-12 <= choice.cost <= exact + 2 * 10.0 / 500
    assert shared_threshold_search(conf, correct, cost, 0.999) is None


# ----------------------------------------------------------------------------- evaluation report


def test_evaluate_config_report_is_consistent(runs: RecordedRuns, tmp_path: Path) -> None:
    config = _config(tmp_path, {}, (0.55, 0.6, 0.0), ("hybrid", "avg_logprob", "margin"))
    report = evaluate_config(config, runs)
    assert set(EVALUATE_KEYS) <= set(report)
    matrix = build_matrix(runs, ["tiny", "medium", "large"], config)
    out = replay_config(config, matrix)
    assert report["accuracy"] == pytest.approx(out.accuracy)
    assert report["cost"] == pytest.approx(out.mean_cost)
    assert report["savings"] == pytest.approx(1 - report["cost"] / report["largest_cost"])
    assert report["oracle_cost"] <= report["largest_cost"]
    assert report["oracle_accuracy"] >= max(report["largest_accuracy"], report["accuracy"])
    assert sum(report["served_share"].values()) == pytest.approx(1.0 - report["failed"] / report["n"])
    assert set(report["escalation_rate_per_tier"]) == {"tiny", "medium"}
    assert 0.0 <= report["escalation_rate"] <= 1.0
    sig = report["signals"]["tiny"]["avg_logprob"]
    assert sig["auroc"] > 0.6 and sig["ece_after"] < sig["ece_before"]
    assert report["baselines"]["always_largest"]["savings"] == pytest.approx(0.0)

"""The tuner's guarantee, simulated: over many tuning samples drawn from a world whose truth is known,
the certified cascade's true accuracy drop versus the largest model exceeds the target at most a
delta share of the time. The simulation drives the tuner's own quantile paths and fixed-sequence
certification (the label-free parts that decide validity) on vectorised synthetic worlds."""

from __future__ import annotations

import numpy as np
import pytest

from langchain_confidence_router.core.config import parse_config
from langchain_confidence_router.evaluation.replay import replay_arrays
from langchain_confidence_router.evaluation.tune import Family, _certify, _Problem, _quantile_paths, _select_one_path

NAMES = ("small", "medium", "large")
SKILL = np.array([0.9, 1.15, 1.3])  # the cheap models are close to the largest: a drop near the target
PRICE = np.array([1.0, 3.0, 10.0])

# the exact paired p-value costs about a millisecond at these sizes; 500 repetitions take seconds
pytestmark = pytest.mark.slow


def _world(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    difficulty = rng.normal(0.0, 1.0, (n, 1))
    correct = rng.random((n, 3)) < 1.0 / (1.0 + np.exp(-2.0 * (SKILL - difficulty)))
    conf = 1.0 / (1.0 + np.exp(-(1.2 * (SKILL - difficulty) + 0.8 * correct + rng.normal(0.0, 0.7, (n, 3)))))
    return correct, np.broadcast_to(PRICE, (n, 3)).copy(), conf


def _violation_rate(eps: float, delta: float, reps: int, n: int, seed: int, select_fraction: float = 0.0
                    ) -> tuple[float, float]:
    rng = np.random.default_rng(seed)
    pop_correct, pop_cost, pop_conf = _world(100_000, rng)
    settings = parse_config({}).confidence
    ref = float(pop_correct[:, 2].mean())
    violations, savings = 0, []
    for _ in range(reps):
        correct, cost, conf = _world(n, rng)
        families = [Family("score", "score", "none", dict.fromkeys(NAMES), conf)]
        problem = _Problem(families, correct, cost, settings, 2)
        paths = _quantile_paths(families, None, NAMES, 10)  # type: ignore[arg-type]
        rows = np.arange(n)
        if select_fraction:  # one path chosen on a part of the items, certified on the rest at the full delta
            paths, _, rows = _select_one_path(problem, paths, rng, select_fraction, relative=True, level_value=eps,
                                              delta=delta, bound="binomial")
        _, certified, _ = _certify(problem, paths, rows, NAMES, relative=True, level_value=eps,
                                   level=delta / len(paths), bound="binomial")
        chosen = min((c for c, _ in certified), key=lambda c: problem.stats(c, np.arange(n)).cost)
        cols = list(chosen.chain)
        out = replay_arrays(pop_conf[:, cols], chosen.thresholds, pop_correct[:, cols], pop_cost[:, cols])
        violations += ref - out.accuracy > eps
        savings.append(1.0 - out.mean_cost / PRICE[2])
    return violations / reps, float(np.mean(savings))


def test_realised_violation_rate_is_at_most_delta() -> None:
    delta = 0.1
    rate, saving = _violation_rate(eps=0.01, delta=delta, reps=500, n=400, seed=3)
    # 500 repetitions: a rate above delta by three binomial standard errors would refute the guarantee
    assert rate <= delta + 3 * np.sqrt(delta * (1 - delta) / 500), rate
    assert saving > 0.05, "the simulated world must let the tuner certify cheap cascades, or the test is vacuous"


def test_violation_rate_with_the_path_chosen_on_a_selection_part() -> None:
    delta = 0.1
    rate, saving = _violation_rate(eps=0.01, delta=delta, reps=500, n=600, seed=5, select_fraction=0.3)
    assert rate <= delta + 3 * np.sqrt(delta * (1 - delta) / 500), rate
    assert saving > 0.05, "the simulated world must let the tuner certify cheap cascades, or the test is vacuous"


def test_the_simulation_detects_an_invalid_procedure() -> None:
    # Testing every configuration at level 0.9 instead of delta / paths breaks the guarantee; the
    # same simulation must see it (so the first test can fail).
    rate, _ = _violation_rate(eps=0.01, delta=0.9 * 3, reps=100, n=400, seed=4)
    assert rate > 0.1 + 3 * np.sqrt(0.1 * 0.9 / 100), rate

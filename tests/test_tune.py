"""Bounds behind the guarantee, and the tuner: its guarantee on simulated draws, its output, its errors."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from langchain_confidence_router.core.config import load_config, parse_config
from langchain_confidence_router.core.tiers import build_tiers
from langchain_confidence_router.evaluation.baselines import grid_search
from langchain_confidence_router.evaluation.bounds import (
    _score_tail,
    binom_cdf,
    binomial_pvalue,
    clopper_pearson,
    clopper_pearson_lower,
    clopper_pearson_upper,
    hoeffding_bentkus_pvalue,
    paired_drop_pvalue,
    paired_drop_ucb,
    paired_score_statistic,
    trinomial_sum_cdf,
)
from langchain_confidence_router.evaluation.calibrate import score_array
from langchain_confidence_router.evaluation.matrix import RunMatrix
from langchain_confidence_router.evaluation.replay import replay_arrays, replay_tiers
from langchain_confidence_router.evaluation.tune import TuneError, _best_threshold, tune, write_tuned_config

# ----------------------------------------------------------------------------- bounds


def test_binom_cdf_against_exact_sum() -> None:
    for n, p in ((10, 0.3), (57, 0.05), (200, 0.9)):
        for k in (0, 1, n // 3, n - 1):
            exact = sum(math.comb(n, j) * p**j * (1 - p) ** (n - j) for j in range(k + 1))
            assert binom_cdf(k, n, p) == pytest.approx(exact, rel=1e-9, abs=1e-300)


def test_clopper_pearson_matches_scipy_beta() -> None:
    beta = pytest.importorskip("scipy.stats").beta
    for k, n, alpha in ((0, 10, 0.05), (3, 10, 0.05), (10, 10, 0.1), (17, 400, 0.01), (250, 1000, 0.05)):
        upper = 1.0 if k == n else beta.ppf(1 - alpha, k + 1, n - k)
        lower = 0.0 if k == 0 else beta.ppf(alpha, k, n - k + 1)
        assert clopper_pearson_upper(k, n, alpha) == pytest.approx(upper, abs=1e-9)
        assert clopper_pearson_lower(k, n, alpha) == pytest.approx(lower, abs=1e-9)
        lo, hi = clopper_pearson(k, n, 2 * alpha)
        assert (lo, hi) == pytest.approx((lower, upper), abs=1e-9)


def test_clopper_pearson_defining_property() -> None:
    for k, n in ((5, 40), (0, 100), (99, 100)):
        u = clopper_pearson_upper(k, n, 0.05)
        assert binom_cdf(k, n, u) == pytest.approx(0.05, abs=1e-9)


def test_binomial_and_hb_pvalues() -> None:
    # 50 errors in 1000 against alpha = 0.1: overwhelming evidence the error rate is below 0.1
    assert binomial_pvalue(50, 1000, 0.1) < 1e-8
    assert binomial_pvalue(100, 1000, 0.1) > 0.4
    hb = hoeffding_bentkus_pvalue(0.05, 1000, 0.1)
    assert binomial_pvalue(50, 1000, 0.1) <= hb < 1e-4  # HB is valid but weaker for 0/1 losses
    rng = np.random.default_rng(0)  # validity: at the boundary the test rejects at most alpha of the time
    errors = rng.binomial(300, 0.1, 4000)
    assert np.mean([binomial_pvalue(int(k), 300, 0.1) <= 0.05 for k in errors]) <= 0.05 + 0.01


def test_trinomial_sum_cdf_against_brute_force() -> None:
    n, pp, pm = 12, 0.2, 0.1
    for t in range(-4, 5):
        brute = sum(math.comb(n, a) * math.comb(n - a, b) * pp**a * pm**b * (1 - pp - pm) ** (n - a - b)
                    for a in range(n + 1) for b in range(n + 1 - a) if a - b <= t)
        assert trinomial_sum_cdf(t, n, pp, pm) == pytest.approx(brute, abs=1e-12)


@pytest.mark.parametrize(("n", "pi", "eps", "z"), [(40, 0.3, 0.05, -1.3), (40, 0.1, 0.02, 0.4), (60, 0.5, -0.1, 2.5),
                                              (25, 0.05, 0.04, -3.0), (50, 0.2, 0.0, 6.0), (50, 0.2, 0.0, -0.7)])
def test_score_tail_recurrence_against_brute_force(n: int, pi: float, eps: float, z: float) -> None:
    # the inner binomial CDFs come from a recurrence along N and per-N thresholds from a bisection; check
    # the whole tail against a double sum over every (worse, better) count
    pp, pm = (pi + eps) / 2, (pi - eps) / 2
    brute = sum(math.comb(n, a) * math.comb(n - a, b) * pp**a * pm**b * (1 - pp - pm) ** (n - a - b)
                for a in range(n + 1) for b in range(n + 1 - a)
                if float(paired_score_statistic(a, b, n, eps)) <= z)
    assert _score_tail(n, pi, eps, z) == pytest.approx(brute, abs=1e-12)


@pytest.mark.parametrize(("n", "eps"), [(500, 0.01), (3000, 0.01), (400, 0.0), (400, -0.02), (50, 0.2)])
def test_score_statistic_increases_with_worse_items(n: int, eps: float) -> None:
    # the tail's per-N thresholds assume it: at a fixed number of discordant items, one more "worse" item
    # (and one fewer "better") never lowers the statistic
    for n_dis in range(0, min(n, 300)):
        a = np.arange(n_dis + 1)
        assert np.all(np.diff(paired_score_statistic(a, n_dis - a, n, eps)) > 0)


def test_score_keeps_better_items_as_evidence() -> None:
    # 5 worse and 6 better in 500 items is stronger evidence of "drop <= 1 point" than 2 worse and none better
    assert paired_drop_pvalue(500, 5, 6, 0.01) < paired_drop_pvalue(500, 2, 0, 0.01)
    assert paired_drop_pvalue(1295, 8, 2, 0.01) < 0.05


@pytest.mark.parametrize(("n", "level"), [(1295, 0.05), (1295, 0.05 / 7), (500, 0.05), (3000, 0.05 / 7)])
def test_no_better_items_certifies_about_as_many_worse_ones_as_the_exact_binomial(n: int, level: float) -> None:
    # with no "better" item the null's worst case is p_worse = eps, p_better = 0, where the one-sided exact
    # binomial test is the most powerful: the paired test may not tolerate more worse items (it would be
    # invalid) and should not tolerate fewer than that minus one (the Berger-Boos gamma's price)
    def budget(p_value: object) -> int:
        k = -1
        while p_value(k + 1) <= level:  # type: ignore[operator]
            k += 1
        return k

    ump = budget(lambda k: binom_cdf(k, n, 0.01))
    paired = budget(lambda k: paired_drop_pvalue(n, k, 0, 0.01, level=level))
    assert ump - 1 <= paired <= ump


def _exact_size(n: int, pi: float, eps: float, level: float) -> float:
    """Exact probability that the paired test rejects when E[D] = eps exactly (the worst null)."""
    pp = (pi + eps) / 2
    total = 0.0
    for n_dis in range(n + 1):
        w = math.comb(n, n_dis) * pi**n_dis * (1 - pi) ** (n - n_dis)
        if w < 1e-12:
            continue
        q = pp / pi
        for a in range(n_dis + 1):  # rejection is monotone in a: stop at the first acceptance
            if paired_drop_pvalue(n, a, n_dis - a, eps, level=level) > level:
                break
            total += w * math.comb(n_dis, a) * q**a * (1 - q) ** (n_dis - a)
    return total


@pytest.mark.parametrize(("pi", "eps"), [(0.03, 0.02), (0.12, 0.02), (0.3, 0.02), (0.08, 0.0)])
def test_paired_drop_test_has_exact_size_below_level(pi: float, eps: float) -> None:
    assert _exact_size(120, pi, eps, 0.1) <= 0.1


def test_paired_drop_pvalue_and_ucb_behave() -> None:
    # no disagreement at all in 2000 items: a drop of 1 point is excluded
    assert paired_drop_pvalue(2000, 0, 0, 0.01) <= 0.05
    assert paired_drop_ucb(2000, 0, 0, 0.05) < 0.01
    # more "cascade worse" items: a larger bound
    assert paired_drop_ucb(2000, 30, 10, 0.05) > paired_drop_ucb(2000, 20, 20, 0.05) > 0.0
    # the bound is above the observed difference
    assert paired_drop_ucb(2000, 30, 10, 0.05) > 20 / 2000
    # too few items: nothing can be certified at eps = 1 point
    assert paired_drop_pvalue(200, 0, 0, 0.01) > 0.05


# ----------------------------------------------------------------------------- synthetic worlds


def _world(n: int, rng: np.random.Generator, skills: tuple[float, ...] = (-0.2, 0.9),
           prices: tuple[float, ...] = (1.0, 5.0)) -> RunMatrix:
    """Items with a difficulty; each model right with sigmoid(1.3 (skill - difficulty)); an informative
    but noisy avg_logprob signal per answer."""
    d = rng.normal(0.0, 1.0, n)
    correct, signal = [], []
    for s in skills:
        ok = rng.random(n) < 1 / (1 + np.exp(-1.3 * (s - d)))
        certainty = np.clip(0.45 + 0.3 * ok + 0.25 * (s - d) / 3 + rng.normal(0, 0.2, n), 0.02, 0.999)
        correct.append(ok)
        signal.append(np.log(certainty))
    cost = np.column_stack([np.full(n, p) * rng.uniform(0.8, 1.2, n) for p in prices]) * 1e-5
    models = [f"m{i}" for i in range(len(skills))]
    return RunMatrix(models, [f"i{i}" for i in range(n)], np.column_stack(correct), cost,
                     {"avg_logprob": np.column_stack(signal)})


def _true_drop(result: object, population: RunMatrix) -> float:
    base = parse_config({})
    out = replay_tiers(result.tiers(base), base.confidence, population)  # type: ignore[attr-defined]
    return float(population.correct[:, -1].mean() - out.accuracy)


def test_tuner_guarantee_holds_over_many_draws() -> None:
    """Relative target, two models: the chosen cascade's TRUE drop exceeds 1 point in <= delta of draws,
    while the empirical grid (no guarantee) on the same draws overshoots far more often."""
    rng = np.random.default_rng(11)
    population = _world(100_000, rng)
    eps, delta, draws, n = 0.01, 0.1, 60, 700
    pop_conf = score_array("avg_logprob", population.signals["avg_logprob"])
    violations = grid_violations = 0
    saved = []
    for r in range(draws):
        sample = population.take(rng.choice(population.n, n, replace=False))
        result = tune(sample, None, max_accuracy_drop=eps, delta=delta, seed=r)
        violations += _true_drop(result, population) > eps
        saved.append(result.evidence["expected"]["savings"])
        target = sample.correct[:, -1].mean() - eps
        choice = grid_search(score_array("avg_logprob", sample.signals["avg_logprob"]), sample.correct, sample.cost,
                             target, levels=(60,))
        assert choice is not None
        cols = list(choice.chain)
        out = replay_arrays(pop_conf[:, cols], choice.thresholds, population.correct[:, cols], population.cost[:, cols])
        grid_violations += population.correct[:, -1].mean() - out.accuracy > eps
    slack = 3 * math.sqrt(delta * (1 - delta) / draws)
    assert violations / draws <= delta + slack
    assert grid_violations / draws > violations / draws + 0.15, "the world should tempt an unguarded tuner"
    assert np.mean(saved) > 0.05, "the tuner should still save something here"


def test_tuner_guarantee_absolute_target_split_mode() -> None:
    """Three models, absolute target, split mode: true accuracy below the target in <= delta of draws."""
    rng = np.random.default_rng(12)
    population = _world(200_000, rng, skills=(-0.5, 0.4, 1.3), prices=(1.0, 3.0, 9.0))
    target, delta, draws, n = 0.74, 0.1, 16, 1200
    misses = 0
    for r in range(draws):
        sample = population.take(rng.choice(population.n, n, replace=False))
        result = tune(sample, None, target_accuracy=target, delta=delta, seed=r, max_path=60, n_mu=15, grid=30)
        assert result.evidence["mode"] == "split"
        base = parse_config({})
        acc = replay_tiers(result.tiers(base), base.confidence, population).accuracy
        misses += acc < target
    assert misses / draws <= delta + 3 * math.sqrt(delta * (1 - delta) / draws)


# ----------------------------------------------------------------------------- tuner behaviour and output


def test_best_threshold_picks_the_cheapest_prefix() -> None:
    conf = np.array([0.9, 0.8, 0.7, 0.6])
    gain = np.array([-1.0, -1.0, 3.0, -0.5])  # accept the top two, not the third
    assert _best_threshold(conf, gain) == pytest.approx(0.75)
    assert _best_threshold(conf, np.array([1.0, 1.0, 1.0, 1.0])) == math.inf
    assert _best_threshold(conf, np.array([-1.0, -1.0, -1.0, -1.0])) == 0.0


def test_no_target_uses_cost_quality_tradeoff() -> None:
    rng = np.random.default_rng(13)
    sample = _world(1500, rng)
    cheap = tune(sample, parse_config({"algorithm": {"confidence": {"cost_quality_tradeoff": 1.0}}}))
    careful = tune(sample, parse_config({"algorithm": {"confidence": {"cost_quality_tradeoff": 0.0}}}))
    assert cheap.models == ["m0"]  # pure cost: the small model alone
    assert careful.evidence["expected"]["accuracy"] >= cheap.evidence["expected"]["accuracy"]
    assert careful.evidence["guarantee"].startswith("none")


def test_tuned_config_file_loads_and_records_evidence(tmp_path: Path) -> None:
    rng = np.random.default_rng(14)
    sample = _world(3000, rng)
    base = parse_config({"models": [{"name": "m0", "input_cost_per_token": 1e-7},
                                    {"name": "m1", "input_cost_per_token": 5e-7}],
                         "algorithm": {"confidence": {"token_filter": "all"}}})
    result = tune(sample, base, max_accuracy_drop=0.02, delta=0.05)
    out = write_tuned_config(result, base, tmp_path / "tuned.yaml")
    config = load_config(out)
    tiers, how = build_tiers(config)
    assert how == "declared order"
    assert [t.name for t in tiers] == result.models
    assert tiers[-1].threshold == 0.0
    assert all(t.calibration is not None for t in tiers)
    assert config.confidence.token_filter == "all"  # base settings are kept
    ev = config.evidence or {}
    for key in ("n", "target", "delta", "bound", "signal", "expected", "certified", "candidates", "guarantee"):
        assert key in ev
    assert ev["target"]["kind"] == "relative" and ev["delta"] == 0.05
    assert ev["candidates"] == ["m0", "m1"]


def test_tune_argument_errors() -> None:
    sample = _world(300, np.random.default_rng(15))
    with pytest.raises(TuneError, match="either"):
        tune(sample, None, target_accuracy=0.8, max_accuracy_drop=0.01)
    with pytest.raises(TuneError, match="delta"):
        tune(sample, None, target_accuracy=0.8, delta=1.5)
    with pytest.raises(TuneError, match="not computed by the router"):
        tune(sample, None, target_accuracy=0.8, signals=["verbal"])
    with pytest.raises(TuneError, match="no recorded runs"):
        tune(sample, None, target_accuracy=0.8, models=["m0", "nope"])
    with pytest.raises(TuneError, match="unknown calibration"):
        tune(sample, None, target_accuracy=0.8, calibrate="magic")


def test_unreachable_absolute_target_returns_largest_uncertified() -> None:
    sample = _world(800, np.random.default_rng(16))
    result = tune(sample, None, target_accuracy=0.99, delta=0.05)
    assert result.models == ["m1"]
    assert result.evidence["certified"] is False and "note" in result.evidence


def _paired_bad(eps: float) -> object:
    return lambda n, k: paired_drop_pvalue(n, k, 0, eps, level=0.05)


def test_signal_choice_spends_only_the_items_the_certification_can_spare() -> None:
    from langchain_confidence_router.evaluation.tune import _budget, _sparing_select_size

    p_value = _paired_bad(0.01)
    # 500 items tolerate one "worse" item at a 1-point target and level 0.05, so do 479; 478 tolerate none
    assert _budget(500, p_value, 0.05) == _budget(479, p_value, 0.05) == 1 and _budget(478, p_value, 0.05) == 0
    assert _sparing_select_size(500, 100, p_value, 0.05) == 21
    size = _sparing_select_size(1635, 327, p_value, 0.05)
    assert 20 <= size < 327 and _budget(1635 - size, p_value, 0.05) == _budget(1635, p_value, 0.05)
    assert _budget(1635 - size - 1, p_value, 0.05) < _budget(1635, p_value, 0.05)
    assert _sparing_select_size(50, 10, p_value, 0.05) == 10  # never more than the cap


def test_direct_mode_guarantee_with_the_signal_chosen_on_a_spared_part() -> None:
    """Two signals that rank answers differently: one is chosen on the spared part, certified on the rest;
    the chosen cascade's TRUE drop exceeds 1 point in <= delta of draws."""
    rng = np.random.default_rng(12)
    population = _world(100_000, rng)
    noisy = population.signals["avg_logprob"] + rng.normal(0.0, 0.15, population.signals["avg_logprob"].shape)
    population = RunMatrix(population.models, population.item_ids, population.correct, population.cost,
                           {"avg_logprob": population.signals["avg_logprob"], "min_logprob": noisy})
    eps, delta, draws, n = 0.01, 0.1, 60, 700
    violations, saved, sizes = 0, [], set()
    for r in range(draws):
        sample = population.take(rng.choice(population.n, n, replace=False))
        result = tune(sample, None, max_accuracy_drop=eps, delta=delta, seed=r, calibrate="none")
        ev = result.evidence
        assert ev["mode"] == "direct"
        sizes.add(ev["n_select"])
        violations += _true_drop(result, population) > eps
        saved.append(ev["expected"]["savings"])
    assert sizes == {_sparing_select_size_at(n, eps, delta)} and 0 < min(sizes) < 0.2 * n
    assert violations / draws <= delta + 3 * math.sqrt(delta * (1 - delta) / draws)
    assert np.mean(saved) > 0.05, "the tuner should still save something here"


def _sparing_select_size_at(n: int, eps: float, delta: float) -> int:
    from langchain_confidence_router.evaluation.tune import _sparing_select_size

    return _sparing_select_size(n, round(0.2 * n), lambda m, k: paired_drop_pvalue(m, k, 0, eps, level=delta), delta)

"""Calibration fitting and metrics on synthetic data with known answers, and agreement with the run-time side."""

from __future__ import annotations

import math

import numpy as np
import pytest

from langchain_confidence_router.core.calibration import Calibration, load_calibration
from langchain_confidence_router.core.signals import score_from_raw
from langchain_confidence_router.evaluation.calibrate import (
    fit_calibration,
    fit_isotonic,
    fit_platt,
    fit_temperature,
    predict_array,
    score_array,
)
from langchain_confidence_router.evaluation.metrics import auroc, brier, ece, rankdata, reliability_bins


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))


def test_platt_recovers_known_parameters() -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(-1.0, 1.5, 40_000)
    y = rng.random(x.size) < _sigmoid(2.0 * x - 0.5)
    a, b = fit_platt(x, y)
    assert a == pytest.approx(2.0, abs=0.08)
    assert b == pytest.approx(-0.5, abs=0.06)


def test_platt_treats_minus_inf_as_least_confident() -> None:
    x = np.array([-np.inf, -3.0, -2.0, -1.0, -0.5, -0.1, -0.05, -0.01] * 20)
    y = np.tile([0, 0, 0, 1, 0, 1, 1, 1], 20).astype(bool)
    a, b = fit_platt(x, y)
    assert math.isfinite(a) and math.isfinite(b) and a > 0


def test_temperature_recovers_known_temperature() -> None:
    rng = np.random.default_rng(2)
    z = rng.normal(0.0, 2.5, 40_000)
    score = _sigmoid(z)  # a 0..1 score ("hybrid" maps raw to itself)
    y = rng.random(z.size) < _sigmoid(z / 2.0)
    assert fit_temperature(score, y) == pytest.approx(2.0, rel=0.05)


def test_isotonic_hand_example_and_monotone() -> None:
    xs, ys = fit_isotonic(np.array([1.0, 2.0, 3.0, 4.0]), np.array([1.0, 0.0, 1.0, 1.0]))
    assert xs == [1.0, 2.0, 3.0, 4.0]
    assert ys == pytest.approx([0.5, 0.5, 1.0, 1.0])
    rng = np.random.default_rng(3)
    x = rng.normal(size=2_000)
    y = rng.random(x.size) < _sigmoid(1.5 * x)
    kx, ky = fit_isotonic(x, y)
    assert np.all(np.diff(kx) > 0), "knots must be strictly increasing for np.interp"
    assert np.all(np.diff(ky) >= -1e-12), "an increasing fit never decreases"
    dx, dy = fit_isotonic(x, y, increasing=False)
    assert np.all(np.diff(dx) > 0) and np.all(np.diff(dy) <= 1e-12)


def test_isotonic_is_the_least_squares_monotone_fit() -> None:
    """PAV against a brute-force check: no monotone step with the same blocks fits better."""
    rng = np.random.default_rng(4)
    x = np.arange(12, dtype=float)
    y = (rng.random(12) < 0.5).astype(float)
    kx, ky = fit_isotonic(x, y)
    fitted = np.interp(x, kx, ky)
    sse = np.sum((fitted - y) ** 2)
    for _ in range(2_000):  # random monotone candidates never beat it
        cand = np.sort(rng.random(12))
        assert np.sum((cand - y) ** 2) >= sse - 1e-12


def test_combiner_recovers_direction_and_matches_runtime() -> None:
    rng = np.random.default_rng(5)
    n = 20_000
    s1 = rng.normal(-1.0, 0.5, n)
    s2 = rng.normal(0.5, 0.3, n)
    z = 1.5 * (s1 + 1.0) / 0.5 - 1.0 * (s2 - 0.5) / 0.3 + 0.3
    y = rng.random(n) < _sigmoid(z)
    cal = fit_calibration("combiner", {"avg_logprob": s1, "entropy": s2}, y, signals=["avg_logprob", "entropy"],
                          model="m", l2=1.0)
    coef = cal.params["coef"]
    assert coef[0] == pytest.approx(1.5, abs=0.1)
    assert coef[1] == pytest.approx(-1.0, abs=0.1)
    assert cal.params["intercept"] == pytest.approx(0.3, abs=0.08)
    raw = {"avg_logprob": np.array([-1.0, np.nan, -0.2]), "entropy": np.array([0.4, 0.6, np.inf])}
    vec = predict_array(cal, raw)
    for i in range(3):
        one = {k: (None if np.isnan(v[i]) else float(v[i])) for k, v in raw.items()}
        assert vec[i] == pytest.approx(cal.predict(one), abs=1e-12)


@pytest.mark.parametrize("method", ["platt", "temperature", "isotonic"])
@pytest.mark.parametrize("signal", ["avg_logprob", "margin", "entropy", "min_logprob"])
def test_vectorised_predict_equals_core_predict(method: str, signal: str) -> None:
    rng = np.random.default_rng(6)
    raw = {"avg_logprob": -rng.exponential(0.5, 400), "margin": rng.exponential(2.0, 400),
           "entropy": rng.random(400), "min_logprob": -rng.exponential(2.0, 400)}
    y = rng.random(400) < 0.6
    cal = fit_calibration(method, raw, y, signal=signal, model="m")
    probe = np.concatenate([raw[signal][:50], [np.nan, -np.inf if signal != "margin" else np.inf, 0.0]])
    vec = predict_array(cal, {signal: probe})
    for i, v in enumerate(probe):
        expected = cal.predict({signal: None if np.isnan(v) else float(v)})
        if expected is None:
            assert np.isnan(vec[i])
        else:
            assert vec[i] == pytest.approx(expected, abs=1e-12)


def test_score_array_matches_score_from_raw() -> None:
    values = np.array([-5.0, -3.0, -1.2, -0.01, 0.0, 0.3, 1.0, 2.5, np.inf, -np.inf, np.nan])
    for name in ("avg_logprob", "margin", "hybrid", "geometric_mean", "min_logprob", "tail", "entropy"):
        vec = score_array(name, values)
        for i, v in enumerate(values):
            if name == "margin" and v == -np.inf:
                continue  # not a value a margin takes
            expected = score_from_raw(name, float(v))
            if expected is None:
                assert np.isnan(vec[i])
            else:
                assert vec[i] == pytest.approx(expected), (name, v)


def test_saved_calibration_loads_and_predicts_the_same(tmp_path: object) -> None:
    rng = np.random.default_rng(7)
    x = -rng.exponential(0.7, 500)
    y = rng.random(500) < _sigmoid(3 * x + 1)
    for method in ("platt", "temperature", "isotonic"):
        cal = fit_calibration(method, {"avg_logprob": x}, y, signal="avg_logprob", model="small")
        path = tmp_path / f"{method}.json"  # type: ignore[operator]
        cal.save(path)
        loaded = load_calibration(path)
        assert isinstance(loaded, Calibration) and loaded.method == method
        assert loaded.fitted["n"] == 500 and "auroc" in loaded.fitted and "ece" in loaded.fitted
        hist = loaded.fitted["histogram"]  # the drift monitor's baseline
        assert len(hist["edges"]) == 51 and sum(hist["counts"]) == 500
        assert loaded.predict({"avg_logprob": -0.3}) == pytest.approx(cal.predict({"avg_logprob": -0.3}))


def test_auroc_hand_computed_and_against_pairs() -> None:
    assert auroc(np.array([0.1, 0.4, 0.35, 0.8]), np.array([0, 0, 1, 1])) == pytest.approx(0.75)
    assert auroc(np.array([0.5, 0.5]), np.array([1, 0])) == pytest.approx(0.5)
    assert math.isnan(auroc(np.array([0.2, 0.3]), np.array([1, 1])))
    rng = np.random.default_rng(8)
    s = rng.integers(0, 5, 60).astype(float)  # many ties
    y = rng.random(60) < 0.5
    pos, neg = s[y], s[~y]
    pairs = np.mean([(p > q) + 0.5 * (p == q) for p in pos for q in neg])
    assert auroc(s, y) == pytest.approx(pairs)


def test_rankdata_matches_scipy() -> None:
    stats = pytest.importorskip("scipy.stats")
    x = np.random.default_rng(9).integers(0, 7, 200).astype(float)
    assert np.allclose(rankdata(x), stats.rankdata(x))


def test_ece_near_zero_when_calibrated_and_large_when_not() -> None:
    rng = np.random.default_rng(10)
    p = rng.random(200_000)
    y = rng.random(p.size) < p
    assert ece(p, y) < 0.01
    assert ece(p, y, binning="width") < 0.01
    assert ece(np.clip(p + 0.2, 0, 1), y) > 0.15
    bins = reliability_bins(p, y, bins=10)
    assert bins.count.sum() == p.size and np.allclose(bins.count, p.size / 10)


def test_brier_hand_computed() -> None:
    assert brier(np.array([1.0, 0.0, 0.5]), np.array([1, 1, 0])) == pytest.approx((0 + 1 + 0.25) / 3)


def test_unknown_method_and_missing_signal_are_errors() -> None:
    with pytest.raises(ValueError, match="unknown calibration method"):
        fit_calibration("magic", {"avg_logprob": np.zeros(3)}, np.ones(3, bool), signal="avg_logprob")
    with pytest.raises(ValueError, match="needs a signal"):
        fit_calibration("platt", {"avg_logprob": np.zeros(3)}, np.ones(3, bool))

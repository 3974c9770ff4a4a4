"""Fit per-model calibration maps (raw signal(s) -> P(correct)) on labelled recorded runs.

The maps are saved in the versioned JSON format the run-time side reads
(:class:`langchain_confidence_router.core.calibration.Calibration`, ``confidence-router/calibration``
version 1), so fitting may use anything while the router itself stays numpy-only.

Methods (all fitted by maximum likelihood or least squares in numpy, no scipy):

* ``platt``: sigmoid(a * raw + b), a 1-D logistic regression on the raw signal.
* ``temperature``: sigmoid(logit(score) / T) on the signal's 0..1 score; one parameter, keeps the
  ranking and only sharpens or flattens the score.
* ``isotonic``: the monotone step function closest to the labels (pool-adjacent-violators),
  stored as knots and applied with linear interpolation between them.
* ``combiner``: a logistic regression over several raw signals, standardised, L2-penalised
  (``l2`` is the penalty on the sum of log-losses), missing values imputed with the mean as the
  run-time does.

Non-finite raw values (-inf from a zero-probability token) are fitted as the lowest finite value
seen; at run time they map to the same end of every monotone map.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..core.calibration import CALIBRATION_METHODS, Calibration
from ..core.signals import LOWER_IS_CONFIDENT
from . import metrics
from .metrics import DEFAULT_BINS, auroc, binning_label, brier, ece

__all__ = [
    "CALIBRATION_METHODS",
    "CalibrationFit",
    "calibration_summary",
    "confidence_histogram",
    "fit_calibration",
    "fit_isotonic",
    "fit_logistic",
    "fit_platt",
    "fit_temperature",
    "predict_array",
    "score_array",
]


# ------------------------------------------------------------------ vectorised run-time semantics


def score_array(name: str, raw: np.ndarray) -> np.ndarray:
    """The 0..1 score of each raw value, exactly as ``core.signals.score_from_raw`` (NaN stays NaN)."""
    x = np.asarray(raw, dtype=float)
    with np.errstate(over="ignore", invalid="ignore"):
        if name == "avg_logprob":
            out = np.clip((x + 3.0) / 3.0, 0.0, 1.0)
        elif name == "margin":
            out = np.where(x == np.inf, 1.0, 1.0 - np.exp(-x / 3.0))
        elif name in ("min_logprob", "bottom_percent", "lowest_group", "tail"):
            out = np.exp(x)
        elif name == "entropy":
            out = np.clip(1.0 - x, 0.0, 1.0)
        else:
            out = np.clip(x, 0.0, 1.0)
    return np.where(np.isnan(x), np.nan, out)


def _sigmoid(z: np.ndarray) -> np.ndarray:
    z = np.asarray(z, dtype=float)
    out = np.empty_like(z)
    pos = z >= 0
    out[pos] = 1.0 / (1.0 + np.exp(-z[pos]))
    e = np.exp(z[~pos])
    out[~pos] = e / (1.0 + e)
    return out


def _runtime_finite(x: np.ndarray) -> np.ndarray:
    """core.calibration._finite: -inf (and anything below) becomes -1e6."""
    return np.where(x == -np.inf, -1e6, np.maximum(x, -1e6))


def predict_array(cal: Calibration, raw: Mapping[str, np.ndarray]) -> np.ndarray:
    """``cal.predict`` for many answers at once (same formulas, NaN where the core returns None)."""
    p = cal.params
    if cal.method == "combiner":
        cols = [np.asarray(raw[s], dtype=float) if s in raw else None for s in cal.signals]
        n = next((c.shape[0] for c in cols if c is not None), 0)
        mean = np.asarray(p["mean"], dtype=float)
        scale = np.asarray(p["scale"], dtype=float)
        coef = np.asarray(p["coef"], dtype=float)
        x = np.column_stack([np.full(n, np.nan) if c is None else c for c in cols]) if cols else np.zeros((n, 0))
        x = np.where(np.isfinite(x), x, mean[None, :])
        z = ((x - mean) / scale) @ coef + float(p["intercept"])
        return _sigmoid(z)
    x = np.asarray(raw[str(cal.signal)], dtype=float)
    missing = np.isnan(x)
    if cal.method == "platt":
        out = _sigmoid(float(p["a"]) * _runtime_finite(np.where(missing, 0.0, x)) + float(p["b"]))
    elif cal.method == "temperature":
        s = score_array(str(cal.signal), x)
        s = np.clip(np.where(np.isnan(s), 0.5, s), 1e-12, 1 - 1e-12)
        out = _sigmoid(np.log(s / (1 - s)) / float(p["temperature"]))
    else:
        out = np.interp(_runtime_finite(np.where(missing, 0.0, x)), p["x"], p["y"])
    return np.where(missing, np.nan, out)


# ------------------------------------------------------------------ fitting


def _finite_for_fit(x: np.ndarray) -> np.ndarray:
    """Replace -inf/+inf by the lowest/highest finite value (NaN must already be removed)."""
    x = np.asarray(x, dtype=float).copy()
    finite = np.isfinite(x)
    if not finite.any():
        return np.zeros_like(x)
    x[x == -np.inf] = x[finite].min()
    x[x == np.inf] = x[finite].max()
    return x


def fit_logistic(x: np.ndarray, y: np.ndarray, l2: float = 0.0, max_iter: int = 100) -> tuple[np.ndarray, float]:
    """Logistic regression by Newton's method: minimise sum of log-losses + l2/2 * |coef|^2.

    ``x`` is (n, d); the intercept is not penalised. A tiny ridge keeps separable data finite.
    """
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    n, d = x.shape
    design = np.column_stack([x, np.ones(n)])
    penalty = np.full(d + 1, max(l2, 1e-8))
    penalty[-1] = 1e-10
    ybar = min(max(y.mean() if n else 0.5, 1e-6), 1 - 1e-6)
    w = np.zeros(d + 1)
    w[-1] = math.log(ybar / (1 - ybar))

    def loss(v: np.ndarray) -> float:
        z = design @ v
        return float(np.sum(np.logaddexp(0.0, z) - y * z) + 0.5 * np.sum(penalty * v * v))

    current = loss(w)
    for _ in range(max_iter):
        prob = _sigmoid(design @ w)
        grad = design.T @ (prob - y) + penalty * w
        hess = (design * (prob * (1 - prob))[:, None]).T @ design + np.diag(penalty)
        try:
            step = np.linalg.solve(hess, grad)
        except np.linalg.LinAlgError:
            step = np.linalg.lstsq(hess, grad, rcond=None)[0]
        t = 1.0
        while t > 1e-10:
            candidate = w - t * step
            new = loss(candidate)
            if new <= current + 1e-12:
                break
            t *= 0.5
        else:
            break
        w, previous, current = candidate, current, new
        if abs(previous - current) < 1e-10 * max(1.0, abs(current)) and np.max(np.abs(t * step)) < 1e-9:
            break
    return w[:-1], float(w[-1])


def fit_platt(raw: np.ndarray, correct: np.ndarray, l2: float = 1e-6) -> tuple[float, float]:
    """Platt scaling: (a, b) of sigmoid(a * raw + b), fitted on standardised raw values for stability."""
    x = _finite_for_fit(raw)
    m = float(x.mean()) if x.size else 0.0
    s = float(x.std()) if x.size else 1.0
    s = s if s > 0 else 1.0
    coef, intercept = fit_logistic(((x - m) / s)[:, None], correct, l2=l2)
    a = float(coef[0]) / s
    return a, float(intercept) - a * m


def fit_temperature(score: np.ndarray, correct: np.ndarray) -> float:
    """Temperature T of sigmoid(logit(score) / T); a non-positive slope (useless signal) gives T = 1e3."""
    s = np.clip(np.asarray(score, dtype=float), 1e-12, 1 - 1e-12)
    z = np.log(s / (1 - s))
    y = np.asarray(correct, dtype=float)
    beta = 1.0
    for _ in range(100):  # Newton on the one slope, no intercept
        p = _sigmoid(beta * z)
        grad = float(np.sum((p - y) * z))
        hess = float(np.sum(p * (1 - p) * z * z)) + 1e-12
        step = grad / hess
        new_beta = beta - step
        if not np.isfinite(new_beta):
            break
        if new_beta <= 0:
            new_beta = beta / 2
        if abs(new_beta - beta) < 1e-10:
            beta = new_beta
            break
        beta = new_beta
    if beta <= 1e-3:
        return 1e3
    return float(1.0 / beta)


def fit_isotonic(raw: np.ndarray, correct: np.ndarray, increasing: bool = True) -> tuple[list[float], list[float]]:
    """Pool-adjacent-violators: knots (x increasing) of the monotone least-squares fit of the labels."""
    x = _finite_for_fit(raw)
    y = np.asarray(correct, dtype=float)
    if not increasing:
        xs, ys = fit_isotonic(-x, y, increasing=True)
        return [-v for v in reversed(xs)], list(reversed(ys))
    if x.size == 0:
        return [0.0], [0.5]
    order = np.argsort(x, kind="mergesort")
    xs, ys = x[order], y[order]
    uniq, start = np.unique(xs, return_index=True)
    counts = np.diff(np.append(start, xs.size)).astype(float)
    sums = np.add.reduceat(ys, start)
    # blocks: [sum, weight, first unique index, last unique index]
    b_sum: list[float] = []
    b_w: list[float] = []
    b_lo: list[int] = []
    b_hi: list[int] = []
    for i in range(uniq.size):
        b_sum.append(float(sums[i]))
        b_w.append(float(counts[i]))
        b_lo.append(i)
        b_hi.append(i)
        while len(b_sum) > 1 and b_sum[-2] / b_w[-2] >= b_sum[-1] / b_w[-1]:
            s, w, hi = b_sum.pop(), b_w.pop(), b_hi.pop()
            b_lo.pop()
            b_sum[-1] += s
            b_w[-1] += w
            b_hi[-1] = hi
    knots_x: list[float] = []
    knots_y: list[float] = []
    for s, w, lo, hi in zip(b_sum, b_w, b_lo, b_hi, strict=True):
        value = s / w
        knots_x.append(float(uniq[lo]))
        knots_y.append(value)
        if hi != lo:
            knots_x.append(float(uniq[hi]))
            knots_y.append(value)
    return knots_x, knots_y


def _standardise(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Column means/scales over finite values; non-finite entries imputed with the mean (as at run time)."""
    x = np.asarray(x, dtype=float)
    finite = np.isfinite(x)
    mean = np.array([x[finite[:, j], j].mean() if finite[:, j].any() else 0.0 for j in range(x.shape[1])])
    filled = np.where(finite, x, mean[None, :])
    scale = filled.std(axis=0)
    scale = np.where(scale > 0, scale, 1.0)
    return (filled - mean) / scale, mean, scale


@dataclass(frozen=True)
class CalibrationFit:
    """A fitted calibration and its figures on the data it was fitted on."""

    calibration: Calibration
    n: int
    auroc: float
    ece_before: float
    ece_after: float
    brier_after: float


def calibration_summary(prob: np.ndarray, correct: np.ndarray, bins: int = DEFAULT_BINS) -> dict[str, float]:
    """AUROC, ECE (equal-mass bins) and Brier of probabilities, as stored in a calibration's ``fitted``."""
    return {
        "auroc": _round(auroc(prob, correct)),
        "ece": _round(ece(prob, correct, bins, binning="equal_mass")),
        "brier": _round(brier(prob, correct)),
    }


def confidence_histogram(prob: np.ndarray, bins: int = 50) -> dict[str, list[float]]:
    """``{"edges", "counts"}`` of the calibrated confidences on the fitting data (NaN left out).

    Kept in ``fitted["histogram"]`` so the drift monitor (``confidence-router monitor --baseline
    FILE``) can use the fitting data as its PSI baseline without the data itself.
    """
    return metrics.confidence_histogram(prob, bins, binning="equal_width")


def _round(v: float) -> float | None:
    return None if v is None or not math.isfinite(v) else round(float(v), 6)


def fit_calibration(
    method: str,
    raw: Mapping[str, np.ndarray],
    correct: np.ndarray,
    *,
    signal: str | None = None,
    signals: Sequence[str] | None = None,
    model: str | None = None,
    l2: float = 1.0,
    extra: Mapping[str, Any] | None = None,
) -> Calibration:
    """Fit one model's calibration on its labelled answers.

    ``raw`` maps signal names to raw values (NaN = missing; such answers are left out of single-signal
    fits). ``signal`` names the input of platt/temperature/isotonic, ``signals`` those of a combiner.
    ``fitted`` records n, the ECE binning and AUROC/ECE/Brier on the fitting data, plus ``extra``.
    """
    y = np.asarray(correct, dtype=float)
    if method not in CALIBRATION_METHODS:
        raise ValueError(f"unknown calibration method {method!r}; choose from {', '.join(CALIBRATION_METHODS)}")
    fitted: dict[str, Any] = {"fitted_by": "langchain_confidence_router.evaluation.calibrate",
                              "ece_binning": binning_label("equal_mass", DEFAULT_BINS)}
    if method == "combiner":
        names = list(signals or [])
        if not names:
            raise ValueError("a combiner needs at least one signal")
        x = np.column_stack([np.asarray(raw[s], dtype=float) for s in names])
        xs, mean, scale = _standardise(x)
        coef, intercept = fit_logistic(xs, y, l2=l2)
        params: dict[str, Any] = {"mean": mean.tolist(), "scale": scale.tolist(), "coef": coef.tolist(),
                                  "intercept": intercept}
        cal = Calibration("combiner", params, signals=tuple(names), model=model)
        fitted.update(n=int(y.size), l2=l2)
    else:
        if not signal:
            raise ValueError(f"a {method} calibration needs a signal")
        x = np.asarray(raw[signal], dtype=float)
        keep = ~np.isnan(x)
        xk, yk = x[keep], y[keep]
        if method == "platt":
            a, b = fit_platt(xk, yk)
            params = {"a": a, "b": b}
        elif method == "temperature":
            params = {"temperature": fit_temperature(score_array(signal, xk), yk)}
        else:
            kx, ky = fit_isotonic(xk, yk, increasing=signal not in LOWER_IS_CONFIDENT)
            params = {"x": kx, "y": ky}
        cal = Calibration(method, params, signal=signal, model=model)
        fitted.update(n=int(yk.size), n_missing=int((~keep).sum()))
    prob = predict_array(cal, raw)
    fitted.update(calibration_summary(prob, y))
    if method != "combiner" and signal:
        fitted["ece_before"] = _round(ece(score_array(signal, np.asarray(raw[signal], dtype=float)), y))
    fitted["accuracy"] = _round(float(y.mean())) if y.size else None
    fitted["histogram"] = confidence_histogram(prob)
    fitted.update(extra or {})
    return Calibration(cal.method, cal.params, signal=cal.signal, signals=cal.signals, model=model, fitted=fitted)

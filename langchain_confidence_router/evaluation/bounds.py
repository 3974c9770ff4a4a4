"""Finite-sample bounds and p-values behind the tuner's guarantee, in plain numpy (no scipy).

* Binomial tail, Clopper-Pearson bounds and the exact binomial p-value for "error rate <= alpha"
  (a Bernoulli loss: the returned answer is wrong or not).
* Hoeffding-Bentkus p-value (Bates et al. 2021, "Distribution-free, risk-controlling prediction
  sets"), valid for any loss in [0, 1]; weaker than the exact binomial one for 0/1 losses.
* A paired test for "accuracy drop versus the largest model <= eps": per item the difference
  D = 1{cascade wrong} - 1{largest wrong} is -1, 0 or +1. Most items have D = 0 (the cascade
  escalated to the largest model, or both are right or both wrong), so a paired test is far
  tighter than bounding the two accuracies separately. The statistic is Tango's score (studentised
  by the null variance of D); its exact null tail is a sum of binomial tails, and the nuisance
  (the discordance rate pi) is handled with the Berger-Boos construction: the largest tail over a
  1 - gamma confidence interval of pi, plus gamma.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np

__all__ = [
    "binom_cdf",
    "binomial_pvalue",
    "clopper_pearson",
    "clopper_pearson_lower",
    "clopper_pearson_upper",
    "hoeffding_bentkus_pvalue",
    "paired_drop_pvalue",
    "paired_drop_ucb",
    "paired_score_statistic",
    "trinomial_sum_cdf",
]


@lru_cache(maxsize=8)
def _log_factorials(n: int) -> np.ndarray:
    return np.concatenate(([0.0], np.cumsum(np.log(np.arange(1, n + 1, dtype=float)))))


def _binom_logpmf(k: np.ndarray, n: int, p: float) -> np.ndarray:
    lf = _log_factorials(max(n, 1))
    k = np.asarray(k, dtype=np.int64)
    out = lf[n] - lf[k] - lf[n - k]
    if p <= 0.0:
        return np.where(k == 0, 0.0, -np.inf)
    if p >= 1.0:
        return np.where(k == n, 0.0, -np.inf)
    return out + k * math.log(p) + (n - k) * math.log1p(-p)


def binom_cdf(k: int, n: int, p: float) -> float:
    """P(Binomial(n, p) <= k), summed exactly in log space (so tails far below 1e-16 stay exact)."""
    if k < 0:
        return 0.0
    if k >= n:
        return 1.0
    # terms more than 14 standard deviations below min(k, mode) sum to < 1e-40: skip them (the
    # Clopper-Pearson bisection calls this ~50 times per bound, with k in the thousands at n = 20,000)
    lo = max(0, min(k, math.floor(n * p)) - math.ceil(14.0 * math.sqrt(n * p * (1.0 - p))) - 60)
    logs = _binom_logpmf(np.arange(lo, k + 1), n, p)
    m = float(logs.max())
    if m == -math.inf:
        return 0.0
    return float(min(1.0, math.exp(m) * np.exp(logs - m).sum()))


def _bisect(f: object, lo: float, hi: float, iters: int = 64) -> float:
    """Root of a decreasing function ``f`` (f(lo) >= 0 >= f(hi)) by bisection."""
    for _ in range(iters):
        mid = 0.5 * (lo + hi)
        if f(mid) > 0:  # type: ignore[operator]
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


@lru_cache(maxsize=4096)
def clopper_pearson_upper(k: int, n: int, alpha: float) -> float:
    """One-sided 1 - alpha upper bound of a binomial proportion (= Beta(k+1, n-k).ppf(1-alpha))."""
    if n <= 0 or k >= n:
        return 1.0
    return _bisect(lambda p: binom_cdf(k, n, p) - alpha, 0.0, 1.0, iters=48)


def clopper_pearson_lower(k: int, n: int, alpha: float) -> float:
    """One-sided 1 - alpha lower bound (= Beta(k, n-k+1).ppf(alpha))."""
    if n <= 0 or k <= 0:
        return 0.0
    return 1.0 - clopper_pearson_upper(n - k, n, alpha)


def clopper_pearson(k: int, n: int, alpha: float) -> tuple[float, float]:
    """Two-sided 1 - alpha interval (alpha/2 in each tail)."""
    return clopper_pearson_lower(k, n, alpha / 2), clopper_pearson_upper(k, n, alpha / 2)


def binomial_pvalue(n_errors: int, n: int, alpha: float) -> float:
    """p-value of H0 "error rate > alpha" given ``n_errors`` in ``n``: P(Binomial(n, alpha) <= n_errors).

    Exact for 0/1 losses; rejecting at level delta is the same as the Clopper-Pearson upper bound
    at level delta being <= alpha.
    """
    if n <= 0:
        return 1.0
    if alpha >= 1.0:
        return 0.0
    return binom_cdf(int(n_errors), n, max(alpha, 0.0))


def hoeffding_bentkus_pvalue(mean_loss: float, n: int, alpha: float) -> float:
    """Hoeffding-Bentkus p-value of H0 "mean loss > alpha" for losses in [0, 1]."""
    if n <= 0:
        return 1.0
    if alpha >= 1.0:
        return 0.0
    a = min(mean_loss, alpha)
    if alpha <= 0.0:
        return 1.0
    h = a * math.log(a / alpha) if a > 0 else 0.0
    h += (1 - a) * math.log((1 - a) / (1 - alpha)) if a < 1 else 0.0
    hoeffding = math.exp(-n * h)
    bentkus = math.e * binom_cdf(math.ceil(n * mean_loss), n, alpha)
    return float(min(1.0, hoeffding, bentkus))


def trinomial_sum_cdf(t: int, n: int, p_plus: float, p_minus: float) -> float:
    """P(sum of n iid D <= t) where D = +1 w.p. p_plus, -1 w.p. p_minus, else 0 (exact, via FFT)."""
    if t >= n:
        return 1.0
    if t < -n:
        return 0.0
    size = 2 * n + 1
    w = 2.0 * np.pi * np.arange(size) / size
    phi = (1.0 - p_plus - p_minus) + p_plus * np.exp(1j * w) + p_minus * np.exp(-1j * w)
    pmf = np.real(np.fft.fft(phi**n)) / size  # fft (not ifft): index m holds P(sum = m mod size)
    values = np.arange(-n, t + 1)
    total = float(np.clip(pmf[values % size], 0.0, None).sum())
    return min(1.0, total)


def _binom_pmf_at(j: np.ndarray, ns: np.ndarray, q: float, lf: np.ndarray) -> np.ndarray:
    """P(Binomial(N, q) = j) elementwise (0 outside 0..N), for 0 < q < 1."""
    inside = (j >= 0) & (j <= ns)
    jj = np.clip(j, 0, ns)
    logp = lf[ns] - lf[jj] - lf[ns - jj] + jj * math.log(q) + (ns - jj) * math.log1p(-q)
    return np.where(inside, np.exp(logp), 0.0)


def _binom_cdf_path(ks: np.ndarray, ns: np.ndarray, q: float, lf: np.ndarray) -> np.ndarray:
    """F_i = P(Binomial(ns[i], q) <= ks[i]) for consecutive ``ns`` (ns[i + 1] = ns[i] + 1), in O(len) work.

    One exact CDF at the start, then the identities F(k; N+1) = F(k; N) - q P(N, k) and
    F(k'; N+1) = F(k; N+1) +/- the probabilities of Binomial(N+1, q) between k and k' (``P(N, k)`` is
    the probability of exactly k), accumulated with a cumulative sum (absolute error ~1e-13).
    """
    first = binom_cdf(int(ks[0]), int(ns[0]), q)
    if ks.size == 1:
        return np.array([first])
    k0, n1, step = ks[:-1], ns[1:], ks[1:] - ks[:-1]
    inc = -q * _binom_pmf_at(k0, ns[:-1], q, lf)
    for o in range(1, int(max(step.max(), 0)) + 1):  # k' > k: add P(N+1, k+1..k')
        inc += np.where(step >= o, _binom_pmf_at(k0 + o, n1, q, lf), 0.0)
    for o in range(int(max(-step.min(), 0))):  # k' < k: remove P(N+1, k'+1..k)
        inc -= np.where(-step > o, _binom_pmf_at(k0 - o, n1, q, lf), 0.0)
    return np.clip(first + np.concatenate(([0.0], np.cumsum(inc))), 0.0, 1.0)


def paired_score_statistic(n_plus: np.ndarray | int, n_minus: np.ndarray | int, n: int, eps: float) -> np.ndarray:
    """Tango's (1998) score statistic for H0 "E[D] = eps" from paired counts (elementwise).

    Z = (n_plus - n_minus - n * eps) / sqrt(n * V), where V = p+ + p- - eps^2 is the variance of D at
    the null's restricted maximum-likelihood rates (p+ - p- = eps; closed form, a quadratic's root).
    Studentising by the *null* variance rather than the observed discordant count keeps "better"
    items (n_minus) as evidence: with the observed count, 5 worse and 6 better in 500 items scored
    like 2 worse and none better, because at the smallest null discordance rate all discordant
    items are worse ones.
    """
    b = np.asarray(n_plus, dtype=float)
    c = np.asarray(n_minus, dtype=float)
    e = abs(eps)
    rare = c if eps >= 0 else b  # the null's rarer kind of discordant item (its rate is the free one)
    lin = (b + c) * (1.0 - e) - 2.0 * e * (n - b - c + rare)
    const = rare * e * (1.0 - e)
    x = (lin + np.sqrt(lin * lin + 8.0 * n * const)) / (4.0 * n)
    var = np.maximum(2.0 * x + e - e * e, 1e-12)
    return (b - c - n * eps) / np.sqrt(n * var)


def _score_thresholds(ns: np.ndarray, n: int, eps: float, z: float) -> np.ndarray:
    """Per N in ``ns``: the largest n_plus in 0..N with score(n_plus, N - n_plus) <= z, or -1 (none).

    The score is increasing in n_plus at fixed N (checked in the tests), so a vectorised bisection finds it.
    """
    lo = np.full(ns.shape, -1, dtype=np.int64)
    hi = ns.astype(np.int64).copy()
    while np.any(lo < hi):
        mid = (lo + hi + 1) // 2
        ok = paired_score_statistic(mid, ns - mid, n, eps) <= z
        lo, hi = np.where(ok, mid, lo), np.where(ok, hi, mid - 1)
    return lo


def _score_tail(n: int, pi: float, eps: float, z: float) -> float:
    """P(Z <= z) for Tango's score Z when P(D = +1) = (pi + eps) / 2 and P(D = -1) = (pi - eps) / 2
    (exact up to tails below 1e-30).

    Given N = n_plus + n_minus ~ Binomial(n, pi), n_plus ~ Binomial(N, q) with q = (pi + eps) / (2 pi),
    and Z <= z exactly when n_plus <= k_N (:func:`_score_thresholds`). The inner binomial CDFs along N
    are computed by recurrence (:func:`_binom_cdf_path`), so the cost is linear in the width of N's range.
    """
    if pi <= 0.0:
        return 1.0 if float(paired_score_statistic(0, 0, n, eps)) <= z else 0.0
    q = min(max((pi + eps) / (2.0 * pi), 0.0), 1.0)
    sd = math.sqrt(n * pi * (1.0 - pi))
    lo_n = max(0, math.floor(n * pi - 12.0 * sd - 3))
    hi_n = min(n, math.ceil(n * pi + 12.0 * sd + 3))
    ns = np.arange(lo_n, hi_n + 1)
    weights = np.exp(_binom_logpmf(ns, n, pi))
    k = _score_thresholds(ns, n, eps, z)
    if q <= 0.0:
        cdf = np.where(k >= 0, 1.0, 0.0)
    elif q >= 1.0:
        cdf = np.where(k >= ns, 1.0, 0.0)
    else:
        cdf = _binom_cdf_path(k, ns, q, _log_factorials(max(n, 1)))
    return float(min(1.0, np.sum(weights * cdf)))


def paired_drop_pvalue(n: int, n_plus: int, n_minus: int, eps: float, *, gamma: float | None = None,
                       grid: int = 16, level: float = 0.05) -> float:
    """p-value of H0 "E[D] > eps", D = 1{cascade wrong} - 1{reference wrong}, from paired counts.

    ``n_plus``: items the cascade gets wrong and the reference right; ``n_minus``: the reverse.
    The statistic is Tango's score (:func:`paired_score_statistic`), studentised by the variance of D
    under the null, so its null distribution barely depends on the discordance rate pi = P(D != 0);
    pi is a nuisance handled by Berger & Boos (1994): the largest exact tail P(Z <= z_obs) over a grid
    of pi in its 1 - gamma Clopper-Pearson interval, plus gamma. ``gamma`` defaults to ``level / 20``.
    Any statistic gives a valid p-value this way; the score keeps more power when the cascade is also
    better than the reference on some items.
    """
    if n <= 0:
        return 1.0
    g = level / 20.0 if gamma is None else gamma
    discordant = n_plus + n_minus
    lo, hi = clopper_pearson(discordant, n, g)
    lo = max(lo, abs(eps))
    if hi < lo:  # no discordance rate in the interval is compatible with the null
        return min(1.0, g)
    # + 1e-9 on z: the observed point is in the rejection region whatever the rounding of the vectorised score
    z = float(paired_score_statistic(n_plus, n_minus, n, eps)) + 1e-9
    worst = 0.0
    for pi in np.unique(np.concatenate((np.linspace(lo, hi, grid), [lo, hi]))):
        worst = max(worst, _score_tail(n, float(pi), eps, z))
    # + 1e-9: the tails are sums of floating-point terms (log-factorials near 1e5 carry ~1e-11 relative error);
    # rounding must never make the test anti-conservative
    return float(min(1.0, worst + g + 1e-9))


def paired_drop_ucb(n: int, n_plus: int, n_minus: int, level: float) -> float:
    """Upper 1 - level confidence bound of E[D]: the smallest eps the paired test rejects at ``level``."""
    if n <= 0:
        return 1.0
    if paired_drop_pvalue(n, n_plus, n_minus, 1.0, level=level) > level:
        return 1.0
    return _bisect(lambda e: paired_drop_pvalue(n, n_plus, n_minus, e, level=level) - level, -1.0, 1.0,
                   iters=16)

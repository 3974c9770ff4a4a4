"""Confidence signals over one answer's token logprobs, computed together in one vectorised pass.

Each signal has a *raw* value (in its natural unit, what recorded runs store and calibration fits
on) and a *score* on 0..1 where higher means more confident (what thresholds compare against when
no calibration is configured). The 0..1 scaling of avg_logprob, margin and hybrid follows the vLLM
Semantic Router so thresholds carry over.

| name           | raw value                                        | score                     |
|----------------|--------------------------------------------------|---------------------------|
| avg_logprob    | mean chosen-token logprob                        | clamp((raw + 3) / 3, 0, 1)|
| margin         | mean top1 - top2 logprob (nats; needs k >= 2)     | 1 - exp(-raw / 3)         |
| hybrid         | weighted sum of the two scores above             | raw                       |
| geometric_mean | exp(mean logprob)                                | raw                       |
| min_logprob    | lowest token logprob                             | exp(raw)                  |
| bottom_percent | mean of the lowest p% token logprobs             | exp(raw)                  |
| lowest_group   | min over windows of w tokens of the window mean  | exp(raw)                  |
| tail           | mean logprob of the last n tokens                | exp(raw)                  |
| entropy        | mean top-k entropy normalised by log k (0..1)    | 1 - raw                   |
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np

from .tokens import TokenLogprobs

LOGPROB_SIGNALS: tuple[str, ...] = (
    "avg_logprob",
    "margin",
    "hybrid",
    "geometric_mean",
    "min_logprob",
    "bottom_percent",
    "lowest_group",
    "tail",
    "entropy",
)
#: Signals where a lower raw value means more confidence.
LOWER_IS_CONFIDENT = frozenset({"entropy"})


@dataclass(frozen=True, slots=True)
class SignalParams:
    """Knobs of the signals; defaults suit short chat answers (DeepConf uses far larger windows)."""

    logprob_weight: float = 0.5
    margin_weight: float = 0.5
    bottom_percent: float = 10.0
    group_window: int = 16
    tail_tokens: int = 16


DEFAULT_PARAMS = SignalParams()


@dataclass(slots=True)
class SignalValues:
    """Raw values and 0..1 scores by signal name; ``None`` where a signal cannot be computed."""

    raw: dict[str, float | None] = field(default_factory=dict)
    score: dict[str, float | None] = field(default_factory=dict)
    n_tokens: int = 0


def score_from_raw(name: str, raw: float | None, params: SignalParams = DEFAULT_PARAMS) -> float | None:
    """Map a raw signal value to its 0..1 confidence score (see the module table)."""
    if raw is None or math.isnan(raw):
        return None
    if name == "avg_logprob":
        return min(1.0, max(0.0, (raw + 3.0) / 3.0))
    if name == "margin":
        return 1.0 - math.exp(-raw / 3.0) if raw != math.inf else 1.0
    if name in ("min_logprob", "bottom_percent", "lowest_group", "tail"):
        return math.exp(raw)
    if name == "entropy":
        return min(1.0, max(0.0, 1.0 - raw))
    # hybrid, geometric_mean, and non-logprob methods already live on 0..1
    return min(1.0, max(0.0, raw))


def compute_signals(
    tokens: TokenLogprobs,
    names: Iterable[str] | None = None,
    params: SignalParams = DEFAULT_PARAMS,
) -> SignalValues:
    """Compute the requested signals (all when ``names`` is None), sharing intermediate arrays."""
    wanted = set(LOGPROB_SIGNALS if names is None else names)
    unknown = wanted.difference(LOGPROB_SIGNALS)
    if unknown:
        raise ValueError(f"unknown signal(s) {sorted(unknown)}; allowed: {', '.join(LOGPROB_SIGNALS)}")
    if "hybrid" in wanted:
        wanted |= {"avg_logprob", "margin"}
    lp = tokens.logprobs
    n = int(lp.shape[0])
    raw: dict[str, float | None] = {}
    if n == 0:
        raw = dict.fromkeys(wanted)
    else:
        with np.errstate(all="ignore"):
            _chosen_token_signals(lp, wanted, params, raw)
            if wanted & {"margin", "entropy"}:
                _top_k_signals(tokens, wanted, raw)
        if "hybrid" in wanted:
            a = score_from_raw("avg_logprob", raw["avg_logprob"])
            m = score_from_raw("margin", raw["margin"])
            raw["hybrid"] = (
                None if a is None or m is None else params.logprob_weight * a + params.margin_weight * m
            )
    score = {name: score_from_raw(name, value, params) for name, value in raw.items()}
    return SignalValues(raw, score, n)


def _chosen_token_signals(
    lp: np.ndarray, wanted: set[str], params: SignalParams, raw: dict[str, float | None]
) -> None:
    n = lp.shape[0]
    mean = float(np.add.reduce(lp)) / n
    if "avg_logprob" in wanted:
        raw["avg_logprob"] = mean
    if "geometric_mean" in wanted:
        raw["geometric_mean"] = math.exp(mean)
    if "min_logprob" in wanted:
        raw["min_logprob"] = float(np.minimum.reduce(lp))
    if "bottom_percent" in wanted:
        m = max(1, math.ceil(n * params.bottom_percent / 100.0))
        raw["bottom_percent"] = mean if m >= n else float(np.add.reduce(np.partition(lp, m - 1)[:m])) / m
    if "lowest_group" in wanted:
        w = max(1, min(params.group_window, n))
        if w == n:
            raw["lowest_group"] = mean
        elif math.isinf(mean):  # a -inf token lies in some window, so that window's mean is -inf
            raw["lowest_group"] = -math.inf
        else:
            csum = np.cumsum(lp)
            window_sums = csum[w - 1 :].copy()
            window_sums[1:] -= csum[:-w]
            raw["lowest_group"] = float(np.minimum.reduce(window_sums)) / w
    if "tail" in wanted:
        t = max(1, min(params.tail_tokens, n))
        raw["tail"] = mean if t == n else float(np.add.reduce(lp[-t:])) / t


def _top_k_signals(tokens: TokenLogprobs, wanted: set[str], raw: dict[str, float | None]) -> None:
    top = tokens.top_logprobs
    counts = tokens.top_counts
    if top.shape[1] < 2:
        raw.setdefault("margin", None)
        raw.setdefault("entropy", None)
        return
    if int(np.minimum.reduce(counts)) < 2:  # rows with fewer than two alternatives carry no margin
        valid = counts >= 2
        if not valid.any():
            raw.setdefault("margin", None)
            raw.setdefault("entropy", None)
            return
        top, counts = top[valid], counts[valid]
    k = top.shape[1]
    if (top[:, :-1] >= top[:, 1:]).all():  # sorted, as OpenAI sends them: no partition needed
        top1, top2 = top[:, 0], top[:, 1]
    else:
        part = np.partition(top, k - 2, axis=1)
        top1, top2 = part[:, k - 1], part[:, k - 2]
    degenerate = bool(np.isneginf(top1).any())
    if "margin" in wanted:
        diff = top1 - top2
        if degenerate:
            diff[np.isnan(diff)] = 0.0  # both -inf: no separation
        raw["margin"] = float(np.add.reduce(diff)) / diff.shape[0]
    if "entropy" in wanted:
        # H = log(s) - sum(e * z) / s with z = top - max, e = exp(z), s = sum(e); padding z=-inf -> e=0
        z = top - (np.where(np.isneginf(top1), 0.0, top1) if degenerate else top1)[:, None]
        np.maximum(z, -745.0, out=z)
        e = np.exp(z)
        s = np.add.reduce(e, axis=1)
        h = (np.log(s) - np.add.reduce(e * z, axis=1) / s) / np.log(counts)
        if degenerate:
            h[~np.isfinite(h)] = 0.0
        np.clip(h, 0.0, 1.0, out=h)
        raw["entropy"] = float(np.add.reduce(h)) / h.shape[0]

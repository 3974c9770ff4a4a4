"""Every signal against hand-computed values, and the invariants that must hold for any input."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from langchain_confidence_router.core import LOGPROB_SIGNALS, SignalParams, TokenLogprobs, compute_signals
from langchain_confidence_router.core.signals import score_from_raw

LP = [-0.1, -0.5, -2.0, -0.05]
TOP = [[-0.1, -2.4, -3.0], [-0.5, -1.0, -4.0], [-0.9, -2.0, -2.2], [-0.05, -3.05, -math.inf]]
COUNTS = [3, 3, 3, 2]


def tokens() -> TokenLogprobs:
    return TokenLogprobs.from_arrays(LP, TOP, COUNTS, ["a", "b", "c", "d"])


def test_chosen_token_signals_by_hand() -> None:
    p = SignalParams(bottom_percent=50, group_window=2, tail_tokens=2)
    v = compute_signals(tokens(), params=p)
    mean = (-0.1 - 0.5 - 2.0 - 0.05) / 4
    assert v.raw["avg_logprob"] == pytest.approx(mean)
    assert v.score["avg_logprob"] == pytest.approx((mean + 3) / 3)
    assert v.raw["geometric_mean"] == pytest.approx(math.exp(mean))
    assert v.raw["min_logprob"] == pytest.approx(-2.0)
    assert v.score["min_logprob"] == pytest.approx(math.exp(-2.0))
    assert v.raw["bottom_percent"] == pytest.approx((-2.0 - 0.5) / 2)  # lowest 50% = 2 tokens
    # windows of 2: (-0.6/2, -2.5/2, -2.05/2) -> min -1.25
    assert v.raw["lowest_group"] == pytest.approx(-1.25)
    assert v.raw["tail"] == pytest.approx((-2.0 - 0.05) / 2)


def test_margin_uses_top1_minus_top2_even_when_unsorted_or_not_chosen() -> None:
    v = compute_signals(tokens(), ["margin"])
    # rows: 2.3, 0.5, 1.1 (top1 -0.9 not the chosen -2.0), 3.0
    expected = (2.3 + 0.5 + 1.1 + 3.0) / 4
    assert v.raw["margin"] == pytest.approx(expected)
    assert v.score["margin"] == pytest.approx(1 - math.exp(-expected / 3))
    shuffled = TokenLogprobs.from_arrays(LP, [row[::-1] for row in TOP[:3]] + [[-3.05, -0.05, -math.inf]],
                                         [3, 3, 3, 2])
    # the order of the alternatives does not matter (padding stays on the right)
    assert compute_signals(shuffled, ["margin"]).raw["margin"] == pytest.approx(expected)


def test_hybrid_is_the_weighted_sum_of_scaled_parts() -> None:
    p = SignalParams(logprob_weight=0.3, margin_weight=0.7)
    v = compute_signals(tokens(), ["hybrid"], p)
    assert v.raw["hybrid"] == pytest.approx(0.3 * v.score["avg_logprob"] + 0.7 * v.score["margin"])
    assert set(v.raw) == {"hybrid", "avg_logprob", "margin"}


def test_vllm_semantic_router_scaling() -> None:
    assert score_from_raw("avg_logprob", 0.0) == 1.0
    assert score_from_raw("avg_logprob", -1.5) == pytest.approx(0.5)
    assert score_from_raw("avg_logprob", -7.0) == 0.0
    assert score_from_raw("margin", 3.0) == pytest.approx(1 - math.exp(-1))
    assert score_from_raw("margin", 0.0) == 0.0


def test_entropy_by_hand() -> None:
    t = TokenLogprobs.from_arrays([math.log(0.5), math.log(0.9)],
                                  [[math.log(0.5), math.log(0.5)], [math.log(0.9), math.log(0.1)]])
    h2 = -(0.9 * math.log(0.9) + 0.1 * math.log(0.1)) / math.log(2)
    v = compute_signals(t, ["entropy"])
    assert v.raw["entropy"] == pytest.approx((1.0 + h2) / 2)
    assert v.score["entropy"] == pytest.approx(1 - (1.0 + h2) / 2)


def test_entropy_renormalises_top_k() -> None:
    # two equal alternatives holding only 20% of the mass are still a 50/50 choice among the top-k
    t = TokenLogprobs.from_arrays([math.log(0.1)], [[math.log(0.1), math.log(0.1)]])
    assert compute_signals(t, ["entropy"]).raw["entropy"] == pytest.approx(1.0)


def test_margin_and_entropy_need_two_alternatives() -> None:
    t = TokenLogprobs.from_arrays([-0.1, -0.2])
    v = compute_signals(t, ["margin", "entropy", "hybrid"])
    assert v.raw["margin"] is None and v.raw["entropy"] is None and v.raw["hybrid"] is None


def test_no_tokens_gives_none_everywhere() -> None:
    v = compute_signals(TokenLogprobs.empty())
    assert all(value is None for value in v.raw.values())
    assert set(v.raw) == set(LOGPROB_SIGNALS)


def test_neg_inf_token() -> None:
    t = TokenLogprobs.from_arrays([-0.1, -math.inf, -0.2], [[-0.1, -5], [-0.01, -math.inf], [-0.2, -0.3]])
    v = compute_signals(t, params=SignalParams(group_window=2))
    assert v.score["avg_logprob"] == 0.0
    assert v.raw["geometric_mean"] == 0.0
    assert v.raw["lowest_group"] == -math.inf and v.score["lowest_group"] == 0.0
    assert v.score["margin"] is not None and 0.0 <= v.score["margin"] <= 1.0


def test_unknown_signal_is_rejected() -> None:
    with pytest.raises(ValueError, match="unknown signal"):
        compute_signals(tokens(), ["magic"])


# ---------------------------------------------------------------- properties

logprob = st.one_of(st.floats(min_value=-30.0, max_value=0.0), st.just(-math.inf))


@st.composite
def token_logprobs(draw: st.DrawFn) -> TokenLogprobs:
    n = draw(st.integers(0, 40))
    k = draw(st.integers(1, 5))
    lp = [draw(logprob) for _ in range(n)]
    counts = [draw(st.integers(0, k)) for _ in range(n)]
    top = [[draw(logprob) for _ in range(k)] for _ in range(n)]
    return TokenLogprobs.from_arrays(np.array(lp, dtype=float), np.array(top, dtype=float).reshape(n, k), counts)


@settings(max_examples=300, deadline=None)
@given(token_logprobs())
def test_scores_are_in_unit_interval_and_never_nan(t: TokenLogprobs) -> None:
    v = compute_signals(t)
    for name, score in v.score.items():
        if score is not None:
            assert 0.0 <= score <= 1.0, name
        raw = v.raw[name]
        assert raw is None or not math.isnan(raw), name


@settings(max_examples=200, deadline=None)
@given(token_logprobs(), st.randoms())
def test_order_free_signals_are_permutation_invariant(t: TokenLogprobs, rnd: object) -> None:
    order = list(range(len(t)))
    rnd.shuffle(order)  # type: ignore[attr-defined]
    perm = np.array(order, dtype=int)
    shuffled = TokenLogprobs(tuple(t.tokens[i] for i in perm), t.logprobs[perm], t.top_logprobs[perm],
                             t.top_counts[perm])
    a, b = compute_signals(t), compute_signals(shuffled)
    for name in ("avg_logprob", "geometric_mean", "min_logprob", "bottom_percent", "margin", "entropy", "hybrid"):
        if a.raw[name] is None:
            assert b.raw[name] is None
        else:
            assert b.raw[name] == pytest.approx(a.raw[name], rel=1e-9, abs=1e-9), name


@settings(max_examples=200, deadline=None)
@given(st.lists(st.floats(min_value=-10.0, max_value=0.0), min_size=1, max_size=30),
       st.floats(min_value=0.0, max_value=5.0))
def test_lowering_every_logprob_never_raises_confidence(lp: list[float], shift: float) -> None:
    base = compute_signals(TokenLogprobs.from_arrays(lp))
    lower = compute_signals(TokenLogprobs.from_arrays(np.array(lp) - shift))
    for name in ("avg_logprob", "geometric_mean", "min_logprob", "bottom_percent", "lowest_group", "tail"):
        assert lower.score[name] <= base.score[name] + 1e-12, name


@settings(max_examples=100, deadline=None)
@given(st.lists(st.floats(min_value=-10.0, max_value=0.0), min_size=1, max_size=30))
def test_repeating_an_answer_keeps_length_normalised_signals(lp: list[float]) -> None:
    once = compute_signals(TokenLogprobs.from_arrays(lp))
    twice = compute_signals(TokenLogprobs.from_arrays(lp + lp))
    for name in ("avg_logprob", "geometric_mean", "min_logprob"):
        assert twice.raw[name] == pytest.approx(once.raw[name], abs=1e-9), name

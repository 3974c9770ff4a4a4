"""The logprob normaliser: every supported shape gives the same arrays; bad values name the problem."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest

from langchain_confidence_router.core import LogprobError, TokenLogprobs, normalize_logprobs

ENTRIES = [
    {"token": "Par", "logprob": -0.1, "bytes": [80], "top_logprobs": [
        {"token": "Par", "logprob": -0.1}, {"token": "Lon", "logprob": -2.5}, {"token": "Ber", "logprob": -3.0}]},
    {"token": "is", "logprob": -0.01, "top_logprobs": [{"token": "is", "logprob": -0.01}]},
    {"token": ".", "logprob": -0.5, "top_logprobs": []},
]


def check_expected(t: TokenLogprobs) -> None:
    assert t.tokens == ("Par", "is", ".")
    np.testing.assert_allclose(t.logprobs, [-0.1, -0.01, -0.5])
    assert t.top_logprobs.shape == (3, 3)
    np.testing.assert_array_equal(t.top_counts, [3, 1, 0])
    np.testing.assert_allclose(t.top_logprobs[0], [-0.1, -2.5, -3.0])
    assert t.top_logprobs[1, 0] == -0.01 and np.isneginf(t.top_logprobs[1, 1:]).all()
    assert np.isneginf(t.top_logprobs[2]).all()


def test_openai_dict() -> None:
    check_expected(normalize_logprobs({"content": ENTRIES, "refusal": None}))


def test_plain_entry_list_and_full_response() -> None:
    check_expected(normalize_logprobs(ENTRIES))
    choice = {"index": 0, "message": {"content": "Paris."}, "logprobs": {"content": ENTRIES}}
    response = {"id": "x", "choices": [choice]}
    check_expected(normalize_logprobs(response))


def test_pydantic_like_objects() -> None:
    def obj(e: dict) -> SimpleNamespace:
        return SimpleNamespace(token=e["token"], logprob=e["logprob"],
                               top_logprobs=[SimpleNamespace(**t) for t in e["top_logprobs"]])

    check_expected(normalize_logprobs(SimpleNamespace(content=[obj(e) for e in ENTRIES], refusal=None)))


def test_litellm_choice_logprobs_object() -> None:
    from litellm.types.utils import ChoiceLogprobs

    check_expected(normalize_logprobs(ChoiceLogprobs(content=ENTRIES)))


def test_langchain_message_and_metadata() -> None:
    from langchain_core.messages import AIMessage

    message = AIMessage(content="Paris.", response_metadata={"logprobs": {"content": ENTRIES}})
    check_expected(normalize_logprobs(message))
    check_expected(normalize_logprobs(message.response_metadata))
    assert normalize_logprobs(AIMessage(content="no logprobs")) is None


def test_stream_chunks_concatenate_in_order() -> None:
    chunks = [
        {"choices": [{"delta": {"role": "assistant"}, "logprobs": None}]},
        *({"choices": [{"delta": {"content": e["token"]}, "logprobs": {"content": [e]}}]} for e in ENTRIES),
        {"choices": [], "usage": {"prompt_tokens": 3}},
    ]
    check_expected(normalize_logprobs(chunks))


def test_langchain_chunks() -> None:
    from langchain_core.messages import AIMessageChunk

    chunks = [AIMessageChunk(content=e["token"], response_metadata={"logprobs": {"content": [e]}}) for e in ENTRIES]
    check_expected(normalize_logprobs(chunks))


def test_legacy_completions_shape() -> None:
    t = normalize_logprobs({"tokens": ["a", "b"], "token_logprobs": [-0.2, -1.0],
                            "top_logprobs": [{"a": -0.2, "c": -2.0}, {"b": -1.0}]})
    np.testing.assert_allclose(t.logprobs, [-0.2, -1.0])
    np.testing.assert_array_equal(t.top_counts, [2, 1])


@pytest.mark.parametrize("value", [None, {"content": None}, {"choices": [{"delta": {}, "logprobs": None}]}, []])
def test_no_logprobs_is_none_or_empty(value: object) -> None:
    result = normalize_logprobs(value)
    assert result is None or len(result) == 0


def test_neg_inf_is_a_real_value() -> None:
    t = normalize_logprobs([{"token": "x", "logprob": -math.inf, "top_logprobs": [
        {"token": "y", "logprob": 0.0}, {"token": "x", "logprob": -math.inf}]}])
    assert np.isneginf(t.logprobs[0])
    assert t.top_counts[0] == 2


@pytest.mark.parametrize(
    ("bad", "needle"),
    [
        ([{"token": "a", "logprob": float("nan")}], "NaN"),
        ([{"token": "a", "logprob": None}], "NaN or missing"),
        ([{"token": "a", "logprob": math.inf}], "<= 0"),
        ([{"token": "a", "logprob": 0.5}], "<= 0"),
        ([{"token": "a", "logprob": -0.1}, {"token": "b", "logprob": 0.3}], "content[1]"),
        ([{"token": "a", "logprob": -0.1, "top_logprobs": [{"token": "b", "logprob": 2.0}]}], "top_logprobs[0]"),
        ([{"token": "a", "logprob": "abc"}], "numbers"),
        ([{"token": "a"}], "logprob"),
        ("not logprobs", "expected logprobs"),
        ({"weird": 1}, "unrecognised"),
    ],
)
def test_bad_values_raise_logprob_error(bad: object, needle: str) -> None:
    with pytest.raises(LogprobError) as info:
        normalize_logprobs(bad)
    assert needle in str(info.value)


def test_float_noise_above_zero_is_clamped() -> None:
    t = normalize_logprobs([{"token": "a", "logprob": 3e-7}])
    assert t.logprobs[0] == 0.0


def test_from_arrays_validates() -> None:
    t = TokenLogprobs.from_arrays([-0.1, -0.2], [[-0.1, -1.0], [-0.2, -9.0]], [2, 1])
    assert np.isneginf(t.top_logprobs[1, 1])
    with pytest.raises(LogprobError):
        TokenLogprobs.from_arrays([-0.1, 0.4])
    with pytest.raises(LogprobError):
        TokenLogprobs.from_arrays([-0.1], [[-0.1], [-0.2]])

"""Token filters keep the informative tokens and fall back to all tokens when they would keep none."""

from __future__ import annotations

import json

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from langchain_confidence_router.core import TokenLogprobs, apply_filter, filter_mask
from langchain_confidence_router.core.filters import is_stop_token, tool_argument_spans


def toks(*tokens: str) -> TokenLogprobs:
    return TokenLogprobs.from_arrays([-0.1 * (i + 1) for i in range(len(tokens))], tokens=tokens)


def kept(t: TokenLogprobs, name: str, **kw: object) -> list[str]:
    return [tok for tok, m in zip(t.tokens, filter_mask(t, name, **kw), strict=True) if m]


def test_stop_drops_blank_punctuation_and_special_tokens() -> None:
    t = toks("The", " answer", " is", " 42", ".", "\n", " ", "<|im_end|>", "</s>", "<end_of_turn>", "...", " -5")
    assert kept(t, "stop") == ["The", " answer", " is", " 42", " -5"]
    assert is_stop_token("<|eot_id|>") and not is_stop_token("<b>") and not is_stop_token("$")


def test_answer_span_keeps_tokens_of_the_last_answer() -> None:
    t = toks("Let", " me", " think", ".", " The", " answer", " is", " Par", "is", ".")
    assert kept(t, "answer") == [" Par", "is", "."]
    assert kept(t, "answer", answer_pattern=r"answer is (?P<answer>\w+)") == [" Par", "is"]
    assert kept(t, "answer", answer_pattern=r"think") == [" think"]


def test_tool_call_args_keeps_argument_values_only() -> None:
    text = json.dumps({"name": "get_weather", "arguments": {"city": "Paris", "days": 3}})
    spans = tool_argument_spans(text)
    assert [text[a:b] for a, b in spans] == ["Paris", "3"]
    bare = '{"city": "Oslo", "units": ["c"], "x": null'  # partial JSON, no 'arguments' key
    assert [bare[a:b] for a, b in tool_argument_spans(bare)] == ["Oslo", "c", "null"]
    t = toks('{"', "city", '":', ' "', "Par", "is", '",', ' "days', '":', " 3", "}")
    assert kept(t, "tool_call_args") == ["Par", "is", " 3"]


def test_empty_selection_falls_back_to_all_tokens() -> None:
    t = toks(".", " ", "!")
    result = apply_filter(t, "stop")
    assert result.fell_back and len(result.tokens) == 3
    result = apply_filter(toks("no", " answer", " here"), "answer")
    assert result.fell_back and len(result.tokens) == 3
    result = apply_filter(toks("a", "."), "stop")
    assert not result.fell_back and result.tokens.tokens == ("a",)
    np.testing.assert_allclose(result.tokens.logprobs, [-0.1])


@settings(max_examples=300, deadline=None)
@given(st.lists(st.text(max_size=6), max_size=25), st.sampled_from(["all", "stop", "tool_call_args", "answer"]))
def test_filters_never_crash_and_never_return_nothing(tokens: list[str], name: str) -> None:
    t = toks(*tokens)
    result = apply_filter(t, name)
    assert len(result.tokens) == len(t) or (0 < len(result.tokens) < len(t) and not result.fell_back)
    assert result.n_total == len(t)

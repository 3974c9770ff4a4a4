"""Property-based fuzzing of the two places where outside data enters the core.

A configuration file is written by people and a logprob payload by someone else's server; neither may
crash the router with an error nobody planned for. The properties:

* the configuration loader turns any YAML text or mapping into a ``RouterConfig`` or a ``ConfigError``
  (nothing else), and a mapping that fails validation names every failing field in the message;
  resolving a valid configuration into tiers raises nothing but ``ConfigError`` either;
* the logprob normaliser turns any value (nested dicts/lists/None/strings/floats including NaN/inf)
  into ``TokenLogprobs``, ``None`` or a ``LogprobError``; what it returns is well formed (string tokens,
  float arrays with no NaN or positive value);
* the policy, given any such payload as a tier's answer, decides (an action) and never raises, and every
  confidence it records is within 0..1.
"""

from __future__ import annotations

import copy
import math
import os
import re
import tempfile
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from langchain_confidence_router.core import (
    Cascade,
    ConfigError,
    LogprobError,
    RouterConfig,
    TierResult,
    TokenLogprobs,
    load_config,
    normalize_logprobs,
    parse_config,
)
from langchain_confidence_router.core.policy import CallTier, Fail, Finish

#: Examples per property; CR_FUZZ_EXAMPLES=5000 for a longer hunt than CI's.
FUZZ = settings(max_examples=int(os.environ.get("CR_FUZZ_EXAMPLES", "300")), deadline=None,
                suppress_health_check=[HealthCheck.too_slow])

# ---------------------------------------------------------------------------- value strategies

FLOATS = st.floats(allow_nan=True, allow_infinity=True) | st.sampled_from(
    [0.0, -0.0, 1e-6, -1e-6, 0.7, -0.02, -1.6, 1e308, -1e308, math.inf, -math.inf, math.nan])
SCALARS = (st.none() | st.booleans() | st.integers(-(10**20), 10**20) | FLOATS
           | st.text(max_size=10) | st.sampled_from(["", "nan", "-0.5", "7b", "-5", "8x7b", "hybrid", "sk-1"]))
KEYS = st.text(max_size=8) | st.sampled_from(
    ["logprob", "token", "top_logprobs", "content", "choices", "logprobs", "token_logprobs", "tokens",
     "message", "delta", "text", "finish_reason", "response_metadata", "bytes"])
VALUES = st.recursive(
    SCALARS,
    lambda children: st.lists(children, max_size=4) | st.tuples(children, children)
    | st.dictionaries(KEYS, children, max_size=5),
    max_leaves=24,
)


def _entry(logprob: Any, token: Any, alternatives: list[Any]) -> dict[str, Any]:
    return {"token": token, "logprob": logprob, "bytes": None,
            "top_logprobs": [{"token": f"a{i}", "logprob": lp} for i, lp in enumerate(alternatives)]}


#: Payloads close to the real shapes (where bugs hide): OpenAI entries, legacy lists, chunks, choices.
ENTRY = st.builds(_entry, FLOATS | SCALARS, SCALARS, st.lists(FLOATS | SCALARS, max_size=4))
NEAR_REAL = st.one_of(
    st.builds(lambda e: {"content": e}, st.lists(ENTRY, max_size=5) | VALUES),
    st.builds(lambda e: {"choices": [{"index": 0, "logprobs": {"content": e}}]}, st.lists(ENTRY, max_size=4)),
    st.builds(lambda t, lp, top: {"tokens": t, "token_logprobs": lp, "top_logprobs": top},
              st.lists(SCALARS, max_size=4) | VALUES, st.lists(FLOATS | SCALARS, max_size=4) | VALUES,
              st.none() | st.lists(st.dictionaries(st.text(max_size=3), FLOATS | SCALARS, max_size=3)
                                   | VALUES, max_size=4) | VALUES),
    st.lists(st.builds(lambda e: {"choices": [{"delta": {"content": "x"}, "logprobs": {"content": e}}]},
                       st.none() | st.lists(ENTRY, max_size=2)), max_size=4),
    st.builds(lambda e: {"response_metadata": {"logprobs": {"content": e}}}, st.lists(ENTRY, max_size=3)),
)


def as_objects(value: Any) -> Any:
    """The same payload as attribute objects (how the openai and litellm clients hand logprobs over)."""
    if isinstance(value, dict):
        return SimpleNamespace(**{str(k): as_objects(v) for k, v in value.items() if str(k).isidentifier()})
    if isinstance(value, list):
        return [as_objects(v) for v in value]
    return value


PAYLOADS = NEAR_REAL | VALUES | st.builds(as_objects, NEAR_REAL)


def _well_formed(tokens: TokenLogprobs) -> None:
    n = len(tokens)
    assert all(isinstance(t, str) for t in tokens.tokens) and len(tokens.tokens) == n
    assert tokens.logprobs.dtype == np.float64 and tokens.logprobs.shape == (n,)
    assert tokens.top_logprobs.dtype == np.float64 and tokens.top_logprobs.shape[0] == n
    assert not np.isnan(tokens.logprobs).any() and (tokens.logprobs <= 0).all()
    assert not np.isnan(tokens.top_logprobs).any() and (tokens.top_logprobs <= 0).all()
    assert tokens.top_counts.shape == (n,) and (tokens.top_counts <= tokens.k).all()


# ---------------------------------------------------------------------------- the logprob normaliser


@FUZZ
@given(PAYLOADS)
def test_normaliser_returns_tokens_none_or_logprob_error(payload: Any) -> None:
    try:
        tokens = normalize_logprobs(payload)
    except LogprobError as exc:
        assert str(exc)  # a message saying what is wrong (and where, when it can)
        return
    assert tokens is None or isinstance(tokens, TokenLogprobs)
    if tokens is not None:
        _well_formed(tokens)


def _one_tier_cascade(method: str) -> Cascade:
    return Cascade.from_config({"algorithm": {"confidence": {"confidence_method": method, "token_filter": "stop"}},
                                "models": [{"name": "only"}]})


CASCADES = {method: _one_tier_cascade(method) for method in ("hybrid", "margin", "entropy", "min_logprob", "tail")}


@FUZZ
@given(PAYLOADS, st.sampled_from(sorted(CASCADES)), st.sampled_from(["42", "The answer is 42.", " ", "a\nb"]))
def test_policy_never_raises_on_any_logprob_payload(payload: Any, method: str, text: str) -> None:
    """Whatever a server sends as logprobs, the request ends with an answer or a planned error and its trace."""
    policy = CASCADES[method].policy()
    action = policy.start()
    assert isinstance(action, CallTier)
    action = policy.on_result(action.call, TierResult(text=text, logprobs=payload), 1.0)
    assert isinstance(action, Finish | Fail)
    attempt = policy.trace.attempts[-1]
    assert attempt.decision in ("accept", "fallback", "error", "escalate")
    for value in [attempt.confidence, attempt.score, *attempt.signals.values()]:
        assert value is None or 0.0 <= value <= 1.0, (value, attempt)
    assert policy.trace.model_dump_json()  # the trace always serialises


# ---------------------------------------------------------------------------- the configuration loader

BASE: dict[str, Any] = {
    "algorithm": {"type": "confidence", "confidence": {
        "confidence_method": "hybrid", "threshold": 0.72, "escalation_order": "automix",
        "cost_quality_tradeoff": 0.3, "token_filter": "stop", "answer_pattern": "answer: (.*)", "on_error": "skip",
        "skip_client_errors": False, "hybrid_weights": {"logprob_weight": 0.5, "margin_weight": 0.5},
        "signal_params": {"bottom_percent": 10, "group_window": 16, "tail_tokens": 16}, "top_logprobs": 5,
        "missing_logprobs": "escalate", "tool_calls": "accept", "final_fallback": "best",
        "limits": {"max_attempts": 3, "attempt_timeout_s": 60, "cost_budget_usd": 0.01},
        "self_verify": {"judge": None, "max_tokens": 8, "top_logprobs": 5},
        "consistency": {"samples": 5, "temperature": 0.7, "compare": "exact"},
    }},
    "models": [
        {"name": "small", "size": "8b", "input_cost_per_token": 1.8e-7, "output_cost_per_token": 1.8e-7,
         "quality": 0.6},
        {"name": "large", "size": "8x7b", "input_cost_per_token": 8.8e-7, "output_cost_per_token": 8.8e-7,
         "threshold": 0.6, "confidence_method": "margin", "token_filter": "all", "quality": 0.8},
    ],
    "human": {"enabled": True, "thresholds": {"automate": 0.85, "assist": 0.5},
              "domains": [{"name": "billing", "keywords": ["refund"], "thresholds": {"automate": 0.9, "assist": 0.6}}],
              "triggers": {"topics": [{"name": "legal", "patterns": ["lawsuit"]}], "no_confident_model": True},
              "clarify": {"enabled": False, "band": [0.4, 0.6]}, "store_text": False, "spot_check_rate": 0.02},
}


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix] if prefix else []
    if isinstance(node, dict):
        for key, value in node.items():
            out += _paths(value, (*prefix, key))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            out += _paths(value, (*prefix, i))
    return out


PATHS = _paths(BASE)


@st.composite
def mutated_configs(draw: st.DrawFn) -> Any:
    """The rich base configuration with a few fields replaced, removed or misspelt (or not a mapping at all)."""
    if draw(st.integers(0, 19)) == 0:
        return draw(VALUES)
    data = copy.deepcopy(BASE)
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(PATHS))
        parent: Any = data
        try:
            for key in path[:-1]:
                parent = parent[key]
            if isinstance(parent, dict):
                if path[-1] not in parent:
                    continue
            elif not isinstance(parent, list) or path[-1] >= len(parent):
                continue
        except (KeyError, IndexError, TypeError):
            continue  # an earlier mutation replaced this branch
        action = draw(st.sampled_from(["replace", "replace", "delete", "misspell"]))
        if action == "replace":
            parent[path[-1]] = draw(VALUES)
        elif action == "delete":
            del parent[path[-1]]
        elif isinstance(parent, dict):
            parent[f"{path[-1]}x"] = parent.pop(path[-1])
    return data


def _mentions(message: str, field: str) -> bool:
    """The message names ``field`` (``models.1.size``), in dotted or indexed form (``models[1].size``)."""
    return field in message or re.sub(r"\.(\d+)(?=\.|$)", r"[\1]", field) in message


def _check_config_error(exc: ConfigError, data: Any) -> None:
    message = str(exc)
    assert message
    if isinstance(data, dict) and exc.fields:
        for field in exc.fields:
            assert _mentions(message, field), (field, message)
    if isinstance(data, dict) and "invalid configuration" in message:
        assert exc.fields, message  # a validation failure names its fields


def _resolve(data: Any) -> RouterConfig | None:
    """parse_config then Cascade.from_config: a config or a ConfigError, nothing else."""
    try:
        config = parse_config(data)
        Cascade.from_config(config)
    except ConfigError as exc:
        _check_config_error(exc, data)
        return None
    assert isinstance(config, RouterConfig)
    assert len(config.config_hash()) == 12
    return config


@FUZZ
@given(mutated_configs())
def test_any_mapping_is_a_config_or_a_config_error_naming_the_field(data: Any) -> None:
    _resolve(data)


@FUZZ
@given(mutated_configs())
def test_yaml_of_any_mapping_loads_like_the_mapping(data: Any) -> None:
    """The file loader agrees with the mapping validator on the same content."""
    try:
        text = yaml.safe_dump(data, allow_unicode=True)
    except yaml.YAMLError:
        return
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "confidence.yaml"
        path.write_text(text, encoding="utf-8")
        try:
            config = load_config(path)
            Cascade.from_config(config)
        except ConfigError as exc:
            assert str(path) in str(exc)  # the file is named
            reparsed = yaml.safe_load(text)
            _check_config_error(exc, reparsed)
            return
    assert config.config_hash() == parse_config(yaml.safe_load(text)).config_hash()


YAML_TEXT = st.text(max_size=200) | st.builds(
    "\n".join, st.lists(st.sampled_from([
        "algorithm:", "  confidence:", "    threshold: 0.5", "    threshold: [", "    threshold: .nan",
        "models:", "  - name: a", "  - {name: b, size: -1}", "  - name: c\n    size: 7b", "\t- bad tab",
        "human: {enabled: true", "a: &x [1, 2]", "b: *x", "c: *undefined", "? [1, 2]\n: v", "!!python/name:os.system",
        "---", "...", "'unterminated", "key: value: other", "- item", "{", "[[[[[[", "]]]", "%YAML 1.1", ": :",
    ]), max_size=8))


@FUZZ
@given(YAML_TEXT)
def test_any_yaml_text_is_a_config_or_a_config_error(text: str) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "confidence.yaml"
        path.write_text(text, encoding="utf-8", errors="surrogatepass")
        try:
            config = load_config(path)
            Cascade.from_config(config)
        except ConfigError as exc:
            assert str(path) in str(exc)
            assert all(_mentions(str(exc), field) for field in exc.fields)
            return
        assert isinstance(config, RouterConfig)


@pytest.mark.parametrize("text", ["[" * 3000, "a: " + "[" * 3000 + "]" * 3000, "{" * 2000, "a:\n" + "  - " * 2000])
def test_deeply_nested_yaml_is_a_config_error(tmp_path: Path, text: str) -> None:
    """Found by fuzzing: PyYAML recursed past Python's limit and a RecursionError escaped the loader."""
    path = tmp_path / "deep.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(path) in str(info.value)


@pytest.mark.parametrize("size", [-5, "-5b", math.nan, math.inf, 0])
def test_a_size_that_is_not_a_positive_count_names_the_field(size: Any) -> None:
    """Found by fuzzing: a negative size crashed the automix order with 'math domain error'."""
    data = {"algorithm": {"confidence": {"escalation_order": "automix"}},
            "models": [{"name": "a", "size": size}, {"name": "b", "size": "7b"}]}
    with pytest.raises(ConfigError) as info:
        Cascade.from_config(parse_config(data))
    assert "models.0.size" in info.value.fields and "models.0.size" in str(info.value)


@pytest.mark.parametrize("payload", [
    {"tokens": ["a"], "token_logprobs": [-0.1], "top_logprobs": [[1, 2]]},
    {"tokens": ["a"], "token_logprobs": [-0.1], "top_logprobs": 5},
    {"tokens": ["a"], "token_logprobs": [-0.1], "top_logprobs": {"a": -1}},
    {"tokens": ["a"], "token_logprobs": [-0.1], "top_logprobs": [{"a": "x", "b": -1.0}]},
])
def test_malformed_legacy_logprobs_are_a_logprob_error(payload: Any) -> None:
    """Found by fuzzing: the legacy-shape path raised TypeError/ValueError outside the normaliser's guard."""
    with pytest.raises(LogprobError):
        normalize_logprobs(payload)


@pytest.mark.parametrize("token", [5, ["x"], {"t": 1}, None, 1.5])
def test_a_token_that_is_not_a_string_is_read_as_empty(token: Any) -> None:
    """Found by fuzzing: a non-string token crashed the stop filter inside the policy (AttributeError)."""
    tokens = normalize_logprobs({"content": [{"token": token, "logprob": -0.1, "top_logprobs": []}]})
    assert tokens is not None and tokens.tokens == ("",)
    policy = CASCADES["min_logprob"].policy()
    action = policy.start()
    assert isinstance(action, CallTier)
    assert isinstance(policy.on_result(action.call, TierResult(text="42", logprobs={"content": [
        {"token": token, "logprob": -0.1}]})), Finish)

"""Configuration: the reference block loads and means what it says; bad files name the field."""

from __future__ import annotations

from pathlib import Path

import pytest

from langchain_confidence_router.cli import main
from langchain_confidence_router.core import Cascade, ConfigError, load_config, parse_config
from langchain_confidence_router.core.config import parse_size

REFERENCE = Path(__file__).resolve().parents[1] / "langchain_confidence_router" / "data" / "reference.yaml"


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "confidence.yaml"
    p.write_text(text)
    return p


def test_reference_block_loads_and_means_what_it_says() -> None:
    c = load_config(REFERENCE).confidence
    assert c.confidence_method == "hybrid"
    assert c.threshold == 0.72
    assert c.escalation_order == "small_to_large"
    assert c.cost_quality_tradeoff == 0.3
    assert c.token_filter == "stop"
    assert c.on_error == "skip"
    assert (c.hybrid_weights.logprob_weight, c.hybrid_weights.margin_weight) == (0.5, 0.5)
    # documented defaults where the block is silent
    assert c.missing_logprobs == "escalate" and c.final_fallback == "best" and c.top_logprobs == 5
    assert c.skip_client_errors is False and c.tool_calls == "accept"


@pytest.mark.parametrize(
    ("yaml_text", "field", "allowed"),
    [
        ("algorithm:\n  confidence:\n    confidence_method: magic\n", "algorithm.confidence.confidence_method",
         "expected one of: avg_logprob, margin, hybrid"),
        ("algorithm:\n  confidence:\n    threshold: 1.7\n", "algorithm.confidence.threshold",
         "less than or equal to 1"),
        ("algorithm:\n  confidence:\n    escalation_order: big_first\n", "algorithm.confidence.escalation_order",
         "'small_to_large', 'declared', 'cost' or 'automix'"),
        ("algorithm:\n  confidence:\n    on_error: ignore\n", "algorithm.confidence.on_error", "'skip' or 'fail'"),
        ("algorithm:\n  confidence:\n    hybrid_weights: {logprob_weight: 0.5, margin_weight: 0.6}\n",
         "algorithm.confidence.hybrid_weights", "sum to 1"),
        ("algorithm:\n  confidence:\n    treshold: 0.5\n", "algorithm.confidence.treshold", "unknown field"),
        ("algorithm:\n  type: knn\n", "algorithm.type", "'confidence'"),
        ("models:\n  - name: a\n    size: huge\n", "models.0.size", "'7b'"),
        ("models:\n  - {name: a}\n  - {name: a}\n", "models", "appears twice"),
        ("models:\n  - {size: 7b}\n", "models.0.name", "Field required"),
        ("algorithm:\n  confidence:\n    confidence_method: margin\n    top_logprobs: 1\n", "algorithm.confidence",
         "top_logprobs >= 2"),
        ("algorithm:\n  confidence:\n    answer_pattern: '(unclosed'\n", "algorithm.confidence.answer_pattern",
         "regular expression"),
    ],
)
def test_bad_files_name_file_field_and_what_is_allowed(tmp_path: Path, yaml_text: str, field: str,
                                                        allowed: str) -> None:
    p = write(tmp_path, yaml_text)
    with pytest.raises(ConfigError) as info:
        load_config(p)
    message = str(info.value)
    assert str(p) in message and field in message and allowed in message
    assert field in info.value.fields


def test_not_yaml_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"not valid YAML at line 3"):
        load_config(write(tmp_path, "algorithm:\n  confidence: [\n"))
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match="mapping at the top level"):
        load_config(write(tmp_path, "- a\n- b\n"))


def test_sizes() -> None:
    assert parse_size("7b") == 7e9 and parse_size("135M") == 135e6 and parse_size("1.5B") == 1.5e9
    assert parse_size("8x7b") == 56e9 and parse_size(3) == 3.0


def names(cfg: dict, supplied: list[str] | None = None) -> list[str]:
    return [t.name for t in Cascade.from_config(parse_config(cfg), supplied).tiers]


def test_escalation_orders() -> None:
    models = [
        {"name": "big", "size": "70b", "input_cost_per_token": 9e-7, "output_cost_per_token": 9e-7, "quality": 0.8},
        {"name": "tiny", "size": "1b", "input_cost_per_token": 5e-8, "output_cost_per_token": 5e-8, "quality": 0.4},
        {"name": "mid", "size": "8b", "input_cost_per_token": 2e-7, "output_cost_per_token": 2e-7, "quality": 0.6},
    ]

    def with_order(order: str, t: float = 0.3) -> dict:
        return {"algorithm": {"confidence": {"escalation_order": order, "cost_quality_tradeoff": t}},
                "models": models}

    assert names(with_order("small_to_large")) == ["tiny", "mid", "big"]
    assert names(with_order("declared")) == ["big", "tiny", "mid"]
    assert names(with_order("cost")) == ["tiny", "mid", "big"]
    # automix: a larger trade-off favours cheaper models
    assert names(with_order("automix", 1.0)) == ["tiny", "mid", "big"]
    assert names(with_order("automix", 0.0)) == ["big", "mid", "tiny"]
    cheap_first = [names(with_order("automix", t)).index("tiny") for t in (0.0, 0.25, 0.5, 0.75, 1.0)]
    assert cheap_first == sorted(cheap_first, reverse=True)


def test_missing_sizes_and_caller_supplied_models() -> None:
    assert names({}, ["b", "a"]) == ["b", "a"]  # caller's order is the declared order
    with pytest.raises(ConfigError, match=r"models\[1\]\.size"):
        names({"models": [{"name": "a", "size": "1b"}, {"name": "b"}]})
    with pytest.raises(ConfigError, match="no model was supplied for 'b'"):
        names({"models": [{"name": "a"}, {"name": "b"}]}, ["a"])
    with pytest.raises(ConfigError, match="no models"):
        names({})


def test_per_model_threshold_and_method() -> None:
    cfg = {"algorithm": {"confidence": {"escalation_order": "declared"}},
           "models": [{"name": "a", "threshold": 0.9, "confidence_method": "avg_logprob"}, {"name": "b"}]}
    tiers = Cascade.from_config(parse_config(cfg)).tiers
    assert (tiers[0].threshold, tiers[0].method) == (0.9, "avg_logprob")
    assert (tiers[1].threshold, tiers[1].method) == (0.72, "hybrid")


def test_cli_validate(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", str(REFERENCE)]) == 0
    assert "valid" in capsys.readouterr().out
    bad = write(tmp_path, "algorithm:\n  confidence:\n    threshold: 1.7\n")
    assert main(["validate", str(bad)]) == 1
    err = capsys.readouterr().err
    assert "algorithm.confidence.threshold" in err and "Traceback" not in err

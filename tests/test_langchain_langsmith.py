"""The real LangSmith client and LangChainTracer, pointed at a local stand-in for the LangSmith API.

The stand-in records what langsmith 0.15 actually sends: by default zstd-compressed multipart batches
on ``POST /runs/multipart`` (announced through ``GET /info``); plain ``/runs/batch``, ``POST /runs`` and
``PATCH /runs/{id}`` are recorded too. The tests read the recorded runs back and check how the router's
runs nest, what metadata they carry, and that token usage is reported by one run per model call only.
"""

from __future__ import annotations

import email.parser
import email.policy
import json
import threading
from collections import defaultdict
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import zstandard
from langchain_core.tracers import LangChainTracer
from langchain_openai import ChatOpenAI
from langsmith import Client

from langchain_confidence_router.core import RequestTrace
from langchain_confidence_router.langchain import ConfidenceRouter
from langchain_confidence_router.langchain.testing import ScriptedOpenAIServer
from langchain_confidence_router.testing import ModelBehaviour

PRICES = {"small": (1e-7, 2e-7), "large": (1e-6, 4e-6)}


class LangSmithRecorder:
    """A minimal LangSmith API: answers ``/info`` and records every run operation it is sent."""

    def __init__(self) -> None:
        self.ops: list[tuple[str, str, str, Any]] = []  # (post|patch, run id, field or "", payload)
        self.lock = threading.Lock()
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _reply(self, body: dict[str, Any], status: int = 200) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                if self.path.startswith("/info"):
                    self._reply({"version": "0.11.0", "instance_flags": {"zstd_compression_enabled": True}})
                else:
                    self._reply({}, 404)

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                if self.headers.get("content-encoding") == "zstd":
                    body = zstandard.ZstdDecompressor().decompressobj().decompress(body)
                recorder.record(self.command, self.path, self.headers.get("content-type", ""), body)
                self._reply({})

            do_PATCH = do_POST

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> LangSmithRecorder:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    def record(self, method: str, path: str, content_type: str, body: bytes) -> None:
        ops: list[tuple[str, str, str, Any]] = []
        if path.startswith("/runs/multipart"):
            message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
                f"Content-Type: {content_type}\r\n\r\n".encode() + body)
            for part in message.iter_parts():
                name = part.get_param("name", header="content-disposition") or ""
                op, run_id, *field = name.split(".")
                ops.append((op, run_id, field[0] if field else "", json.loads(part.get_payload(decode=True))))
        elif path.startswith("/runs/batch"):
            data = json.loads(body)
            ops += [(op, run["id"], "", run) for op in ("post", "patch") for run in data.get(op) or []]
        elif path.startswith("/runs"):
            run = json.loads(body)
            run_id = run.get("id") or path.rstrip("/").rsplit("/", 1)[-1]
            ops.append(("post" if method == "POST" else "patch", run_id, "", run))
        with self.lock:
            self.ops += ops

    def runs(self) -> dict[str, dict[str, Any]]:
        """Every run as LangSmith would store it: the create, then each update, field by field."""
        merged: dict[str, dict[str, Any]] = defaultdict(dict)
        with self.lock:
            ops = sorted(self.ops, key=lambda op: op[0] != "post")  # creates before updates
        for _op, run_id, field, payload in ops:
            if field:
                merged[run_id][field] = payload
            else:
                merged[run_id].update({k: v for k, v in payload.items() if v is not None})
        return dict(merged)


@pytest.fixture(scope="module")
def server() -> Iterator[ScriptedOpenAIServer]:
    with ScriptedOpenAIServer({"small": ModelBehaviour(confident_on_hard=False), "large": ModelBehaviour()},
                              record_requests=False) as srv:
        yield srv


@pytest.fixture
def recorder() -> Iterator[LangSmithRecorder]:
    with LangSmithRecorder() as rec:
        yield rec


def make_router(server: ScriptedOpenAIServer) -> ConfidenceRouter:
    models = {name: ChatOpenAI(model=name, base_url=server.base_url, api_key="test", max_retries=0)
              for name in ("small", "large")}
    config = {"models": [{"name": n, "input_cost_per_token": i, "output_cost_per_token": o}
                         for n, (i, o) in PRICES.items()]}
    return ConfidenceRouter(models=models, config=config)


def traced(recorder: LangSmithRecorder) -> tuple[Client, LangChainTracer]:
    client = Client(api_url=recorder.url, api_key="test")
    return client, LangChainTracer(client=client, project_name="confidence-router-tests")


def metadata(run: dict[str, Any]) -> dict[str, Any]:
    return (run.get("extra") or {}).get("metadata") or {}


def usage_reports(runs: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Runs whose usage LangSmith counts: usage in metadata, or a message in outputs carrying usage."""
    found = {}
    for run_id, run in runs.items():
        usage = metadata(run).get("usage_metadata")
        if usage is None and run.get("run_type") == "llm":
            generations = (run.get("outputs") or {}).get("generations") or [[]]
            usage = generations[0][0]["message"]["kwargs"].get("usage_metadata") if generations[0] else None
        if usage:
            found[run_id] = usage
    return found


def check_request(runs: dict[str, dict[str, Any]], trace: RequestTrace) -> None:
    roots = [r for r in runs.values() if not r.get("parent_run_id")]
    assert [r["name"] for r in roots] == ["ConfidenceRouter"]
    root = roots[0]
    assert root["run_type"] == "chain" and root["id"] == trace.request_id
    attempts = sorted((r for r in runs.values() if r.get("parent_run_id") == root["id"]),
                      key=lambda r: r["dotted_order"])
    assert [(r["name"], r["run_type"]) for r in attempts] == [("small", "chain"), ("large", "chain")]
    assert [r["id"] for r in attempts] == [a.run_id for a in trace.attempts]
    for run, attempt in zip(attempts, trace.attempts, strict=True):
        meta = metadata(run)
        assert meta["confidence_router_tier"] == attempt.model
        assert meta["confidence_router_decision"] == attempt.decision
        assert meta["confidence_router_confidence"] == pytest.approx(attempt.confidence)
        assert meta["confidence_router_threshold"] == attempt.threshold == 0.72
        assert meta["confidence_router_cost_usd"] == pytest.approx(attempt.cost_usd)
        assert f"confidence_router:decision:{attempt.decision}" in run["tags"]
        (model_run,) = [r for r in runs.values() if r.get("parent_run_id") == run["id"]]
        assert model_run["run_type"] == "llm" and model_run["id"] == attempt.model_run_id
        assert model_run["trace_id"] == root["id"] and model_run["dotted_order"].startswith(run["dotted_order"])
    assert "nostream" in attempts[0]["tags"] and "nostream" not in attempts[1]["tags"]
    assert metadata(root)["confidence_router_final_model"] == "large"
    assert metadata(root)["confidence_router_total_cost_usd"] == pytest.approx(trace.total_cost_usd)
    # usage: one report per model call, none on the router or attempt runs
    reports = usage_reports(runs)
    assert {runs[rid]["run_type"] for rid in reports} == {"llm"} and len(reports) == 2
    assert sum(u["input_tokens"] for u in reports.values()) == trace.tokens_in
    assert sum(u["output_tokens"] for u in reports.values()) == trace.tokens_out
    assert trace.total_cost_usd == pytest.approx(sum(
        PRICES[a.model][0] * a.tokens_in + PRICES[a.model][1] * a.tokens_out for a in trace.attempts))


def test_invoke_posts_nested_runs_with_confidence_metadata(server: ScriptedOpenAIServer,
                                                           recorder: LangSmithRecorder) -> None:
    client, tracer = traced(recorder)
    answer = make_router(server).invoke("What is 17 * 23? [hard]", config={"callbacks": [tracer]})
    client.flush(timeout=20)
    assert any(op[0] == "post" for op in recorder.ops)
    check_request(recorder.runs(), RequestTrace.model_validate(answer.response_metadata["confidence_router"]))


async def test_astream_posts_the_same_shape(server: ScriptedOpenAIServer, recorder: LangSmithRecorder) -> None:
    client, tracer = traced(recorder)
    chunks = [c async for c in make_router(server).astream("Why? [hard]", config={"callbacks": [tracer]})]
    client.flush(timeout=20)
    trace = RequestTrace.model_validate(chunks[-1].response_metadata["confidence_router"])
    assert trace.attempts[-1].streamed
    check_request(recorder.runs(), trace)

"""A local OpenAI-compatible chat server whose answers carry real OpenAI-shaped logprobs.

It speaks the real protocol (``POST /v1/chat/completions``, JSON and SSE streaming, ``GET
/v1/models``) on 127.0.0.1, so the real ``openai``/``ChatOpenAI``/LiteLLM clients talk to it. What
each model answers is controlled per model (:class:`ModelBehaviour`) and per request by tags in
the last user message, which keeps tests readable:

* ``[hard]``: models whose behaviour has ``confident_on_hard=False`` answer with low confidence.
* ``[fault=KIND@MODEL]`` (``@MODEL`` optional): inject a fault on that model. KIND is one of
  ``timeout`` (sleeps past any sane client timeout), ``500``, ``429``, ``400``, ``401``, ``malformed``
  (invalid JSON body), ``no_logprobs``, ``nan``, ``positive``, ``empty`` (empty content), ``cut``
  (a stream that stops half way; a truncated body when not streaming), ``refused`` (the connection is
  closed without an answer).
* ``[delay=SECONDS@MODEL]`` (``@MODEL`` optional, repeatable): that model waits this long before answering.

While a model waits, the server watches its connection: a client that hangs up is noted in
``disconnects`` (model, prompt), and each request's arrival in ``arrivals`` (model, monotonic time, prompt),
so tests can see when a call started and that a cancelled one closed its connection.

Server-wide ``latency_s`` and a seeded ``fault_rate`` serve benchmarks and load tests. A behaviour's
``token_logprobs`` scripts the chosen-token logprob of each token and ``token_delay_s`` is the time to write
one (a stream is paced by it; a whole answer takes it once per token);
``server.streams`` records every stream: tokens sent and whether the client hung up before the end.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import re
import socket
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

_FAULT_RE = re.compile(r"\[fault=([a-z0-9_]+)(?:@([^\]\s]+))?\]")
_DELAY_RE = re.compile(r"\[delay=([0-9.]+)(?:@([^\]\s]+))?\]")
FAULT_KINDS = (
    "timeout", "500", "429", "400", "401", "malformed", "no_logprobs", "nan", "positive", "empty", "cut", "refused",
)


@dataclass
class ModelBehaviour:
    """How one served model answers."""

    confident_on_hard: bool = True
    logprobs: bool = True
    high_logprob: float = -0.02
    high_gap: float = 5.0
    low_logprob: float = -1.6
    low_gap: float = 0.3
    latency_s: float = 0.0
    answer: str | None = None  # fixed answer text; default names the model
    tool_call: dict[str, Any] | None = None  # answer with this tool call instead of text
    token_logprobs: list[float] | None = None  # chosen-token logprob per token (the last one repeats)
    token_delay_s: float = 0.0  # time to write each token (streamed: before each chunk; whole: in total)


@dataclass
class StreamRecord:
    """One streamed answer as the server saw it."""

    model: str
    tokens_sent: int = 0
    finished: bool = False
    closed_by_client: bool = False


@dataclass
class FakeOpenAIServer:
    """Start with ``with FakeOpenAIServer({...}) as server:``; ``server.base_url`` ends in ``/v1``."""

    models: dict[str, ModelBehaviour] = field(default_factory=lambda: {"small": ModelBehaviour(False),
                                                                         "large": ModelBehaviour(True)})
    latency_s: float = 0.0
    fault_rate: float = 0.0
    fault_kinds: tuple[str, ...] = ("500", "429", "timeout", "malformed", "no_logprobs")
    seed: int = 0
    timeout_sleep_s: float = 30.0
    host: str = "127.0.0.1"
    port: int = 0
    requests: list[dict[str, Any]] = field(default_factory=list)
    record_requests: bool = True
    streams: list[StreamRecord] = field(default_factory=list)
    arrivals: list[tuple[str, float, str]] = field(default_factory=list)
    disconnects: list[tuple[str, str]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None

    # ------------------------------------------------------------------ lifecycle

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    def __enter__(self) -> FakeOpenAIServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        if not self.port:
            with socket.socket() as s:
                s.bind((self.host, 0))
                self.port = s.getsockname()[1]
        self._thread = threading.Thread(target=self._serve, name="fake-openai", daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("fake OpenAI server did not start within 10 s")
        if self._error:
            raise RuntimeError(f"fake OpenAI server failed to start: {self._error}")

    def stop(self) -> None:
        if self._loop and self._runner:
            fut = asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop)
            with contextlib.suppress(Exception):  # best effort at shutdown
                fut.result(10)
            self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread:
            self._thread.join(10)
        self._thread = None

    def _serve(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        asyncio.set_event_loop(loop)
        try:
            app = web.Application(client_max_size=16 * 1024 * 1024)
            app.router.add_post("/v1/chat/completions", self._chat)
            app.router.add_post("/chat/completions", self._chat)
            app.router.add_get("/v1/models", self._models)
            # shutdown_timeout: stop() must not wait for handlers still sleeping in a [fault=timeout]
            # handler_cancellation: a client hanging up cancels its handler, which notes it in `disconnects`
            self._runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=0.5,
                                         handler_cancellation=True)
            loop.run_until_complete(self._runner.setup())
            site = web.TCPSite(self._runner, self.host, self.port, backlog=2048, reuse_address=True)
            loop.run_until_complete(site.start())
        except BaseException as exc:  # reported to start()
            self._error = exc
            self._ready.set()
            return
        self._ready.set()
        loop.run_forever()
        loop.close()

    # ------------------------------------------------------------------ handlers

    async def _models(self, request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [
            {"id": name, "object": "model", "created": 0, "owned_by": "fake"} for name in self.models]})

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        if self.record_requests:
            self.requests.append(body)
        model = str(body.get("model", ""))
        behaviour = self.models.get(model)
        if behaviour is None:
            return web.json_response({"error": {"message": f"model {model!r} not found", "type": "not_found"}},
                                     status=404)
        prompt = _last_user_text(body.get("messages") or [])
        fault = self._fault_for(prompt, model)
        self.arrivals.append((model, time.monotonic(), prompt))
        delay = self.latency_s + behaviour.latency_s + sum(
            float(seconds) for seconds, target in _DELAY_RE.findall(prompt) if not target or target == model)
        if delay:
            await self._wait(model, prompt, delay)
        if fault == "timeout":
            await asyncio.sleep(self.timeout_sleep_s)
        if fault in ("500", "429", "400", "401"):
            return web.json_response({"error": {"message": f"injected {fault}", "type": "injected",
                                                "code": fault}}, status=int(fault))
        if fault == "refused" and request.transport is not None:
            request.transport.close()
            return web.Response(status=500)
        confident = behaviour.confident_on_hard or "[hard]" not in prompt
        want_lp = bool(body.get("logprobs")) and behaviour.logprobs and fault != "no_logprobs"
        k = int(body.get("top_logprobs") or 0)
        text = "" if fault == "empty" else (behaviour.answer or f"{model} says: the answer is 42.")
        entries = _entries(text, confident, behaviour, k, fault) if want_lp else None
        tool = behaviour.tool_call
        if body.get("stream"):
            return await self._stream(request, body, model, text, entries, tool, fault)
        if behaviour.token_delay_s:
            await asyncio.sleep(behaviour.token_delay_s * len(_tokens(text)))
        if fault == "malformed":
            return web.Response(text='{"id": "x", "choices": [', content_type="application/json")
        if fault == "cut":
            return web.Response(text=json.dumps(_completion(model, text, entries, tool, body))[:40],
                                content_type="application/json")
        return web.json_response(_completion(model, text, entries, tool, body))

    async def _stream(
        self, request: web.Request, body: dict[str, Any], model: str, text: str,
        entries: list[dict[str, Any]] | None, tool: dict[str, Any] | None, fault: str | None,
    ) -> web.StreamResponse:
        record = StreamRecord(model)
        self.streams.append(record)
        behaviour = self.models.get(model)
        token_delay_s = behaviour.token_delay_s if behaviour is not None else 0.0
        try:
            return await self._stream_body(request, body, model, text, entries, tool, fault, token_delay_s,
                                           record)
        except (ConnectionError, asyncio.CancelledError):  # the client hung up mid-stream
            record.closed_by_client = True
            raise

    async def _stream_body(
        self, request: web.Request, body: dict[str, Any], model: str, text: str,
        entries: list[dict[str, Any]] | None, tool: dict[str, Any] | None, fault: str | None,
        token_delay_s: float, record: StreamRecord,
    ) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        await resp.prepare(request)
        cid = f"chatcmpl-{uuid.uuid4().hex[:12]}"
        tokens = _tokens(text)

        async def send(delta: dict[str, Any], lp: list[dict[str, Any]] | None = None,
                       finish: str | None = None) -> None:
            chunk = {"id": cid, "object": "chat.completion.chunk", "created": int(time.time()), "model": model,
                     "choices": [{"index": 0, "delta": delta, "logprobs": {"content": lp} if lp is not None
                                  else None, "finish_reason": finish}]}
            await resp.write(f"data: {json.dumps(chunk)}\n\n".encode())

        await send({"role": "assistant", "content": ""})
        if tool is not None:
            await send({"tool_calls": [_tool_call(tool, 0)]})
        for i, tok in enumerate(tokens):
            if fault == "cut" and i >= max(1, len(tokens) // 2):
                if request.transport is not None:
                    request.transport.close()
                return resp
            if token_delay_s:
                await asyncio.sleep(token_delay_s)
            if request.transport is None or request.transport.is_closing():
                raise ConnectionResetError("the client closed the stream")
            await send({"content": tok}, [entries[i]] if entries is not None else None)
            record.tokens_sent = i + 1
        await send({}, None, "tool_calls" if tool else "stop")
        if (body.get("stream_options") or {}).get("include_usage"):
            usage = _usage(body, len(tokens))
            await resp.write(("data: " + json.dumps({"id": cid, "object": "chat.completion.chunk",
                                                      "created": int(time.time()), "model": model,
                                                      "choices": [], "usage": usage}) + "\n\n").encode())
        await resp.write(b"data: [DONE]\n\n")
        await resp.write_eof()
        record.finished = True
        return resp

    async def _wait(self, model: str, prompt: str, seconds: float) -> None:
        """Sleep ``seconds``; a client that hangs up meanwhile cancels the handler (``handler_cancellation``)."""
        try:
            await asyncio.sleep(seconds)
        except asyncio.CancelledError:
            self.disconnects.append((model, prompt))
            raise

    def _fault_for(self, prompt: str, model: str) -> str | None:
        for kind, target in _FAULT_RE.findall(prompt):
            if not target or target == model:
                return kind
        if self.fault_rate and self._rng.random() < self.fault_rate:
            return self._rng.choice(self.fault_kinds)
        return None


def _last_user_text(messages: list[dict[str, Any]]) -> str:
    for message in reversed(messages):
        if message.get("role") == "user":
            content = message.get("content")
            if isinstance(content, list):
                return " ".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
            return str(content or "")
    return ""


def _tokens(text: str) -> list[str]:
    """Split like a BPE tokenizer would: words carry their leading space; punctuation apart."""
    return re.findall(r" ?[A-Za-z0-9_]+| ?[^\sA-Za-z0-9_]| +", text)


def _entries(text: str, confident: bool, b: ModelBehaviour, k: int, fault: str | None) -> list[dict[str, Any]]:
    chosen = b.high_logprob if confident else b.low_logprob
    gap = b.high_gap if confident else b.low_gap
    out = []
    scripted = b.token_logprobs
    for i, tok in enumerate(_tokens(text)):
        lp: float = chosen if not scripted else scripted[min(i, len(scripted) - 1)]
        if fault == "nan" and i == 0:
            lp = float("nan")
        elif fault == "positive" and i == 0:
            lp = 0.7
        tops = [{"token": tok, "logprob": lp, "bytes": list(tok.encode())}]
        base = lp if scripted else chosen
        tops += [{"token": f"alt{j}", "logprob": base - gap - 0.01 * j, "bytes": list(f"alt{j}".encode())}
                 for j in range(1, k)]
        out.append({"token": tok, "logprob": lp, "bytes": list(tok.encode()), "top_logprobs": tops[:k]})
    return out


def _tool_call(tool: dict[str, Any], index: int) -> dict[str, Any]:
    return {"index": index, "id": f"call_{uuid.uuid4().hex[:8]}", "type": "function",
            "function": {"name": tool["name"], "arguments": json.dumps(tool.get("arguments", {}))}}


def _usage(body: dict[str, Any], completion_tokens: int) -> dict[str, int]:
    prompt_tokens = sum(len(str(m.get("content", "")).split()) + 4 for m in body.get("messages") or [])
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}


def _completion(model: str, text: str, entries: list[dict[str, Any]] | None, tool: dict[str, Any] | None,
                body: dict[str, Any]) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": None if tool else text}
    if tool:
        message["tool_calls"] = [{k: v for k, v in _tool_call(tool, 0).items() if k != "index"}]
    # JSON cannot carry NaN: write it the way a buggy server would (a bare NaN token)
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex[:12]}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "message": message,
                     "logprobs": {"content": entries} if entries is not None and not tool else None,
                     "finish_reason": "tool_calls" if tool else "stop"}],
        "usage": _usage(body, len(_tokens(text))),
    }

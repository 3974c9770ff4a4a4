"""Early abort through both adapters against a local OpenAI-compatible server (real HTTP, real streams).

"doomed" writes a long answer whose every token is unlikely (scripted logprobs), slowly; "sure" writes the
same long answer confidently; "tool" answers a request that offers tools with a tool call; "large" is the
final tier. The server records each stream: how many tokens it sent and whether the client hung up before
the end.
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

import litellm
import pytest
from langchain_core.callbacks import BaseCallbackHandler
from langchain_openai import ChatOpenAI

import litellm_hooks
from langchain_confidence_router.core import RequestTrace
from langchain_confidence_router.langchain import ConfidenceRouter
from langchain_confidence_router.langchain.testing import ScriptedOpenAIServer
from langchain_confidence_router.testing import FakeOpenAIServer, ModelBehaviour, StreamRecord
from litellm_hooks import TRACE_KEY, register

LONG = " ".join(f"word{i}" for i in range(60))  # 60 tokens
AFTER = 4
LARGE_ANSWER = "large says: the answer is 42."


@pytest.fixture(scope="module")
def server() -> Iterator[FakeOpenAIServer]:
    models = {"doomed": ModelBehaviour(answer=LONG, token_logprobs=[-3.0], token_delay_s=0.01),
              "sure": ModelBehaviour(answer=LONG, token_delay_s=0.001),
              "large": ModelBehaviour(),
              "tool": ModelBehaviour(token_logprobs=[-3.0], token_delay_s=0.001)}
    # the scripted server answers a request with tools with a tool call (and no text), as models do
    with ScriptedOpenAIServer(models, timeout_sleep_s=1.0) as srv:
        yield srv


def block(first: str, after: int = AFTER) -> dict[str, Any]:
    return {"algorithm": {"confidence": {"confidence_method": "min_logprob", "threshold": 0.5,
                                         "token_filter": "stop"}},
            "models": [{"name": first, "early_abort": {"after_tokens": after, "below": 0.5},
                        "input_cost_per_token": 1e-6, "output_cost_per_token": 2e-6},
                       {"name": "large"}]}


def wait_for(check: Callable[[], Any], timeout: float = 5.0) -> Any:
    deadline = time.monotonic() + timeout
    while not (value := check()) and time.monotonic() < deadline:
        time.sleep(0.01)
    return value


def stream_of(server: FakeOpenAIServer, model: str, before: int) -> StreamRecord:
    records = wait_for(lambda: [r for r in server.streams[before:] if r.model == model
                                and (r.closed_by_client or r.finished)])
    assert len(records) == 1, server.streams[before:]
    return records[0]


def check_aborted(trace: RequestTrace, server: FakeOpenAIServer, before: int) -> None:
    first, last = trace.attempts
    assert (first.model, first.decision, first.aborted_at_token, first.tokens_out) == ("doomed", "escalate",
                                                                                     AFTER, AFTER)
    assert first.reason.startswith(f"early abort at token {AFTER}: running min_logprob 0.050 < below 0.500")
    assert first.cost_usd is None and not trace.cost_complete  # no prompt usage arrives on a cancelled stream
    assert (last.model, last.decision) == ("large", "accept") and last.aborted_at_token is None
    record = stream_of(server, "doomed", before)
    assert record.closed_by_client and not record.finished
    assert record.tokens_sent < 30  # the server stopped long before the 60-token answer was written


def check_confident(trace: RequestTrace, server: FakeOpenAIServer, before: int) -> None:
    (only,) = trace.attempts
    assert (only.model, only.decision, only.aborted_at_token, only.tokens_out) == ("sure", "accept", None, 60)
    record = stream_of(server, "sure", before)
    assert record.finished and not record.closed_by_client and record.tokens_sent == 60


# ---------------------------------------------------------------------------- LangChain


def chat(server: FakeOpenAIServer, name: str) -> ChatOpenAI:
    return ChatOpenAI(model=name, base_url=server.base_url, api_key="test", max_retries=0, timeout=5)


def lc_router(server: FakeOpenAIServer, first: str) -> ConfidenceRouter:
    return ConfidenceRouter(models={first: chat(server, first), "large": chat(server, "large")},
                            config=block(first))


def lc_trace(message: Any) -> RequestTrace:
    return RequestTrace.model_validate(message.response_metadata["confidence_router"])


class TokenRecorder(BaseCallbackHandler):
    """A streaming callback: every token any model run reports."""

    def __init__(self) -> None:
        self.tokens: list[str] = []
        self.ended: list[str] = []
        self.errors: list[str] = []

    def on_llm_new_token(self, token: str, **kwargs: Any) -> None:
        self.tokens.append(token)

    def on_llm_end(self, response: Any, **kwargs: Any) -> None:
        self.ended.append(response.generations[0][0].text)

    def on_llm_error(self, error: BaseException, **kwargs: Any) -> None:
        self.errors.append(type(error).__name__)


def test_langchain_invoke_aborts_at_the_configured_token(server: FakeOpenAIServer) -> None:
    before = len(server.streams)
    recorder = TokenRecorder()
    answer = lc_router(server, "doomed").invoke("Explain.", {"callbacks": [recorder]})
    assert answer.content == LARGE_ANSWER
    check_aborted(lc_trace(answer), server, before)
    assert not any("word" in t for t in recorder.tokens)  # the hidden stream's tokens reached no callback
    assert recorder.errors == ["GeneratorExit"]  # the tier's own run is closed as cut off
    assert recorder.ended == [LARGE_ANSWER]


def test_langchain_invoke_never_aborts_a_confident_answer(server: FakeOpenAIServer) -> None:
    before = len(server.streams)
    answer = lc_router(server, "sure").invoke("Explain.")
    assert answer.content == LONG
    check_confident(lc_trace(answer), server, before)


def test_langchain_tier_that_cannot_stream_is_judged_whole(server: FakeOpenAIServer) -> None:
    doomed = ChatOpenAI(model="doomed", base_url=server.base_url, api_key="test", max_retries=0, timeout=5,
                        disable_streaming=True)
    router = ConfidenceRouter(models={"doomed": doomed, "large": chat(server, "large")}, config=block("doomed"))
    trace = lc_trace(router.invoke("Explain."))
    first = trace.attempts[0]
    assert (first.decision, first.aborted_at_token, first.tokens_out) == ("escalate", 60, 60)  # all arrived at once
    assert trace.final_model == "large" and trace.ttft_ms is None


def test_a_hidden_stream_cut_by_the_server_is_a_skipped_error(server: FakeOpenAIServer) -> None:
    trace = lc_trace(lc_router(server, "sure").invoke("Explain. [fault=cut@sure]"))
    first = trace.attempts[0]
    assert (first.decision, first.error_kind, first.aborted_at_token) == ("error", "connection", None)
    assert trace.final_model == "large"


async def test_an_async_hidden_stream_is_bounded_by_the_attempt_timeout(server: FakeOpenAIServer) -> None:
    config = block("sure")
    config["algorithm"]["confidence"]["limits"] = {"attempt_timeout_s": 0.3}
    router = ConfidenceRouter(models={"sure": chat(server, "sure"), "large": chat(server, "large")}, config=config)
    trace = lc_trace(await router.ainvoke("Explain. [fault=timeout@sure]"))
    first = trace.attempts[0]
    assert (first.decision, first.error_kind) == ("error", "timeout") and first.latency_ms < 900
    assert "within 0.3 s (attempt timeout" in (first.error or "")
    assert trace.final_model == "large"


def test_langchain_a_gated_tool_call_is_returned_whole(server: FakeOpenAIServer) -> None:
    from langchain_core.tools import tool

    @tool
    def lookup(q: str) -> str:
        """Look something up."""
        return q

    router = ConfidenceRouter(models={"tool": chat(server, "tool"), "large": chat(server, "large")},
                              config=block("tool")).bind_tools([lookup])
    answer = router.invoke("Look it up.")
    trace = lc_trace(answer)
    assert [(a.model, a.decision, a.aborted_at_token) for a in trace.attempts] == [("tool", "accept", None)]
    assert [(c["name"], c["args"]) for c in answer.tool_calls] == [("lookup", {"q": "a q"})]


async def test_langchain_ainvoke_aborts(server: FakeOpenAIServer) -> None:
    before = len(server.streams)
    answer = await lc_router(server, "doomed").ainvoke("Explain.")
    assert answer.content == LARGE_ANSWER
    await asyncio.to_thread(check_aborted, lc_trace(answer), server, before)


async def test_langchain_ainvoke_never_aborts_a_confident_answer(server: FakeOpenAIServer) -> None:
    before = len(server.streams)
    answer = await lc_router(server, "sure").ainvoke("Explain.")
    await asyncio.to_thread(check_confident, lc_trace(answer), server, before)


def test_langchain_stream_shows_only_the_final_answer(server: FakeOpenAIServer) -> None:
    before = len(server.streams)
    recorder = TokenRecorder()
    chunks = list(lc_router(server, "doomed").stream("Explain.", {"callbacks": [recorder]}))
    assert "".join(c.text for c in chunks) == LARGE_ANSWER
    check_aborted(lc_trace(chunks[-1]), server, before)
    assert "".join(recorder.tokens) .count("word") == 0 and "large" in "".join(recorder.tokens)


async def test_langchain_astream_aborts(server: FakeOpenAIServer) -> None:
    before = len(server.streams)
    chunks = [c async for c in lc_router(server, "doomed").astream("Explain.")]
    assert "".join(c.text for c in chunks) == LARGE_ANSWER
    await asyncio.to_thread(check_aborted, lc_trace(chunks[-1]), server, before)


async def test_langchain_astream_events_carry_no_hidden_token(server: FakeOpenAIServer) -> None:
    streamed = [e["data"]["chunk"].text async for e in lc_router(server, "doomed").astream_events("Explain.")
                if e["event"] == "on_chat_model_stream"]
    assert "word" not in "".join(streamed) and "large says" in "".join(streamed)


# ---------------------------------------------------------------------------- LiteLLM


@pytest.fixture(scope="module")
def router(server: FakeOpenAIServer) -> Iterator[litellm.Router]:
    register()
    tiers = [{"model_name": name, "litellm_params": {"model": f"openai/{name}", "api_base": server.base_url,
                                                     "api_key": "test", "num_retries": 0}}
             for name in ("doomed", "sure", "large", "tool")]
    cascades = [{"model_name": f"abort-{first}", "litellm_params": {"model": f"confidence/abort-{first}",
                                                                    "cascade": block(first)}}
                for first in ("doomed", "sure", "tool")]
    r = litellm.Router(model_list=tiers + cascades)
    register(r)
    yield r
    litellm_hooks.unbind_router(r)


def ask() -> list[dict[str, str]]:
    return [{"role": "user", "content": f"Explain. [id:{uuid.uuid4().hex[:10]}]"}]


def lite_trace(trace: dict[str, Any]) -> RequestTrace:
    return RequestTrace.model_validate(trace)


def test_litellm_completion_aborts(router: litellm.Router, server: FakeOpenAIServer) -> None:
    before = len(server.streams)
    response = router.completion(model="abort-doomed", messages=ask())
    assert response.choices[0].message.content == LARGE_ANSWER
    check_aborted(lite_trace(response._hidden_params[TRACE_KEY]), server, before)


def test_litellm_completion_never_aborts_a_confident_answer(router: litellm.Router,
                                                            server: FakeOpenAIServer) -> None:
    before = len(server.streams)
    response = router.completion(model="abort-sure", messages=ask())
    assert response.choices[0].message.content == LONG
    check_confident(lite_trace(response._hidden_params[TRACE_KEY]), server, before)


async def test_litellm_acompletion_aborts(router: litellm.Router, server: FakeOpenAIServer) -> None:
    before = len(server.streams)
    response = await router.acompletion(model="abort-doomed", messages=ask())
    assert response.choices[0].message.content == LARGE_ANSWER
    await asyncio.to_thread(check_aborted, lite_trace(response._hidden_params[TRACE_KEY]), server, before)


def test_litellm_hidden_stream_cut_by_the_server_is_a_skipped_error(router: litellm.Router) -> None:
    messages = ask()
    messages[0]["content"] += " [fault=cut@sure]"
    trace = lite_trace(router.completion(model="abort-sure", messages=messages)._hidden_params[TRACE_KEY])
    first = trace.attempts[0]
    # LiteLLM reports a stream cut by the server as a 500 (MidStreamFallbackError): kind "server"
    assert (first.decision, first.error_kind, first.aborted_at_token) == ("error", "server", None)
    assert trace.final_model == "large" and trace.ttft_ms is None


def test_litellm_a_gated_tool_call_is_returned_whole(router: litellm.Router) -> None:
    tools = [{"type": "function", "function": {"name": "lookup", "parameters": {}}}]
    direct = router.completion(model="tool", messages=ask(), tools=tools).choices[0].message.tool_calls[0]
    response = router.completion(model="abort-tool", messages=ask(), tools=tools)
    trace = lite_trace(response._hidden_params[TRACE_KEY])
    assert [(a.model, a.decision, a.aborted_at_token) for a in trace.attempts] == [("tool", "accept", None)]
    (call,) = response.choices[0].message.tool_calls
    # as the tier returns it when called whole
    assert (call.function.name, call.function.arguments) == ("lookup", direct.function.arguments) and call.id


def test_litellm_stream_aborts(router: litellm.Router, server: FakeOpenAIServer) -> None:
    before = len(server.streams)
    chunks = list(router.completion(model="abort-doomed", messages=ask(), stream=True))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == LARGE_ANSWER
    trace = next(c._hidden_params[TRACE_KEY] for c in reversed(chunks) if TRACE_KEY in c._hidden_params)
    check_aborted(lite_trace(trace), server, before)


async def test_litellm_astream_aborts(router: litellm.Router, server: FakeOpenAIServer) -> None:
    before = len(server.streams)
    response = await router.acompletion(model="abort-doomed", messages=ask(), stream=True)
    chunks = [c async for c in response]
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == LARGE_ANSWER
    trace = next(c._hidden_params[TRACE_KEY] for c in reversed(chunks) if TRACE_KEY in c._hidden_params)
    await asyncio.to_thread(check_aborted, lite_trace(trace), server, before)


# ---------------------------------------------------------------------------- the example


def test_example_cuts_the_small_answer_and_answers_sooner() -> None:
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "examples" / "early_abort.py"
    spec = importlib.util.spec_from_file_location("early_abort_example", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    result = module.main()
    with_rule, without = result["with"], result["without"]
    assert with_rule["model"] == without["model"] == "large" and with_rule["answer"] == without["answer"]
    assert with_rule["aborted_at_token"] == 4 and with_rule["small_tokens_out"] == 4
    assert without["aborted_at_token"] is None and without["small_tokens_out"] > 100

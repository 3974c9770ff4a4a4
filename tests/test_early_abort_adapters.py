"""Early abort through both adapters against a local OpenAI-compatible server (real HTTP, real streams).

"doomed" writes a long answer whose every token is unlikely (scripted logprobs), slowly; "sure" writes the
same long answer confidently; "tool" answers a request that offers tools with a tool call; "large" is the
final tier. The server records each stream: how many tokens it sent and whether the client hung up before
the end.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Iterator
from typing import Any, ClassVar

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

import litellm
import pytest
from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.language_models import BaseLanguageModel
from langchain_core.messages import HumanMessage
from langchain_openai import ChatOpenAI
from support.upstream import stream_of

import litellm_hooks
from langchain_confidence_router.core import RequestTrace
from langchain_confidence_router.langchain import ConfidenceRouter
from langchain_confidence_router.langchain._usage import by_characters
from langchain_confidence_router.langchain.testing import ScriptedOpenAIServer
from langchain_confidence_router.testing import FakeOpenAIServer, ModelBehaviour
from litellm_hooks import TRACE_KEY, register

LONG = " ".join(f"word{i}" for i in range(60))  # 60 tokens
AFTER = 4
LARGE_ANSWER = "large says: the answer is 42."
IN_PRICE, OUT_PRICE = 1e-6, 2e-6


@pytest.fixture(scope="module")
def server() -> Iterator[FakeOpenAIServer]:
    models = {"doomed": ModelBehaviour(answer=LONG, token_logprobs=[-3.0], token_delay_s=0.01),
              "sure": ModelBehaviour(answer=LONG, token_delay_s=0.001),
              "large": ModelBehaviour(),
              "meh": ModelBehaviour(answer="maybe", token_logprobs=[-3.0]),
              "gpt-4o-mini": ModelBehaviour(answer=LONG, token_logprobs=[-3.0], token_delay_s=0.01),
              "tool": ModelBehaviour(token_logprobs=[-3.0], token_delay_s=0.001)}
    # the scripted server answers a request with tools with a tool call (and no text), as models do
    with ScriptedOpenAIServer(models, timeout_sleep_s=1.0) as srv:
        yield srv


@pytest.fixture(scope="module", autouse=True)
def offline_tiktoken() -> Iterator[None]:
    """ChatOpenAI counts prompt tokens with tiktoken, which downloads its encodings: use LiteLLM's bundled copy."""
    from litellm.litellm_core_utils import default_encoding

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TIKTOKEN_CACHE_DIR", default_encoding.filename)
        yield


def block(first: str, after: int = AFTER) -> dict[str, Any]:
    return {"algorithm": {"confidence": {"confidence_method": "min_logprob", "threshold": 0.5,
                                         "token_filter": "stop"}},
            "models": [{"name": first, "early_abort": {"after_tokens": after, "below": 0.5},
                        "input_cost_per_token": IN_PRICE, "output_cost_per_token": OUT_PRICE},
                       {"name": "large"}]}


#: after "meh" (about 8e-6 USD) the cascade goes on; after the cut "doomed" attempt (about 2e-5 more) it stops
BUDGET_USD = 1.5e-5


def budget_block() -> dict[str, Any]:
    """A rejected whole answer, then a gated tier that is cut, then "large", under a cost budget."""
    config = block("doomed")
    config["algorithm"]["confidence"]["limits"] = {"cost_budget_usd": BUDGET_USD}
    config["models"].insert(0, {"name": "meh", "input_cost_per_token": IN_PRICE, "output_cost_per_token": OUT_PRICE})
    return config


def check_budget_stopped(trace: RequestTrace) -> None:
    """The cut attempt's cost counts against the budget: "large" is never called, "meh" is the fallback."""
    assert [(a.model, a.decision) for a in trace.attempts] == [("meh", "fallback"), ("doomed", "escalate")]
    assert trace.attempts[0].cost_usd < BUDGET_USD <= trace.total_cost_usd
    assert f"cost budget {BUDGET_USD:g} USD reached" in trace.reasons


def check_aborted(trace: RequestTrace, server: FakeOpenAIServer, before: int, prompt_tokens: int) -> None:
    first, last = trace.attempts
    assert (first.model, first.decision, first.aborted_at_token, first.tokens_out) == ("doomed", "escalate",
                                                                                     AFTER, AFTER)
    assert first.reason.startswith(f"early abort at token {AFTER}: running min_logprob 0.050 < below 0.500")
    # no usage arrives on a cancelled stream: the prompt is counted by the adapter, the output is what arrived
    assert (first.tokens_in, first.tokens_in_estimated) == (prompt_tokens, True)
    assert first.cost_usd == pytest.approx(IN_PRICE * prompt_tokens + OUT_PRICE * AFTER)
    assert trace.total_cost_usd == pytest.approx(first.cost_usd)  # "large" has no prices
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


def chat(server: FakeOpenAIServer, name: str, **fields: Any) -> ChatOpenAI:
    # the tokenizer ChatOpenAI counts prompt tokens with (it knows none for these model names)
    fields.setdefault("tiktoken_model_name", "gpt-4o-mini")
    return ChatOpenAI(model=name, base_url=server.base_url, api_key="test", max_retries=0, timeout=5, **fields)


def lc_router(server: FakeOpenAIServer, first: str) -> ConfidenceRouter:
    return ConfidenceRouter(models={first: chat(server, first), "large": chat(server, "large")},
                            config=block(first))


def lc_prompt(server: FakeOpenAIServer) -> int:
    """The tier's own count of the prompt "Explain." (ChatOpenAI: tiktoken)."""
    return chat(server, "doomed").get_num_tokens_from_messages([HumanMessage("Explain.")])


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
    check_aborted(lc_trace(answer), server, before, lc_prompt(server))
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


def test_langchain_budget_counts_the_aborted_attempt(server: FakeOpenAIServer) -> None:
    router = ConfidenceRouter(models={m: chat(server, m) for m in ("meh", "doomed", "large")}, config=budget_block())
    answer = router.invoke("Explain.")
    assert answer.content == "maybe"
    check_budget_stopped(lc_trace(answer))


def test_langchain_prompt_sized_by_characters_without_a_counter(server: FakeOpenAIServer,
                                                                caplog: pytest.LogCaptureFixture) -> None:
    # without tiktoken_model_name ChatOpenAI cannot count for the name "doomed": the documented fallback
    router = ConfidenceRouter(models={"doomed": chat(server, "doomed", tiktoken_model_name=None),
                                     "large": chat(server, "large")}, config=block("doomed"))
    for _ in range(2):
        first = lc_trace(router.invoke("Explain this, please.")).attempts[0]
        assert first.aborted_at_token == AFTER and first.tokens_in_estimated
        assert first.tokens_in == by_characters([HumanMessage("Explain this, please.")]) == 6 + 4
        assert first.cost_usd == pytest.approx(IN_PRICE * 10 + OUT_PRICE * AFTER)
    # the failing counter was asked once, then skipped, and said why
    assert next(r.getMessage() for r in caplog.records if "cannot count" in r.getMessage()).startswith(
        "confidence router: doomed cannot count prompt tokens")
    assert sum("cannot count" in r.getMessage() for r in caplog.records) == 1


def test_langchain_never_downloads_a_tokenizer_to_count(server: FakeOpenAIServer, tmp_path: Any,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """tiktoken's encoding is neither cached nor loaded: the cut prompt is sized by characters, and no fetch
    leaves the machine (requests, which tiktoken downloads with, and any non-local socket are watched)."""
    import socket

    import requests
    import tiktoken.registry

    fetches: list[str] = []

    def refuse(url: Any, *args: Any, **kwargs: Any) -> Any:
        fetches.append(str(url))
        raise ConnectionError(f"test: no network ({url})")

    real_connect = socket.socket.connect

    def connect(self: socket.socket, address: Any) -> Any:
        if isinstance(address, tuple) and address[0] not in ("127.0.0.1", "localhost", "::1"):
            fetches.append(str(address))
            raise ConnectionError(f"test: no network ({address})")
        return real_connect(self, address)

    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path))  # an empty cache
    monkeypatch.setattr(tiktoken.registry, "ENCODINGS", {})  # and nothing loaded yet
    monkeypatch.setattr(requests, "get", refuse)
    monkeypatch.setattr(socket.socket, "connect", connect)
    router = ConfidenceRouter(models={"doomed": chat(server, "doomed"), "large": chat(server, "large")},
                              config=block("doomed"))
    first = lc_trace(router.invoke("Explain.")).attempts[0]
    assert first.aborted_at_token == AFTER and first.tokens_in_estimated
    assert first.tokens_in == by_characters([HumanMessage("Explain.")])
    assert fetches == []
    assert not list(tmp_path.iterdir())  # nothing was downloaded into the cache either


class RemoteCounting(ChatOpenAI):
    """A chat model whose token count is a provider API call (as ChatAnthropic's), and no tokenizer of its own."""

    counted: ClassVar[int] = 0
    get_token_ids = BaseLanguageModel.get_token_ids  # no tokenizer: ChatOpenAI's tiktoken one is undone

    def get_num_tokens_from_messages(self, messages: list[Any], tools: Any = None) -> int:
        RemoteCounting.counted += 1
        return 1000


def test_langchain_never_calls_an_api_to_count_between_tiers(server: FakeOpenAIServer) -> None:
    doomed = RemoteCounting(model="doomed", base_url=server.base_url, api_key="test", max_retries=0, timeout=5)
    router = ConfidenceRouter(models={"doomed": doomed, "large": chat(server, "large")}, config=block("doomed"))
    first = lc_trace(router.invoke("Explain.")).attempts[0]
    assert first.aborted_at_token == AFTER and RemoteCounting.counted == 0
    assert (first.tokens_in, first.tokens_in_estimated) == (by_characters([HumanMessage("Explain.")]), True)


async def test_langchain_ainvoke_aborts(server: FakeOpenAIServer) -> None:
    before = len(server.streams)
    answer = await lc_router(server, "doomed").ainvoke("Explain.")
    assert answer.content == LARGE_ANSWER
    await asyncio.to_thread(check_aborted, lc_trace(answer), server, before, lc_prompt(server))


async def test_langchain_ainvoke_never_aborts_a_confident_answer(server: FakeOpenAIServer) -> None:
    before = len(server.streams)
    answer = await lc_router(server, "sure").ainvoke("Explain.")
    await asyncio.to_thread(check_confident, lc_trace(answer), server, before)


def test_langchain_stream_shows_only_the_final_answer(server: FakeOpenAIServer) -> None:
    before = len(server.streams)
    recorder = TokenRecorder()
    chunks = list(lc_router(server, "doomed").stream("Explain.", {"callbacks": [recorder]}))
    assert "".join(c.text for c in chunks) == LARGE_ANSWER
    check_aborted(lc_trace(chunks[-1]), server, before, lc_prompt(server))
    assert "".join(recorder.tokens) .count("word") == 0 and "large" in "".join(recorder.tokens)


async def test_langchain_astream_aborts(server: FakeOpenAIServer) -> None:
    before = len(server.streams)
    chunks = [c async for c in lc_router(server, "doomed").astream("Explain.")]
    assert "".join(c.text for c in chunks) == LARGE_ANSWER
    await asyncio.to_thread(check_aborted, lc_trace(chunks[-1]), server, before, lc_prompt(server))


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
             for name in ("doomed", "sure", "large", "tool", "meh")]
    cascades = [{"model_name": f"abort-{first}", "litellm_params": {"model": f"confidence/abort-{first}",
                                                                    "cascade": block(first)}}
                for first in ("doomed", "sure", "tool")]
    cascades.append({"model_name": "abort-budget", "litellm_params": {"model": "confidence/abort-budget",
                                                                      "cascade": budget_block()}})
    # a tier in LiteLLM's cost map, with no prices in the configuration
    tiers.append({"model_name": "mini", "litellm_params": {"model": "openai/gpt-4o-mini", "api_base": server.base_url,
                                                           "api_key": "test", "num_retries": 0}})
    unpriced = block("mini")
    del unpriced["models"][0]["input_cost_per_token"], unpriced["models"][0]["output_cost_per_token"]
    cascades.append({"model_name": "abort-mini", "litellm_params": {"model": "confidence/abort-mini",
                                                                    "cascade": unpriced}})
    r = litellm.Router(model_list=tiers + cascades)
    register(r)
    yield r
    litellm_hooks.unbind_router(r)


def ask() -> list[dict[str, str]]:
    return [{"role": "user", "content": f"Explain. [id:{uuid.uuid4().hex[:10]}]"}]


def lite_prompt(messages: list[dict[str, str]]) -> int:
    """LiteLLM's count of the prompt for the tier's deployment model."""
    return litellm.token_counter(model="openai/doomed", messages=messages)


def lite_trace(trace: dict[str, Any]) -> RequestTrace:
    return RequestTrace.model_validate(trace)


def test_litellm_completion_aborts(router: litellm.Router, server: FakeOpenAIServer) -> None:
    before = len(server.streams)
    messages = ask()
    response = router.completion(model="abort-doomed", messages=messages)
    assert response.choices[0].message.content == LARGE_ANSWER
    check_aborted(lite_trace(response._hidden_params[TRACE_KEY]), server, before, lite_prompt(messages))


def test_litellm_completion_never_aborts_a_confident_answer(router: litellm.Router,
                                                            server: FakeOpenAIServer) -> None:
    before = len(server.streams)
    response = router.completion(model="abort-sure", messages=ask())
    assert response.choices[0].message.content == LONG
    check_confident(lite_trace(response._hidden_params[TRACE_KEY]), server, before)


async def test_litellm_acompletion_aborts(router: litellm.Router, server: FakeOpenAIServer) -> None:
    before = len(server.streams)
    messages = ask()
    response = await router.acompletion(model="abort-doomed", messages=messages)
    assert response.choices[0].message.content == LARGE_ANSWER
    await asyncio.to_thread(check_aborted, lite_trace(response._hidden_params[TRACE_KEY]), server, before,
                            lite_prompt(messages))


def test_litellm_budget_counts_the_aborted_attempt(router: litellm.Router) -> None:
    response = router.completion(model="abort-budget", messages=ask())
    assert response.choices[0].message.content == "maybe"
    check_budget_stopped(lite_trace(response._hidden_params[TRACE_KEY]))


def test_litellm_prices_a_cut_attempt_from_its_cost_map(router: litellm.Router) -> None:
    messages = ask()
    first = lite_trace(router.completion(model="abort-mini", messages=messages)._hidden_params[TRACE_KEY]).attempts[0]
    prompt = litellm.token_counter(model="openai/gpt-4o-mini", messages=messages)
    assert (first.model, first.aborted_at_token, first.tokens_in, first.tokens_in_estimated) == ("mini", AFTER,
                                                                                                 prompt, True)
    assert first.cost_usd == pytest.approx(sum(litellm.cost_per_token(
        model="openai/gpt-4o-mini", prompt_tokens=prompt, completion_tokens=AFTER))) and first.cost_usd > 0


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
    messages = ask()
    chunks = list(router.completion(model="abort-doomed", messages=messages, stream=True))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == LARGE_ANSWER
    trace = next(c._hidden_params[TRACE_KEY] for c in reversed(chunks) if TRACE_KEY in c._hidden_params)
    check_aborted(lite_trace(trace), server, before, lite_prompt(messages))


async def test_litellm_astream_aborts(router: litellm.Router, server: FakeOpenAIServer) -> None:
    before = len(server.streams)
    messages = ask()
    response = await router.acompletion(model="abort-doomed", messages=messages, stream=True)
    chunks = [c async for c in response]
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == LARGE_ANSWER
    trace = next(c._hidden_params[TRACE_KEY] for c in reversed(chunks) if TRACE_KEY in c._hidden_params)
    await asyncio.to_thread(check_aborted, lite_trace(trace), server, before, lite_prompt(messages))


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

"""Early abort inside a hedged request, through both adapters, blocking and async, against a local server.

A gated tier (``early_abort``) that also has ``hedge_after_ms`` is read as its hidden stream by the hedging
drive loop: the rule cuts it at the configured token, its stream is closed, and the cut attempt counts as
a rejected answer: the running hedge becomes the next attempt, or, when none runs yet, the request escalates
at once. "doomed" writes a long answer whose every token is unlikely; "sure" the same answer confidently;
"large" is the last tier; "meh" a last tier that answers fast and unconfidently. Prompts set per-model
delays (``[delay=SECONDS@MODEL]``) and carry a marker, so the server's arrivals of one request can be found.
Timings only order events, with margins of most of a second.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Iterator
from typing import Any

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

import litellm
import pytest
from langchain_openai import ChatOpenAI
from support.proxy import wait_for
from support.upstream import arrivals, disconnected, stream_of

import litellm_hooks
from langchain_confidence_router.core import RequestTrace
from langchain_confidence_router.langchain import ConfidenceRouter
from langchain_confidence_router.testing import FakeOpenAIServer, ModelBehaviour
from litellm_hooks import TRACE_KEY, register

LONG = " ".join(f"word{i}" for i in range(60))  # 60 tokens
AFTER = 4
HEDGE_MS = 150.0
SLOW_HEDGE_MS = 5000.0  # far beyond the cut of a stream that starts at once
PRICE_IN, PRICE_OUT = 1e-6, 2e-6
PATHS = ["langchain.invoke", "langchain.ainvoke", "litellm.completion", "litellm.acompletion"]
ASYNC_PATHS = ("langchain.ainvoke", "litellm.acompletion")


def block(first: str, second: str = "large", hedge_after_ms: float = HEDGE_MS) -> dict[str, Any]:
    priced = {"input_cost_per_token": PRICE_IN, "output_cost_per_token": PRICE_OUT}
    return {"algorithm": {"confidence": {"confidence_method": "min_logprob", "threshold": 0.5,
                                         "token_filter": "stop", "escalation_order": "declared"}},
            "models": [{"name": first, "early_abort": {"after_tokens": AFTER, "below": 0.5},
                        "hedge_after_ms": hedge_after_ms, **priced},
                       {"name": second, **priced}]}


BLOCKS = {"doomed": block("doomed"), "doomed-slow-hedge": block("doomed", hedge_after_ms=SLOW_HEDGE_MS),
          "sure": block("sure"), "sure-meh": block("sure", "meh")}


@pytest.fixture(scope="module")
def server() -> Iterator[FakeOpenAIServer]:
    models = {"doomed": ModelBehaviour(answer=LONG, token_logprobs=[-3.0], token_delay_s=0.01),
              "sure": ModelBehaviour(answer=LONG, token_delay_s=0.001),
              "large": ModelBehaviour(),
              "meh": ModelBehaviour(answer="maybe", token_logprobs=[-3.0])}
    with FakeOpenAIServer(models=models, timeout_sleep_s=1.0) as srv:
        yield srv


@pytest.fixture(scope="module", autouse=True)
def offline_tiktoken() -> Iterator[None]:
    """ChatOpenAI counts a cut prompt with tiktoken: use LiteLLM's bundled copy of its encoding."""
    from litellm.litellm_core_utils import default_encoding

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TIKTOKEN_CACHE_DIR", default_encoding.filename)
        yield


@pytest.fixture(scope="module")
def router(server: FakeOpenAIServer) -> Iterator[litellm.Router]:
    register()
    tiers = [{"model_name": name, "litellm_params": {"model": f"openai/{name}", "api_base": server.base_url,
                                                     "api_key": "test", "num_retries": 0}}
             for name in ("doomed", "sure", "large", "meh")]
    cascades = [{"model_name": f"hedged-{name}", "litellm_params": {"model": f"confidence/hedged-{name}",
                                                                    "cascade": config}}
                for name, config in BLOCKS.items()]
    r = litellm.Router(model_list=tiers + cascades, num_retries=0)
    register(r)
    yield r
    litellm_hooks.unbind_router(r)


@pytest.fixture(scope="module")
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    """One event loop for the async paths: the clients' cached connection pools belong to it."""
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()


def ask(path: str, server: FakeOpenAIServer, router: litellm.Router, name: str, prompt: str,
        loop: asyncio.AbstractEventLoop) -> tuple[RequestTrace, str, str]:
    """One request through ``path``: its trace, its answer text, and the marker its upstream calls carry."""
    marker = f"[id:{uuid.uuid4().hex[:10]}]"
    text = f"{prompt} {marker}"
    if path.startswith("langchain"):
        config = BLOCKS[name]
        chats = {m["name"]: ChatOpenAI(model=m["name"], base_url=server.base_url, api_key="test", max_retries=0,
                                       timeout=10, tiktoken_model_name="gpt-4o-mini") for m in config["models"]}
        lc = ConfidenceRouter(models=chats, config=config)
        message = lc.invoke(text) if path.endswith(".invoke") else loop.run_until_complete(lc.ainvoke(text))
        return RequestTrace.model_validate(message.response_metadata[TRACE_KEY]), str(message.content), marker
    messages = [{"role": "user", "content": text}]
    if path.endswith(".completion"):
        response = router.completion(model=f"hedged-{name}", messages=messages)
    else:
        response = loop.run_until_complete(router.acompletion(model=f"hedged-{name}", messages=messages))
    return RequestTrace.model_validate(response._hidden_params[TRACE_KEY]), response.choices[0].message.content, marker


def decisions(trace: RequestTrace) -> list[tuple[str, str | None, bool, int | None]]:
    return [(a.model, a.decision, a.hedged, a.aborted_at_token) for a in trace.attempts]


def check_cut(trace: RequestTrace, server: FakeOpenAIServer, before: int) -> None:
    """The first attempt was cut at the configured token, paid for what arrived, its stream closed."""
    cut = trace.attempts[0]
    assert cut.tokens_out == AFTER and cut.tokens_in_estimated and cut.tokens_in
    assert cut.reason.startswith(f"early abort at token {AFTER}: running min_logprob 0.050 < below 0.500")
    assert cut.cost_usd == pytest.approx(PRICE_IN * cut.tokens_in + PRICE_OUT * AFTER)
    record = stream_of(server, "doomed", before)
    assert record.closed_by_client and not record.finished and record.tokens_sent < 30


@pytest.mark.parametrize("path", PATHS)
def test_abort_inside_a_hedged_request_adopts_the_running_hedge(
        path: str, server: FakeOpenAIServer, router: litellm.Router, loop: asyncio.AbstractEventLoop) -> None:
    """doomed starts writing at 0.8 s and is cut a few tokens later; the hedge (started at 0.15 s, answering
    at 2.15 s) is the next attempt: waited for, not called again."""
    before = len(server.streams)
    trace, text, marker = ask(path, server, router, "doomed", "Explain. [delay=0.8@doomed] [delay=2@large]", loop)
    assert text.startswith("large says")
    assert decisions(trace) == [("doomed", "escalate", False, AFTER), ("large", "accept", True, None)]
    check_cut(trace, server, before)
    came = arrivals(server, marker)
    assert len(came["large"]) == 1 and came["large"][0] - came["doomed"][0] < 0.8  # started as the hedge
    assert trace.cost_complete and trace.total_cost_usd == pytest.approx(sum(a.cost_usd or 0 for a in trace.attempts))


@pytest.mark.parametrize("path", PATHS)
def test_abort_before_the_hedge_is_due_escalates_at_once(
        path: str, server: FakeOpenAIServer, router: litellm.Router, loop: asyncio.AbstractEventLoop) -> None:
    """Cut after about 0.05 s with hedge_after_ms 5 s: the next tier is called then, not at 5 s."""
    before = len(server.streams)
    trace, text, marker = ask(path, server, router, "doomed-slow-hedge", "Explain.", loop)
    assert text.startswith("large says")
    assert decisions(trace) == [("doomed", "escalate", False, AFTER), ("large", "accept", False, None)]
    check_cut(trace, server, before)
    came = arrivals(server, marker)
    assert len(came["large"]) == 1 and came["large"][0] - came["doomed"][0] < SLOW_HEDGE_MS / 1000.0 / 2
    assert trace.total_latency_ms is not None and trace.total_latency_ms < SLOW_HEDGE_MS / 2


@pytest.mark.parametrize("path", PATHS)
def test_a_confident_gated_answer_is_never_cut_and_wins_over_the_hedge(
        path: str, server: FakeOpenAIServer, router: litellm.Router, loop: asyncio.AbstractEventLoop) -> None:
    before = len(server.streams)
    trace, text, marker = ask(path, server, router, "sure", "Explain. [delay=0.6@sure] [delay=2.5@large]", loop)
    assert text == LONG
    assert decisions(trace) == [("sure", "accept", False, None), ("large", "cancelled", True, None)]
    assert trace.attempts[0].tokens_out == 60
    record = stream_of(server, "sure", before)
    assert record.finished and not record.closed_by_client and record.tokens_sent == 60
    assert "large" in arrivals(server, marker)  # the hedge was started, then cancelled
    assert trace.total_latency_ms is not None and trace.total_latency_ms < 2500  # not held for the hedge
    if path in ASYNC_PATHS:  # a blocking call cannot be interrupted: it runs on in its thread
        assert wait_for(lambda: disconnected(server, marker), 5.0) == ["large"]


@pytest.mark.parametrize("path", PATHS)
def test_an_unacceptable_hedge_that_answers_first_never_beats_an_acceptable_gated_answer(
        path: str, server: FakeOpenAIServer, router: litellm.Router, loop: asyncio.AbstractEventLoop) -> None:
    """meh (the hedge) answers unconfidently at about 0.15 s; sure, gated, answers confidently at 0.8 s: the
    hedge is held, sure wins, and the hedge is billed from its usage."""
    trace, text, _ = ask(path, server, router, "sure-meh", "Explain. [delay=0.8@sure]", loop)
    assert text == LONG
    assert decisions(trace) == [("sure", "accept", False, None), ("meh", "cancelled", True, None)]
    hedge = trace.attempts[1]
    assert hedge.tokens_out and hedge.cost_usd and hedge.cost_usd > 0


@pytest.mark.parametrize("path", PATHS)
def test_an_acceptable_hedge_that_answers_first_cancels_the_gated_attempt(
        path: str, server: FakeOpenAIServer, router: litellm.Router, loop: asyncio.AbstractEventLoop) -> None:
    """sure waits 1.5 s before its first token; the hedge (large, started at 0.15 s) answers acceptably long
    before: it wins, and sure's hidden stream is cancelled (async: its connection closed)."""
    trace, text, marker = ask(path, server, router, "sure", "Explain. [delay=1.5@sure]", loop)
    assert text.startswith("large says")
    assert decisions(trace) == [("sure", "cancelled", False, None), ("large", "accept", True, None)]
    assert trace.total_latency_ms is not None and trace.total_latency_ms < 1500
    sent = [body for body in list(server.requests) if body.get("model") == "sure" and marker in str(body["messages"])]
    assert len(sent) == 1 and sent[0].get("stream")  # the gated attempt was its hidden stream
    cut = trace.attempts[0]  # billed like a cut attempt: its prompt, counted by the adapter (no token had come)
    assert cut.tokens_in and cut.tokens_in_estimated and not cut.tokens_out
    assert cut.cost_usd == pytest.approx(PRICE_IN * cut.tokens_in)
    assert trace.cost_complete and trace.total_cost_usd == pytest.approx(sum(a.cost_usd for a in trace.attempts))
    if path in ASYNC_PATHS:  # a blocking stream is closed at its next chunk, after the delay
        assert wait_for(lambda: disconnected(server, marker), 5.0) == ["sure"]


@pytest.mark.parametrize("path", ["langchain.invoke", "litellm.completion"])
def test_a_blocking_request_with_no_thread_free_still_aborts(
        path: str, server: FakeOpenAIServer, router: litellm.Router, loop: asyncio.AbstractEventLoop,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Every hedging thread busy: the request runs unhedged, and its gated tier is still cut."""
    import threading

    from langchain_confidence_router.core import hedge

    monkeypatch.setattr(hedge, "_slots", threading.BoundedSemaphore(1))
    hedge._slots.acquire()
    before = len(server.streams)
    trace, text, _ = ask(path, server, router, "doomed", "Explain. [delay=0.3@doomed]", loop)
    assert text.startswith("large says")
    assert decisions(trace) == [("doomed", "escalate", False, AFTER), ("large", "accept", False, None)]
    check_cut(trace, server, before)

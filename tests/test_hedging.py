"""Hedging (``hedge_after_ms``) through both adapters, blocking and async, against a real local HTTP server.

The upstream models are ``FakeOpenAIServer`` ones (real HTTP, real OpenAI-shaped logprobs); each prompt
sets the models' delays with ``[delay=SECONDS@MODEL]`` and carries a unique marker, so the server's
arrival times and client disconnects of one request can be found. Timing is only used for order (a call
started after another, a request that returned before a slow answer could have come), with wide margins.
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections.abc import Iterator
from typing import Any

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

import litellm
import pytest
from langchain_openai import ChatOpenAI
from support.proxy import wait_for
from support.upstream import arrivals, disconnected

import litellm_hooks
from langchain_confidence_router.core import RequestTrace
from langchain_confidence_router.langchain import ConfidenceRouter
from langchain_confidence_router.testing import FakeOpenAIServer, ModelBehaviour
from litellm_hooks import TRACE_KEY, register

PRICE_IN, PRICE_OUT = 1e-6, 2e-6
HEDGE_MS = 150.0
PATIENT_MS = 600.0  # far above a 20 ms answer, even on a loaded machine
PATHS = ["langchain.invoke", "langchain.ainvoke", "litellm.completion", "litellm.acompletion"]


def cascade(first: str = "small", second: str = "large", hedge_after_ms: float | None = HEDGE_MS) -> dict[str, Any]:
    priced = {"input_cost_per_token": PRICE_IN, "output_cost_per_token": PRICE_OUT}
    head: dict[str, Any] = {"name": first, **priced}
    if hedge_after_ms is not None:
        head["hedge_after_ms"] = hedge_after_ms
    return {"algorithm": {"confidence": {"threshold": 0.7, "escalation_order": "declared"}},
            "models": [head, {"name": second, **priced}]}


@pytest.fixture(scope="module")
def server() -> Iterator[FakeOpenAIServer]:
    models = {"small": ModelBehaviour(confident_on_hard=False), "large": ModelBehaviour(),
              "sure": ModelBehaviour(), "unsure": ModelBehaviour(confident_on_hard=False)}
    with FakeOpenAIServer(models=models, timeout_sleep_s=1.0) as srv:
        yield srv


@pytest.fixture(scope="module")
def router(server: FakeOpenAIServer) -> Iterator[litellm.Router]:
    register()
    deployments = [{"model_name": name, "litellm_params": {"model": f"openai/{name}", "api_base": server.base_url,
                                                           "api_key": "test", "num_retries": 0}}
                   for name in ("small", "large", "sure", "unsure")]
    blocks = {"hedged": cascade(), "plain": cascade(hedge_after_ms=None), "reverse": cascade("sure", "unsure"),
              "late": cascade(hedge_after_ms=60_000), "patient": cascade(hedge_after_ms=PATIENT_MS)}
    deployments += [{"model_name": name, "litellm_params": {"model": f"confidence/{name}", "cascade": block}}
                    for name, block in blocks.items()]
    r = litellm.Router(model_list=deployments, num_retries=0)
    register(r)
    yield r
    litellm_hooks.unbind_router(r)


@pytest.fixture(scope="module")
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    """One event loop for the async paths: the clients' cached connection pools belong to it."""
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()


def chat(server: FakeOpenAIServer, name: str) -> ChatOpenAI:
    return ChatOpenAI(model=name, base_url=server.base_url, api_key="test", max_retries=0, timeout=5)


def ask(path: str, server: FakeOpenAIServer, router: litellm.Router, block: str, prompt: str,
        loop: asyncio.AbstractEventLoop) -> tuple[RequestTrace, str, str]:
    """One request through ``path``: its trace, its answer text, and the marker its upstream calls carry."""
    marker = f"[id:{uuid.uuid4().hex[:10]}]"
    text = f"{prompt} {marker}"
    if path.startswith("langchain"):
        config = {"hedged": cascade(), "plain": cascade(hedge_after_ms=None), "reverse": cascade("sure", "unsure"),
                  "late": cascade(hedge_after_ms=60_000), "patient": cascade(hedge_after_ms=PATIENT_MS)}[block]
        names = [m["name"] for m in config["models"]]
        lc = ConfidenceRouter(models={n: chat(server, n) for n in names}, config=config)
        message = lc.invoke(text) if path.endswith(".invoke") else loop.run_until_complete(lc.ainvoke(text))
        return RequestTrace.model_validate(message.response_metadata[TRACE_KEY]), str(message.content), marker
    messages = [{"role": "user", "content": text}]
    if path.endswith(".completion"):
        response = router.completion(model=block, messages=messages)
    else:
        response = loop.run_until_complete(router.acompletion(model=block, messages=messages))
    trace = RequestTrace.model_validate(response._hidden_params[TRACE_KEY])
    return trace, response.choices[0].message.content, marker


def assert_overlapped(trace: RequestTrace) -> None:
    """The hedge ran alongside: the request took less than its two attempts one after the other."""
    first, second = trace.attempts
    assert first.latency_ms is not None and second.latency_ms is not None and trace.total_latency_ms is not None
    assert trace.total_latency_ms < first.latency_ms + second.latency_ms - 0.5 * HEDGE_MS


def decisions(trace: RequestTrace) -> list[tuple[str, str | None, bool]]:
    return [(a.model, a.decision, a.hedged) for a in trace.attempts]


# ---------------------------------------------------------------------------- off, and not too early


@pytest.mark.parametrize("path", PATHS)
def test_off_by_default_no_extra_call(path: str, server: FakeOpenAIServer, router: litellm.Router,
                  loop: asyncio.AbstractEventLoop) -> None:
    trace, _, marker = ask(path, server, router, "plain", "What is 2 + 2? [delay=0.4@small]", loop)
    assert decisions(trace) == [("small", "accept", False)]
    assert set(arrivals(server, marker)) == {"small"}


@pytest.mark.parametrize("path", PATHS)
def test_no_hedge_before_hedge_after_ms(path: str, server: FakeOpenAIServer, router: litellm.Router,
                  loop: asyncio.AbstractEventLoop) -> None:
    """Answered within hedge_after_ms: the next tier is never called."""
    trace, _, marker = ask(path, server, router, "patient", "What is 2 + 2? [delay=0.02@small]", loop)
    assert decisions(trace) == [("small", "accept", False)]
    time.sleep(PATIENT_MS / 1000.0)  # a hedge started late would show up by now
    assert set(arrivals(server, marker)) == {"small"}


# ---------------------------------------------------------------------------- who wins


@pytest.mark.parametrize("path", PATHS)
def test_confident_small_answer_first_wins_and_the_hedge_is_cancelled(
        path: str, server: FakeOpenAIServer, router: litellm.Router,
                  loop: asyncio.AbstractEventLoop) -> None:
    trace, text, marker = ask(path, server, router, "hedged", "What is 2 + 2? [delay=0.4@small] [delay=2@large]", loop)
    assert text.startswith("small says")
    assert decisions(trace) == [("small", "accept", False), ("large", "cancelled", True)]
    came = arrivals(server, marker)
    # started after hedge_after_ms (counted from the call's start in the client, which the server sees later)
    assert came["large"][0] - came["small"][0] >= HEDGE_MS / 1000.0 / 2
    cancelled = trace.attempts[1]
    assert "small" in cancelled.reason and cancelled.cost_usd is None  # no usage came back: unknown cost
    assert trace.cost_complete is False and trace.total_cost_usd == pytest.approx(trace.attempts[0].cost_usd)
    assert trace.total_latency_ms is not None and trace.total_latency_ms < 2000  # not held for the hedge
    if path in ("langchain.invoke", "litellm.completion"):
        return  # a blocking call cannot be interrupted: it runs on in its thread, its answer dropped
    assert wait_for(lambda: disconnected(server, marker), 3.0) == ["large"]  # the connection was closed


@pytest.mark.parametrize("path", PATHS)
def test_rejected_small_answer_lets_the_running_hedge_win(
        path: str, server: FakeOpenAIServer, router: litellm.Router,
                  loop: asyncio.AbstractEventLoop) -> None:
    # small answers at 0.6 s, the hedge (started at 0.15 s) at 1.35 s: wide margins either way on a loaded machine
    trace, text, marker = ask(path, server, router, "hedged", "What is 17 * 23? [hard] [delay=0.6@small] "
                                                              "[delay=1.2@large]", loop)
    assert text.startswith("large says")
    assert decisions(trace) == [("small", "escalate", False), ("large", "accept", True)]
    came = arrivals(server, marker)
    assert len(came["large"]) == 1  # waited for, not called again
    assert_overlapped(trace)
    assert trace.cost_complete and trace.total_cost_usd == pytest.approx(
        sum(a.cost_usd or 0.0 for a in trace.attempts))


@pytest.mark.parametrize("path", PATHS)
def test_acceptable_hedge_that_answers_first_wins(path: str, server: FakeOpenAIServer,
                                                  router: litellm.Router,
                  loop: asyncio.AbstractEventLoop) -> None:
    trace, text, marker = ask(path, server, router, "hedged", "What is 2 + 2? [delay=1.5@small]", loop)
    assert text.startswith("large says")
    assert decisions(trace) == [("small", "cancelled", False), ("large", "accept", True)]
    assert "large" in trace.attempts[0].reason
    assert trace.total_latency_ms is not None and trace.total_latency_ms < 1500
    assert trace.final_model == "large" and trace.outcome == "accepted"
    if path in ("langchain.ainvoke", "litellm.acompletion"):
        assert wait_for(lambda: disconnected(server, marker), 3.0) == ["small"]


@pytest.mark.parametrize("path", PATHS)
def test_unacceptable_hedge_that_answers_first_is_held_and_never_beats_an_acceptable_earlier_answer(
        path: str, server: FakeOpenAIServer, router: litellm.Router,
                  loop: asyncio.AbstractEventLoop) -> None:
    """``sure`` (first tier) is confident but slow; ``unsure`` (the hedge) answers first, below threshold: it
    is held, the earlier tier's acceptable answer wins, and the hedge is billed from its usage."""
    trace, text, _ = ask(path, server, router, "reverse", "What is 17 * 23? [hard] [delay=0.8@sure]", loop)
    assert text.startswith("sure says")
    assert decisions(trace) == [("sure", "accept", False), ("unsure", "cancelled", True)]
    hedge = trace.attempts[1]
    assert hedge.tokens_out and hedge.cost_usd and hedge.cost_usd > 0  # it had answered: billed from usage
    assert trace.cost_complete
    assert trace.total_cost_usd == pytest.approx(trace.attempts[0].cost_usd + hedge.cost_usd)


# ---------------------------------------------------------------------------- streamed requests

STREAM_PATHS = ["langchain.stream", "langchain.astream", "litellm.completion-stream", "litellm.acompletion-stream"]


def ask_stream(path: str, server: FakeOpenAIServer, router: litellm.Router, prompt: str,
               loop: asyncio.AbstractEventLoop, block: str = "hedged") -> tuple[RequestTrace, list[str], str]:
    """One streamed request: its trace, the text of each content chunk the caller got, and its marker."""
    marker = f"[id:{uuid.uuid4().hex[:10]}]"
    text = f"{prompt} {marker}"

    messages = [{"role": "user", "content": text}]
    if path.startswith("langchain"):
        config = cascade() if block == "hedged" else cascade(hedge_after_ms=None)
        lc = ConfidenceRouter(models={n: chat(server, n) for n in ("small", "large")}, config=config)

        async def achunks() -> list[Any]:
            return [c async for c in lc.astream(text)]

        chunks = list(lc.stream(text)) if path.endswith(".stream") else loop.run_until_complete(achunks())
        return (RequestTrace.model_validate(chunks[-1].response_metadata[TRACE_KEY]),
                [c.text for c in chunks if c.text], marker)

    async def acollect() -> list[Any]:
        return [c async for c in await router.acompletion(model=block, messages=messages, stream=True)]

    chunks = list(router.completion(model=block, messages=messages, stream=True)) if path.startswith(
        "litellm.completion") else loop.run_until_complete(acollect())
    trace = next(c._hidden_params[TRACE_KEY] for c in chunks if TRACE_KEY in (c._hidden_params or {}))
    parts = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    return RequestTrace.model_validate(trace), parts, marker


@pytest.mark.parametrize("path", STREAM_PATHS)
def test_stream_hedge_into_the_live_tier_streams_it_once_the_earlier_answer_is_rejected(
        path: str, server: FakeOpenAIServer, router: litellm.Router, loop: asyncio.AbstractEventLoop) -> None:
    trace, parts, marker = ask_stream(path, server, router, "What is 17 * 23? [hard] [delay=0.4@small] "
                                                            "[delay=0.3@large]", loop)
    assert "".join(parts) == "large says: the answer is 42." and len(parts) > 3  # streamed, not one blob
    assert decisions(trace) == [("small", "escalate", False), ("large", "accept", True)]
    assert len(arrivals(server, marker)["large"]) == 1 and trace.attempts[1].streamed
    assert_overlapped(trace)


@pytest.mark.parametrize("path", STREAM_PATHS)
def test_stream_hedge_that_finished_first_is_held_then_released(
        path: str, server: FakeOpenAIServer, router: litellm.Router, loop: asyncio.AbstractEventLoop) -> None:
    """The live hedge's whole answer is in before the earlier tier is judged: nothing is shown until then."""
    trace, parts, _ = ask_stream(path, server, router, "What is 17 * 23? [hard] [delay=0.5@small]", loop)
    assert "".join(parts) == "large says: the answer is 42." and len(parts) > 3
    assert decisions(trace) == [("small", "escalate", False), ("large", "accept", True)]


@pytest.mark.parametrize("path", STREAM_PATHS)
def test_stream_confident_earlier_answer_wins_and_the_live_hedge_is_closed_unseen(
        path: str, server: FakeOpenAIServer, router: litellm.Router, loop: asyncio.AbstractEventLoop) -> None:
    trace, parts, marker = ask_stream(path, server, router, "What is 2 + 2? [delay=0.4@small] [delay=2@large]", loop)
    assert parts == ["small says: the answer is 42."]  # the accepted gated answer, as one chunk; no large token
    assert decisions(trace) == [("small", "accept", False), ("large", "cancelled", True)]
    if path in ("langchain.stream", "litellm.completion-stream"):
        return  # a blocking stream is closed when its next chunk arrives (here after the 2 s delay)
    assert wait_for(lambda: disconnected(server, marker), 3.0) == ["large"]


@pytest.mark.parametrize("path", STREAM_PATHS)
def test_stream_without_hedge_after_ms_is_sequential(
        path: str, server: FakeOpenAIServer, router: litellm.Router, loop: asyncio.AbstractEventLoop) -> None:
    trace, parts, marker = ask_stream(path, server, router, "What is 17 * 23? [hard] [delay=0.3@small]", loop,
                                      block="plain")
    assert "".join(parts) == "large says: the answer is 42."
    came = arrivals(server, marker)
    assert came["large"][0] - came["small"][0] >= 0.3 and not any(a.hedged for a in trace.attempts)


def test_langchain_stream_events_never_see_a_hedge_that_may_lose(
        server: FakeOpenAIServer, loop: asyncio.AbstractEventLoop) -> None:
    """Under astream_events the final tier's tokens reach the event stream as they are written, so the
    router does not hedge into it: a cancelled answer's tokens could not be taken back."""
    lc = ConfidenceRouter(models={n: chat(server, n) for n in ("small", "large")}, config=cascade())
    marker = f"[id:{uuid.uuid4().hex[:10]}]"

    async def events() -> list[Any]:
        return [e async for e in lc.astream_events(f"What is 2 + 2? [delay=0.4@small] {marker}", version="v2")]

    seen = loop.run_until_complete(events())
    time.sleep(HEDGE_MS / 1000.0)
    assert set(arrivals(server, marker)) == {"small"}
    assert not [e for e in seen if e["event"] == "on_chat_model_stream"
                and e["metadata"].get("confidence_router_tier") == "large"]


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("prompt", ["What is 2 + 2?", "What is 17 * 23? [hard]", "Hi [hard] [fault=500@small]",
                                    "Hi [hard] [fault=no_logprobs@small]"])
def test_a_hedge_that_never_fires_changes_nothing(path: str, prompt: str, server: FakeOpenAIServer,
                                                  router: litellm.Router, loop: asyncio.AbstractEventLoop) -> None:
    """The hedging drive loop, when no hedge starts, decides and traces exactly as the sequential one."""
    def seen(block: str) -> list[tuple[str, str | None, str, float | None, int | None]]:
        trace, _, _ = ask(path, server, router, block, prompt, loop)
        return [(a.model, a.decision, a.reason, a.cost_usd, a.tokens_out) for a in trace.attempts]

    assert seen("late") == seen("plain")


@pytest.mark.parametrize("path", ["langchain.invoke", "litellm.completion"])
def test_blocking_requests_run_unhedged_when_no_thread_is_free(
        path: str, server: FakeOpenAIServer, router: litellm.Router, loop: asyncio.AbstractEventLoop,
        monkeypatch: pytest.MonkeyPatch) -> None:
    import threading

    from langchain_confidence_router.core import hedge

    monkeypatch.setattr(hedge, "_slots", threading.BoundedSemaphore(1))
    hedge._slots.acquire()  # every hedging thread busy
    trace, text, marker = ask(path, server, router, "hedged", "What is 2 + 2? [delay=0.4@small]", loop)
    assert text.startswith("small says") and decisions(trace) == [("small", "accept", False)]
    assert set(arrivals(server, marker)) == {"small"}

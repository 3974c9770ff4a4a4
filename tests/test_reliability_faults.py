"""Every upstream fault through both adapters, under ``on_error: skip`` and ``fail``: a defined outcome, in time,
with a trace.

The cascade is ``small`` then ``large`` on a local ``FakeOpenAIServer`` (real HTTP). Faults are injected on one
tier with a prompt tag (``[fault=KIND@MODEL]``); "refused" points that tier at a closed port instead. Two
positions are covered, because they take different code paths:

* the first tier, called non-streamed (``ainvoke`` / ``acompletion``): :data:`FIRST_TIER`;
* the final tier while it streams live (``astream`` / ``acompletion(stream=True)``; the first tier escalates on
  a ``[hard]`` prompt): :data:`STREAMED_FINAL_TIER`.

For each case the test asserts the outcome in the table, that the request took no longer than
``limits.attempt_timeout_s`` allows (the upstream's timeout fault sleeps much longer), and that the request's
trace is there: in the answer, on the raised error (``.trace``; LiteLLM: ``.confidence_trace``), or, for an
error raised after streamed text through LiteLLM, in the loggers' ``spend_logs_metadata``.

The tables are the single source of docs/reliability.md: ``python tests/test_reliability_faults.py`` prints
them, and a test checks that the document carries the current ones. Known gaps are marked ``xfail(strict=True)``
with their cause in :data:`KNOWN_GAPS`, so fixing one turns its test red until the table is updated.
"""

from __future__ import annotations

import asyncio
import os
import socket
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

import litellm
import pytest
from langchain_openai import ChatOpenAI
from support.litellm_test_logger import RecordingLogger, installed_logger

import litellm_hooks
from langchain_confidence_router.core import CascadeError, RequestTrace
from langchain_confidence_router.langchain import ConfidenceRouter
from langchain_confidence_router.testing import FakeOpenAIServer, ModelBehaviour

DOC = Path(__file__).resolve().parents[1] / "docs" / "reliability.md"
TRACE_KEY = "confidence_router"
SMALL_ANSWER = "small says: the answer is 42."
LARGE_ANSWER = "large says: the answer is 42."
ATTEMPT_TIMEOUT_S = 1.0
TIMEOUT_SLEEP_S = 4.0  # the upstream's [fault=timeout] sleeps this long: a request that waits for it hangs
#: Wall-clock bound of any request here: one attempt may time out, the rest answer in milliseconds.
BOUND_S = ATTEMPT_TIMEOUT_S + 2.0

# ---------------------------------------------------------------------------- the outcome tables

ANSWER = "next tier answers"
ESCALATE = "escalates (no logprobs); next tier answers"
RAISE = "raises, trace on the error"
FALLBACK = "earlier answer returned (outcome `fallback`)"
STANDS = "streamed answer stands, unscored (outcome `fallback`)"
MIDSTREAM = "error after the streamed text; trace kept"


@dataclass(frozen=True)
class Row:
    """Expected behaviour for one fault: the error kind the trace records (LangChain, LiteLLM) and the outcomes."""

    langchain_kind: str | None
    litellm_kind: str | None
    skip: str
    fail: str
    note: str = ""

    def kind(self, adapter: str) -> str | None:
        return self.langchain_kind if adapter == "langchain" else self.litellm_kind


#: Fault on the first tier (``small``), which is called non-streamed.
FIRST_TIER: dict[str, Row] = {
    "timeout": Row("timeout", "timeout", ANSWER, RAISE, "bounded by `limits.attempt_timeout_s`"),
    "refused": Row("connection", "server", ANSWER, RAISE, "closed port; LiteLLM reports it as a 500"),
    "disconnect": Row("connection", "server", ANSWER, RAISE, "server closes the connection without an answer"),
    "429": Row("rate_limit", "rate_limit", ANSWER, RAISE),
    "500": Row("server", "server", ANSWER, RAISE),
    "400": Row("client", "client", RAISE, RAISE, "client errors are not skipped unless `skip_client_errors`"),
    "malformed": Row("bad_response", "server", ANSWER, RAISE, "invalid JSON body; LiteLLM reports it as a 500"),
    "no_logprobs": Row(None, None, ESCALATE, ESCALATE, "`missing_logprobs: escalate` (the default) decides"),
    "nan": Row("bad_response", "bad_response", ANSWER, RAISE),
    "positive": Row("bad_response", "bad_response", ANSWER, RAISE),
    "empty": Row("empty", "empty", ANSWER, RAISE),
    "cut": Row("bad_response", "server", ANSWER, RAISE, "truncated body"),
}

#: Fault on the final tier (``large``) while it streams live, after ``small`` escalated.
STREAMED_FINAL_TIER: dict[str, Row] = {
    "timeout": Row("timeout", "timeout", FALLBACK, RAISE, "no first chunk within `attempt_timeout_s`"),
    "refused": Row("connection", "server", FALLBACK, RAISE, "closed port"),
    "disconnect": Row("connection", "server", FALLBACK, RAISE),
    "429": Row("rate_limit", "rate_limit", FALLBACK, RAISE),
    "500": Row("server", "server", FALLBACK, RAISE),
    "400": Row("client", "client", RAISE, RAISE),
    "no_logprobs": Row(None, None, STANDS, STANDS, "its tokens already reached the caller"),
    "nan": Row("bad_response", "bad_response", STANDS, STANDS, "its tokens already went out: it stands, error noted"),
    "positive": Row("bad_response", "bad_response", STANDS, STANDS, "as `nan`"),
    "empty": Row("empty", "empty", FALLBACK, RAISE, "nothing was streamed, so the earlier answer can still go"),
    "cut": Row("connection", "server", MIDSTREAM, MIDSTREAM,
               "two answers are never mixed; LiteLLM: see the notes below the table"),
}

TABLES = {"first": FIRST_TIER, "final": STREAMED_FINAL_TIER}

#: (adapter, position, fault, on_error or "*") -> why the defined outcome is not met today (xfail in the matrix).
KNOWN_GAPS: dict[tuple[str, str, str, str], str] = {}
#: Gaps shown in the tables whose strict-xfail tests are the dedicated ones below: (adapter, position, fault).
OTHER_GAPS: dict[tuple[str, str, str], tuple[str, str]] = {
}


def markdown() -> str:
    """The two outcome tables as they appear in docs/reliability.md."""
    out = []
    for title, table in (("Fault on the first tier (non-streamed call)", FIRST_TIER),
                         ("Fault on the final tier while it streams live", STREAMED_FINAL_TIER)):
        position = "first" if table is FIRST_TIER else "final"
        out += [f"#### {title}", "",
                "| fault | error kind (LangChain / LiteLLM) | `on_error: skip` | `on_error: fail` | note |",
                "|---|---|---|---|---|"]
        for fault, row in table.items():
            lc, ll = row.langchain_kind or "-", row.litellm_kind or "-"
            kinds = lc if lc == ll else f"{lc} / {ll}"
            gaps = [f"**gap: {'LangChain' if a == 'langchain' else 'LiteLLM'}**"
                    for (a, p, f, _), _why in KNOWN_GAPS.items() if p == position and f == fault]
            gaps += [f"**gap: {label}**" for (_, p, f), (label, _why) in OTHER_GAPS.items()
                     if p == position and f == fault]
            note = "; ".join(x for x in [row.note, *gaps] if x)
            out.append(f"| `{fault}` | {kinds} | {row.skip} | {row.fail} | {note} |")
        out.append("")
    return "\n".join(out).rstrip() + "\n"


# ---------------------------------------------------------------------------- fixtures


def _closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/v1"  # nothing listens here once the socket is closed


@pytest.fixture(scope="module")
def server() -> Iterator[FakeOpenAIServer]:
    models = {"small": ModelBehaviour(confident_on_hard=False), "large": ModelBehaviour()}
    with FakeOpenAIServer(models=models, timeout_sleep_s=TIMEOUT_SLEEP_S, record_requests=False) as srv:
        yield srv


@pytest.fixture(scope="module")
def dead_url() -> str:
    return _closed_port_url()


def cascade_block(on_error: str, small: str = "small", large: str = "large") -> dict[str, Any]:
    return {"algorithm": {"confidence": {"threshold": 0.7, "on_error": on_error,
                                         "limits": {"attempt_timeout_s": ATTEMPT_TIMEOUT_S}}},
            "models": [{"name": small}, {"name": large}]}


def chat(name: str, base_url: str) -> ChatOpenAI:
    # timeout: the client's own bound, far above attempt_timeout_s (what the router must enforce itself)
    return ChatOpenAI(model=name, base_url=base_url, api_key="sk-test", max_retries=0, timeout=30)


@pytest.fixture(scope="module")
def langchain_routers(server: FakeOpenAIServer, dead_url: str) -> dict[tuple[str, str | None], ConfidenceRouter]:
    """(on_error, dead tier or None) -> router; a dead tier points at a closed port."""
    routers = {}
    for on_error in ("skip", "fail"):
        for dead in (None, "small", "large"):
            models = {name: chat(name, dead_url if name == dead else server.base_url) for name in ("small", "large")}
            routers[(on_error, dead)] = ConfidenceRouter(models=models, config=cascade_block(on_error))
    return routers


@pytest.fixture(scope="module")
def logger() -> Iterator[RecordingLogger]:
    with installed_logger() as recording:
        yield recording


@pytest.fixture(scope="module")
def litellm_router(server: FakeOpenAIServer, dead_url: str, logger: RecordingLogger) -> Iterator[litellm.Router]:
    """Tier groups small/large (and dead twins on a closed port) and one cascade per (on_error, dead tier)."""
    litellm_hooks.register()

    def tier(group: str, model: str, base: str) -> dict[str, Any]:
        return {"model_name": group, "litellm_params": {"model": f"openai/{model}", "api_base": base,
                                                         "api_key": "sk-test", "num_retries": 0}}

    model_list = [tier("small", "small", server.base_url), tier("large", "large", server.base_url),
                  tier("small-dead", "small", dead_url), tier("large-dead", "large", dead_url)]
    for on_error in ("skip", "fail"):
        for dead in (None, "small", "large"):
            names = [f"{n}-dead" if n == dead else n for n in ("small", "large")]
            model_list.append({"model_name": litellm_group(on_error, dead), "litellm_params": {
                "model": f"confidence/{litellm_group(on_error, dead)}", "cascade": cascade_block(on_error, *names)}})
    router = litellm.Router(model_list=model_list)
    litellm_hooks.register(router)
    yield router
    litellm_hooks.unbind_router(router)


def litellm_group(on_error: str, dead: str | None) -> str:
    return f"faults-{on_error}" + (f"-{dead}-dead" if dead else "")


# ---------------------------------------------------------------------------- running one request


@dataclass
class Result:
    text: str
    error: BaseException | None
    trace: dict[str, Any] | None
    elapsed_s: float
    trace_source: str = ""


def prompt_for(fault: str, position: str) -> str:
    target = "small" if position == "first" else "large"
    tag = "" if fault == "refused" else f"[fault={'refused' if fault == 'disconnect' else fault}@{target}]"
    hard = "[hard] " if position == "final" else ""
    return f"{hard}What is 6 times 7? {tag} [id:{uuid.uuid4().hex[:10]}]"


async def run_langchain(router: ConfidenceRouter, prompt: str, stream: bool) -> Result:
    t0 = time.perf_counter()
    text, trace, error = "", None, None
    try:
        if stream:
            async for chunk in router.astream(prompt):
                text += chunk.text
                trace = chunk.response_metadata.get(TRACE_KEY, trace)
        else:
            message = await router.ainvoke(prompt)
            text, trace = message.text, message.response_metadata[TRACE_KEY]
    except CascadeError as exc:
        error, trace = exc, exc.trace.model_dump(mode="json")
    except Exception as exc:  # anything else is an unplanned error: the test fails on it below
        error = exc
    return Result(text, error, trace, time.perf_counter() - t0, "error" if error else "answer")


async def eventually(check: Callable[[], Any], timeout: float = 5.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value or time.monotonic() > deadline:
            return value
        await asyncio.sleep(0.02)


async def run_litellm(router: litellm.Router, group: str, prompt: str, stream: bool,
                      logger: RecordingLogger) -> Result:
    messages = [{"role": "user", "content": prompt}]
    t0 = time.perf_counter()
    text, trace, error, source = "", None, None, ""
    try:
        if stream:
            response = await router.acompletion(model=group, messages=messages, stream=True)
            async for chunk in response:
                if chunk.choices:
                    text += chunk.choices[0].delta.content or ""
                trace = (getattr(chunk, "_hidden_params", None) or {}).get(TRACE_KEY, trace)
        else:
            response = await router.acompletion(model=group, messages=messages)
            text, trace = response.choices[0].message.content or "", response._hidden_params[TRACE_KEY]
        source = "answer"
    except Exception as exc:  # LiteLLM maps errors to its own types; the adapter attaches the trace
        error = exc
        attached = getattr(exc, "confidence_trace", None)
        if attached is not None:
            trace, source = attached.model_dump(mode="json"), "error"
    elapsed = time.perf_counter() - t0
    if trace is None and error is not None:  # raised mid-stream: the trace went to every logger
        def logged() -> dict[str, Any] | None:
            for record in logger.records:
                slm = record.get("spend_logs_metadata") or {}
                if record["model_group"] == group and prompt in record["prompt"] and TRACE_KEY in slm:
                    return slm[TRACE_KEY]
            return None

        trace, source = await eventually(logged), "logger"
    return Result(text, error, trace, elapsed, source)


# ---------------------------------------------------------------------------- checking an outcome


def check(result: Result, row: Row, on_error: str, adapter: str, position: str, expected: str | None = None) -> None:
    """Assert ``result`` is the outcome ``row`` defines under ``on_error``, the faulty attempt recorded by kind."""
    expected = expected or (row.skip if on_error == "skip" else row.fail)
    kind = row.kind(adapter)
    assert result.elapsed_s < BOUND_S, f"took {result.elapsed_s:.2f} s (bound {BOUND_S} s): {result}"
    assert result.trace is not None, f"no trace for the request: {result}"
    trace = RequestTrace.model_validate(result.trace)
    faulty = trace.attempts[0 if position == "first" else -1]
    assert faulty.model.startswith("small" if position == "first" else "large"), trace.attempts
    if expected == ANSWER:
        assert result.error is None and result.text == LARGE_ANSWER, result
        assert trace.outcome == "accepted" and (faulty.decision, faulty.error_kind) == ("error", kind), trace
        assert trace.attempts[-1].decision == "accept" and trace.final_model == "large"
    elif expected == ESCALATE:
        assert result.error is None and result.text == LARGE_ANSWER, result
        assert (faulty.decision, faulty.has_logprobs) == ("escalate", False) and trace.outcome == "accepted", trace
    elif expected == RAISE:
        assert result.error is not None and result.trace_source == "error", result
        if adapter == "langchain":
            assert isinstance(result.error, CascadeError)
        else:  # a LiteLLM exception with the HTTP status the proxy answers with
            assert 400 <= int(getattr(result.error, "status_code", 0) or 0) < 600, result.error
        assert trace.outcome == "error" and (faulty.decision, faulty.error_kind) == ("error", kind), trace
    elif expected == FALLBACK:
        assert result.error is None and result.text == SMALL_ANSWER, result
        assert trace.outcome == "fallback" and trace.final_model == "small", trace
        assert (faulty.decision, faulty.error_kind) == ("error", kind), trace
    elif expected == STANDS:
        assert result.error is None and result.text == LARGE_ANSWER, result
        assert trace.outcome == "fallback" and faulty.decision == "fallback" and faulty.streamed, trace
        assert faulty.confidence is None and faulty.error_kind == kind, faulty
    elif expected == MIDSTREAM:
        if adapter == "litellm" and (result.error is None or not result.text):
            # LiteLLM may read the broken stream ahead and fail before its first chunk went out: then nothing
            # of the broken answer reached the caller, as for a 500 (see docs/reliability.md)
            return check(result, row, on_error, adapter, position, FALLBACK if on_error == "skip" else RAISE)
        assert result.error is not None, result
        assert result.text and LARGE_ANSWER.startswith(result.text) and result.text != LARGE_ANSWER, result
        assert faulty.decision == "error" and faulty.error_kind == kind, trace
        assert result.trace_source == "error" and trace.outcome == "error", trace
    else:  # pragma: no cover - a typo in a table
        raise AssertionError(f"unknown outcome {expected!r}")


def cases(position: str) -> list[Any]:
    params = []
    for adapter in ("langchain", "litellm"):
        for fault, row in TABLES[position].items():
            for on_error in ("skip", "fail"):
                gap = KNOWN_GAPS.get((adapter, position, fault, on_error)) or KNOWN_GAPS.get(
                    (adapter, position, fault, "*"))
                marks = [pytest.mark.xfail(reason=gap, strict=True)] if gap else []
                params.append(pytest.param(adapter, fault, on_error, row, marks=marks,
                                           id=f"{adapter}-{fault}-{on_error}"))
    return params


async def run_case(adapter: str, fault: str, on_error: str, position: str, routers: dict[Any, ConfidenceRouter],
                   router: litellm.Router, logger: RecordingLogger) -> Result:
    target = "small" if position == "first" else "large"
    dead = target if fault == "refused" else None
    prompt = prompt_for(fault, position)
    stream = position == "final"
    if adapter == "langchain":
        return await run_langchain(routers[(on_error, dead)], prompt, stream)
    return await run_litellm(router, litellm_group(on_error, dead), prompt, stream, logger)


@pytest.mark.parametrize(("adapter", "fault", "on_error", "row"), cases("first"))
async def test_fault_on_the_first_tier(adapter: str, fault: str, on_error: str, row: Row,
                                       langchain_routers: dict[Any, ConfidenceRouter], litellm_router: litellm.Router,
                                       logger: RecordingLogger) -> None:
    result = await run_case(adapter, fault, on_error, "first", langchain_routers, litellm_router, logger)
    check(result, row, on_error, adapter, "first")


@pytest.mark.parametrize(("adapter", "fault", "on_error", "row"), cases("final"))
async def test_fault_on_the_final_tier_while_streaming(adapter: str, fault: str, on_error: str, row: Row,
                                                       langchain_routers: dict[Any, ConfidenceRouter],
                                                       litellm_router: litellm.Router,
                                                       logger: RecordingLogger) -> None:
    result = await run_case(adapter, fault, on_error, "final", langchain_routers, litellm_router, logger)
    check(result, row, on_error, adapter, "final")


# ---------------------------------------------------------------------------- the blocking APIs and timeouts


@pytest.mark.parametrize("stream", [False, True], ids=["invoke", "stream"])
def test_langchain_blocking_calls_are_bounded_by_the_attempt_timeout(server: FakeOpenAIServer, stream: bool) -> None:
    models = {name: ChatOpenAI(model=name, base_url=server.base_url, api_key="sk-test", max_retries=0)
              for name in ("small", "large")}  # no timeout of their own: the configuration's must apply
    router = ConfidenceRouter(models=models, config=cascade_block("skip"))
    position = "final" if stream else "first"
    prompt = prompt_for("timeout", position)
    t0 = time.perf_counter()
    message = list(router.stream(prompt))[-1] if stream else router.invoke(prompt)
    elapsed = time.perf_counter() - t0
    trace = RequestTrace.model_validate(message.response_metadata[TRACE_KEY])
    assert elapsed < BOUND_S and any(a.error_kind == "timeout" for a in trace.attempts), (elapsed, trace.attempts)


@pytest.mark.parametrize("stream", [False, True], ids=["completion", "stream"])
def test_litellm_blocking_calls_are_bounded_by_the_attempt_timeout(litellm_router: litellm.Router,
                                                                   stream: bool) -> None:
    position = "final" if stream else "first"
    messages = [{"role": "user", "content": prompt_for("timeout", position)}]
    t0 = time.perf_counter()
    if stream:
        chunks = list(litellm_router.completion(model=litellm_group("skip", None), messages=messages, stream=True))
        trace = next(c._hidden_params[TRACE_KEY] for c in chunks if TRACE_KEY in (c._hidden_params or {}))
        expected = SMALL_ANSWER
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    else:
        response = litellm_router.completion(model=litellm_group("skip", None), messages=messages)
        trace, text, expected = response._hidden_params[TRACE_KEY], response.choices[0].message.content, LARGE_ANSWER
    elapsed = time.perf_counter() - t0
    assert elapsed < BOUND_S and text == expected, (elapsed, text)
    assert [a["error_kind"] for a in trace["attempts"] if a["decision"] == "error"] == ["timeout"]


async def test_every_tier_failing_is_one_error_with_the_whole_trace(langchain_routers: dict[Any, ConfidenceRouter],
                                                                    litellm_router: litellm.Router,
                                                                    logger: RecordingLogger) -> None:
    """Under skip, a request fails only when every tier failed; its error carries both attempts."""
    prompt = f"Hi [fault=500] [id:{uuid.uuid4().hex[:10]}]"
    for result in (await run_langchain(langchain_routers[("skip", None)], prompt, False),
                   await run_litellm(litellm_router, litellm_group("skip", None), prompt, False, logger)):
        assert result.error is not None and result.trace is not None and result.elapsed_s < BOUND_S
        assert "no tier produced an answer" in str(result.error)
        attempts = result.trace["attempts"]
        assert [(a["model"], a["decision"], a["error_kind"]) for a in attempts] == [
            ("small", "error", "server"), ("large", "error", "server")]


class PausingCutServer(FakeOpenAIServer):
    """``[fault=cut]`` that waits before closing, so the client has passed the first half on before the cut.

    The plain server closes right after the first half; a client that reads ahead (LiteLLM does) may then
    see the cut before it forwarded a single chunk, which makes the mid-stream case a matter of timing.
    """

    pause_s = 0.3

    async def _stream(self, request: Any, body: dict[str, Any], model: str, text: str,
                      entries: list[dict[str, Any]] | None, tool: dict[str, Any] | None, fault: str | None) -> Any:
        transport = request.transport
        if fault != "cut" or transport is None:
            return await super()._stream(request, body, model, text, entries, tool, fault)
        transport.close = lambda: None  # the base class closes after the first half: do it after a pause
        try:
            response = await super()._stream(request, body, model, text, entries, tool, fault)
        finally:
            del transport.close
        await asyncio.sleep(self.pause_s)
        transport.close()
        return response


@pytest.fixture(scope="module")
def pausing_server() -> Iterator[FakeOpenAIServer]:
    models = {"small": ModelBehaviour(confident_on_hard=False), "large": ModelBehaviour()}
    with PausingCutServer(models=models, record_requests=False) as srv:
        yield srv


@pytest.mark.parametrize("on_error", ["skip", "fail"])
@pytest.mark.parametrize("adapter", ["langchain", "litellm"])
async def test_a_stream_cut_after_text_went_out_is_an_error_with_a_true_trace(
        adapter: str, on_error: str, pausing_server: FakeOpenAIServer, logger: RecordingLogger) -> None:
    """Deterministic mid-stream cut: the caller gets part of the answer, then an error that carries the trace."""
    prompt = prompt_for("cut", "final")
    block = cascade_block(on_error)
    if adapter == "langchain":
        router = ConfidenceRouter(models={n: chat(n, pausing_server.base_url) for n in ("small", "large")},
                                  config=block)
        result = await run_langchain(router, prompt, stream=True)
    else:
        groups = {n: {"model_name": f"pc-{n}", "litellm_params": {
            "model": f"openai/{n}", "api_base": pausing_server.base_url, "api_key": "sk-test", "num_retries": 0}}
            for n in ("small", "large")}
        cascade = cascade_block(on_error, "pc-small", "pc-large")
        litellm_hooks.register()  # before the Router is built, or it rejects `confidence/...`
        router = litellm.Router(model_list=[*groups.values(), {"model_name": f"pc-{on_error}", "litellm_params": {
            "model": f"confidence/pc-{on_error}", "cascade": cascade}}])
        litellm_hooks.register(router)
        try:
            result = await run_litellm(router, f"pc-{on_error}", prompt, True, logger)
        finally:
            litellm_hooks.unbind_router(router)
    assert result.error is not None and result.text and LARGE_ANSWER.startswith(result.text), result
    assert result.elapsed_s < BOUND_S and result.trace is not None, result
    trace = RequestTrace.model_validate(result.trace)
    assert trace.attempts[-1].decision == "error" and trace.attempts[-1].model.endswith("large"), trace.attempts
    assert trace.outcome == "error", f"the trace must say the request failed: {trace.outcome} {trace.reasons}"
    assert result.trace_source == "error", "the raised error must carry the trace"


def test_the_document_carries_the_current_tables() -> None:
    """docs/reliability.md is generated from the tables above: ``python tests/test_reliability_faults.py``."""
    text = DOC.read_text(encoding="utf-8")
    assert markdown() in text, "docs/reliability.md is out of date: paste `python tests/test_reliability_faults.py`"
    for why in [*KNOWN_GAPS.values(), *(why for _, why in OTHER_GAPS.values())]:
        assert why in text, f"docs/reliability.md does not explain the known gap: {why}"


if __name__ == "__main__":  # print the tables for docs/reliability.md
    sys.stdout.write(markdown())

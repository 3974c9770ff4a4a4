"""The ``confidence`` LiteLLM provider against a real local OpenAI-compatible server, through a real Router.

Only the upstream model is fake (``FakeOpenAIServer``: real HTTP, real OpenAI-shaped logprobs);
LiteLLM, its Router, its logging and cost tracking are the real ones.
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

import litellm
import pytest
import yaml
from support.litellm_test_logger import RecordingLogger, installed_logger

import litellm_hooks
from langchain_confidence_router.core import ConfigError
from langchain_confidence_router.testing import FakeOpenAIServer, ModelBehaviour
from litellm_hooks import TRACE_KEY, register
from litellm_hooks.registry import resolve_cascade

SMALL_IN, SMALL_OUT = 1e-7, 2e-7  # litellm prices for `small` (on the deployment)
LARGE_IN, LARGE_OUT = 1e-6, 2e-6  # configuration prices for `large` (LiteLLM knows none)
SMALL_ANSWER = "small says: the answer is 42."
LARGE_ANSWER = "large says: the answer is 42."


def cascade(*models: dict[str, Any] | str, **confidence: Any) -> dict[str, Any]:
    """A cascade block: the same schema as the YAML configuration."""
    settings = {"threshold": 0.7, **confidence}
    return {"algorithm": {"confidence": settings},
            "models": [m if isinstance(m, dict) else {"name": m} for m in models]}


SMART = cascade("small", {"name": "large", "input_cost_per_token": LARGE_IN, "output_cost_per_token": LARGE_OUT})


@pytest.fixture(scope="module")
def server() -> Iterator[FakeOpenAIServer]:
    models = {
        "small": ModelBehaviour(confident_on_hard=False),
        "large": ModelBehaviour(confident_on_hard=True),
        "nolp": ModelBehaviour(confident_on_hard=True, logprobs=False),
        "tool": ModelBehaviour(tool_call={"name": "lookup", "arguments": {"q": "42"}}),
        "judge": ModelBehaviour(answer="yes"),
    }
    with FakeOpenAIServer(models=models, timeout_sleep_s=3.0) as srv:
        yield srv


@pytest.fixture(scope="module")
def logger() -> Iterator[RecordingLogger]:
    with installed_logger() as recording:
        yield recording


def tier(name: str, server: FakeOpenAIServer, **extra: Any) -> dict[str, Any]:
    return {"model_name": name, "litellm_params": {"model": f"openai/{name}", "api_base": server.base_url,
                                                    "api_key": "test", "num_retries": 0, **extra}}


def confidence(name: str, block: Any, **extra: Any) -> dict[str, Any]:
    return {"model_name": name, "litellm_params": {"model": f"confidence/{name}", "cascade": block, **extra}}


@pytest.fixture(scope="module")
def router(server: FakeOpenAIServer, logger: RecordingLogger) -> Iterator[litellm.Router]:
    """The Router most tests share; a test that cools a tier down builds its own with ``build_router``."""
    shared = build_router(server)
    yield shared
    litellm_hooks.unbind_router(shared)


def build_router(server: FakeOpenAIServer, own_ids: str = "") -> litellm.Router:
    """``own_ids`` gives the deployments ids of their own: LiteLLM's failure callbacks are process-wide, so
    every Router would otherwise cool down the deployment with the same (hashed) id as well."""
    register()  # before the Router is built, or it rejects `confidence/...`
    model_list = [
        tier("small", server, input_cost_per_token=SMALL_IN, output_cost_per_token=SMALL_OUT),
        tier("large", server),
        tier("nolp", server),
        tier("tool", server),
        tier("judge", server),
        confidence("smart", SMART),
        confidence("strict", cascade("small", "large", on_error="fail")),
        confidence("quick", cascade("small", "large", limits={"attempt_timeout_s": 0.5})),
        confidence("nolp-escalate", cascade("nolp", "large")),
        confidence("nolp-accept", cascade("nolp", "large", missing_logprobs="accept")),
        confidence("nolp-fail", cascade("nolp", "large", missing_logprobs="fail")),
        confidence("tools", cascade("tool", "large")),
        confidence("broken", cascade("small", "nosuch")),
        confidence("exposed", SMART, cascade_options={"response_field": True, "expose_confidence": True}),
        confidence("guarded", cascade("small"), cascade_options={"mode": "guardrail"}),
        confidence("retrying", SMART, num_retries=1),
        confidence("human", {**cascade("small", "large"), "human": {"enabled": True}}),
        confidence("verify", cascade({"name": "small", "confidence_method": "self_verify"}, "large", "judge",
                                     self_verify={"max_tokens": 4, "judge": "judge"})),
        confidence("vote", cascade({"name": "small", "confidence_method": "consistency"}, "large",
                                   consistency={"samples": 3, "temperature": 0.9})),
        confidence("clarify", {**cascade("small", "large"), "human": {
            "enabled": True, "clarify": {"enabled": True, "band": [0.2, 0.5], "prompt": "Ask one question."}}}),
    ]
    if own_ids:
        for deployment in model_list:
            deployment["model_info"] = {"id": f"{own_ids}-{deployment['model_name']}"}
    # num_retries=2 on the Router: a cascade deployment must still not be re-run as a whole
    r = litellm.Router(model_list=model_list, num_retries=2, fallbacks=[{"guarded": ["large"]}], cooldown_time=1.0)
    register(r)
    return r


def ask(text: str) -> list[dict[str, str]]:
    """A prompt with a unique marker, so this test's upstream requests and log records can be found."""
    return [{"role": "user", "content": f"{text} [id:{uuid.uuid4().hex[:10]}]"}]


def upstream(server: FakeOpenAIServer, messages: list[dict[str, str]]) -> list[dict[str, Any]]:
    marker = messages[-1]["content"].rsplit("[id:", 1)[1]
    return [r for r in server.requests if marker in str(r.get("messages"))]


async def eventually(check: Callable[[], Any], timeout: float = 5.0) -> Any:
    """Logging is fire-and-forget in LiteLLM: wait until ``check`` returns something truthy."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value or time.monotonic() > deadline:
            return value
        await asyncio.sleep(0.02)


def trace_of(response: Any) -> dict[str, Any]:
    return response._hidden_params[TRACE_KEY]


# ---------------------------------------------------------------------------- non-streamed


async def test_easy_prompt_is_answered_by_the_small_tier(router: litellm.Router, server: FakeOpenAIServer) -> None:
    messages = ask("What is 6*7?")
    response = await router.acompletion(model="smart", messages=messages)
    assert response.choices[0].message.content == SMALL_ANSWER
    trace = trace_of(response)
    assert [a["model"] for a in trace["attempts"]] == ["small"]
    assert trace["attempts"][0]["decision"] == "accept" and trace["outcome"] == "accepted"
    calls = upstream(server, messages)
    assert [c["model"] for c in calls] == ["small"]
    assert calls[0]["logprobs"] is True and calls[0]["top_logprobs"] == 5
    assert response._hidden_params["confidence_router_headers"]["x-confidence-model"] == "small"


async def test_hard_prompt_escalates_and_the_response_bills_the_sum(
    router: litellm.Router, server: FakeOpenAIServer, logger: RecordingLogger
) -> None:
    messages = ask("[hard] Prove it.")
    response = await router.acompletion(model="smart", messages=messages)
    assert response.choices[0].message.content == LARGE_ANSWER
    trace = trace_of(response)
    small, large = trace["attempts"]
    assert (small["model"], small["decision"], large["model"], large["decision"]) == (
        "small", "escalate", "large", "accept")
    assert small["confidence"] < 0.7 <= large["confidence"]
    # small: LiteLLM's price (set on the deployment); large: LiteLLM knows none, the config's prices apply
    assert small["cost_usd"] == pytest.approx(small["tokens_in"] * SMALL_IN + small["tokens_out"] * SMALL_OUT)
    assert large["cost_usd"] == pytest.approx(large["tokens_in"] * LARGE_IN + large["tokens_out"] * LARGE_OUT)
    assert response._hidden_params["response_cost"] == pytest.approx(small["cost_usd"] + large["cost_usd"])
    assert response.usage.prompt_tokens == small["tokens_in"] + large["tokens_in"]
    # a fresh id, not the id of the tier response it wraps
    def tier_ids() -> set[str]:
        return {r["response_id"] for r in logger.records if r["event"] == "success"
                and (r["confidence_router"] or {}).get("request_id") == trace["request_id"]}

    await eventually(lambda: len(tier_ids()) >= 2)
    assert len(tier_ids()) == 2 and response.id not in tier_ids()
    outer = await eventually(lambda: [r for r in logger.records if r["model_group"] == "smart"
                                      and (r["spend_logs_metadata"] or {}).get("confidence_router", {})
                                      .get("request_id") == trace["request_id"]])
    assert outer[0]["response_cost"] == pytest.approx(response._hidden_params["response_cost"])


async def test_tier_calls_get_fresh_kwargs_without_the_callers_identity(
    router: litellm.Router, server: FakeOpenAIServer, logger: RecordingLogger
) -> None:
    custom = {"k": [1, 2]}
    metadata = {"user_api_key": "hashed-key", "user_api_key_team_id": "team-1", "tags": ["ab"], "custom": custom}
    messages = ask("[hard] Tell me.")
    response = await router.acompletion(model="smart", messages=messages, temperature=0.3, max_tokens=50,
                                        metadata=metadata, user="end-user-7")
    request_id = trace_of(response)["request_id"]
    calls = upstream(server, messages)
    assert [c["model"] for c in calls] == ["small", "large"]
    for body in calls:
        assert body["temperature"] == 0.3 and body["max_tokens"] == 50 and body["logprobs"] is True
        assert not {"cascade", "cascade_options", "max_retries", "stream_options", "metadata"} & set(body)
        assert body.get("stream") in (None, False)
    def tiers() -> list[dict[str, Any]]:
        return [r for r in logger.records if (r["confidence_router"] or {}).get("request_id") == request_id]

    await eventually(lambda: len(tiers()) >= 2)
    assert len(tiers()) == 2
    for record in tiers():
        assert record["user_api_key"] is None  # never billed to the caller's key a second time
        assert record["internal_call_origin"] == "confidence_cascade"
        assert record["tags"] == ["ab"]  # the rest of the caller's metadata travels on
        assert record["user"] == "end-user-7"  # and so does the end-user id
    assert custom == {"k": [1, 2]} and metadata["user_api_key"] == "hashed-key"
    outer_trace = metadata["spend_logs_metadata"]["confidence_router"]  # the Router's live metadata dict
    assert outer_trace["request_id"] == request_id and len(outer_trace["attempts"]) == 2


async def test_logprobs_reach_the_caller_only_when_asked(router: litellm.Router, logger: RecordingLogger) -> None:
    plain = await router.acompletion(model="smart", messages=ask("Hi"))
    assert plain.choices[0].logprobs is None
    # ... while the tier's own response, which LiteLLM logs after the cascade returned, keeps them
    request_id = trace_of(plain)["request_id"]
    tier_logs = await eventually(lambda: [r for r in logger.records if r["event"] == "success" and (
        r["confidence_router"] or {}).get("request_id") == request_id])
    assert all(r["has_logprobs"] for r in tier_logs), tier_logs
    asked = await router.acompletion(model="smart", messages=ask("Hi"), logprobs=True, top_logprobs=2)
    content = asked.choices[0].logprobs.content
    assert content and content[0].token == "small"


async def test_a_failing_tier_is_skipped(router: litellm.Router, server: FakeOpenAIServer) -> None:
    messages = ask("Hi [fault=500@small]")
    response = await router.acompletion(model="smart", messages=messages)
    assert response.choices[0].message.content == LARGE_ANSWER
    first = trace_of(response)["attempts"][0]
    assert (first["model"], first["decision"], first["error_kind"], first["status_code"]) == (
        "small", "error", "server", 500)


@pytest.mark.parametrize("fault", ["nan", "malformed", "empty"])
async def test_a_bad_response_is_skipped(router: litellm.Router, fault: str) -> None:
    response = await router.acompletion(model="smart", messages=ask(f"Hi [fault={fault}@small]"))
    assert response.choices[0].message.content == LARGE_ANSWER
    assert trace_of(response)["attempts"][0]["decision"] == "error"


async def test_a_client_error_is_not_skipped(router: litellm.Router, server: FakeOpenAIServer) -> None:
    messages = ask("Hi [fault=400@small]")
    with pytest.raises(litellm.BadRequestError) as info:
        await router.acompletion(model="smart", messages=messages)
    assert info.value.status_code == 400
    assert [c["model"] for c in upstream(server, messages)] == ["small"]
    assert info.value.confidence_trace.attempts[0].error_kind == "client"


async def test_a_tier_auth_error_reaches_the_caller_and_never_cools_the_cascade_down(
        server: FakeOpenAIServer, logger: RecordingLogger) -> None:
    router = build_router(server, own_ids="auth")  # its own: the cooldown it causes must not reach the others
    try:
        await auth_error_then_next_request(router)
    finally:
        litellm_hooks.unbind_router(router)


async def auth_error_then_next_request(router: litellm.Router) -> None:
    with pytest.raises(litellm.AuthenticationError) as info:
        await router.acompletion(model="smart", messages=ask("Hi [fault=401@small]"))
    assert info.value.status_code == 401 and info.value.num_retries == 0
    # The Router cools `small` down after a 401 (its own business); `smart` must stay available and
    # route around it (the cooled-down tier is skipped like any unavailable tier).
    response = await router.acompletion(model="smart", messages=ask("Next request"))
    assert response.choices[0].message.content in (SMALL_ANSWER, LARGE_ANSWER)


@pytest.mark.parametrize("status", [400, 401, 403, 404, 408, 409, 422, 429, 500, 502, 503, 504])
def test_cascade_errors_are_litellm_errors_with_the_status(status: int) -> None:
    """LiteLLM passes its own exception types through unchanged, so the caller sees this status."""
    error = litellm_hooks.output.to_litellm_error(ValueError("boom"), "smart", status, 0)
    assert any(isinstance(error, t) for t in litellm.LITELLM_EXCEPTION_TYPES)
    assert error.status_code == status and error.num_retries == 0 and "boom" in str(error)


async def test_on_error_fail_stops_at_the_first_error(router: litellm.Router, server: FakeOpenAIServer) -> None:
    messages = ask("Hi [fault=500@small]")
    with pytest.raises(litellm.InternalServerError):
        await router.acompletion(model="strict", messages=messages)
    assert [c["model"] for c in upstream(server, messages)] == ["small"]


async def test_all_tiers_failing_is_one_error_and_never_an_outer_retry(
    router: litellm.Router, server: FakeOpenAIServer
) -> None:
    messages = ask("Hi [fault=500]")
    with pytest.raises(litellm.InternalServerError) as info:
        await router.acompletion(model="smart", messages=messages)
    assert "no tier produced an answer" in str(info.value)
    # the Router has num_retries=2, yet the cascade ran once: one call per tier
    assert [c["model"] for c in upstream(server, messages)] == ["small", "large"]


async def test_a_deployment_that_asks_for_retries_gets_them(router: litellm.Router, server: FakeOpenAIServer
                                                            ) -> None:
    messages = ask("Hi [fault=500]")
    with pytest.raises(litellm.InternalServerError):
        await router.acompletion(model="retrying", messages=messages)
    assert [c["model"] for c in upstream(server, messages)] == ["small", "large"] * 2


async def test_a_tier_that_times_out_is_skipped(router: litellm.Router) -> None:
    t0 = time.perf_counter()
    response = await router.acompletion(model="quick", messages=ask("Hi [fault=timeout@small]"))
    assert time.perf_counter() - t0 < 2.5
    assert response.choices[0].message.content == LARGE_ANSWER
    assert trace_of(response)["attempts"][0]["error_kind"] == "timeout"


@pytest.mark.parametrize(("deployment", "answer"), [("nolp-escalate", LARGE_ANSWER),
                                                    ("nolp-accept", "nolp says: the answer is 42.")])
async def test_a_tier_without_logprobs(router: litellm.Router, deployment: str, answer: str) -> None:
    response = await router.acompletion(model=deployment, messages=ask("Hi"))
    assert response.choices[0].message.content == answer
    assert trace_of(response)["attempts"][0]["has_logprobs"] is False


async def test_a_tier_without_logprobs_fails_when_configured_to(router: litellm.Router) -> None:
    with pytest.raises(litellm.BadGatewayError) as info:
        await router.acompletion(model="nolp-fail", messages=ask("Hi"))
    assert "missing_logprobs" in str(info.value)


async def test_a_tool_call_answer_is_accepted_and_returned(router: litellm.Router) -> None:
    tools = [{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}]
    response = await router.acompletion(model="tools", messages=ask("Look it up"), tools=tools)
    call = response.choices[0].message.tool_calls[0]
    assert call.function.name == "lookup" and trace_of(response)["attempts"][0]["tool_call"] is True


async def test_the_body_field_and_raw_confidence_are_opt_in(router: litellm.Router) -> None:
    hidden = await router.acompletion(model="smart", messages=ask("Hi"))
    assert not hasattr(hidden, "confidence_router")
    assert "x-confidence-confidence" not in hidden._hidden_params["confidence_router_headers"]
    shown = await router.acompletion(model="exposed", messages=ask("Hi"))
    body = shown.model_dump()["confidence_router"]
    assert body["model"] == "small" and body["confidence"] > 0.7
    assert float(shown._hidden_params["confidence_router_headers"]["x-confidence-confidence"]) > 0.7


async def test_a_person_takes_the_request_before_any_model_call(router: litellm.Router,
                                                                server: FakeOpenAIServer) -> None:
    messages = ask("I want to talk to a human")
    response = await router.acompletion(model="human", messages=messages)
    assert response.choices[0].message.content.startswith("Thanks, a member of our team")
    assert trace_of(response)["outcome"] == "handoff" and upstream(server, messages) == []


@pytest.mark.parametrize("stream", [False, True])
async def test_a_clarifying_question_instead_of_escalating(router: litellm.Router, server: FakeOpenAIServer,
                                                           stream: bool) -> None:
    messages = [{"role": "system", "content": "Be brief."}, *ask("[hard] Which one?")]
    response = await router.acompletion(model="clarify", messages=messages, stream=stream,
                                        metadata={"conversation_id": uuid.uuid4().hex})
    if stream:
        text, chunks = await collect(response)
        trace = stream_trace(chunks)
    else:
        text, trace = response.choices[0].message.content, trace_of(response)
    assert trace["outcome"] == "clarify" and text == SMALL_ANSWER  # the fake model's "question"
    answer, question = upstream(server, messages)
    assert answer["messages"][0]["content"] == "Be brief."
    assert question["messages"][0] == {"role": "system", "content": "Be brief.\n\nAsk one question."}


async def test_a_self_verify_tier_asks_its_judge_with_the_answer(router: litellm.Router,
                                                                 server: FakeOpenAIServer) -> None:
    messages = ask("Verify this")
    tools = [{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}]
    response = await router.acompletion(model="verify", messages=messages, tools=tools)
    answer, judge = upstream(server, messages)
    assert answer["tools"] == tools and "tools" not in judge  # a judge answers yes/no in plain text
    assert (answer["model"], judge["model"]) == ("small", "judge") and answer["messages"] == messages
    assert judge["messages"][:-1] == messages and judge["messages"][-1]["role"] == "user"
    assert SMALL_ANSWER in judge["messages"][-1]["content"]  # the proposed answer, quoted to the judge
    assert (judge["temperature"], judge["max_tokens"]) == (0.0, 4)
    assert response.choices[0].message.content == SMALL_ANSWER  # the judge said yes
    attempts = trace_of(response)["attempts"]
    assert (attempts[0]["model"], attempts[0]["decision"]) == ("small", "accept")
    assert attempts[0]["raw_signals"]["self_verify"] == 1.0


async def test_a_consistency_tier_samples_and_bills_every_sample(router: litellm.Router,
                                                                 server: FakeOpenAIServer) -> None:
    messages = ask("Vote on this")
    response = await router.acompletion(model="vote", messages=messages)
    calls = upstream(server, messages)
    assert [c["model"] for c in calls] == ["small"] * 3 and all(c["temperature"] == 0.9 for c in calls)
    assert response.choices[0].message.content == SMALL_ANSWER  # all samples agree: share 1.0
    first = trace_of(response)["attempts"][0]
    assert first["confidence"] == 1.0 and first["tokens_out"] == 3 * 8
    assert first["cost_usd"] == pytest.approx(3 * (first["tokens_in"] / 3 * SMALL_IN + 8 * SMALL_OUT))


# ---------------------------------------------------------------------------- streaming


async def collect(stream: Any) -> tuple[str, list[Any]]:
    chunks = [chunk async for chunk in stream]
    text = "".join((c.choices[0].delta.content or "") for c in chunks if c.choices)
    return text, chunks


def stream_trace(chunks: list[Any]) -> dict[str, Any]:
    return next(c._hidden_params[TRACE_KEY] for c in chunks if TRACE_KEY in (c._hidden_params or {}))


async def test_stream_sends_the_final_tier_live_and_no_rejected_token(
    router: litellm.Router, server: FakeOpenAIServer
) -> None:
    messages = ask("[hard] Explain.")
    stream = await router.acompletion(model="smart", messages=messages, stream=True)
    text, chunks = await collect(stream)
    assert text == LARGE_ANSWER and "small" not in text
    assert len([c for c in chunks if c.choices and c.choices[0].delta.content]) > 3  # streamed, not one blob
    assert len({c.id for c in chunks}) == 1 and all(c.choices[0].logprobs is None for c in chunks if c.choices)
    trace = stream_trace(chunks)
    small, large = trace["attempts"]
    assert small["decision"] == "escalate" and not small["streamed"]
    # logprobs accumulated from the live chunks: every streamed token was scored
    assert large["streamed"] and large["has_logprobs"] and large["n_tokens"] == 8 and large["decision"] == "accept"
    calls = upstream(server, messages)
    assert [(c["model"], bool(c.get("stream"))) for c in calls] == [("small", False), ("large", True)]


async def test_stream_sends_an_accepted_early_answer_as_one_chunk(router: litellm.Router) -> None:
    stream = await router.acompletion(model="smart", messages=ask("Easy"), stream=True,
                                      stream_options={"include_usage": True})
    text, chunks = await collect(stream)
    assert text == SMALL_ANSWER
    assert len([c for c in chunks if c.choices and c.choices[0].delta.content]) == 1
    usage = [c.usage for c in chunks if getattr(c, "usage", None)]
    assert usage and usage[-1].completion_tokens == 8


async def test_stream_falls_back_when_the_final_tier_fails_before_its_first_token(router: litellm.Router
                                                                                 ) -> None:
    stream = await router.acompletion(model="smart", messages=ask("[hard] X [fault=500@large]"), stream=True)
    text, chunks = await collect(stream)
    assert text == SMALL_ANSWER
    trace = stream_trace(chunks)
    assert trace["outcome"] == "fallback" and trace["attempts"][1]["error_kind"] == "server"


async def test_a_stream_cut_half_way_never_mixes_two_answers(router: litellm.Router) -> None:
    """Cut after tokens went out: the error reaches the caller. Cut before (LiteLLM may read ahead and
    fail on its first chunk): nothing of the broken answer went out, so the earlier answer is sent."""
    for _ in range(3):
        stream = await router.acompletion(model="smart", messages=ask("[hard] X [fault=cut@large]"), stream=True)
        received: list[str] = []
        error: Exception | None = None
        try:
            async for chunk in stream:
                if chunk.choices:
                    received.append(chunk.choices[0].delta.content or "")
        except Exception as exc:  # LiteLLM maps the broken connection to one of several types
            error = exc
        text = "".join(received)
        if error is not None:
            assert text and LARGE_ANSWER.startswith(text) and text != LARGE_ANSWER
        else:
            assert text == SMALL_ANSWER


async def test_stream_committed_answer_with_bad_logprobs_stands(router: litellm.Router) -> None:
    stream = await router.acompletion(model="smart", messages=ask("[hard] X [fault=nan@large]"), stream=True)
    text, chunks = await collect(stream)
    assert text == LARGE_ANSWER  # already with the user: it stands, and the trace says why
    last = stream_trace(chunks)["attempts"][-1]
    assert (last["decision"], last["error_kind"]) == ("fallback", "bad_response")


async def test_stream_bills_the_sum_through_the_logging_object(router: litellm.Router,
                                                               logger: RecordingLogger) -> None:
    stream = await router.acompletion(model="smart", messages=ask("[hard] Bill me"), stream=True)
    _, chunks = await collect(stream)
    trace = stream_trace(chunks)
    expected = sum(a["cost_usd"] for a in trace["attempts"])
    assert expected > 0
    outer = await eventually(lambda: [r for r in logger.records if r["stream"] and r["model_group"] == "smart"
                                      and (r["spend_logs_metadata"] or {}).get("confidence_router", {})
                                      .get("request_id") == trace["request_id"]])
    assert outer and outer[0]["response_cost"] == pytest.approx(expected)


async def test_stream_of_a_tool_call(router: litellm.Router) -> None:
    stream = await router.acompletion(model="tools", messages=ask("Look it up"), stream=True)
    _, chunks = await collect(stream)
    calls = [tc for c in chunks if c.choices for tc in (c.choices[0].delta.tool_calls or [])]
    assert calls and calls[0].function.name == "lookup"


# ---------------------------------------------------------------------------- sync API


def test_sync_completion_and_stream(router: litellm.Router) -> None:
    response = router.completion(model="smart", messages=ask("[hard] sync"))
    assert response.choices[0].message.content == LARGE_ANSWER
    chunks = list(router.completion(model="smart", messages=ask("[hard] sync"), stream=True))
    text = "".join((c.choices[0].delta.content or "") for c in chunks if c.choices)
    assert text == LARGE_ANSWER and stream_trace(chunks)["attempts"][1]["streamed"]


# ---------------------------------------------------------------------------- configuration


async def test_direct_litellm_calls_use_the_registered_router(router: litellm.Router) -> None:
    inline = await litellm.acompletion(model="confidence/adhoc", cascade=SMART, messages=ask("[hard] direct"))
    assert inline.choices[0].message.content == LARGE_ANSWER
    register(router, cascades={"named": SMART})
    named = await litellm.acompletion(model="confidence/named", messages=ask("direct"))
    assert named.choices[0].message.content == SMALL_ANSWER


async def test_a_cascade_from_a_yaml_file(server: FakeOpenAIServer, tmp_path: Path) -> None:
    path = tmp_path / "confidence.yaml"
    path.write_text(yaml.safe_dump(cascade("small", "large")), encoding="utf-8")
    router = litellm.Router(model_list=[tier("small", server), tier("large", server),
                                        confidence("fromfile", {"config_path": str(path)})])
    register(router)
    try:
        response = await router.acompletion(model="fromfile", messages=ask("[hard] file"))
        assert response.choices[0].message.content == LARGE_ANSWER
    finally:
        litellm_hooks.unbind_router(router)


async def test_an_unknown_tier_is_a_config_error_naming_the_field(router: litellm.Router) -> None:
    with pytest.raises(litellm.InternalServerError) as info:
        await router.acompletion(model="broken", messages=ask("Hi"))
    assert "models[1].name" in str(info.value) and "'nosuch'" in str(info.value)


def test_a_bad_block_names_the_field() -> None:
    with pytest.raises(ConfigError) as info:
        resolve_cascade({"algorithm": {"confidence": {"threshold": 7}}, "models": [{"name": "a"}]})
    assert "algorithm.confidence.threshold" in str(info.value)


def test_the_cascade_is_resolved_once_per_configuration() -> None:
    first, key = resolve_cascade(SMART)
    again, key_again = resolve_cascade({**SMART})  # an equal copy: same configuration hash
    other, other_key = resolve_cascade(cascade("small", "large", threshold=0.9))
    assert first is again and key == key_again
    assert other is not first and other_key != key


def test_register_defaults_num_retries_on_cascade_deployments(router: litellm.Router) -> None:
    retries = {d["model_name"]: d["litellm_params"].get("num_retries") for d in router.model_list}
    assert retries["smart"] == 0 and retries["retrying"] == 1 and retries["small"] == 0
    assert any(e["provider"] == "confidence" for e in litellm.custom_provider_map)


# ---------------------------------------------------------------------------- guardrail mode


async def test_guardrail_mode_raises_a_low_confidence_error_without_fallbacks(router: litellm.Router) -> None:
    with pytest.raises(litellm_hooks.LowConfidenceError) as info:
        await router.acompletion(model="guarded", messages=ask("[hard] Guard"), disable_fallbacks=True)
    assert info.value.status_code == 422 and info.value.confidence_trace.outcome == "fallback"


async def test_guardrail_mode_when_streaming_falls_back_before_any_token(router: litellm.Router) -> None:
    stream = await router.acompletion(model="guarded", messages=ask("[hard] Guard"), stream=True)
    text, _ = await collect(stream)
    assert text == LARGE_ANSWER


async def test_guardrail_mode_turns_low_confidence_into_a_router_fallback(
    router: litellm.Router, logger: RecordingLogger
) -> None:
    key = {"user_api_key": "hashed-key", "user_api_key_budget_reservation": {"id": "r1"}}
    easy, hard = ask("Easy"), ask("[hard] Guard me")
    confident = await router.acompletion(model="guarded", messages=easy, metadata=dict(key))
    assert confident.choices[0].message.content == SMALL_ANSWER
    assert confident._hidden_params["response_cost"] == 0  # the tier call billed itself
    response = await router.acompletion(model="guarded", messages=hard, metadata=dict(key))
    assert response.choices[0].message.content == LARGE_ANSWER  # the Router's fallback answered
    markers = (easy[0]["content"], hard[0]["content"])

    def small() -> list[dict[str, Any]]:
        return [r for r in logger.records if r["event"] == "success" and r["prompt"] in markers
                and (r["confidence_router"] or {}).get("cascade") == "guarded"]

    await eventually(lambda: len(small()) >= 2)
    # both small answers, the accepted and the rejected one, are billed to the caller's key by the tier
    # call itself (the outer call fails over and bills nothing), without the outer budget reservation
    assert len(small()) == 2 and all(r["user_api_key"] == "hashed-key" for r in small())
    assert not any(r["has_budget_reservation"] for r in small())
    assert all(r["response_cost"] > 0 and r["internal_call_origin"] == "confidence_cascade" for r in small())

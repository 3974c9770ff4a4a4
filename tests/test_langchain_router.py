"""ConfidenceRouter against a local OpenAI-compatible server, through the real ChatOpenAI client.

Small ("small") is unsure on prompts tagged ``[hard]``; large ("large") is always sure; "nolp" never
returns logprobs. Every tier call is a real HTTP request with real OpenAI-shaped logprobs.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from langchain_core.language_models import GenericFakeChatModel
from langchain_core.messages import AIMessage, AIMessageChunk, HumanMessage, ToolMessage
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.runnables import ConfigurableField
from langchain_core.tools import tool
from langchain_core.tracers.run_collector import RunCollectorCallbackHandler
from langchain_openai import ChatOpenAI
from pydantic import BaseModel

from langchain_confidence_router.core import (
    AllTiersFailedError,
    CascadeError,
    MissingLogprobsError,
    RequestTrace,
    TierCallError,
)
from langchain_confidence_router.langchain import ConfidenceRouter, TraceCollector
from langchain_confidence_router.langchain.testing import ScriptedOpenAIServer
from langchain_confidence_router.testing import FakeOpenAIServer, ModelBehaviour

HARD = "What is 17 * 23? [hard]"
EASY = "What is 2 + 2?"


@pytest.fixture(scope="module")
def server() -> Iterator[ScriptedOpenAIServer]:
    models = {"small": ModelBehaviour(confident_on_hard=False), "large": ModelBehaviour(),
              "nolp": ModelBehaviour(logprobs=False)}
    with ScriptedOpenAIServer(models, timeout_sleep_s=1.0) as srv:  # short: stop() waits for open handlers
        yield srv


def chat(server: FakeOpenAIServer, name: str, **kwargs: Any) -> ChatOpenAI:
    return ChatOpenAI(model=name, base_url=server.base_url, api_key="test", max_retries=0, timeout=5, **kwargs)


@pytest.fixture
def router(server: ScriptedOpenAIServer) -> ConfidenceRouter:
    return ConfidenceRouter(models={"small": chat(server, "small"), "large": chat(server, "large")})


def trace_of(message: AIMessage) -> RequestTrace:
    return RequestTrace.model_validate(message.response_metadata["confidence_router"])


def requests_since(server: FakeOpenAIServer, start: int) -> list[dict[str, Any]]:
    return server.requests[start:]


# ---------------------------------------------------------------------------- the decision


def test_easy_prompt_is_answered_by_the_small_tier(router: ConfidenceRouter, server: ScriptedOpenAIServer) -> None:
    start = len(server.requests)
    answer = router.invoke(EASY)
    trace = trace_of(answer)
    assert answer.content == "small says: the answer is 42."
    assert [(a.model, a.decision) for a in trace.attempts] == [("small", "accept")]
    assert trace.outcome == "accepted" and trace.final_model == "small" and trace.confidence > 0.72
    sent = requests_since(server, start)
    assert [r["model"] for r in sent] == ["small"]
    assert sent[0]["logprobs"] is True and sent[0]["top_logprobs"] == 5  # set as fields on the tier copy
    assert answer.usage_metadata is not None and answer.usage_metadata["output_tokens"] > 0


def test_hard_prompt_escalates_to_the_large_tier(router: ConfidenceRouter, server: ScriptedOpenAIServer) -> None:
    start = len(server.requests)
    answer = router.invoke(HARD)
    trace = trace_of(answer)
    assert answer.content == "large says: the answer is 42."
    assert [(a.model, a.decision) for a in trace.attempts] == [("small", "escalate"), ("large", "accept")]
    assert trace.attempts[0].confidence < trace.attempts[0].threshold <= trace.attempts[1].confidence
    assert [r["model"] for r in requests_since(server, start)] == ["small", "large"]
    # the trace links every attempt to its LangChain runs (pre-assigned ids)
    assert all(a.run_id and a.model_run_id for a in trace.attempts)


async def test_async_and_batch_paths_decide_the_same(router: ConfidenceRouter) -> None:
    sync_batch = router.batch([EASY, HARD])
    async_batch = await router.abatch([EASY, HARD])
    single = await router.ainvoke(HARD)
    assert [trace_of(m).final_model for m in sync_batch] == ["small", "large"]
    assert [trace_of(m).final_model for m in async_batch] == ["small", "large"]
    assert trace_of(single).final_model == "large"


def test_prompt_router_parser_chain(router: ConfidenceRouter) -> None:
    chain = ChatPromptTemplate.from_messages([("system", "Be brief."), ("human", "{question}")]) | router
    text_chain = chain | StrOutputParser()
    assert text_chain.invoke({"question": EASY}) == "small says: the answer is 42."
    assert "".join(text_chain.stream({"question": HARD})) == "large says: the answer is 42."
    assert trace_of(chain.invoke({"question": HARD})).final_model == "large"


def test_with_config_tags_reach_the_runs(router: ConfidenceRouter) -> None:
    collector = RunCollectorCallbackHandler()
    router.with_config(tags=["my-app"], run_name="answerer").invoke(EASY, config={"callbacks": [collector]})
    root = collector.traced_runs[0]
    assert root.name == "answerer" and "my-app" in root.tags
    assert all("my-app" in child.tags for child in root.child_runs)


def test_router_parameters_reach_every_tier(server: ScriptedOpenAIServer) -> None:
    router = ConfidenceRouter(models=[chat(server, "small"), chat(server, "large")], temperature=0.25,
                              max_tokens=64, stop=["\n\n"])
    start = len(server.requests)
    router.invoke(HARD)
    sent = requests_since(server, start)
    assert router.tier_names == ["small", "large"]  # named from the models
    assert all(r["temperature"] == 0.25 and r["max_completion_tokens"] == 64 and r["stop"] == ["\n\n"]
               for r in sent)


# ---------------------------------------------------------------------------- thresholds at runtime


def test_thresholds_configurable_field(router: ConfidenceRouter) -> None:
    configurable = router.configurable_fields(thresholds=ConfigurableField(id="thresholds"))
    assert trace_of(configurable.invoke(HARD)).final_model == "large"
    relaxed = configurable.invoke(HARD, config={"configurable": {"thresholds": {"small": 0.1}}})
    assert trace_of(relaxed).final_model == "small"
    assert trace_of(relaxed).attempts[0].threshold == 0.1


def test_thresholds_per_call_and_on_the_router(router: ConfidenceRouter, server: ScriptedOpenAIServer) -> None:
    strict = router.invoke(EASY, thresholds=0.999)  # one value for every tier
    assert [a.decision for a in trace_of(strict).attempts] == ["escalate", "fallback"]
    bound = router.bind(thresholds={"small": 0.05})
    assert trace_of(bound.invoke(HARD)).final_model == "small"
    fixed = ConfidenceRouter(models={"small": chat(server, "small"), "large": chat(server, "large")},
                             thresholds={"small": 0.05})
    assert trace_of(fixed.invoke(HARD)).final_model == "small"
    with pytest.raises(ValueError, match="unknown tier"):
        router.invoke(EASY, thresholds={"smal": 0.5})
    with pytest.raises(ValueError, match=r"within 0\.\.1"):
        router.invoke(EASY, thresholds=72)


# ---------------------------------------------------------------------------- configuration


def test_from_config_yaml_orders_tiers_and_reads_thresholds(server: ScriptedOpenAIServer, tmp_path: Path) -> None:
    path = tmp_path / "confidence.yaml"
    path.write_text(
        "algorithm:\n  type: confidence\n  confidence:\n    confidence_method: avg_logprob\n    threshold: 0.8\n"
        "models:\n  - {name: large, size: 70b}\n  - {name: small, size: 1b, threshold: 0.999}\n"
    )
    router = ConfidenceRouter.from_config(path, models={"large": chat(server, "large"),
                                                        "small": chat(server, "small")})
    assert router.tier_names == ["small", "large"]  # small_to_large by size
    trace = trace_of(router.invoke(EASY))  # small is sure, but its own threshold is 0.999
    assert [(a.model, a.method, a.threshold) for a in trace.attempts] == [
        ("small", "avg_logprob", 0.999), ("large", "avg_logprob", 0.8)]
    listed = ConfidenceRouter(models=[chat(server, "large"), chat(server, "small")], config=str(path))
    assert listed.tier_names == ["small", "large"]  # a list takes the file's names in order


def test_config_mistakes_name_the_problem(server: ScriptedOpenAIServer) -> None:
    from langchain_confidence_router.core import ConfigError

    with pytest.raises(ConfigError, match="no model was supplied for 'medium'"):
        ConfidenceRouter(models={"small": chat(server, "small")},
                         config={"models": [{"name": "small"}, {"name": "medium"}]})
    with pytest.raises(ValueError, match="not a LangChain chat model"):
        ConfidenceRouter(models={"small": "gpt-4o-mini"})
    with pytest.raises(ConfigError, match="threshold") as info:  # the file's own error, not a pydantic one
        ConfidenceRouter(models={"small": chat(server, "small")},
                         config={"algorithm": {"confidence": {"threshold": 1.5}}})
    assert info.value.fields == ["algorithm.confidence.threshold"]


# ---------------------------------------------------------------------------- failures


def test_failing_tier_is_skipped(router: ConfidenceRouter) -> None:
    answer = router.invoke("Question [fault=500@small]")
    trace = trace_of(answer)
    assert [(a.model, a.decision, a.error_kind) for a in trace.attempts] == [
        ("small", "error", "server"), ("large", "accept", None)]
    assert trace.attempts[0].status_code == 500


def test_client_error_is_not_skipped_and_keeps_the_trace(router: ConfidenceRouter) -> None:
    with pytest.raises(TierCallError) as info:
        router.invoke("Question [fault=401@small]")
    assert info.value.status_code == 401 and info.value.trace.outcome == "error"
    assert [a.error_kind for a in info.value.trace.attempts] == ["client"]


def test_on_error_fail_stops_at_the_first_error(server: ScriptedOpenAIServer) -> None:
    router = ConfidenceRouter(models={"small": chat(server, "small"), "large": chat(server, "large")},
                              config={"algorithm": {"confidence": {"on_error": "fail"}}})
    collector = TraceCollector()
    with pytest.raises(TierCallError) as info:
        router.invoke("Question [fault=429@small]", config={"callbacks": [collector]})
    assert [a.model for a in info.value.trace.attempts] == ["small"]
    assert collector.last is not None and collector.last.outcome == "error"  # failed requests are collected


async def test_every_tier_failing_raises_all_tiers_failed(router: ConfidenceRouter) -> None:
    with pytest.raises(AllTiersFailedError) as info:
        await router.ainvoke("Question [fault=500]")
    assert [a.error_kind for a in info.value.trace.attempts] == ["server", "server"]


async def test_async_attempt_timeout_is_an_upstream_failure(server: ScriptedOpenAIServer) -> None:
    router = ConfidenceRouter(models={"small": chat(server, "small"), "large": chat(server, "large")},
                              timeout=0.3)
    answer = await router.ainvoke("Question [fault=timeout@small]")
    assert [(a.model, a.error_kind) for a in trace_of(answer).attempts] == [("small", "timeout"), ("large", None)]


# ---------------------------------------------------------------------------- missing logprobs


def test_tier_without_logprobs_follows_the_missing_logprobs_policy(server: ScriptedOpenAIServer) -> None:
    def router(policy: str) -> ConfidenceRouter:
        return ConfidenceRouter(models={"nolp": chat(server, "nolp"), "large": chat(server, "large")},
                                config={"algorithm": {"confidence": {"missing_logprobs": policy}}})

    escalated = trace_of(router("escalate").invoke(EASY))
    assert [(a.model, a.decision, a.has_logprobs) for a in escalated.attempts] == [
        ("nolp", "escalate", False), ("large", "accept", True)]
    assert trace_of(router("accept").invoke(EASY)).final_model == "nolp"
    with pytest.raises(MissingLogprobsError) as info:
        router("fail").invoke(EASY)
    assert info.value.trace.attempts[0].model == "nolp"


def test_a_model_class_without_logprob_fields_is_a_no_logprobs_tier(server: ScriptedOpenAIServer) -> None:
    canned = GenericFakeChatModel(messages=iter(["canned answer"]))
    router = ConfidenceRouter(models={"canned": canned, "large": chat(server, "large")})
    answer = router.invoke(EASY)
    assert [(a.model, a.decision) for a in trace_of(answer).attempts] == [("canned", "escalate"), ("large", "accept")]


def test_self_verify_tier_asks_a_judge_inside_its_attempt(server: ScriptedOpenAIServer) -> None:
    router = ConfidenceRouter(models={"nolp": chat(server, "nolp"), "large": chat(server, "large")},
                              config={"models": [{"name": "nolp", "confidence_method": "self_verify"},
                                                 {"name": "large"}]})
    collector = RunCollectorCallbackHandler()
    start = len(server.requests)
    easy = router.invoke(EASY, config={"callbacks": [collector]})
    assert [(a.model, a.purpose, a.decision) for a in trace_of(easy).attempts] == [
        ("nolp", "answer", "accept"), ("nolp", "verify", "accept")]
    judge_request = server.requests[start + 1]
    assert judge_request["temperature"] == 0.0 and "proposed answer" in judge_request["messages"][-1]["content"]
    (attempt,) = collector.traced_runs[0].child_runs  # the judge's run sits inside the attempt it judges
    assert [r.name for r in attempt.child_runs] == ["ChatOpenAI", "nolp (verify)"]
    assert attempt.extra["metadata"]["confidence_router_decision"] == "accept"
    hard = router.invoke(HARD)
    assert [(a.model, a.decision) for a in trace_of(hard).attempts] == [
        ("nolp", "escalate"), ("nolp", "accept"), ("large", "accept")]


async def test_consistency_tier_votes_over_samples(server: ScriptedOpenAIServer) -> None:
    router = ConfidenceRouter(models={"nolp": chat(server, "nolp"), "large": chat(server, "large")},
                              config={"models": [{"name": "nolp", "confidence_method": "consistency"},
                                                 {"name": "large"}]})
    start = len(server.requests)
    easy = await router.ainvoke(EASY)
    sent = requests_since(server, start)
    assert [(r["model"], r["temperature"]) for r in sent] == [("nolp", 0.7)] * 5
    assert trace_of(easy).attempts[0].confidence == 1.0 and easy.text == "nolp says: the answer is 42."
    hard = router.invoke(HARD)
    attempts = trace_of(hard).attempts
    assert attempts[0].decision == "escalate" and attempts[0].confidence < 0.5 and hard.text.startswith("large")


# ---------------------------------------------------------------------------- streaming


def test_stream_escalation_leaks_no_rejected_tokens(router: ConfidenceRouter, server: ScriptedOpenAIServer) -> None:
    start = len(server.requests)
    chunks = list(router.stream(HARD))
    text = "".join(c.text for c in chunks)
    assert text == "large says: the answer is 42."
    assert not any("small" in c.text for c in chunks)
    sent = requests_since(server, start)
    assert [(r["model"], bool(r.get("stream"))) for r in sent] == [("small", False), ("large", True)]
    assert sum(1 for c in chunks if c.text) > 1  # the final tier streamed live, token by token
    last = chunks[-1]
    assert last.chunk_position == "last"
    trace = RequestTrace.model_validate(last.response_metadata["confidence_router"])
    assert trace.attempts[-1].streamed and trace.outcome == "accepted"
    assert trace.ttft_ms is not None and 0 < trace.ttft_ms <= trace.total_latency_ms + 1


async def test_astream_accepted_early_tier_is_one_chunk(router: ConfidenceRouter) -> None:
    chunks = [c async for c in router.astream(EASY)]
    assert [c.text for c in chunks] == ["small says: the answer is 42."]
    full = chunks[0]
    assert full.chunk_position == "last" and full.usage_metadata is not None
    assert RequestTrace.model_validate(full.response_metadata["confidence_router"]).final_model == "small"


async def test_astream_events_show_rejected_tier_only_as_a_nostream_run(router: ConfidenceRouter) -> None:
    events = [e async for e in router.astream_events(HARD, version="v2")]
    token_runs = {e["run_id"] for e in events if e["event"] == "on_chat_model_stream"}
    starts = {e["run_id"]: e for e in events if e["event"] == "on_chat_model_start"}
    small_run = next(rid for rid, e in starts.items() if e["metadata"]["confidence_router_tier"] == "small")
    assert small_run not in token_runs and "nostream" in starts[small_run]["tags"]
    streamed = "".join(e["data"]["chunk"].text for e in events if e["event"] == "on_chain_stream"
                       and e["name"] == "ConfidenceRouter")
    assert streamed == "large says: the answer is 42."
    custom = [e["name"] for e in events if e["event"] == "on_custom_event"]
    assert custom == ["confidence_router.attempt", "confidence_router.attempt", "confidence_router.trace"]


def test_final_tier_failing_mid_stream_raises_with_the_trace(router: ConfidenceRouter) -> None:
    received: list[str] = []
    with pytest.raises(CascadeError) as info:
        for chunk in router.stream("Explain. [hard] [fault=cut@large]"):
            received.append(chunk.text)
    assert "large" in "".join(received)  # part of the answer had reached the caller
    trace = info.value.trace
    assert trace.outcome == "error" and [a.model for a in trace.attempts] == ["small", "large"]
    assert trace.attempts[-1].decision == "error"


def test_streamed_final_answer_that_cannot_be_scored_is_not_replaced(router: ConfidenceRouter) -> None:
    # NaN logprobs: a bad response, but its tokens were already delivered, so it stands (and says so)
    chunks = list(router.stream("Explain. [hard] [fault=nan@large]"))
    assert "".join(c.text for c in chunks) == "large says: the answer is 42."
    trace = RequestTrace.model_validate(chunks[-1].response_metadata["confidence_router"])
    assert trace.outcome == "fallback" and trace.final_model == "large"
    assert trace.attempts[-1].error_kind == "bad_response" and "streamed answer stands" in trace.attempts[-1].reason


def test_final_tier_failing_before_any_token_falls_back(router: ConfidenceRouter) -> None:
    chunks = list(router.stream("Explain. [hard] [fault=500@large]"))
    assert "".join(c.text for c in chunks) == "small says: the answer is 42."  # best answer so far
    trace = RequestTrace.model_validate(chunks[-1].response_metadata["confidence_router"])
    assert trace.outcome == "fallback" and trace.final_model == "small"


# ---------------------------------------------------------------------------- tools, structured output


@tool
def get_weather(city: str) -> str:
    """Get the weather in a city."""
    return f"It is sunny in {city}."


def test_bind_tools_maps_over_tiers(router: ConfidenceRouter, server: ScriptedOpenAIServer) -> None:
    start = len(server.requests)
    answer = router.bind_tools([get_weather]).invoke("What is the weather in 'Paris'? [hard]")
    assert answer.tool_calls[0]["name"] == "get_weather" and answer.tool_calls[0]["args"] == {"city": "Paris"}
    trace = trace_of(answer)
    assert [(a.model, a.decision, a.tool_call) for a in trace.attempts] == [("small", "accept", True)]
    assert trace.attempts[0].reason == "tool call (tool_calls: accept)"
    assert server.requests[start]["tools"][0]["function"]["name"] == "get_weather"
    assert server.requests[start]["logprobs"] is True  # logprobs survive bind_tools (set as a field)
    streamed: AIMessageChunk | None = None
    for chunk in router.bind_tools([get_weather], tool_choice="get_weather").stream("Weather in 'Oslo'?"):
        streamed = chunk if streamed is None else streamed + chunk
    assert streamed is not None and streamed.tool_calls[0]["args"] == {"city": "Oslo"}


def test_tool_call_turns_can_escalate(server: ScriptedOpenAIServer) -> None:
    router = ConfidenceRouter(models={"small": chat(server, "small"), "large": chat(server, "large")},
                              config={"algorithm": {"confidence": {"tool_calls": "escalate"}}})
    answer = router.bind_tools([get_weather]).invoke("Weather in 'Rome'?")
    assert [(a.model, a.decision) for a in trace_of(answer).attempts] == [("small", "escalate"), ("large", "fallback")]


def test_tool_result_turn_is_scored_as_text(router: ConfidenceRouter) -> None:
    history = [HumanMessage("Weather in Rome? [hard]"),
               AIMessage("", tool_calls=[{"name": "get_weather", "args": {"city": "Rome"}, "id": "c1"}]),
               ToolMessage("It is sunny in Rome.", tool_call_id="c1")]
    answer = router.bind_tools([get_weather]).invoke(history)
    assert answer.text == "large says: the answer is 42."
    assert [a.decision for a in trace_of(answer).attempts] == ["escalate", "accept"]


class Person(BaseModel):
    """A person."""

    name: str
    age: int


def test_structured_output_scores_the_json(router: ConfidenceRouter, server: ScriptedOpenAIServer) -> None:
    start = len(server.requests)
    person = router.with_structured_output(Person).invoke("Invent 'Ada', aged 36.")
    assert person == Person(name="Ada", age=36)
    sent = server.requests[start]
    assert sent["response_format"]["type"] == "json_schema" and sent["logprobs"] is True
    raw = router.with_structured_output(Person, include_raw=True).invoke("Invent 'Bob', aged 7. [hard]")
    assert raw["parsed"] == Person(name="Bob", age=7) and raw["parsing_error"] is None
    trace = trace_of(raw["raw"])
    assert [a.decision for a in trace.attempts] == ["escalate", "accept"] and trace.attempts[0].n_tokens > 5
    streamed = list(router.with_structured_output(Person).stream("Invent 'Cy', aged 9."))
    assert streamed == [Person(name="Cy", age=9)]


def test_structured_output_that_does_not_parse_escalates() -> None:
    behaviours = {"small": ModelBehaviour(answer="Sure! Ada is 36."),
                  "large": ModelBehaviour(answer=json.dumps({"name": "Ada", "age": 36}))}
    with FakeOpenAIServer(behaviours) as srv:
        router = ConfidenceRouter(models={"small": chat(srv, "small"), "large": chat(srv, "large")})
        raw = router.with_structured_output(Person, include_raw=True).invoke("Invent Ada.")
    assert raw["parsed"] == Person(name="Ada", age=36)
    attempts = trace_of(raw["raw"]).attempts
    assert [(a.model, a.error_kind) for a in attempts] == [("small", "bad_response"), ("large", None)]


# ---------------------------------------------------------------------------- runs and callbacks


def test_one_chain_run_per_request_with_one_child_per_attempt(router: ConfidenceRouter) -> None:
    collector = RunCollectorCallbackHandler()
    router.invoke(HARD, config={"callbacks": [collector]})
    (root,) = collector.traced_runs
    assert root.name == "ConfidenceRouter" and root.run_type == "chain"
    attempts = root.child_runs
    assert [(r.name, r.run_type) for r in attempts] == [("small", "chain"), ("large", "chain")]
    assert [[c.run_type for c in r.child_runs] for r in attempts] == [["llm"], ["llm"]]
    small, large = attempts
    assert "nostream" in small.tags and "nostream" not in large.tags
    assert "nostream" in small.child_runs[0].tags  # inherited by the model run LangGraph filters on
    meta = small.extra["metadata"]
    assert meta["confidence_router_decision"] == "escalate" and meta["confidence_router_threshold"] == 0.72
    assert meta["confidence_router_confidence"] < 0.72
    assert "confidence_router:decision:escalate" in small.tags
    assert large.outputs["decision"] == "accept" and large.outputs["confidence"] > 0.72
    assert root.extra["metadata"]["confidence_router_final_model"] == "large"


async def test_trace_collector_and_custom_events(router: ConfidenceRouter) -> None:
    collector = TraceCollector(max_traces=2)
    for prompt in (EASY, HARD, HARD):
        await router.ainvoke(prompt, config={"callbacks": [collector]})
    assert len(collector.traces) == 2 and collector.last is not None
    assert collector.last.final_model == "large"
    assert [e["attempt"]["model"] for e in collector.attempt_events[-2:]] == ["small", "large"]
    assert collector.attempt_events[-1]["run_id"] == collector.last.attempts[-1].run_id


def test_human_handoff_before_any_model_call(server: ScriptedOpenAIServer) -> None:
    router = ConfidenceRouter(models={"small": chat(server, "small"), "large": chat(server, "large")},
                              config={"human": {"handoff_reply": "A person will reply."}})
    start = len(server.requests)
    answer = router.invoke("I want to talk to a human, please.")
    trace = trace_of(answer)
    assert answer.content == "A person will reply." and trace.outcome == "handoff"
    assert trace.route == "human_primary" and trace.trigger == "human_request"
    assert len(server.requests) == start


# ---------------------------------------------------------------------------- agents


def test_create_agent_runs_tools_and_streams_only_the_final_tier(server: ScriptedOpenAIServer) -> None:
    from langchain.agents import create_agent

    router = ConfidenceRouter(models={"small": chat(server, "small"), "large": chat(server, "large")})
    agent = create_agent(router, tools=[get_weather], system_prompt="Use tools.")
    result = agent.invoke({"messages": [HumanMessage("Weather in 'Lima'? [hard]")]})
    messages = result["messages"]
    assert messages[1].tool_calls[0]["args"] == {"city": "Lima"}
    assert messages[2].content == "It is sunny in Lima."
    assert messages[-1].content == "large says: the answer is 42."
    assert trace_of(messages[-1]).attempts[0].decision == "escalate"

    tokens = [chunk for chunk, _meta in agent.stream({"messages": [HumanMessage("Weather in 'Quito'? [hard]")]},
                                                     stream_mode="messages")]
    text = "".join(t.text for t in tokens if isinstance(t, AIMessageChunk | AIMessage))
    assert text.count("large says: the answer is 42.") == 1 and "small says" not in text  # rejected: never shown

    easy = [chunk.text for chunk, meta in agent.stream({"messages": [HumanMessage("Weather in 'Oslo'?")]},
                                                       stream_mode="messages") if meta["langgraph_node"] == "model"]
    assert easy == ["", "small says: the answer is 42."]  # tool-call turn, then the accepted answer, once each


def test_legacy_generate_nests_the_request_under_its_llm_run(router: ConfidenceRouter) -> None:
    collector = RunCollectorCallbackHandler()
    result = router.generate([[HumanMessage(HARD)]], callbacks=[collector])
    assert result.generations[0][0].message.content == "large says: the answer is 42."
    (root,) = collector.traced_runs
    assert root.run_type == "llm" and [r.name for r in root.child_runs] == ["ConfidenceRouter"]
    assert [r.name for r in root.child_runs[0].child_runs] == ["small", "large"]


def test_the_attempt_timeout_goes_per_request_only_to_clients_that_take_it() -> None:
    """langchain-openai tiers get ``timeout=`` per call (through bindings and structured output); a tier
    with its own timeout keeps it; other chat models never get an unknown keyword."""
    from langchain_confidence_router.langchain._tiers import takes_request_timeout

    class Answer(BaseModel):
        value: int

    plain = ChatOpenAI(model="m", api_key="sk-test", base_url="http://127.0.0.1:9/v1")
    assert takes_request_timeout(plain)
    assert takes_request_timeout(plain.bind_tools([get_weather]))
    assert takes_request_timeout(plain.with_structured_output(Answer, method="json_schema"))
    assert not takes_request_timeout(plain.model_copy(update={"request_timeout": 30.0}))
    assert not takes_request_timeout(GenericFakeChatModel(messages=iter(["hi"])))

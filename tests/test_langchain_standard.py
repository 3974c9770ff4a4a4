"""LangChain's standard chat-model suites (langchain-tests) run against ConfidenceRouter.

The integration suite talks to a local OpenAI-compatible server through real ChatOpenAI tiers; the
scripted server answers tool calls and JSON schemas the way the suite's prompts expect.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, ClassVar

import pytest
from langchain_core.language_models import BaseChatModel
from langchain_core.load import dumpd, load
from langchain_openai import ChatOpenAI
from langchain_tests.integration_tests import ChatModelIntegrationTests
from langchain_tests.unit_tests import ChatModelUnitTests

from langchain_confidence_router.langchain import ConfidenceRouter
from langchain_confidence_router.langchain.testing import ScriptedOpenAIServer
from langchain_confidence_router.testing import ModelBehaviour

SERDES_REASON = (
    "langchain-core 1.7 `load()` only revives classes in its own import mappings, so a third-party chat "
    "model that holds other chat models cannot round-trip"
)
OFFLINE_MEDIA_REASON = (
    "needs a multimodal tier and downloads sample media from the internet; the router passes content "
    "blocks to its tiers unchanged and this suite runs offline against a text-only fake server"
)


def _tiers(base_url: str) -> dict[str, ChatOpenAI]:
    return {name: ChatOpenAI(model=name, base_url=base_url, api_key="test", max_retries=0, timeout=10)
            for name in ("small", "large")}


class TestConfidenceRouterUnit(ChatModelUnitTests):
    """Construction, parameters, tool binding and structured-output wiring (no network)."""

    _models = _tiers("http://127.0.0.1:9/v1")

    @property
    def chat_model_class(self) -> type[BaseChatModel]:
        return ConfidenceRouter

    @property
    def chat_model_params(self) -> dict[str, Any]:
        return {"models": self._models}

    @property
    def standard_chat_model_params(self) -> dict[str, Any]:
        params = super().standard_chat_model_params
        params.pop("api_key")  # credentials belong to the tier models, not to the router
        return params

    @property
    def supports_model_override(self) -> bool:
        return False

    @pytest.mark.xfail(reason=SERDES_REASON, raises=(NotImplementedError, ValueError, KeyError), strict=True)
    def test_serdes(self, model: BaseChatModel, snapshot: Any) -> None:
        revived = load(dumpd(model), valid_namespaces=["langchain_confidence_router"], allowed_objects="all")
        assert revived.dict() == model.dict()


@pytest.fixture(scope="module", autouse=True)
def _server() -> Iterator[ScriptedOpenAIServer]:
    models = {"small": ModelBehaviour(confident_on_hard=False), "large": ModelBehaviour()}
    with ScriptedOpenAIServer(models, record_requests=False) as server:
        TestConfidenceRouterIntegration.models = _tiers(server.base_url)
        yield server


class TestConfidenceRouterIntegration(ChatModelIntegrationTests):
    """The full integration suite over HTTP; prompts without ``[hard]`` are answered by the small tier."""

    models: ClassVar[dict[str, ChatOpenAI]] = {}  # set by the module fixture once the server runs

    @property
    def chat_model_class(self) -> type[BaseChatModel]:
        return ConfidenceRouter

    @property
    def chat_model_params(self) -> dict[str, Any]:
        return {"models": self.models}

    @property
    def supports_model_override(self) -> bool:
        # A router chooses among its tiers; a per-call `model=` would go to every tier, so "the response's
        # model_name equals the override" does not describe a router. The override tests skip on this.
        return False

    @property
    def has_tool_choice(self) -> bool:
        return True

    @property
    def structured_output_kwargs(self) -> dict[str, Any]:
        return {"method": "json_schema"}

    @property
    def supports_json_mode(self) -> bool:
        return True

    # Not run (langchain-tests requires overridden standard tests to carry an xfail with its reason). Media:
    # the router hands content blocks to its tiers unchanged, so support is the tiers'; these tests download
    # sample media from the internet and need a multimodal model, and this suite runs offline.
    @pytest.mark.xfail(reason=OFFLINE_MEDIA_REASON, run=False)
    def test_image_inputs(self, model: BaseChatModel) -> None: ...

    @pytest.mark.xfail(reason=OFFLINE_MEDIA_REASON, run=False)
    def test_image_tool_message(self, model: BaseChatModel) -> None: ...

    @pytest.mark.xfail(reason=OFFLINE_MEDIA_REASON, run=False)
    def test_pdf_inputs(self, model: BaseChatModel) -> None: ...

    @pytest.mark.xfail(reason=OFFLINE_MEDIA_REASON, run=False)
    def test_pdf_tool_message(self, model: BaseChatModel) -> None: ...

    @pytest.mark.xfail(reason=OFFLINE_MEDIA_REASON, run=False)
    def test_audio_inputs(self, model: BaseChatModel) -> None: ...

    @pytest.mark.xfail(reason="Anthropic-format content blocks are a property of the tier model, not of the router; "
                              "the OpenAI-compatible fake server does not accept them", run=False)
    def test_anthropic_inputs(self, model: BaseChatModel) -> None: ...

    @pytest.mark.xfail(reason="a VCR-cassette timing benchmark; bench_langchain.py measures the router's latency",
                       run=False)
    def test_stream_time(self, *args: Any) -> None: ...


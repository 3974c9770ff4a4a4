"""The LangChain internals the router relies on (langchain/_compat.py) are still there, by name.

When LangChain changes one of them, this fails naming the piece, instead of the router breaking in a
way that is hard to trace."""

from __future__ import annotations

import importlib
import inspect
from importlib.metadata import version

import pytest
from langchain_core.language_models import BaseChatModel
from langchain_core.language_models.chat_model_stream import AsyncChatModelStream, ChatModelStream
from langchain_core.tracers.langchain import LangChainTracer

from langchain_confidence_router.langchain import _compat


def test_checked_versions_are_the_installed_line() -> None:
    for dist, checked in _compat.CHECKED_AGAINST.items():
        installed = version(dist)
        assert installed.split(".")[:2] == checked.split(".")[:2], (
            f"{dist} {installed} is installed; langchain/_compat.py was checked against {checked}: re-check it")


@pytest.mark.parametrize(("module", "name"), [
    ("langchain_core.tracers._streaming", "_StreamingCallbackHandler"),
    ("langchain_core.language_models._compat_bridge", "chunks_to_events"),
    ("langchain_core.language_models._compat_bridge", "achunks_to_events"),
    ("langchain_protocol.protocol", "MessageFinishData"),
])
def test_private_names_exist(module: str, name: str) -> None:
    assert hasattr(importlib.import_module(module), name), f"{module}.{name} is gone"


def test_private_hooks_and_fields_exist() -> None:
    for method in ("_chat_model_stream_v3", "_achat_model_stream_v3"):
        assert hasattr(BaseChatModel, method), f"BaseChatModel.{method} is gone: the v3 event stream changed"
    sync, async_ = ChatModelStream(), AsyncChatModelStream()
    assert hasattr(sync, "_generation_info") and hasattr(async_, "_generation_info")
    assert hasattr(async_, "_producer_task"), "AsyncChatModelStream._producer_task is gone"
    for method in ("set_start", "bind_pump", "dispatch", "fail"):
        assert hasattr(sync, method), f"ChatModelStream.{method} is gone"
    assert "run_map" in inspect.signature(LangChainTracer.__init__).parameters or hasattr(
        LangChainTracer(), "run_map"), "tracers no longer keep open runs in run_map"


def test_router_module_uses_no_private_langchain_import() -> None:
    """Only _compat.py may import a private LangChain module."""
    from pathlib import Path

    package = Path(_compat.__file__).parent
    for path in package.glob("*.py"):
        if path.name == "_compat.py":
            continue
        for line in path.read_text().splitlines():
            stripped = line.strip()
            if stripped.startswith(("from langchain_core", "import langchain_core", "from langchain_protocol")):
                parts = stripped.split()[1].split(".")
                assert not any(p.startswith("_") for p in parts), f"{path.name}: {stripped}"
                assert not stripped.startswith("from langchain_protocol"), f"{path.name}: {stripped}"


@pytest.fixture(scope="module")
def router():  # type: ignore[no-untyped-def]
    from langchain_openai import ChatOpenAI

    from langchain_confidence_router.langchain import ConfidenceRouter
    from langchain_confidence_router.testing import FakeOpenAIServer, ModelBehaviour

    models = {"small": ModelBehaviour(confident_on_hard=False), "large": ModelBehaviour()}
    with FakeOpenAIServer(models=models, record_requests=False) as server:
        tiers = {n: ChatOpenAI(model=n, base_url=server.base_url, api_key="sk-test", max_retries=0) for n in models}
        yield ConfidenceRouter(models=tiers, config={"models": [{"name": "small"}, {"name": "large"}]})


def test_stream_events_v3_carries_the_escalated_answer(router) -> None:  # type: ignore[no-untyped-def]
    stream = router.stream_events("[hard] What is 6 times 7?", version="v3")
    message = stream.output
    assert "large says" in message.text
    assert message.response_metadata["confidence_router"]["final_model"] == "large"


async def test_astream_events_v3_carries_the_escalated_answer(router) -> None:  # type: ignore[no-untyped-def]
    stream = await router.astream_events("[hard] What is 6 times 7?", version="v3")
    message = await stream
    assert "large says" in message.text
    assert message.response_metadata["confidence_router"]["final_model"] == "large"


def test_token_silenced_handler_views_share_state_and_class() -> None:
    """A gated tier's run gets views of the request's handlers that drop tokens (early abort): they must stay
    instances of the handler's class (so tracers are not duplicated) and share its state (run maps)."""
    from langchain_core.callbacks import CallbackManager
    from langchain_core.tracers.run_collector import RunCollectorCallbackHandler

    tracer = RunCollectorCallbackHandler()  # a BaseTracer, as LangSmith's is, without a network client
    manager = CallbackManager(handlers=[tracer], inheritable_handlers=[tracer])
    silent = _compat.without_token_events(manager)
    assert silent is not None, "handler views could not be made: check _compat.without_token_events"
    (view,) = silent.handlers
    assert isinstance(view, RunCollectorCallbackHandler) and view.run_map is tracer.run_map
    assert silent.inheritable_handlers == [view]
    assert view.on_llm_new_token("x", run_id=None) is None  # type: ignore[arg-type]


def test_token_silenced_views_of_pydantic_handlers_keep_their_fields() -> None:
    from langchain_core.callbacks import BaseCallbackHandler, CallbackManager
    from pydantic import BaseModel

    class Counting(BaseCallbackHandler, BaseModel):
        tokens: list[str] = []
        ends: int = 0

        def on_llm_new_token(self, token: str, **kwargs: object) -> None:
            self.tokens.append(token)

        def on_llm_end(self, response: object, **kwargs: object) -> None:
            self.ends += 1

    handler = Counting()
    silent = _compat.without_token_events(CallbackManager(handlers=[handler]))
    assert silent is not None
    (view,) = silent.handlers
    view.on_llm_new_token("x")
    view.on_llm_end(None)
    assert handler.tokens == [] and handler.ends == 1 and view.model_dump()["ends"] == 1

"""Shared test setup: offline LiteLLM, the shared data folder, and a fake OpenAI server."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import hypothesis  # noqa: F401  (imported before any test: see below)
import pytest

# hypothesis's pytest plugin imports hypothesis at the end of a session that did not; after some of the
# LangChain tests, CPython 3.11.7 then fails to compile it ("AST constructor recursion depth mismatch").

# Offline: without this every litellm import spends seconds trying to fetch the cost map.
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
os.environ.setdefault("LANGSMITH_TRACING", "false")

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real recorded runs in ../shared/data; tests that need them skip when it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared data folder {SHARED_DATA} is absent (the real recorded runs live there)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def fake_openai() -> Iterator[object]:
    """One fake OpenAI-compatible server (models 'small', unsure on [hard], and 'large') for the session."""
    from langchain_confidence_router.testing import FakeOpenAIServer

    with FakeOpenAIServer() as server:
        yield server


#: LiteLLM's process-wide callback lists and provider map: a module that adds to them must not leave it behind.
LITELLM_GLOBAL_LISTS = ("callbacks", "success_callback", "failure_callback", "input_callback",
                        "_async_success_callback", "_async_failure_callback", "service_callback",
                        "custom_provider_map")


def _litellm_lists() -> dict[str, Any] | None:
    litellm = sys.modules.get("litellm")
    if litellm is None:
        return None
    lists = {name: getattr(litellm, name, None) for name in LITELLM_GLOBAL_LISTS}
    return {name: list(value) for name, value in lists.items() if isinstance(value, list)}


@pytest.fixture(autouse=True, scope="module")
def isolated_module_state() -> Iterator[None]:
    """Each test module leaves the process as it found it: environment, LiteLLM callbacks, cascade registry.

    Without this, a module's results could depend on which modules ran before it (a logger still
    installed, a Router still bound for tier calls, an environment variable still set).
    """
    environment = dict(os.environ)
    litellm_lists = _litellm_lists()
    registry = sys.modules.get("litellm_hooks.registry")
    routers = set(map(id, registry.bound_routers())) if registry is not None else set()
    yield
    os.environ.clear()
    os.environ.update(environment)
    litellm = sys.modules.get("litellm")
    if litellm is not None and litellm_lists is not None:
        for name, value in litellm_lists.items():
            getattr(litellm, name)[:] = value
    registry = sys.modules.get("litellm_hooks.registry")
    if registry is not None:
        for router in registry.bound_routers():
            if id(router) not in routers:
                registry.unbind_router(router)
        registry.clear_caches()

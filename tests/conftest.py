"""Shared test setup: offline LiteLLM, the shared data folder, and a fake OpenAI server."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

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

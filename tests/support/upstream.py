"""What a ``FakeOpenAIServer`` saw of one request: arrivals, client disconnects and streams, found by the
unique marker each test prompt carries."""

from __future__ import annotations

from langchain_confidence_router.testing import FakeOpenAIServer, StreamRecord

from .proxy import wait_for


def arrivals(server: FakeOpenAIServer, marker: str) -> dict[str, list[float]]:
    """When each model's calls carrying ``marker`` arrived (server clock), per model."""
    out: dict[str, list[float]] = {}
    for model, at, prompt in list(server.arrivals):
        if marker in prompt:
            out.setdefault(model, []).append(at)
    return out


def disconnected(server: FakeOpenAIServer, marker: str) -> list[str]:
    """The models whose calls carrying ``marker`` the client hung up on before the answer was sent."""
    return [model for model, prompt in list(server.disconnects) if marker in prompt]


def stream_of(server: FakeOpenAIServer, model: str, before: int, timeout: float = 5.0) -> StreamRecord:
    """The one stream of ``model`` since ``before``, once it ended (finished or closed by the client)."""
    records = wait_for(lambda: [r for r in server.streams[before:] if r.model == model
                                and (r.closed_by_client or r.finished)], timeout)
    assert len(records) == 1, server.streams[before:]
    return records[0]

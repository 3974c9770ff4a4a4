"""Callback-side pieces: custom event names, :class:`TraceCollector`, and run annotation for LangSmith.

Custom events (``dispatch_custom_event``) reach callback handlers and ``astream_events`` but never
LangSmith (checked with langchain-core 1.7), so what LangSmith should show is written into run metadata
and tags instead.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from typing import Any
from uuid import UUID

from langchain_core.callbacks import BaseCallbackHandler

from ..core import RequestTrace
from ._compat import annotate_open_run

#: Custom event sent after every tier attempt; data: ``{"request_id", "run_id", "attempt": AttemptTrace json}``.
ATTEMPT_EVENT = "confidence_router.attempt"
#: Custom event sent once per request, also when it fails; data: ``RequestTrace.model_dump(mode="json")``.
TRACE_EVENT = "confidence_router.trace"


class TraceCollector(BaseCallbackHandler):
    """Collects the :class:`RequestTrace` of every router request it sees, for use in code.

    ``router.invoke(x, config={"callbacks": [collector]})`` then ``collector.traces[-1]``. Failed
    requests are collected too (``outcome == "error"``). Thread-safe; ``max_traces`` keeps the newest.
    """

    run_inline = True  # keep arrival order and avoid a thread hop on async runs

    def __init__(self, max_traces: int | None = None) -> None:
        super().__init__()
        self.max_traces = max_traces
        self.traces: list[RequestTrace] = []
        self.attempt_events: list[dict[str, Any]] = []
        self._lock = threading.Lock()

    def on_custom_event(
        self,
        name: str,
        data: Any,
        *,
        run_id: UUID,
        tags: list[str] | None = None,
        metadata: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        if name == TRACE_EVENT:
            trace = RequestTrace.model_validate(data)
            with self._lock:
                self.traces.append(trace)
                if self.max_traces is not None and len(self.traces) > self.max_traces:
                    del self.traces[: len(self.traces) - self.max_traces]
        elif name == ATTEMPT_EVENT:
            with self._lock:
                self.attempt_events.append(data)

    @property
    def last(self) -> RequestTrace | None:
        """The most recent trace, or None."""
        return self.traces[-1] if self.traces else None

    def clear(self) -> None:
        with self._lock:
            self.traces.clear()
            self.attempt_events.clear()


def annotate_run(handlers: Sequence[BaseCallbackHandler], run_id: UUID, metadata: Mapping[str, Any],
                 tags: Sequence[str] = ()) -> None:
    """Add metadata and tags to a run that is still open in any tracer (LangSmith's among them).

    Callbacks can only set metadata when a run starts, but confidence and decision are known only
    when it ends; see :func:`._compat.annotate_open_run` for how (tracer internals)."""
    annotate_open_run(handlers, run_id, metadata, tags)

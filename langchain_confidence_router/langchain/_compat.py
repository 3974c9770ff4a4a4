"""Every use of LangChain internals, in one place, with the versions it was checked against.

The router needs three things LangChain has no public API for:

* **The streaming callback handler** (``langchain_core.tracers._streaming._StreamingCallbackHandler``):
  ``astream_events``/``stream_events`` tap a chat model's output through it. A router that overrides
  ``stream`` must hand its chunks to that handler itself, or those APIs see no tokens.
* **Open runs of tracers** (``handler.run_map``): callbacks can set metadata only when a run starts,
  but an attempt's confidence and decision are known when it ends. Tracers keep open runs in
  ``run_map`` and send their metadata and tags again at the end, so updating them there first puts
  them on the recorded run (LangSmith included).
* **Handlers without token events** (:func:`without_token_events`): a gated tier (``early_abort``) is
  streamed so its logprobs can be watched, but its tokens must reach no streaming callback. LangChain
  has no switch for that, so the tier's run gets views of the request's handlers (same state, same
  class, so tracers still nest and are not duplicated) whose ``on_llm_new_token`` does nothing.
* **``stream_events(version="v3")``**: core 1.7 builds a chat model's protocol stream in the private
  ``_chat_model_stream_v3`` from ``_stream``; the router streams through its own ``stream`` (one chain
  run per request), so it builds that stream here from its chunks, with the private bridge
  ``langchain_core.language_models._compat_bridge`` and the stream objects' private fields.

Checked against :data:`CHECKED_AGAINST`; ``tests/test_langchain_compat.py`` fails, naming the missing
piece, when an installed version no longer has one of them.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from typing import Any
from uuid import UUID

from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.language_models.chat_model_stream import AsyncChatModelStream, ChatModelStream
from langchain_core.outputs import ChatGenerationChunk
from langchain_core.tracers._streaming import _StreamingCallbackHandler

#: The distributions (and versions) whose internals this module was checked against.
CHECKED_AGAINST = {"langchain-core": "1.7.7", "langchain-protocol": "0.0.20"}

StreamingCallbackHandler = _StreamingCallbackHandler


def streaming_handler(handlers: Sequence[BaseCallbackHandler]) -> Any:
    """The handler through which ``astream_events`` taps a model's output stream, if one is attached."""
    return next((h for h in handlers if isinstance(h, _StreamingCallbackHandler)), None)


_SILENT_CLASSES: dict[type, type] = {}


def _silent(handler: BaseCallbackHandler) -> BaseCallbackHandler:
    """A view of ``handler`` (its own ``__dict__``, a subclass of its class) that ignores token events."""
    cls = type(handler)
    view_cls = _SILENT_CLASSES.get(cls)
    if view_cls is None:
        if inspect.iscoroutinefunction(cls.on_llm_new_token):
            async def on_llm_new_token(self: Any, *args: Any, **kwargs: Any) -> None:
                return None
        else:
            def on_llm_new_token(self: Any, *args: Any, **kwargs: Any) -> None:  # type: ignore[misc]
                return None
        view_cls = type(cls.__name__, (cls,), {"on_llm_new_token": on_llm_new_token, "__module__": cls.__module__})
        _SILENT_CLASSES[cls] = view_cls
    view = object.__new__(view_cls)
    view.__dict__ = handler.__dict__  # shared, not copied: run maps and streams stay the handler's own
    for klass in cls.__mro__:  # slots beside __dict__ (pydantic-based handlers have some): same objects
        for slot in getattr(klass, "__slots__", ()):
            if slot not in ("__dict__", "__weakref__") and hasattr(handler, slot):
                object.__setattr__(view, slot, getattr(handler, slot))
    return view


def without_token_events(manager: Any) -> Any:
    """A copy of a callback manager whose handlers see every event of a run except its tokens; None when a
    handler cannot be viewed that way (then the caller must not stream)."""
    views: dict[int, BaseCallbackHandler] = {}
    try:
        for handler in [*manager.handlers, *manager.inheritable_handlers]:
            if id(handler) not in views:
                views[id(handler)] = _silent(handler)
    except (TypeError, AttributeError):  # a handler with __slots__ or an unusual class
        return None
    silent = manager.copy()
    silent.handlers = [views[id(h)] for h in manager.handlers]
    silent.inheritable_handlers = [views[id(h)] for h in manager.inheritable_handlers]
    return silent


def annotate_open_run(handlers: Sequence[BaseCallbackHandler], run_id: UUID, metadata: Mapping[str, Any],
                      tags: Sequence[str] = ()) -> None:
    """Add metadata and tags to a run that is still open in any tracer (LangSmith's among them)."""
    key = str(run_id)
    for handler in handlers:
        run_map = getattr(handler, "run_map", None)
        run = run_map.get(key) if isinstance(run_map, dict) else None
        if run is None:
            continue
        run.extra = {**(run.extra or {}), "metadata": {**(run.extra or {}).get("metadata", {}), **metadata}}
        if tags:
            run.tags = [*(run.tags or []), *(t for t in tags if t not in (run.tags or []))]


def protocol_stream(chunks: Callable[[], Iterator[Any]]) -> ChatModelStream:
    """A v3 protocol stream fed by the message chunks ``chunks()`` yields (started lazily, pumped on demand)."""
    from langchain_core.language_models._compat_bridge import chunks_to_events
    from langchain_protocol.protocol import MessageFinishData

    stream = ChatModelStream()
    events: list[Iterator[Any]] = []

    def start() -> None:
        if not events:
            generations = (ChatGenerationChunk(message=c) for c in chunks())
            events.append(chunks_to_events(generations, generation_info=stream._generation_info))

    def pump_one() -> bool:
        start()
        try:
            event = next(events[0])
        except StopIteration:
            if not stream.done and stream.has_events:
                stream.dispatch(MessageFinishData(event="message-finish"))
            elif not stream.done:
                stream.fail(ValueError("No generation chunks were returned"))
            return False
        except BaseException as exc:
            stream.fail(exc)
            return False
        stream.dispatch(event)
        return True

    stream.set_start(start)
    stream.bind_pump(pump_one)
    return stream


def async_protocol_stream(chunks: Callable[[], AsyncIterator[Any]]) -> AsyncChatModelStream:
    """The async counterpart of :func:`protocol_stream`: a producer task dispatches the events."""
    from langchain_core.language_models._compat_bridge import achunks_to_events
    from langchain_protocol.protocol import MessageFinishData

    stream = AsyncChatModelStream()

    async def generations() -> AsyncIterator[ChatGenerationChunk]:
        async for chunk in chunks():
            yield ChatGenerationChunk(message=chunk)

    async def produce() -> None:
        try:
            async for event in achunks_to_events(generations(), generation_info=stream._generation_info):
                stream.dispatch(event)
            if not stream.done and stream.has_events:
                stream.dispatch(MessageFinishData(event="message-finish"))
            elif not stream.done:
                stream.fail(ValueError("No generation chunks were returned"))
        except BaseException as exc:
            stream.fail(exc)
            if isinstance(exc, asyncio.CancelledError):
                raise

    async def start() -> None:
        if stream._producer_task is None:
            stream._producer_task = asyncio.get_running_loop().create_task(produce())

    stream.set_start(start)
    return stream

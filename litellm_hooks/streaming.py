"""Streaming a cascade: gated tiers are called whole (or hidden-streamed), only the final tier streams live.

A tier whose answer may still be rejected is called with ``stream=False``, so none of its tokens
can reach the user; an accepted early answer goes out as one chunk. A tier with ``early_abort`` is
streamed internally instead (:class:`HiddenStream`): its logprobs feed the abort rule, its chunks go
nowhere, and an abort closes its upstream stream. The final tier (``TierCall.final``)
streams live and reports ``committed=True``. Its logprobs are accumulated from the chunks with the
core :class:`StreamAccumulator` (``litellm.stream_chunk_builder`` drops them).

:class:`StreamSession` holds the bookkeeping without doing I/O, so the sync and async drivers are
a few lines each. The last content chunk is held back until the tier's stream ends, so it can carry
the finish reason and the summed usage (LiteLLM's stream wrapper only reads usage from a chunk with
content); nothing the user sees is delayed by more than one chunk.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from langchain_confidence_router.core import (
    CallTier,
    CascadePolicy,
    Fail,
    Finish,
    StreamAccumulator,
    TierCall,
    TierResult,
    drive,
)

from .calls import RequestContext, acall_tier, attempt_cost, call_tier, chunk_parts, chunk_usage, new_response_id
from .output import TRACE_KEY

Action = CallTier | Finish | Fail


@dataclass
class StreamSession:
    """Sans-I/O state of one streamed cascade request."""

    ctx: RequestContext
    policy: CascadePolicy
    settle: Callable[[Action], None] = lambda action: None
    response_id: str = field(default_factory=new_response_id)
    created: int = field(default_factory=lambda: int(time.time()))
    sent: bool = False
    trace_dump: dict[str, Any] | None = None
    _acc: StreamAccumulator | None = None
    _held: Any = None
    _finish_reason: str | None = None
    _cost: float | None = None
    _live_result: TierResult | None = None

    def live(self, call: TierCall) -> bool:
        """Stream this call live? Only the final tier's answer (or clarifying question), never sampled or
        judged calls, and never in guardrail mode (a low-confidence answer must still fail over)."""
        return call.final and self.ctx.options.mode == "cascade" and call.purpose in ("answer", "clarify")

    # ------------------------------------------------------------------ live final tier

    def begin(self) -> None:
        self._acc = StreamAccumulator()
        self._held = None
        self._finish_reason = None
        self._cost = None

    def on_chunk(self, chunk: Any) -> Any | None:
        """Record one tier chunk; return the chunk to send on now, if any."""
        assert self._acc is not None
        text, entries, tools, finish_reason = chunk_parts(chunk)
        tokens_in, tokens_out, cost = chunk_usage(chunk)
        self._acc.add(text or None, entries, tokens_in=tokens_in, tokens_out=tokens_out)
        for tool in tools or ():
            self._acc.add(tool_call=tool)
        if finish_reason:
            self._finish_reason = finish_reason
        if cost is not None:
            self._cost = cost
        if not text and not tools:
            return None
        out, self._held = self._held, chunk
        if out is None:
            return None
        self.sent = True
        return self._relabel(out)

    def result(self, call: TierCall) -> TierResult:
        """The live tier's whole answer, priced (output tokens come from logprob entries without usage)."""
        assert self._acc is not None
        result = self._acc.result()
        result.cost_usd = attempt_cost(self._cost, call.tier, result.tokens_in, result.tokens_out)
        self._live_result = result
        return result

    # ------------------------------------------------------------------ the end

    def finish(self, action: Finish | Fail) -> list[Any]:
        """Settle the request (bill and record it, or raise its error), then the chunk(s) that end it."""
        self.settle(action)
        assert isinstance(action, Finish)
        return self.final_chunks(action)

    def final_chunks(self, finish: Finish) -> list[Any]:
        """The chunk(s) that end the stream: the held live chunk, or a whole earlier answer."""
        trace = finish.trace
        usage = _usage(trace.tokens_in, trace.tokens_out)
        if finish.result is None:  # handed to a person before any model answered
            chunk = self._text_chunk(self.ctx.handoff_reply())
        elif finish.result is self._live_result and self._held is not None:
            chunk = self._relabel(self._held)
            choice = chunk.choices[0]
            choice.finish_reason = self._finish_reason or "stop"
        else:
            chunk = self._whole(finish.result)
        chunk.usage = usage
        chunk._hidden_params = {**(getattr(chunk, "_hidden_params", None) or {}),
                                TRACE_KEY: self.trace_dump or trace.model_dump(mode="json")}
        self.sent = True
        return [chunk]

    def _relabel(self, chunk: Any) -> Any:
        chunk.id = self.response_id
        if not self.ctx.caller_logprobs:
            for choice in chunk.choices or ():
                choice.logprobs = None
        if getattr(chunk, "usage", None) is not None:
            chunk.usage = None
        return chunk

    def _text_chunk(self, text: str) -> Any:
        from litellm.types.utils import ModelResponseStream

        return ModelResponseStream(id=self.response_id, created=self.created, model=self.ctx.group, choices=[
            {"index": 0, "delta": {"role": "assistant", "content": text}, "finish_reason": "stop"}])

    def _whole(self, result: TierResult) -> Any:
        from litellm.types.utils import ModelResponseStream

        raw = result.raw
        choice = raw.choices[0] if raw is not None and getattr(raw, "choices", None) else None
        message = getattr(choice, "message", None)
        delta: dict[str, Any] = {"role": "assistant", "content": result.text or None}
        tool_calls = getattr(message, "tool_calls", None)
        if tool_calls:
            delta["tool_calls"] = [
                {"index": i, "id": tc.id, "type": "function",
                 "function": {"name": tc.function.name, "arguments": tc.function.arguments}}
                for i, tc in enumerate(tool_calls)
            ]
        logprobs = getattr(choice, "logprobs", None) if self.ctx.caller_logprobs else None
        streaming_choice: dict[str, Any] = {"index": 0, "delta": delta,
                                            "finish_reason": getattr(choice, "finish_reason", None) or "stop"}
        if logprobs is not None:
            streaming_choice["logprobs"] = logprobs if isinstance(logprobs, dict) else logprobs.model_dump()
        return ModelResponseStream(id=self.response_id, created=self.created,
                                   model=getattr(raw, "model", None) or self.ctx.group, choices=[streaming_choice])


def _usage(tokens_in: int, tokens_out: int) -> Any:
    from litellm.types.utils import Usage

    return Usage(prompt_tokens=tokens_in, completion_tokens=tokens_out, total_tokens=tokens_in + tokens_out)


# ---------------------------------------------------------------------------- drivers


class _Live:
    """The final tier's live stream, as the core drive loop runs it."""

    def __init__(self, session: StreamSession, call: TierCall) -> None:
        self.session = session
        self.call = call
        session.begin()

    @property
    def visible(self) -> bool:
        return self.session.sent

    def add(self, chunk: Any) -> Any | None:
        return self.session.on_chunk(chunk)

    def result(self) -> TierResult:
        return self.session.result(self.call)


class _SyncLive(_Live):
    def open(self) -> Iterator[Any]:
        ctx = self.session.ctx
        return ctx.router.completion(**ctx.tier_kwargs(self.call, stream=True))


class _AsyncLive(_Live):
    async def open(self) -> AsyncIterator[Any]:
        ctx = self.session.ctx
        return await ctx.router.acompletion(**ctx.tier_kwargs(self.call, stream=True))


class HiddenStream:
    """A gated tier streamed for the early-abort rule only: nothing of it is sent on."""

    def __init__(self, ctx: RequestContext, call: TierCall) -> None:
        self.ctx = ctx
        self.call = call
        self.acc = StreamAccumulator()
        self.tool_call = False
        self._cost: float | None = None
        self._finish_reason: str | None = None
        self._model: str | None = None
        self._sent: dict[str, Any] | None = None  # the tier call's kwargs, to count the prompt

    def add(self, chunk: Any) -> list[Any] | None:
        text, entries, tools, finish_reason = chunk_parts(chunk)
        tokens_in, tokens_out, cost = chunk_usage(chunk)
        self._finish_reason = finish_reason or self._finish_reason
        self._model = self._model or getattr(chunk, "model", None)
        self.acc.add(text or None, entries, tokens_in=tokens_in, tokens_out=tokens_out)
        for tool in tools or ():
            self.acc.add(tool_call=tool)
            self.tool_call = True
        if cost is not None:
            self._cost = cost
        return entries

    def result(self) -> TierResult:
        """What arrived, priced. A cancelled stream reports no usage: its output tokens are the ones received
        and its prompt tokens are counted from the messages sent (``tokens_in_estimated``)."""
        result = self.acc.result()
        result.streamed = False  # hidden: nothing of it reached the caller, nor did a first token
        result.ttft_ms = None
        result.raw = self._response(result)
        result.tool_calls = list(result.raw.choices[0].message.tool_calls or []) or None
        if result.tokens_in is None:
            params = self._deployment_params()
            result.tokens_in = self._prompt_tokens(params)
            result.tokens_in_estimated = result.tokens_in is not None
            if result.tokens_in is not None and self._cost is None:
                self._cost = _listed_cost(params, result.tokens_in, result.tokens_out or 0)
        if result.tokens_in is not None:
            result.cost_usd = attempt_cost(self._cost, self.call.tier, result.tokens_in, result.tokens_out)
        return result

    def _deployment_params(self) -> dict[str, Any]:
        """The ``litellm_params`` of the tier's (first) deployment: its model and any prices set on it."""
        try:
            deployments = self.ctx.router.get_model_list(model_name=self.call.tier.name) or []
            return dict(deployments[0].get("litellm_params") or {}) if deployments else {}
        except Exception:
            return {}

    def _prompt_tokens(self, params: dict[str, Any]) -> int | None:
        """The prompt's tokens by LiteLLM's tokenizer for the deployment's model (its default encoding for a
        model it does not know), tools included; None when they cannot be counted."""
        if self._sent is None:
            return None
        import litellm

        try:
            # no image is fetched to size it: this runs between two tier calls
            return int(litellm.token_counter(model=params.get("model") or self.call.tier.name,
                                             messages=self._sent["messages"], tools=self._sent.get("tools"),
                                             use_default_image_token_count=True))
        except Exception:  # an unusual message shape: the cost stays unknown, as without the estimate
            return None

    def _response(self, result: TierResult) -> Any:
        """The received answer as a whole response (what a non-streamed call returns), tool calls merged from
        their deltas, so an accepted hidden answer is returned exactly like a whole one."""
        from litellm.types.utils import ChoiceLogprobs, Choices, Message, ModelResponse

        calls: dict[int, dict[str, Any]] = {}
        for delta in self.acc.tool_calls:
            function = getattr(delta, "function", None)
            entry = calls.setdefault(getattr(delta, "index", None) or 0,
                                     {"id": None, "type": "function", "function": {"name": None, "arguments": ""}})
            entry["id"] = entry["id"] or getattr(delta, "id", None)
            entry["function"]["name"] = entry["function"]["name"] or getattr(function, "name", None)
            entry["function"]["arguments"] += getattr(function, "arguments", None) or ""
        message = Message(role="assistant", content=result.text or None,
                          tool_calls=[calls[i] for i in sorted(calls)] or None)
        logprobs = ChoiceLogprobs(content=self.acc.logprob_entries) if self.acc.saw_logprobs else None
        choice = Choices(index=0, finish_reason=self._finish_reason or "stop", message=message, logprobs=logprobs)
        return ModelResponse(model=self._model or self.call.tier.name, choices=[choice])


def _listed_cost(params: dict[str, Any], tokens_in: int, tokens_out: int) -> float | None:
    """LiteLLM's price of these tokens on a deployment: prices set on the deployment, else the cost map's for its
    model; None for a model it has no price for (the configuration's prices apply)."""
    import litellm

    custom = {k: params[k] for k in ("input_cost_per_token", "output_cost_per_token") if params.get(k) is not None}
    try:
        prompt, completion = litellm.cost_per_token(
            model=params.get("model") or "", prompt_tokens=tokens_in, completion_tokens=tokens_out,
            custom_cost_per_token=custom if len(custom) == 2 else None)  # type: ignore[arg-type]
    except Exception:  # not in the cost map
        return None
    return float(prompt + completion)


class _SyncHidden(HiddenStream):
    def open(self) -> Iterator[Any]:
        self._sent = self.ctx.tier_kwargs(self.call, stream=True)
        wrapper = self.ctx.router.completion(**self._sent)

        def chunks() -> Iterator[Any]:
            try:
                yield from wrapper
            finally:
                close_sync_stream(wrapper)

        return chunks()


def close_sync_stream(wrapper: Any) -> None:
    """Close a blocking LiteLLM stream's HTTP response now.

    LiteLLM's sync stream wrapper has no ``close()``; the Router's wraps it once more in a generator
    (``_sync_generator``, holding the inner wrapper as ``model_response``). Closing only that generator
    leaves the provider's stream (an ``openai.Stream``) open until garbage collection, so the inner wrapper's
    ``completion_stream`` is closed too. Checked against litellm 1.106; the early-abort tests fail (the
    server never sees the disconnect) if this stops reaching the response.
    """
    inner = wrapper
    generator = getattr(wrapper, "_sync_generator", None)
    frame = getattr(generator, "gi_frame", None)
    if frame is not None:
        inner = frame.f_locals.get("model_response", wrapper)
    if generator is not None:
        generator.close()
    close = getattr(getattr(inner, "completion_stream", None), "close", None)
    if close is not None:
        close()


class _AsyncHidden(HiddenStream):
    async def open(self) -> AsyncIterator[Any]:
        self._sent = self.ctx.tier_kwargs(self.call, stream=True)
        wrapper = await self.ctx.router.acompletion(**self._sent)

        async def chunks() -> AsyncIterator[Any]:
            try:
                async for chunk in wrapper:
                    yield chunk
            finally:
                await wrapper.aclose()

        return chunks()


class SyncCalls(drive.AttemptIO):
    """Whole tier calls, and hidden streams for tiers with ``early_abort``."""

    def __init__(self, ctx: RequestContext) -> None:
        self.ctx = ctx

    def call(self, call: TierCall) -> TierResult:
        return call_tier(self.ctx, call)

    def gated(self, call: TierCall) -> _SyncHidden:
        return _SyncHidden(self.ctx, call)


class AsyncCalls(drive.AsyncAttemptIO):
    """The async twin of :class:`SyncCalls`."""

    def __init__(self, ctx: RequestContext) -> None:
        self.ctx = ctx

    async def call(self, call: TierCall) -> TierResult:
        return await acall_tier(self.ctx, call)

    def gated(self, call: TierCall) -> _AsyncHidden:
        return _AsyncHidden(self.ctx, call)


class _SyncIO(SyncCalls):
    def __init__(self, session: StreamSession) -> None:
        super().__init__(session.ctx)
        self.session = session

    def live(self, call: TierCall) -> _SyncLive | None:
        return _SyncLive(self.session, call) if self.session.live(call) else None


class _AsyncIO(AsyncCalls):
    def __init__(self, session: StreamSession) -> None:
        super().__init__(session.ctx)
        self.session = session

    def live(self, call: TierCall) -> _AsyncLive | None:
        return _AsyncLive(self.session, call) if self.session.live(call) else None


async def astream(session: StreamSession) -> AsyncIterator[Any]:
    """Drive a streamed cascade with the Router's async API.

    ``session.settle`` sees the final action before the last chunk goes out: it bills and records a
    Finish and raises for a Fail.
    """
    ending = drive.Ending()
    async for chunk in drive.adrive(session.policy, _AsyncIO(session), ending):
        yield chunk
    for chunk in session.finish(ending.final()):
        yield chunk


def stream(session: StreamSession) -> Iterator[Any]:
    """The same as :func:`astream` with the Router's blocking API."""
    action = yield from drive.drive(session.policy, _SyncIO(session))
    yield from session.finish(action)

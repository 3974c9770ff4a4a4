"""``ConfidenceRouter``: a LangChain chat model that walks a cascade of chat models, cheapest first.

The decision is the core's :class:`CascadePolicy`; this module only does LangChain I/O around it.

Why ``invoke``/``stream`` are overridden instead of ``_generate``/``_stream``: a chat model's own run
is an LLM run, so LangSmith would count the answer's tokens on the router *and* on the tier that
produced them, and it could not nest tier runs while streaming. Here every request is one chain run
(``ConfidenceRouter``) with one child chain run per tier attempt (pre-assigned run id; tags and
metadata carry tier, threshold, confidence, decision and cost) around the tier model's own LLM run,
which is the only place usage is reported.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from uuid import UUID

from langchain_core.callbacks import (
    AsyncCallbackManager,
    AsyncCallbackManagerForChainRun,
    AsyncCallbackManagerForLLMRun,
    CallbackManager,
    CallbackManagerForChainRun,
    CallbackManagerForLLMRun,
)
from langchain_core.callbacks.manager import adispatch_custom_event, dispatch_custom_event
from langchain_core.language_models import BaseChatModel, LanguageModelInput
from langchain_core.language_models.base import LangSmithParams
from langchain_core.language_models.chat_model_stream import AsyncChatModelStream, ChatModelStream
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage, HumanMessage, SystemMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from langchain_core.runnables import Runnable, RunnableConfig, RunnableLambda
from langchain_core.runnables.config import ensure_config, patch_config
from langchain_core.utils.uuid import uuid7
from pydantic import ConfigDict, Field, PrivateAttr, field_validator, model_validator

from ..core import (
    AttemptTrace,
    CallTier,
    Cascade,
    CascadeError,
    CascadePolicy,
    Fail,
    Finish,
    OverrideError,
    RouterConfig,
    StreamAccumulator,
    TierCall,
    TierResult,
    drive,
    load_config,
    parse_config,
)
from ..core.human import conversation_key
from ._compat import async_protocol_stream, protocol_stream, streaming_handler, without_token_events
from ._messages import (
    TRACE_KEY,
    answer_message,
    chunk_logprobs,
    closing_chunk,
    combine_samples,
    merge_chunks,
    message_to_chunk,
    tier_result,
)
from ._tiers import Binding, TierModels, prepare_tiers, prepare_variant, takes_request_timeout
from ._usage import estimate_prompt_tokens
from .callbacks import ATTEMPT_EVENT, TRACE_EVENT, annotate_run

#: Tag LangGraph's ``stream_mode="messages"`` uses to skip a chat model run's tokens.
NOSTREAM_TAG = "nostream"
logger = logging.getLogger("langchain_confidence_router")

#: Prefix of the metadata keys the router writes on its runs (see docs/langchain.md).
META = "confidence_router_"

Action = CallTier | Finish | Fail


def _ms(t0: float) -> float:
    return (time.perf_counter() - t0) * 1000.0


@dataclass
class _Request:
    """Per-request state shared by the sync and async paths."""

    rm: CallbackManagerForChainRun | AsyncCallbackManagerForChainRun
    config: RunnableConfig
    messages: list[BaseMessage]
    call_kwargs: dict[str, Any]
    policy: CascadePolicy
    t0: float = field(default_factory=time.perf_counter)
    ttft_ms: float | None = None
    output: AIMessage | None = None
    runs: dict[int, _Attempt] = field(default_factory=dict)  # open attempt runs, by call number

    @property
    def handlers(self) -> list[Any]:
        return self.rm.handlers

    @property
    def streaming_handler(self) -> Any:
        return streaming_handler(self.rm.handlers)


@dataclass
class _Attempt:
    """One open tier attempt: its chain run and the config the tier model is called with."""

    call: TierCall
    rm: CallbackManagerForChainRun | AsyncCallbackManagerForChainRun
    config: RunnableConfig
    model_run_id: UUID


class ConfidenceRouter(BaseChatModel):
    """A chat model that answers with the cheapest tier whose token-logprob confidence is high enough.

    ``ConfidenceRouter(models={"small": chat_a, "large": chat_b}, config="confidence.yaml")`` or
    ``ConfidenceRouter.from_config("confidence.yaml", models={...})``. Works wherever a chat model
    works; the request trace is in ``response_metadata["confidence_router"]`` of every answer.
    """

    models: dict[str, Any] = Field(description="the tier chat models by name (a list is named automatically)")
    config: RouterConfig = Field(default_factory=RouterConfig, description="cascade configuration")
    thresholds: dict[str, float] | float | None = Field(
        None, description="per-request threshold overrides by tier name, or one value for every tier"
    )
    bindings: list[Binding] = Field(
        default_factory=list, repr=False, description="bind_tools / with_structured_output mapped over tiers"
    )
    temperature: float | None = None
    max_tokens: int | None = None
    stop: list[str] | None = None
    timeout: float | None = Field(None, description="per-attempt timeout, overrides limits.attempt_timeout_s")
    max_retries: int | None = Field(None, description="accepted for compatibility; tiers keep their own retries")
    streaming: bool = Field(False, description="stream the final tier even on invoke (for streaming callbacks)")
    on_handoff: Any = Field(None, exclude=True, description="callable(trace, message) for answers routed to a person")

    model_config = ConfigDict(arbitrary_types_allowed=True)

    _cascade: Cascade = PrivateAttr()
    _tiers: dict[str, TierModels] = PrivateAttr()
    _structured: bool = PrivateAttr(False)
    _variants: dict[tuple[Any, ...], Any] = PrivateAttr(default_factory=dict)
    _uncounted: set[str] = PrivateAttr(default_factory=set)  # tiers whose token counter failed

    # ------------------------------------------------------------------ construction

    def __init__(self, models: Mapping[str, Any] | Sequence[Any] | None = None, **data: Any) -> None:
        if models is not None:
            data["models"] = models
        # Config loading and tier resolution run outside pydantic validation, so a ConfigError reaches
        # the caller as itself (naming the file and field) rather than wrapped in a ValidationError.
        super().__init__(**_normalised(data))
        self._setup(Cascade.from_config(self.config, names=list(self.models)))

    @model_validator(mode="before")
    @classmethod
    def _named_models(cls, data: Any) -> Any:
        return _normalised(data) if isinstance(data, dict) else data

    @field_validator("models")
    @classmethod
    def _has_models(cls, value: dict[str, Any]) -> dict[str, Any]:
        if not value:
            raise ValueError("a ConfidenceRouter needs at least one tier model")
        for name, model in value.items():
            if not isinstance(model, Runnable):
                raise ValueError(f"tier {name!r} is a {type(model).__name__}, not a LangChain chat model")
        return value

    @field_validator("thresholds")
    @classmethod
    def _valid_thresholds(cls, value: dict[str, float] | float | None) -> dict[str, float] | float | None:
        return _checked_thresholds(value)

    def _setup(self, cascade: Cascade) -> None:
        self._cascade = cascade
        overrides = {"temperature": self.temperature, "max_tokens": self.max_tokens, "stop": self.stop,
                     "output_version": self.output_version, "streaming": self.streaming or None}
        self._tiers = prepare_tiers(self.models, top_logprobs=self.config.confidence.top_logprobs,
                                    overrides=overrides, bindings=self.bindings)
        self._structured = any(method == "with_structured_output" for method, _, _ in self.bindings)
        self._variants = {}

    @classmethod
    def from_config(
        cls,
        config: str | Path | RouterConfig | Mapping[str, Any],
        models: Mapping[str, Any] | Sequence[Any],
        **kwargs: Any,
    ) -> ConfidenceRouter:
        """Build from a YAML file (or a parsed config) and the tier chat models, by name."""
        return cls(models=models, config=config, **kwargs)

    @property
    def cascade(self) -> Cascade:
        """The resolved cascade (tiers in escalation order, thresholds, config hash)."""
        return self._cascade

    @property
    def tier_names(self) -> list[str]:
        """Tier names in escalation order."""
        return [tier.name for tier in self._cascade.tiers]

    def _derive(self, binding: Binding) -> ConfidenceRouter:
        """A copy whose tiers carry one more binding; the resolved cascade is shared."""
        copy = self.model_copy(update={"bindings": [*self.bindings, binding]})
        copy._setup(self._cascade)
        return copy

    # ------------------------------------------------------------------ chat model surface

    @property
    def _llm_type(self) -> str:
        return "confidence-router"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {"tiers": self.tier_names, "config_hash": self._cascade.config_hash}

    def _get_ls_params(self, stop: list[str] | None = None, **kwargs: Any) -> LangSmithParams:
        params = LangSmithParams(ls_provider="confidence_router",
                                 ls_model_name=kwargs.get("model") or ">".join(self.tier_names),
                                 ls_model_type="chat")
        if self.temperature is not None:
            params["ls_temperature"] = self.temperature
        if self.max_tokens is not None:
            params["ls_max_tokens"] = self.max_tokens
        if stop or self.stop:
            params["ls_stop"] = stop or self.stop
        return params

    def bind_tools(
        self,
        tools: Sequence[Any],
        *,
        tool_choice: str | dict[str, Any] | bool | None = None,
        **kwargs: Any,
    ) -> Runnable[LanguageModelInput, AIMessage]:
        """Bind tools on every tier with that tier's own ``bind_tools`` (formats differ per provider)."""
        bind_kwargs = {"tool_choice": tool_choice, **kwargs} if tool_choice is not None else dict(kwargs)
        return self._derive(("bind_tools", (list(tools),), bind_kwargs)).bind()

    def with_structured_output(
        self,
        schema: Any,
        *,
        include_raw: bool = False,
        method: Literal["json_schema", "function_calling", "json_mode"] = "json_schema",
        strict: bool | None = None,
        **kwargs: Any,
    ) -> Runnable[LanguageModelInput, Any]:
        """Structured output on every tier (json-schema mode by default, so the scored tokens are the JSON).

        Each tier runs ``with_structured_output(schema, method=..., include_raw=True)``; an answer that
        does not parse is a bad response and the cascade moves on. Output: the parsed object, or
        ``{"raw", "parsed", "parsing_error"}`` with ``include_raw=True`` (``raw`` carries the trace).
        """
        tier_kwargs: dict[str, Any] = {"method": method, "include_raw": True, **kwargs}
        if strict is not None:
            tier_kwargs["strict"] = strict
        structured = self._derive(("with_structured_output", (schema,), tier_kwargs))
        picker = _with_raw if include_raw else _parsed_only
        return structured | RunnableLambda(picker, name="parse_structured_output")

    # ------------------------------------------------------------------ request setup

    def _policy(self, run_id: UUID, thresholds: Any, messages: list[BaseMessage], config: RunnableConfig
                ) -> CascadePolicy:
        value = _checked_thresholds(thresholds) if thresholds is not None else self.thresholds
        if isinstance(value, int | float):
            value = {name: float(value) for name in self.tier_names}
        elif value:
            unknown = [name for name in value if name not in self._tiers]
            if unknown:
                raise OverrideError(f"thresholds.{unknown[0]}", f"thresholds name unknown tier(s) {unknown}; "
                                    f"tiers: {self.tier_names}")
        human: dict[str, Any] = {}
        if self.config.human is not None:  # triggers read the request; clarify/A-B are keyed per conversation
            metadata = config.get("metadata") or {}
            user = metadata.get("user_id")
            first_user = next((str(m.content) for m in messages if m.type == "human"), "")
            human = {"request_text": _last_user_text(messages),
                     "conversation": metadata.get("conversation_id")
                     or (config.get("configurable") or {}).get("thread_id")
                     or conversation_key(first_user, user),
                     "user": user}
        return self._cascade.policy(request_id=str(run_id), thresholds=value or None,
                                    metadata={"langchain_run_id": str(run_id)}, **human)

    def _callback_manager_args(self, config: RunnableConfig) -> tuple[Any, ...]:
        return (config.get("callbacks"), self.callbacks, self.verbose, config.get("tags"), self.tags,
                config.get("metadata"), self.metadata)

    def _request_parts(self, input: LanguageModelInput, config: RunnableConfig | None, stop: list[str] | None,
                       kwargs: dict[str, Any]) -> tuple[RunnableConfig, list[BaseMessage], dict[str, Any], Any]:
        config = ensure_config(config)
        thresholds = kwargs.pop("thresholds", None)
        messages = self._convert_input(input).to_messages()
        if self._structured:  # a structured tier is a sequence; only its first step would see kwargs
            call_kwargs: dict[str, Any] = {}
        else:
            call_kwargs = dict(kwargs)
            if stop is not None:
                call_kwargs["stop"] = stop
        return config, messages, call_kwargs, thresholds

    def _open(self, input: LanguageModelInput, config: RunnableConfig | None, stop: list[str] | None,
              kwargs: dict[str, Any]) -> _Request:
        config, messages, call_kwargs, thresholds = self._request_parts(input, config, stop, kwargs)
        manager = CallbackManager.configure(*self._callback_manager_args(config))
        rm = manager.on_chain_start(None, input, run_id=config.pop("run_id", None),
                                    name=config.get("run_name") or self.get_name())
        try:
            policy = self._policy(rm.run_id, thresholds, messages, config)
        except BaseException as exc:
            rm.on_chain_error(exc)
            raise
        return _Request(rm, config, messages, call_kwargs, policy)

    async def _aopen(self, input: LanguageModelInput, config: RunnableConfig | None, stop: list[str] | None,
                     kwargs: dict[str, Any]) -> _Request:
        config, messages, call_kwargs, thresholds = self._request_parts(input, config, stop, kwargs)
        manager = AsyncCallbackManager.configure(*self._callback_manager_args(config))
        rm = await manager.on_chain_start(None, input, run_id=config.pop("run_id", None),
                                          name=config.get("run_name") or self.get_name())
        try:
            policy = self._policy(rm.run_id, thresholds, messages, config)
        except BaseException as exc:
            await rm.on_chain_error(exc)
            raise
        return _Request(rm, config, messages, call_kwargs, policy)

    # ------------------------------------------------------------------ attempt runs

    def _attempt_parts(self, req: _Request, call: TierCall) -> tuple[list[str], dict[str, Any], str]:
        """Tags and metadata of an attempt run (inherited by the tier model's run), and its name."""
        tier = call.tier
        purpose = call.purpose
        threshold = req.policy.thresholds.get(tier.name, tier.threshold)
        inheritable_tags = [f"confidence_router:tier:{tier.name}"]
        if not call.final or purpose in ("verify", "sample"):
            inheritable_tags.append(NOSTREAM_TAG)
        metadata = {f"{META}tier": tier.name, f"{META}tier_index": tier.index, f"{META}attempt": call.attempt,
                    f"{META}final": call.final, f"{META}threshold": threshold, f"{META}method": tier.method,
                    f"{META}request_id": call.request_id}
        if purpose != "answer":
            metadata[f"{META}purpose"] = purpose
        return inheritable_tags, metadata, tier.name if purpose == "answer" else f"{tier.name} ({purpose})"

    def _attempt_manager(self, req: _Request, call: TierCall) -> tuple[Any, str]:
        tags, metadata, name = self._attempt_parts(req, call)
        # a judge call (self_verify) nests under the attempt whose answer it judges, still open
        judged = req.runs.get(call.judges) if call.judges is not None else None
        parent = judged.rm if judged is not None else req.rm
        manager = parent.get_child()
        manager.add_tags(tags, inherit=True)
        manager.add_tags(["confidence_router:attempt"], inherit=False)
        manager.add_metadata(metadata, inherit=True)
        return manager, name

    def _open_attempt(self, req: _Request, call: TierCall) -> _Attempt:
        manager, name = self._attempt_manager(req, call)
        rm = manager.on_chain_start(None, _attempt_inputs(call), run_id=uuid7(), name=name)
        return self._attempt(call, rm, req)

    async def _aopen_attempt(self, req: _Request, call: TierCall) -> _Attempt:
        manager, name = self._attempt_manager(req, call)
        rm = await manager.on_chain_start(None, _attempt_inputs(call), run_id=uuid7(), name=name)
        return self._attempt(call, rm, req)

    @staticmethod
    def _attempt(call: TierCall, rm: Any, req: _Request) -> _Attempt:
        model_run_id = uuid7()
        config = patch_config(req.config, callbacks=rm.get_child())
        config["run_id"] = model_run_id
        att = _Attempt(call, rm, config, model_run_id)
        req.runs[call.attempt] = att
        return att

    def _judged(self, req: _Request, att: _Attempt, attempt: AttemptTrace) -> dict[str, Any]:
        """Link the attempt's trace to its runs, annotate its run, and build its custom event."""
        attempt.run_id = str(att.rm.run_id)
        attempt.model_run_id = str(att.model_run_id)
        metadata = {f"{META}decision": attempt.decision, f"{META}confidence": attempt.confidence,
                    f"{META}score": attempt.score, f"{META}reason": attempt.reason,
                    f"{META}cost_usd": attempt.cost_usd, f"{META}tokens_in": attempt.tokens_in,
                    f"{META}tokens_out": attempt.tokens_out, f"{META}latency_ms": attempt.latency_ms}
        if attempt.error_kind:
            metadata[f"{META}error_kind"] = attempt.error_kind
        annotate_run(att.rm.handlers, att.rm.run_id, metadata, [f"confidence_router:decision:{attempt.decision}"])
        return {"request_id": req.policy.trace.request_id, "run_id": str(att.rm.run_id),
                "attempt": attempt.model_dump(mode="json")}

    def _settled(self, req: _Request, step: drive.Step) -> list[tuple[_Attempt, AttemptTrace, BaseException | None]]:
        """The attempt runs the policy settled with this step, innermost first (an answer waiting for its
        judge is not among them: its run stays open, and the judge's run nests under it)."""
        done = []
        for number in step.action.settled:
            att = req.runs.pop(number, None)
            attempt = req.policy.attempt_trace(number)
            if att is not None and attempt is not None:
                done.append((att, attempt, step.error if number == step.call.attempt else None))
        return done

    def _close_attempt(self, req: _Request, step: drive.Step) -> None:
        for run, attempt, exc in self._settled(req, step):
            event = self._judged(req, run, attempt)
            rm = run.rm
            assert isinstance(rm, CallbackManagerForChainRun)
            if exc is not None:
                rm.on_chain_error(exc)
            else:
                rm.on_chain_end(event["attempt"])
            if req.handlers:
                dispatch_custom_event(ATTEMPT_EVENT, event, config=_event_config(req))

    async def _aclose_attempt(self, req: _Request, step: drive.Step) -> None:
        for run, attempt, exc in self._settled(req, step):
            event = self._judged(req, run, attempt)
            rm = run.rm
            assert isinstance(rm, AsyncCallbackManagerForChainRun)
            if exc is not None:
                await rm.on_chain_error(exc)
            else:
                await rm.on_chain_end(event["attempt"])
            if req.handlers:
                await adispatch_custom_event(ATTEMPT_EVENT, event, config=_event_config(req))

    def _committed(self, req: _Request, call: TierCall) -> bool:
        """Whether the final tier's tokens reach a streaming callback while it is invoked."""
        return call.final and _streams(call) and not self._structured and req.streaming_handler is not None

    # ------------------------------------------------------------------ what one call sends

    def _plan(self, req: _Request, call: TierCall) -> tuple[Any, list[BaseMessage], int]:
        """The model, messages and number of samples for one call the policy asked for."""
        purpose = call.purpose
        tier = self._tiers[call.tier.name]
        temperature, max_tokens = call.temperature, call.max_tokens
        if purpose == "verify":  # a judge answers yes/no in plain text: no tools, no schema
            model = self._variant(call.tier.name, temperature, max_tokens, bound=False) \
                if temperature is not None or max_tokens is not None else tier.plain
            return model, [*req.messages, HumanMessage(call.instruction or "")], 1
        if purpose == "sample":
            n = max(call.samples, 1)
            model = self._variant(call.tier.name, temperature, max_tokens, bound=True) \
                if temperature is not None or max_tokens is not None else tier.quiet
            return model, req.messages, n
        model = tier.live if call.final else tier.quiet
        return model, _messages_for(req, call), 1

    def _variant(self, name: str, temperature: float | None, max_tokens: int | None, *, bound: bool) -> Any:
        """A tier copy with per-call sampling settings as fields (kwargs do not reach every provider)."""
        key = (name, temperature, max_tokens, bound)
        model = self._variants.get(key)
        if model is None:
            overrides = {"temperature": self.temperature if temperature is None else temperature,
                         "max_tokens": self.max_tokens if max_tokens is None else max_tokens,
                         "stop": self.stop, "output_version": self.output_version}
            model = prepare_variant(self.models[name], name, top_logprobs=self.config.confidence.top_logprobs,
                                    overrides=overrides, bindings=self.bindings if bound else [])
            self._variants[key] = model
        return model

    def _kwargs_for(self, req: _Request, call: TierCall, model: Any) -> dict[str, Any]:
        kwargs = req.call_kwargs if call.purpose != "verify" else {}
        timeout = self._timeout(call)
        if timeout is not None and "timeout" not in kwargs and takes_request_timeout(model):
            return {**kwargs, "timeout": timeout}
        return kwargs

    def _timeout(self, call: TierCall) -> float | None:
        return self.timeout if self.timeout is not None else call.timeout_s

    def _live(self, call: TierCall) -> bool:
        """Whether a streamed request streams this call to the caller as it is written."""
        return call.final and _streams(call) and not self._structured

    # ------------------------------------------------------------------ request end

    def _answer(self, req: _Request, finish: Finish) -> AIMessage:
        if req.ttft_ms is not None:  # request-relative: what the caller waited for its first token
            finish.trace.ttft_ms = req.ttft_ms
        trace = finish.trace.model_dump(mode="json")
        if finish.result is None:  # handed to a person before any model answered
            reply = self.config.human.handoff_reply if self.config.human is not None else ""
            message = AIMessage(content=reply, response_metadata={TRACE_KEY: trace})
        else:
            message = answer_message(finish.result, trace)
        req.output = message
        if finish.trace.route != "automated" and self.on_handoff is not None:
            try:  # the answer must still reach the caller if the hand-off hook fails
                self.on_handoff(finish.trace, message)
            except Exception:
                logger.exception("on_handoff failed for request %s", finish.trace.request_id)
        return message

    def _request_annotation(self, req: _Request) -> dict[str, Any]:
        trace = req.policy.trace
        return {f"{META}outcome": trace.outcome, f"{META}final_model": trace.final_model,
                f"{META}confidence": trace.confidence, f"{META}attempts": len(trace.attempts),
                f"{META}total_cost_usd": trace.total_cost_usd, f"{META}request_id": trace.request_id}

    def _close(self, req: _Request, error: BaseException | None) -> None:
        rm = req.rm
        assert isinstance(rm, CallbackManagerForChainRun)
        annotate_run(rm.handlers, rm.run_id, self._request_annotation(req))
        if req.handlers and (error is None or isinstance(error, CascadeError)):
            dispatch_custom_event(TRACE_EVENT, req.policy.trace.model_dump(mode="json"), config=_event_config(req))
        if error is not None:
            rm.on_chain_error(error)
        else:
            rm.on_chain_end(req.output)

    async def _aclose(self, req: _Request, error: BaseException | None) -> None:
        rm = req.rm
        assert isinstance(rm, AsyncCallbackManagerForChainRun)
        annotate_run(rm.handlers, rm.run_id, self._request_annotation(req))
        if req.handlers and (error is None or isinstance(error, CascadeError)):
            await adispatch_custom_event(TRACE_EVENT, req.policy.trace.model_dump(mode="json"),
                                         config=_event_config(req))
        if error is not None:
            await rm.on_chain_error(error)
        else:
            await rm.on_chain_end(req.output)

    # ------------------------------------------------------------------ invoke

    def invoke(
        self,
        input: LanguageModelInput,
        config: RunnableConfig | None = None,
        *,
        stop: list[str] | None = None,
        **kwargs: Any,
    ) -> AIMessage:
        req = self._open(input, config, stop, kwargs)
        try:
            action = drive.run(req.policy, _Attempts(self, req))
            if isinstance(action, Fail):
                raise action.error
            message = self._answer(req, action)
        except BaseException as exc:
            self._close(req, exc)
            raise
        self._close(req, None)
        return message

    async def ainvoke(
        self,
        input: LanguageModelInput,
        config: RunnableConfig | None = None,
        *,
        stop: list[str] | None = None,
        **kwargs: Any,
    ) -> AIMessage:
        req = await self._aopen(input, config, stop, kwargs)
        try:
            action = await drive.arun(req.policy, _AsyncAttempts(self, req))
            if isinstance(action, Fail):
                raise action.error
            message = self._answer(req, action)
        except BaseException as exc:
            await self._aclose(req, exc)
            raise
        await self._aclose(req, None)
        return message

    # ------------------------------------------------------------------ stream

    def stream(
        self,
        input: LanguageModelInput,
        config: RunnableConfig | None = None,
        *,
        stop: list[str] | None = None,
        **kwargs: Any,
    ) -> Iterator[AIMessageChunk]:
        req = self._open(input, config, stop, kwargs)
        chunks: Iterator[AIMessageChunk] = self._stream_body(req)
        if (handler := req.streaming_handler) is not None:
            chunks = handler.tap_output_iter(req.rm.run_id, chunks)
        try:
            yield from chunks
        except BaseException as exc:
            self._close(req, exc)
            raise
        self._close(req, None)

    def _stream_body(self, req: _Request) -> Iterator[AIMessageChunk]:
        io = _Attempts(self, req, streaming=True)
        action = yield from drive.drive(req.policy, io)
        yield self._final_chunk(req, action, io.live_stream)

    async def astream(
        self,
        input: LanguageModelInput,
        config: RunnableConfig | None = None,
        *,
        stop: list[str] | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[AIMessageChunk]:
        req = await self._aopen(input, config, stop, kwargs)
        chunks: AsyncIterator[AIMessageChunk] = self._astream_body(req)
        if (handler := req.streaming_handler) is not None:
            chunks = handler.tap_output_aiter(req.rm.run_id, chunks)
        try:
            async for chunk in chunks:
                yield chunk
        except BaseException as exc:
            await self._aclose(req, exc)
            raise
        await self._aclose(req, None)

    async def _astream_body(self, req: _Request) -> AsyncIterator[AIMessageChunk]:
        io = _AsyncAttempts(self, req, streaming=True)
        ending = drive.Ending()
        async for chunk in drive.adrive(req.policy, io, ending):
            yield chunk
        yield self._final_chunk(req, ending.final(), io.live_stream)

    def _final_chunk(self, req: _Request, action: Finish | Fail, live: _LiveStream | None) -> AIMessageChunk:
        """The closing chunk: trace on the live tier's last chunk, or the whole chosen answer as one chunk."""
        if isinstance(action, Fail):
            raise action.error
        if live is not None and live.visible:
            # the policy never chooses another answer once one reached the caller (it fails the request)
            assert action.result is live.streamed_result, "a streamed answer was replaced"
            message = self._answer(req, action)
            return closing_chunk(live.held, message.response_metadata[TRACE_KEY], live.list_content)
        if req.ttft_ms is None:
            req.ttft_ms = _ms(req.t0)
        return message_to_chunk(self._answer(req, action))

    # ------------------------------------------------------------------ stream_events(version="v3")

    def _chat_model_stream_v3(
        self,
        input: LanguageModelInput,
        config: RunnableConfig | None = None,
        *,
        stop: list[str] | None = None,
        **kwargs: Any,
    ) -> ChatModelStream:
        """Protocol events from the router's own stream, so the request stays one chain run."""
        return protocol_stream(lambda: self.stream(input, config, stop=stop, **kwargs))

    async def _achat_model_stream_v3(
        self,
        input: LanguageModelInput,
        config: RunnableConfig | None = None,
        *,
        stop: list[str] | None = None,
        **kwargs: Any,
    ) -> AsyncChatModelStream:
        return async_protocol_stream(lambda: self.astream(input, config, stop=stop, **kwargs))

    # ------------------------------------------------------------------ legacy generate()

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        """Only reached through the legacy ``generate()`` API; invoke/stream never come here.

        The request's chain run nests under generate()'s own LLM run, so LangSmith sees the answer's
        usage twice on this path; use invoke/batch/stream to have it reported once.
        """
        message = self.invoke(messages, _child_config(run_manager), stop=stop, **kwargs)
        return ChatResult(generations=[ChatGeneration(message=message)])

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        message = await self.ainvoke(messages, _child_config(run_manager), stop=stop, **kwargs)
        return ChatResult(generations=[ChatGeneration(message=message)])


class _LiveStream:
    """The final tier streaming live: passes chunks on, holds the tier's last chunk for the trace."""

    def __init__(self, router: ConfidenceRouter, req: _Request, call: TierCall) -> None:
        self.router = router
        self.req = req
        self.call = call
        self.acc = StreamAccumulator()
        self.chunks: list[AIMessageChunk] = []
        self.held: AIMessageChunk | None = None
        self.visible = False
        self.list_content = False
        self.streamed_result: Any = None

    def _request(self) -> tuple[Any, list[BaseMessage], RunnableConfig, dict[str, Any]]:
        att = self.req.runs[self.call.attempt]
        model, messages, _n = self.router._plan(self.req, self.call)
        return model, messages, att.config, self.router._kwargs_for(self.req, self.call, model)

    def add(self, chunk: AIMessageChunk) -> AIMessageChunk | None:
        """Record a chunk; return it if it should go to the caller now."""
        usage = chunk.usage_metadata or {}
        self.acc.add(chunk.text or None, chunk_logprobs(chunk), tokens_in=usage.get("input_tokens"),
                     tokens_out=usage.get("output_tokens"),
                     tool_call=chunk.tool_call_chunks[0] if chunk.tool_call_chunks else None)
        self.chunks.append(chunk)
        self.list_content = isinstance(chunk.content, list)
        if chunk.chunk_position == "last":
            self.held = chunk
            return None
        if not self.visible and (chunk.text or chunk.tool_call_chunks):
            self.visible = True
            if self.req.ttft_ms is None:
                self.req.ttft_ms = _ms(self.req.t0)
        return chunk

    def result(self) -> Any:
        merged = merge_chunks(self.chunks) if self.chunks else AIMessageChunk(content="")
        result = self.acc.result(raw=merged)
        result.tool_calls = list(merged.tool_calls) or None
        if self.acc.tokens_in is None and merged.usage_metadata:
            result.tokens_in = merged.usage_metadata.get("input_tokens")
            result.tokens_out = merged.usage_metadata.get("output_tokens")
        self.streamed_result = result
        return result


class _SyncLive(_LiveStream):
    def open(self) -> Iterator[AIMessageChunk]:
        model, messages, config, kwargs = self._request()
        return model.stream(messages, config, **kwargs)


class _AsyncLive(_LiveStream):
    async def open(self) -> AsyncIterator[AIMessageChunk]:
        model, messages, config, kwargs = self._request()
        return model.astream(messages, config, **kwargs)


class _Gated:
    """A gated tier (``early_abort``) streamed internally: its logprobs feed the abort rule, its tokens reach
    neither the caller nor a streaming callback (the tier's run sees every event but its tokens)."""

    def __init__(self, router: ConfidenceRouter, req: _Request, call: TierCall, callbacks: Any) -> None:
        self.router = router
        self.req = req
        self.call = call
        self.callbacks = callbacks
        self.acc = StreamAccumulator()
        self.chunks: list[AIMessageChunk] = []
        self.tool_call = False
        self.messages: list[BaseMessage] | None = None  # as sent, to estimate the prompt's tokens

    @classmethod
    def make(cls, router: ConfidenceRouter, req: _Request, call: TierCall) -> Any:
        """The hidden stream, or None to call the tier whole (structured output parses whole answers only;
        a callback handler that cannot be silenced must not see the tokens)."""
        if router._structured:
            return None
        callbacks = without_token_events(req.runs[call.attempt].config.get("callbacks"))
        return None if callbacks is None else cls(router, req, call, callbacks)

    def _request(self) -> tuple[Any, list[BaseMessage], RunnableConfig, dict[str, Any]]:
        model = self.router._tiers[self.call.tier.name].live  # the quiet copy never streams
        config = patch_config(self.req.runs[self.call.attempt].config, callbacks=self.callbacks)
        config["run_id"] = self.req.runs[self.call.attempt].model_run_id
        self.messages = _messages_for(self.req, self.call)
        return model, self.messages, config, self.router._kwargs_for(self.req, self.call, model)

    def add(self, chunk: AIMessageChunk) -> list[Any] | None:
        if not isinstance(chunk, AIMessageChunk):  # a model that cannot stream answers whole through stream()
            chunk = message_to_chunk(chunk)
        usage = chunk.usage_metadata or {}
        entries = chunk_logprobs(chunk)
        tool = chunk.tool_call_chunks[0] if chunk.tool_call_chunks else None
        self.acc.add(chunk.text or None, entries, tokens_in=usage.get("input_tokens"),
                     tokens_out=usage.get("output_tokens"), tool_call=tool)
        self.tool_call = self.tool_call or tool is not None
        self.chunks.append(chunk)
        return entries

    def result(self) -> TierResult:
        merged = merge_chunks(self.chunks) if self.chunks else AIMessageChunk(content="")
        result = self.acc.result(raw=merged)
        result.streamed = False  # hidden: nothing of it reached the caller
        result.ttft_ms = None  # nor did a first token
        result.tool_calls = list(merged.tool_calls) or None
        if result.tokens_in is None and self.messages is not None:  # a cut stream reports no usage
            name = self.call.tier.name
            result.tokens_in = estimate_prompt_tokens(self.router._tiers[name].plain, self.messages, name,
                                                      self.router._uncounted)
            result.tokens_in_estimated = True
        return result


class _SyncGated(_Gated):
    def open(self) -> Iterator[AIMessageChunk]:
        model, messages, config, kwargs = self._request()
        return model.stream(messages, config, **kwargs)


class _AsyncGated(_Gated):
    async def open(self) -> AsyncIterator[AIMessageChunk]:
        model, messages, config, kwargs = self._request()
        return model.astream(messages, config, **kwargs)


class _RequestIO:
    """What the sync and async I/O of one request share: the router, the request, its live stream."""

    def __init__(self, router: ConfidenceRouter, req: _Request, *, streaming: bool = False) -> None:
        self.router = router
        self.req = req
        self.streaming = streaming
        self.live_stream: _LiveStream | None = None

    def committed(self, call: TierCall) -> bool:
        return self.router._committed(self.req, call)


class _Attempts(_RequestIO, drive.AttemptIO):
    """The router's blocking I/O for one request: one chain run per attempt around the tier model's call."""

    def begin(self, call: TierCall) -> None:
        self.router._open_attempt(self.req, call)

    def call(self, call: TierCall) -> TierResult:
        router, req = self.router, self.req
        model, messages, n = router._plan(req, call)
        kwargs = router._kwargs_for(req, call, model)
        config = req.runs[call.attempt].config
        if n == 1:
            return tier_result(model.invoke(messages, config, **kwargs))
        outputs: list[Any] = []
        for _ in range(n):
            try:
                outputs.append(model.invoke(messages, _sibling(config), **kwargs))
            except Exception as exc:
                outputs.append(exc)
        return combine_samples(outputs)

    def live(self, call: TierCall) -> _SyncLive | None:
        if not (self.streaming and self.router._live(call)):
            return None
        self.live_stream = _SyncLive(self.router, self.req, call)
        return self.live_stream

    def gated(self, call: TierCall) -> _SyncGated | None:
        return _SyncGated.make(self.router, self.req, call)

    def end(self, step: drive.Step) -> None:
        self.router._close_attempt(self.req, step)


class _AsyncAttempts(_RequestIO, drive.AsyncAttemptIO):
    """The router's async I/O for one request (see :class:`_Attempts`)."""

    async def begin(self, call: TierCall) -> None:
        await self.router._aopen_attempt(self.req, call)

    async def call(self, call: TierCall) -> TierResult:
        router, req = self.router, self.req
        model, messages, n = router._plan(req, call)
        kwargs = router._kwargs_for(req, call, model)
        config = req.runs[call.attempt].config
        if n == 1:
            return tier_result(await model.ainvoke(messages, config, **kwargs))
        outputs = await asyncio.gather(*(model.ainvoke(messages, _sibling(config), **kwargs) for _ in range(n)),
                                       return_exceptions=True)
        return combine_samples(list(outputs))

    def timeout(self, call: TierCall) -> float | None:
        return self.router._timeout(call)

    def live(self, call: TierCall) -> _AsyncLive | None:
        if not (self.streaming and self.router._live(call)):
            return None
        self.live_stream = _AsyncLive(self.router, self.req, call)
        return self.live_stream

    def gated(self, call: TierCall) -> _AsyncGated | None:
        return _AsyncGated.make(self.router, self.req, call)

    async def end(self, step: drive.Step) -> None:
        await self.router._aclose_attempt(self.req, step)


# ---------------------------------------------------------------------- helpers


def _streams(call: TierCall) -> bool:
    """Calls whose answer goes to the caller as it is written (not judges, not sample votes)."""
    return call.purpose in ("answer", "clarify")


def _sibling(config: RunnableConfig) -> RunnableConfig:
    """The attempt's config without its pre-assigned run id, for the second and later samples."""
    return {k: v for k, v in config.items() if k != "run_id"}  # type: ignore[return-value]


def _attempt_inputs(call: TierCall) -> dict[str, Any]:
    return {"tier": call.tier.name, "attempt": call.attempt, "final": call.final, "purpose": call.purpose}


def _child_config(run_manager: CallbackManagerForLLMRun | AsyncCallbackManagerForLLMRun | None) -> RunnableConfig:
    """Callbacks for runs nested under an LLM run (LLM run managers have no ``get_child``)."""
    if run_manager is None:
        return {}
    manager = CallbackManager(
        handlers=run_manager.inheritable_handlers, inheritable_handlers=run_manager.inheritable_handlers,
        parent_run_id=run_manager.run_id, tags=run_manager.inheritable_tags,
        inheritable_tags=run_manager.inheritable_tags, metadata=run_manager.inheritable_metadata,
        inheritable_metadata=run_manager.inheritable_metadata,
    )
    return {"callbacks": manager}


def _messages_for(req: _Request, call: TierCall) -> list[BaseMessage]:
    """The request's messages; for a clarify call, with the policy's instruction as the system prompt."""
    if call.purpose != "clarify" or not call.instruction:
        return req.messages
    messages = list(req.messages)
    if messages and isinstance(messages[0], SystemMessage):  # one leading system message suits every provider
        messages[0] = SystemMessage(f"{messages[0].text}\n\n{call.instruction}")
    else:
        messages.insert(0, SystemMessage(call.instruction))
    return messages


def _last_user_text(messages: list[BaseMessage]) -> str:
    return next((m.text for m in reversed(messages) if m.type == "human"), "")


def _event_config(req: _Request) -> RunnableConfig:
    return patch_config(req.config, callbacks=req.rm.get_child())


def _checked_thresholds(value: Any) -> Any:
    """A threshold override (one number, or numbers by tier name); an :class:`OverrideError` names a bad one."""
    if value is None:
        return value
    if not isinstance(value, int | float | Mapping) or isinstance(value, bool):
        raise OverrideError("thresholds", f"expected a number or a mapping of tier name to number, got "
                            f"{type(value).__name__}")
    items = [("thresholds", value)] if not isinstance(value, Mapping) else [
        (f"thresholds.{name}", v) for name, v in value.items()]
    for name, v in items:
        if not isinstance(v, int | float) or isinstance(v, bool) or not 0.0 <= v <= 1.0:
            raise OverrideError(name, f"thresholds must be within 0..1 (got {v!r})")
    return value


def _normalised(data: dict[str, Any]) -> dict[str, Any]:
    """Constructor arguments with the config parsed and a list of models named."""
    data = dict(data)
    _checked_thresholds(data.get("thresholds"))  # an OverrideError, not a pydantic one (configurable_fields too)
    config = data.get("config")
    if isinstance(config, str | Path):
        data["config"] = load_config(config)
    elif config is None:
        data.pop("config", None)
    elif not isinstance(config, RouterConfig):
        data["config"] = parse_config(config)
    models = data.get("models")
    if models is not None and not isinstance(models, Mapping):
        declared = [spec.name for spec in data["config"].models] if "config" in data else []
        data["models"] = dict(zip(_tier_names(list(models), declared), models, strict=True))
    return data


def _tier_names(models: list[Any], declared: list[str]) -> list[str]:
    """Names for a list of tier models: the config's model names if they line up, else each model's name."""
    if declared and len(declared) == len(models):
        return declared
    names: list[str] = []
    for i, model in enumerate(models):
        inner = getattr(model, "bound", model)
        base = str(getattr(inner, "model_name", None) or getattr(inner, "model", None) or f"tier{i}")
        name, n = base, 2
        while name in names:
            name, n = f"{base}#{n}", n + 1
        names.append(name)
    return names


def _parsed_only(message: AIMessage) -> Any:
    return message.additional_kwargs.get("parsed")


def _with_raw(message: AIMessage) -> dict[str, Any]:
    return {"raw": message, "parsed": message.additional_kwargs.get("parsed"), "parsing_error": None}


__all__ = ["META", "NOSTREAM_TAG", "ConfidenceRouter"]

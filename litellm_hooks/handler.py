"""The ``confidence`` custom provider: a deployment ``confidence/<name>`` runs a confidence cascade.

LiteLLM's only extension point that may make several sequential calls and return one answer is a
custom provider, so the cascade lives here. It decides nothing itself: the core
:class:`~langchain_confidence_router.core.CascadePolicy` does, through the core drivers; this module
only turns LiteLLM's call into tier calls on model groups of the same Router and the final answer
back into a LiteLLM response.

For the proxy, point ``litellm_settings.custom_provider_map`` at the module-level instance::

    custom_provider_map:
      - {provider: confidence, custom_handler: litellm_hooks.handler.confidence_handler}
"""

from __future__ import annotations

import contextlib
import contextvars
import copy
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import litellm
from litellm import CustomLLM
from litellm.types.utils import Choices, Message, ModelResponse, Usage

from langchain_confidence_router.core import (
    CascadeError,
    ConfigError,
    Fail,
    Finish,
    RequestTrace,
    drive,
)

from . import output, registry, shutdown, trust
from .calls import (
    CONTROL_PARAMS,
    LOGPROB_PARAMS,
    PASS_THROUGH_KWARGS,
    RequestContext,
    new_response_id,
)
from .options import DEFAULT_OPTIONS, CascadeOptions
from .streaming import Action, AsyncCalls, StreamSession, SyncCalls, astream, stream

#: Nested cascades (a tier that is itself a cascade) are allowed this deep; deeper is a loop.
MAX_DEPTH = 4
_depth: contextvars.ContextVar[int] = contextvars.ContextVar("confidence_cascade_depth", default=0)


class LowConfidenceError(litellm.UnprocessableEntityError):
    """Guardrail mode: no tier was confident. A 422, so the Router's ``fallbacks`` for the group take over
    (a 422 neither cools the deployment down nor is it retried); ``confidence_trace`` holds the attempts."""

    def __init__(self, message: str, model: str, trace: RequestTrace, num_retries: int = 0) -> None:
        super().__init__(message=message, model=model, llm_provider=output.PROVIDER, num_retries=num_retries,
                         response=output.synthetic_response(422))
        self.confidence_trace = trace
        output.not_the_deployments_fault(self)


class ConfidenceLLM(CustomLLM):
    """A LiteLLM custom provider that answers with the cheapest confident tier."""

    def __init__(self, options: CascadeOptions | None = None) -> None:
        super().__init__()
        self.default_options = options or DEFAULT_OPTIONS

    # ------------------------------------------------------------------ LiteLLM entry points

    def completion(self, model: str, messages: list, api_base: str, custom_prompt_dict: dict,
                   model_response: ModelResponse, print_verbose: Callable, encoding: Any, api_key: Any,
                   logging_obj: Any, optional_params: dict, acompletion: Any = None, litellm_params: Any = None,
                   logger_fn: Any = None, headers: Any = None, timeout: Any = None, client: Any = None
                   ) -> ModelResponse:
        ctx = self._context(model, messages, optional_params, litellm_params, logging_obj)
        with self._running(ctx):
            finish = drive.finished(drive.run(ctx.policy(), SyncCalls(ctx)))
        return self._respond(ctx, model_response, finish)

    async def acompletion(self, model: str, messages: list, api_base: str, custom_prompt_dict: dict,
                          model_response: ModelResponse, print_verbose: Callable, encoding: Any, api_key: Any,
                          logging_obj: Any, optional_params: dict, acompletion: Any = None,
                          litellm_params: Any = None, logger_fn: Any = None, headers: Any = None,
                          timeout: Any = None, client: Any = None) -> ModelResponse:
        ctx = self._context(model, messages, optional_params, litellm_params, logging_obj)
        with self._running(ctx):
            finish = drive.finished(await drive.arun(ctx.policy(), AsyncCalls(ctx)))
        return self._respond(ctx, model_response, finish)

    def streaming(self, model: str, messages: list, api_base: str, custom_prompt_dict: dict,
                  model_response: ModelResponse, print_verbose: Callable, encoding: Any, api_key: Any,
                  logging_obj: Any, optional_params: dict, acompletion: Any = None, litellm_params: Any = None,
                  logger_fn: Any = None, headers: Any = None, timeout: Any = None, client: Any = None
                  ) -> Iterator[Any]:
        ctx = self._context(model, messages, optional_params, litellm_params, logging_obj)
        session = self._session(ctx, logging_obj)
        with self._running(ctx, session):
            yield from stream(session)

    async def astreaming(self, model: str, messages: list, api_base: str, custom_prompt_dict: dict,
                         model_response: ModelResponse, print_verbose: Callable, encoding: Any, api_key: Any,
                         logging_obj: Any, optional_params: dict, acompletion: Any = None,
                         litellm_params: Any = None, logger_fn: Any = None, headers: Any = None,
                         timeout: Any = None, client: Any = None) -> AsyncIterator[Any]:
        ctx = self._context(model, messages, optional_params, litellm_params, logging_obj)
        session = self._session(ctx, logging_obj)
        with self._running(ctx, session):
            async for chunk in astream(session):
                yield chunk

    # ------------------------------------------------------------------ internals

    @contextlib.contextmanager
    def _running(self, ctx: RequestContext, session: StreamSession | None = None) -> Iterator[None]:
        """One cascade request: counts the nesting depth, and turns a failure into LiteLLM's error with the
        trace recorded (a stream's other errors keep their type; their trace is recorded too)."""
        depth = _depth.get()
        if depth >= MAX_DEPTH:
            raise output.to_litellm_error(
                ConfigError(f"cascades nested more than {MAX_DEPTH} deep: a tier probably calls its own cascade",
                            source=registry.BLOCK_SOURCE), ctx.group, 500, 0)
        token = _depth.set(depth + 1)
        try:
            yield
        except CascadeError as exc:
            raise self._failed(ctx, exc) from None
        except Exception:
            if session is not None:
                output.record_trace(ctx.metadata, session.policy.trace, ctx.options)
            raise
        finally:
            with contextlib.suppress(ValueError):  # a stream may end in another context than it began in
                _depth.reset(token)

    def _context(self, model: str, messages: list, optional_params: dict, litellm_params: Any,
                 logging_obj: Any = None) -> RequestContext:
        """Resolve the cascade (cached per configuration) and the Router; copy nothing per tier yet."""
        litellm_params = litellm_params or {}
        metadata = litellm_params.get("metadata")
        md = metadata if isinstance(metadata, dict) else {}
        model_info = md.get("model_info") or litellm_params.get("model_info") or {}
        deployment_id = model_info.get("id") if isinstance(model_info, dict) else None
        group = md.get("model_group")
        details = getattr(logging_obj, "model_call_details", None)
        user = optional_params.get("user") or (details.get("user") if isinstance(details, dict) else None)
        try:
            router = registry.find_router(deployment_id)
            # a proxy client's request: cascade and options from the deployment only (see trust.py)
            trusted = trust.settings(model, messages, optional_params, litellm_params, router, deployment_id,
                                     self.default_options, user)
            options = trusted.options
            cascade, key = registry.resolve_cascade(trusted.block)
            registry.check_tiers(cascade, key, router, group)
        except ConfigError as exc:
            raise output.to_litellm_error(exc, model, 500, 0) from None
        deployment = registry.deployment_of(router, deployment_id)
        configured_retries = (deployment or {}).get("litellm_params", {}).get("num_retries")
        top = optional_params.get("top_logprobs")
        params = {k: v for k, v in optional_params.items() if k not in CONTROL_PARAMS and k not in LOGPROB_PARAMS}
        if user and "user" not in params:  # LiteLLM keeps `user` out of a custom provider's optional_params
            params["user"] = user
        return RequestContext(
            router=router,
            cascade=cascade,
            cascade_key=key,
            options=options,
            group=group or model,
            messages=messages,
            params=params,
            metadata=metadata if isinstance(metadata, dict) else None,
            caller_logprobs=bool(optional_params.get("logprobs")),
            caller_top_logprobs=int(top) if isinstance(top, int | float) else None,
            deployment_id=deployment_id,
            num_retries=int(configured_retries) if configured_retries is not None else 0,
            pass_through={k: litellm_params[k] for k in PASS_THROUGH_KWARGS if litellm_params.get(k)},
            internal_tiers=options.mode == "cascade",
            conversation=trusted.conversation,
            user=trusted.user,
        )

    def _billed(self, ctx: RequestContext, total: float) -> float:
        """What the outer response bills: the sum of attempts, or nothing when tiers bill themselves."""
        return total if ctx.internal_tiers else 0.0

    def _respond(self, ctx: RequestContext, model_response: ModelResponse, finish: Finish) -> ModelResponse:
        trace = finish.trace
        dumped = output.record_trace(ctx.metadata, trace, ctx.options)
        if ctx.options.mode == "guardrail" and trace.outcome == "fallback":
            raise _low_confidence(ctx, finish)
        model_response.id = new_response_id()
        raw = finish.result.raw if finish.result is not None else None
        if raw is None:  # handed to a person before any model answered (or a result without a response)
            text = finish.result.text if finish.result is not None else ctx.handoff_reply()
            model_response.choices = [Choices(index=0, finish_reason="stop",
                                              message=Message(role="assistant", content=text))]
            model_response.model = ctx.group
        else:
            model_response.created = getattr(raw, "created", None) or model_response.created
            model_response.model = getattr(raw, "model", None) or ctx.group
            model_response.choices = list(raw.choices)
        if not ctx.caller_logprobs:
            # shallow copies: the tier's own response (still to be logged by LiteLLM) keeps its logprobs
            model_response.choices = [copy.copy(choice) for choice in model_response.choices]
            for choice in model_response.choices:
                choice.logprobs = None
        fingerprint = getattr(raw, "system_fingerprint", None)
        if fingerprint is not None:
            model_response.system_fingerprint = fingerprint
        model_response.usage = Usage(prompt_tokens=trace.tokens_in, completion_tokens=trace.tokens_out,
                                     total_tokens=trace.tokens_in + trace.tokens_out)
        output.attach(model_response, trace, dumped, ctx.options, self._billed(ctx, trace.total_cost_usd))
        return model_response

    def _session(self, ctx: RequestContext, logging_obj: Any) -> StreamSession:
        def settle(action: Action) -> None:
            if isinstance(action, Fail):
                raise action.error
            assert isinstance(action, Finish)
            trace = action.trace
            session.trace_dump = output.record_trace(ctx.metadata, trace, ctx.options)
            if ctx.options.mode == "guardrail" and trace.outcome == "fallback":
                raise _before_first_chunk(_low_confidence(ctx, action))
            details = getattr(logging_obj, "model_call_details", None)
            if isinstance(details, dict):
                details["additional_response_cost"] = self._billed(ctx, trace.total_cost_usd)

        session = StreamSession(ctx, ctx.policy(), settle=settle)
        return session

    def _failed(self, ctx: RequestContext, error: CascadeError) -> Exception:
        output.record_trace(ctx.metadata, error.trace, ctx.options)
        return output.to_litellm_error(error, ctx.group, output.error_status(error), ctx.num_retries)


def _before_first_chunk(error: LowConfidenceError) -> Exception:
    """A stream's low-confidence error in the form the Router's streaming fallbacks act on.

    LiteLLM raises 4xx errors from inside a stream as they are (no fallback); a
    ``MidStreamFallbackError`` marked ``is_pre_first_chunk`` makes the Router fall back cleanly
    (nothing was sent), and without fallbacks it re-raises the original ``LowConfidenceError``.
    """
    fallback = litellm.MidStreamFallbackError(message=str(error), model=error.model,
                                              llm_provider=output.PROVIDER, original_exception=error,
                                              num_retries=error.num_retries, is_pre_first_chunk=True)
    output.not_the_deployments_fault(fallback)
    return fallback


def _low_confidence(ctx: RequestContext, finish: Finish) -> LowConfidenceError:
    trace = finish.trace
    return LowConfidenceError(
        f"no confident answer from {', '.join(a.model for a in trace.attempts)}: falling back",
        ctx.group, trace, ctx.num_retries)


#: The instance the proxy's ``custom_provider_map`` names and :func:`litellm_hooks.register` installs.
confidence_handler = ConfidenceLLM()
shutdown.install()  # in the LiteLLM proxy, its shutdown writes the recording queue (atexit does not run there)

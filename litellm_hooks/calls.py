"""One cascade request as LiteLLM hands it to the handler, and the tier calls made from it.

The Router mutates ``metadata`` in place and injects its own ``stream``/``max_retries``/
``stream_options``, so every tier call gets freshly copied kwargs with those removed. Tier calls do
not carry the caller's key identity (``user_api_key*``) and are stamped ``internal_call_origin``, so
the proxy bills the caller once: on the outer response, for the sum of the attempts.
"""

from __future__ import annotations

import asyncio
import copy
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from langchain_confidence_router.core import Cascade, CascadePolicy, TierCall, TierResult
from langchain_confidence_router.core.tiers import Tier

from .options import CascadeOptions

if TYPE_CHECKING:
    from litellm import Router

#: Parameters the Router or LiteLLM inject into the cascade call that must not reach a tier.
CONTROL_PARAMS = frozenset({"stream", "stream_options", "max_retries", "cascade", "cascade_options"})
#: Parameters the cascade sets itself on every tier call.
LOGPROB_PARAMS = frozenset({"logprobs", "top_logprobs"})
#: Caller parameters a judge call (self_verify) does without: it answers yes or no in plain text.
NOT_FOR_JUDGES = frozenset({"tools", "tool_choice", "parallel_tool_calls", "functions", "function_call",
                            "response_format", "n"})
#: Metadata the Router and the proxy add per call; a tier call gets its own.
PER_CALL_METADATA = frozenset({
    "model_group", "model_group_alias", "original_model_group", "model_group_size", "deployment",
    "deployment_model_name", "model_info", "api_base", "attempted_retries", "attempted_fallbacks", "max_retries",
    "caching_groups", "_routing_request_tags", "previous_models", "litellm_api_version", "headers", "endpoint",
    "requester_ip_address", "user_agent", "global_max_parallel_requests", "hidden_params", "standard_logging_object",
    "internal_call_origin", "confidence_router", "requester_custom_headers",
})
#: Caller identity: never forwarded, so tier calls are not billed to the caller's key a second time.
IDENTITY_PREFIXES = ("user_api_key", "user_api_end_user")
#: The caller's budget reservation belongs to the outer call: a tier that saw it would settle it.
RESERVATION = "budget_reservation"
#: Live objects passed by reference (copying an OpenTelemetry span would detach the tier from it).
BY_REFERENCE = frozenset({"litellm_parent_otel_span"})
#: The ``internal_call_origin`` stamp on tier calls; spend rollups count such rows as internal.
INTERNAL_ORIGIN = "confidence_cascade"
#: Parameters whose value is passed through to tiers, copied from what LiteLLM gave the handler.
PASS_THROUGH_KWARGS = ("litellm_trace_id", "litellm_session_id")


@dataclass
class RequestContext:
    """Everything one cascade request needs, built once from what LiteLLM handed the handler."""

    router: Router
    cascade: Cascade
    cascade_key: str
    options: CascadeOptions
    group: str
    messages: list[Any]
    params: dict[str, Any]
    metadata: dict[str, Any] | None
    caller_logprobs: bool = False
    caller_top_logprobs: int | None = None
    deployment_id: str | None = None
    num_retries: int = 0
    pass_through: dict[str, Any] = field(default_factory=dict)
    internal_tiers: bool = True
    conversation: str | None = None
    user: str | None = None

    def policy(self) -> CascadePolicy:
        human: dict[str, Any] = {}
        if self.cascade.config.human is not None:  # triggers read the request; clarify/A-B keyed per conversation
            human = {"request_text": last_user_text(self.messages), "conversation": self.conversation,
                     "user": self.user}
        return self.cascade.policy(metadata={"model_group": self.group, "mode": self.options.mode,
                                             "cascade_key": self.cascade_key}, **human)

    def handoff_reply(self) -> str:
        """The reply sent when a person takes the request before any model answers."""
        human = self.cascade.config.human
        return getattr(human, "handoff_reply", "") if human is not None else ""

    # ------------------------------------------------------------------ tier kwargs

    def tier_kwargs(self, call: TierCall, *, stream: bool) -> dict[str, Any]:
        """Fresh kwargs for one tier call: nothing shared with the caller's or another tier's call."""
        purpose = call.purpose
        params = self.params
        if purpose == "verify":  # a judge answers yes or no in plain text: no tools, no schema
            params = {k: v for k, v in params.items() if k not in NOT_FOR_JUDGES}
        elif purpose == "sample":  # the samples are separate calls (`n` is not honoured everywhere)
            params = {k: v for k, v in params.items() if k != "n"}
        kwargs = plain_copy(params)
        kwargs["model"] = call.tier.name
        kwargs["messages"] = messages_for(call, plain_copy(self.messages))
        kwargs["logprobs"] = True
        top = max(call.top_logprobs, self.caller_top_logprobs or 0)
        if top:
            kwargs["top_logprobs"] = top
        temperature = getattr(call, "temperature", None)
        if temperature is not None:
            kwargs["temperature"] = temperature
        max_tokens = getattr(call, "max_tokens", None)
        if max_tokens is not None:
            kwargs["max_tokens"] = max_tokens
        kwargs["metadata"] = self.tier_metadata(call)
        if call.timeout_s is not None:
            kwargs["timeout"] = call.timeout_s
        if stream:
            kwargs["stream"] = True
            kwargs["stream_options"] = {"include_usage": True}
        kwargs.update(self.pass_through)
        return kwargs

    def tier_metadata(self, call: TierCall) -> dict[str, Any]:
        """The caller's metadata minus per-call keys; caller identity only when tiers bill themselves.

        Cascade mode: the outer response bills the sum, so tiers carry no key identity. Guardrail
        mode: the outer call may fail over and bill nothing, so tiers bill the caller's key
        themselves (without its budget reservation, which belongs to the outer call). Either way
        they are stamped ``internal_call_origin``: traffic the caller did not send.
        """
        out: dict[str, Any] = {}
        for key, value in (self.metadata or {}).items():
            if key in PER_CALL_METADATA or RESERVATION in key:
                continue
            if key.startswith(IDENTITY_PREFIXES):
                if self.internal_tiers:
                    continue
                if key == "user_api_key_auth":
                    out[key] = _without_reservation(value)
                    continue
            out[key] = value if key in BY_REFERENCE else _copied(value)
        out["internal_call_origin"] = INTERNAL_ORIGIN
        out["confidence_router"] = {"request_id": call.request_id, "cascade": self.group, "tier": call.tier.name,
                                    "attempt": call.attempt, "role": "tier"}
        return out


def messages_for(call: TierCall, messages: list[Any]) -> list[Any]:
    """The request's messages, with the policy's instruction for clarify and verify calls.

    A clarify instruction joins the leading system message (one system message suits every
    provider); a verify instruction (which quotes the proposed answer) is a new user turn.
    """
    purpose = call.purpose
    instruction = getattr(call, "instruction", None)
    if not instruction or purpose == "answer":
        return messages
    if purpose == "verify":
        return [*messages, {"role": "user", "content": instruction}]
    if messages and isinstance(messages[0], dict) and messages[0].get("role") == "system" and isinstance(
            messages[0].get("content"), str):
        return [{**messages[0], "content": f"{messages[0]['content']}\n\n{instruction}"}, *messages[1:]]
    return [{"role": "system", "content": instruction}, *messages]


def last_user_text(messages: list[Any]) -> str:
    """Text of the last user message (text parts joined), for the human triggers."""
    for message in reversed(messages):
        if isinstance(message, dict) and message.get("role") == "user":
            content = message.get("content")
            if isinstance(content, list):
                return " ".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
            return str(content or "")
    return ""


def _without_reservation(auth: Any) -> Any:
    if isinstance(auth, Mapping):
        return {k: v for k, v in auth.items() if k != RESERVATION}
    if getattr(auth, RESERVATION, None) is not None and hasattr(auth, "model_copy"):
        return auth.model_copy(update={RESERVATION: None})
    return auth


#: Values that need no copy.
_IMMUTABLE = (str, int, float, bool, bytes, type(None))
#: Deeper than this, :func:`plain_copy` hands the rest to ``copy.deepcopy`` (which also handles cycles).
_PLAIN_DEPTH = 32


def plain_copy(value: Any, depth: int = 0) -> Any:
    """A deep copy of request data: dicts and lists rebuilt, scalars shared, anything else deep-copied.

    Messages, tools and metadata are JSON-shaped, and ``copy.deepcopy``'s general machinery (memo,
    reductors) costs several times more than rebuilding them; objects of other types (pydantic
    models, tuples, custom classes) and very deep nesting still go through ``copy.deepcopy``.
    """
    if isinstance(value, _IMMUTABLE):
        return value
    if depth < _PLAIN_DEPTH:
        if type(value) is dict:
            return {k: plain_copy(v, depth + 1) for k, v in value.items()}
        if type(value) is list:
            return [plain_copy(v, depth + 1) for v in value]
    return copy.deepcopy(value)


def _copied(value: Any) -> Any:
    try:
        return plain_copy(value)
    except Exception:  # an uncopyable live object: the tier shares it, as LiteLLM itself would
        return value


# ---------------------------------------------------------------------------- results


def new_response_id() -> str:
    """A fresh id for the outer response, never the id of the tier response it wraps."""
    return f"chatcmpl-{uuid.uuid4().hex}"


def tier_result(response: Any, tier: Tier) -> TierResult:
    """A non-streamed tier response as the policy sees it."""
    choices = getattr(response, "choices", None) or []
    choice = choices[0] if choices else None
    message = getattr(choice, "message", None)
    text = (getattr(message, "content", None) or "") if message is not None else ""
    tool_calls = getattr(message, "tool_calls", None) if message is not None else None
    usage = getattr(response, "usage", None)
    tokens_in = getattr(usage, "prompt_tokens", None)
    tokens_out = getattr(usage, "completion_tokens", None)
    hidden = getattr(response, "_hidden_params", None) or {}
    litellm_cost = hidden.get("response_cost")
    if litellm_cost is None:
        litellm_cost = _completion_cost(response)
    return TierResult(
        text=text if isinstance(text, str) else str(text),
        logprobs=getattr(choice, "logprobs", None),
        tokens_in=tokens_in,
        tokens_out=tokens_out,
        cost_usd=attempt_cost(litellm_cost, tier, tokens_in, tokens_out),
        raw=response,
        tool_calls=list(tool_calls) if tool_calls else None,
    )


def attempt_cost(litellm_cost: float | None, tier: Tier, tokens_in: int | None, tokens_out: int | None
                 ) -> float | None:
    """LiteLLM's price when it knows one; else the configuration's per-token prices.

    LiteLLM reports 0.0 (not None) for a model missing from its cost map, so a zero is only
    trusted when the configuration has no prices for the tier.
    """
    if litellm_cost:
        return float(litellm_cost)
    configured = tier.cost(tokens_in, tokens_out)
    if configured is not None:
        return configured
    return None if litellm_cost is None else float(litellm_cost)


def _completion_cost(response: Any) -> float | None:
    try:
        import litellm

        return float(litellm.completion_cost(completion_response=response))
    except Exception:  # unknown model or no usage: the configuration's prices apply
        return None


def chunk_parts(chunk: Any) -> tuple[str, list[Any] | None, list[Any] | None, str | None]:
    """Text, logprob entries, tool-call deltas and finish reason of one stream chunk."""
    choices = getattr(chunk, "choices", None) or []
    if not choices:
        return "", None, None, None
    choice = choices[0]
    delta = getattr(choice, "delta", None)
    text = (getattr(delta, "content", None) or "") if delta is not None else ""
    tool_calls = getattr(delta, "tool_calls", None) if delta is not None else None
    logprobs = getattr(choice, "logprobs", None)
    entries = None
    if logprobs is not None:
        entries = logprobs.get("content") if isinstance(logprobs, Mapping) else getattr(logprobs, "content", None)
        entries = list(entries) if entries else None
    return text, entries, list(tool_calls) if tool_calls else None, getattr(choice, "finish_reason", None)


def chunk_usage(chunk: Any) -> tuple[int | None, int | None, float | None]:
    usage = getattr(chunk, "usage", None)
    if usage is None:
        return None, None, None
    return getattr(usage, "prompt_tokens", None), getattr(usage, "completion_tokens", None), getattr(
        usage, "cost", None)


# ---------------------------------------------------------------------------- tier calls


async def acall_tier(ctx: RequestContext, call: TierCall) -> TierResult:
    """One non-streamed tier call through the Router (``samples`` calls at once for a consistency tier)."""
    n = getattr(call, "samples", 1) or 1
    if n <= 1:
        return tier_result(await ctx.router.acompletion(**ctx.tier_kwargs(call, stream=False)), call.tier)
    responses = await asyncio.gather(*(ctx.router.acompletion(**ctx.tier_kwargs(call, stream=False))
                                       for _ in range(n)), return_exceptions=True)
    return combine_samples([r for r in responses if not isinstance(r, BaseException)], responses, call)


def call_tier(ctx: RequestContext, call: TierCall) -> TierResult:
    """The blocking twin of :func:`acall_tier` (samples one after another)."""
    n = getattr(call, "samples", 1) or 1
    if n <= 1:
        return tier_result(ctx.router.completion(**ctx.tier_kwargs(call, stream=False)), call.tier)
    responses: list[Any] = []
    for _ in range(n):
        try:
            responses.append(ctx.router.completion(**ctx.tier_kwargs(call, stream=False)))
        except Exception as exc:
            responses.append(exc)
    return combine_samples([r for r in responses if not isinstance(r, BaseException)], responses, call)


def combine_samples(ok: list[Any], all_responses: list[Any], call: TierCall) -> TierResult:
    """Several sampled answers as one result: the samples for the policy's vote, usage and cost summed."""
    if not ok:
        error = next(r for r in all_responses if isinstance(r, BaseException))
        raise error
    samples = [tier_result(r, call.tier) for r in ok]
    first = samples[0]
    combined = TierResult(
        text=first.text, logprobs=first.logprobs, raw=first.raw, tool_calls=first.tool_calls,
        tokens_in=_sum(s.tokens_in for s in samples), tokens_out=_sum(s.tokens_out for s in samples),
        cost_usd=_sum(s.cost_usd for s in samples),
    )
    combined.samples = samples  # type: ignore[attr-defined]
    return combined


def _sum(values: Any) -> Any:
    present = [v for v in values if v is not None]
    return sum(present) if present else None

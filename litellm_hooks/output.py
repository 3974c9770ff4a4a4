"""What a finished cascade leaves on the outer response: the answer, the bill and the trace.

The outer response is billed the sum of the attempts (``_hidden_params["response_cost"]``, which
the proxy turns into ``x-litellm-response-cost`` and its spend tracking), carries a fresh id, and
puts the trace where operators find it: ``_hidden_params``, ``metadata.spend_logs_metadata`` (every
LiteLLM logger), pre-computed ``x-confidence-*`` headers for the proxy callback, and, when an
operator asks for it, a ``confidence_router`` field in the JSON body.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Mapping
from typing import Any

from langchain_confidence_router.core import AllTiersFailedError, CascadeError, RequestTrace, TierCallError

from .options import CascadeOptions

#: Keys in ``_hidden_params``.
TRACE_KEY = "confidence_router"
HEADERS_KEY = "confidence_router_headers"
#: Key in ``metadata.spend_logs_metadata`` and name of the optional body field.
BODY_FIELD = "confidence_router"
PROVIDER = "confidence"
_HEADER_UNSAFE = re.compile(r"[^\x20-\x7e]")


def public_view(trace: RequestTrace, options: CascadeOptions) -> dict[str, Any]:
    """The end-user-safe summary: who answered, how many attempts, what it cost.

    Raw confidence values are included only with ``expose_confidence`` (an operator decision:
    they reveal thresholds and invite gaming).
    """
    view: dict[str, Any] = {
        "request_id": trace.request_id,
        "model": trace.final_model,
        "outcome": trace.outcome,
        "route": trace.route,
        "attempts": len(trace.attempts),
        "models_tried": [a.model for a in trace.attempts],
        "cost_usd": trace.total_cost_usd,
    }
    if options.expose_confidence:
        view["confidence"] = trace.confidence
        view["attempt_confidence"] = [
            {"model": a.model, "confidence": a.confidence, "threshold": a.threshold, "decision": a.decision}
            for a in trace.attempts
        ]
    return view


def header_values(trace: RequestTrace, options: CascadeOptions) -> dict[str, str]:
    """Clean ``x-confidence-*`` headers (ASCII, no raw confidence unless exposed)."""
    if not options.headers:
        return {}
    headers = {
        "x-confidence-model": trace.final_model or "",
        "x-confidence-outcome": trace.outcome,
        "x-confidence-route": trace.route,
        "x-confidence-attempts": str(len(trace.attempts)),
        "x-confidence-models-tried": ",".join(a.model for a in trace.attempts),
        "x-confidence-cost": f"{trace.total_cost_usd:.10g}",
        "x-confidence-request-id": trace.request_id,
    }
    if options.expose_confidence:
        headers["x-confidence-confidence"] = "none" if trace.confidence is None else f"{trace.confidence:.4f}"
    return {k: v if v.isascii() and v.isprintable() else _HEADER_UNSAFE.sub("?", v) for k, v in headers.items()}


def record_trace(metadata: Any, trace: RequestTrace, options: CascadeOptions) -> dict[str, Any]:
    """Put the trace in ``metadata.spend_logs_metadata`` so every LiteLLM logger and the spend logs see it.

    ``metadata`` is the live dict LiteLLM's logging object reads; the caller's own
    ``spend_logs_metadata`` is copied, never mutated. Returns the JSON form of the trace (made once
    per request and shared by every place it goes).
    """
    dumped = trace.model_dump(mode="json")
    if not options.spend_logs_metadata or not isinstance(metadata, dict):
        return dumped
    existing = metadata.get("spend_logs_metadata")
    merged = dict(existing) if isinstance(existing, Mapping) else {}
    merged[BODY_FIELD] = dumped
    metadata["spend_logs_metadata"] = merged
    return dumped


def attach(response: Any, trace: RequestTrace, dumped: dict[str, Any], options: CascadeOptions,
           billed_usd: float) -> None:
    """Trace, bill and headers on a non-streamed outer response."""
    hidden = getattr(response, "_hidden_params", None)
    if not isinstance(hidden, dict):
        hidden = {}
        response._hidden_params = hidden
    hidden[TRACE_KEY] = dumped
    hidden[HEADERS_KEY] = header_values(trace, options)
    hidden["response_cost"] = billed_usd
    if options.response_field:
        setattr(response, BODY_FIELD, public_view(trace, options))


def error_status(error: CascadeError) -> int:
    """The HTTP status a failed cascade answers with."""
    if error.status_code is not None:
        return error.status_code
    if isinstance(error, TierCallError | AllTiersFailedError):
        return 503
    return 502


def not_the_deployments_fault(exc: BaseException) -> None:
    """Keep the Router from cooling the cascade deployment down for a tier's failure.

    A cascade relays its tiers' statuses (a tier's 401 or 429 becomes the cascade's), and the Router
    cools a deployment down on 401/404/429 at once: one bad tier would take the whole cascade
    group offline. The tiers' own deployments still cool down as usual. LiteLLM 1.106 skips the
    cooldown for exceptions tagged like its advisor orchestration failures ("not caused by the
    selected deployment"); the type, status, retries and fallbacks are unchanged.
    """
    try:
        from litellm.router_utils.cooldown_handlers import mark_advisor_orchestration_failure
    except ImportError:  # another LiteLLM: set the same tag by hand
        exc._litellm_advisor_orchestration_failure = True  # type: ignore[attr-defined]
    else:
        mark_advisor_orchestration_failure(exc)


def synthetic_response(status: int) -> Any:
    """The HTTP response some LiteLLM exceptions insist on; the cascade itself made no single request."""
    import httpx

    return httpx.Response(status, request=httpx.Request("POST", "http://confidence.invalid/chat/completions"))


def to_litellm_error(error: Exception, model: str, status: int, num_retries: int) -> Exception:
    """A LiteLLM exception (passed through LiteLLM's mapping unchanged) with the right status.

    ``num_retries`` is set on it so the Router does not re-run the whole cascade unless the
    deployment itself asks for retries.
    """
    import litellm

    classes: dict[int, Any] = {
        400: litellm.BadRequestError, 401: litellm.AuthenticationError, 403: litellm.PermissionDeniedError,
        404: litellm.NotFoundError, 408: litellm.Timeout, 422: litellm.UnprocessableEntityError,
        429: litellm.RateLimitError, 500: litellm.InternalServerError, 502: litellm.BadGatewayError,
        503: litellm.ServiceUnavailableError,
    }
    kwargs: dict[str, Any] = {"message": str(error), "model": model, "llm_provider": PROVIDER}
    cls = classes.get(status)
    exc: Exception
    if cls is None:
        exc = litellm.APIError(status_code=status, request=synthetic_response(status).request, **kwargs)
    else:
        if "response" in inspect.signature(cls.__init__).parameters:
            kwargs["response"] = synthetic_response(status)
        exc = cls(**kwargs)
    exc.num_retries = num_retries  # type: ignore[attr-defined]
    not_the_deployments_fault(exc)
    trace = getattr(error, "trace", None)
    if trace is not None:
        exc.confidence_trace = trace  # type: ignore[attr-defined]
    exc.__cause__ = error
    return exc

"""Errors raised by the scoring core and the escalation engine.

Every error a request can end with carries the request's trace, so a failure never loses the
record of what was tried.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .redact import redact_text

if TYPE_CHECKING:
    from .trace import RequestTrace


class ConfidenceRouterError(Exception):
    """Base class of every error this package raises on purpose."""


class LogprobError(ConfidenceRouterError, ValueError):
    """Logprobs that cannot be scored: bad shape, NaN, +inf or a positive value.

    `path` names where in the input the problem is (for example ``content[3].top_logprobs[1]``).
    """

    def __init__(self, message: str, path: str = "") -> None:
        self.path = path
        super().__init__(f"{path}: {message}" if path else message)


class ConfigError(ConfidenceRouterError, ValueError):
    """A configuration file or object that does not validate.

    The message names the file, each failing field path and what is allowed there.
    """

    def __init__(self, message: str, *, source: str | None = None, fields: list[str] | None = None) -> None:
        self.source = source
        self.fields = fields or []
        super().__init__(f"{source}: {message}" if source else message)


class OverrideError(ConfidenceRouterError, ValueError):
    """A per-call override (e.g. ``thresholds``) that is not allowed; ``field`` names it, e.g. ``thresholds.smal``."""

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        super().__init__(f"{field}: {message}")


class CascadeError(ConfidenceRouterError):
    """A request that ended without an answer. `trace` holds every attempt made."""

    def __init__(self, message: str, trace: RequestTrace, *, status_code: int | None = None) -> None:
        self.trace = trace
        self.status_code = status_code
        super().__init__(message)


class TierCallError(CascadeError):
    """A tier call failed and the configuration says not to skip it (`on_error: fail`, or a client error)."""

    def __init__(
        self, message: str, trace: RequestTrace, *, cause: BaseException, status_code: int | None = None
    ) -> None:
        self.cause = cause
        super().__init__(message, trace, status_code=status_code)


class AllTiersFailedError(CascadeError):
    """Every tier that was tried failed, so there is no answer to return."""


class MissingLogprobsError(CascadeError):
    """A tier answered without logprobs and `missing_logprobs: fail` is configured."""


def describe_exception(exc: BaseException) -> str:
    """One line naming the exception type and its message, for traces; credentials in it are redacted
    (a gateway may quote the caller's key in its error)."""
    text = redact_text(str(exc).strip().splitlines()[0]) if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def status_code_of(exc: BaseException) -> int | None:
    """The HTTP status an upstream exception carries, from any of the usual client libraries."""
    for candidate in (exc, getattr(exc, "__cause__", None)):
        if candidate is None:
            continue
        code: Any = getattr(candidate, "status_code", None)
        if code is None:
            response = getattr(candidate, "response", None)
            code = getattr(response, "status_code", None)
        if isinstance(code, int):
            return code
    return None

"""langchain-confidence-router: cheapest model first, escalate when token-logprob confidence is low.

The scoring core (``langchain_confidence_router.core``) imports neither LangChain nor LiteLLM; the
LangChain adapter ``ConfidenceRouter`` is imported lazily so that LiteLLM-only users do not pay for it.
"""

from typing import Any

from .core import (
    AllTiersFailedError,
    AttemptTrace,
    Cascade,
    CascadeError,
    ConfigError,
    LogprobError,
    MissingLogprobsError,
    OverrideError,
    RequestTrace,
    RouterConfig,
    TierCallError,
    TokenLogprobs,
    compute_signals,
    load_config,
    normalize_logprobs,
    parse_config,
)
from .human import conversations as _conversations  # noqa: F401  (wires human.clarify.state: store | redis)
from .human import recording as _recording  # noqa: F401  (wires a human: section's store and audit log)
from .metrics import observers_for as _metrics  # noqa: F401  (wires a metrics: section's Prometheus observer)
from .registry import threshold_source as _registry  # noqa: F401  (wires a registry: section's poller)

__version__ = "0.1.0"

__all__ = [
    "AllTiersFailedError",
    "AttemptTrace",
    "Cascade",
    "CascadeError",
    "ConfidenceRouter",
    "ConfigError",
    "LogprobError",
    "MissingLogprobsError",
    "OverrideError",
    "RequestTrace",
    "RouterConfig",
    "TierCallError",
    "TokenLogprobs",
    "TraceCollector",
    "compute_signals",
    "load_config",
    "normalize_logprobs",
    "parse_config",
]


def __getattr__(name: str) -> Any:
    if name in ("ConfidenceRouter", "TraceCollector"):
        from . import langchain as _lc

        return getattr(_lc, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

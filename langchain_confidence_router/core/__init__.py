"""The scoring core and escalation engine: pure Python and numpy, no LangChain or LiteLLM."""

from . import drive
from .calibration import Calibration, load_calibration
from .config import (
    CONFIDENCE_METHODS,
    ConfidenceSettings,
    EarlyAbort,
    ModelSpec,
    RouterConfig,
    load_config,
    parse_config,
)
from .engine import Cascade, arun_policy, run_policy
from .errors import (
    AllTiersFailedError,
    CascadeError,
    ConfidenceRouterError,
    ConfigError,
    LogprobError,
    MissingLogprobsError,
    OverrideError,
    TierCallError,
)
from .filters import TOKEN_FILTERS, apply_filter, filter_mask
from .policy import CallTier, CascadePolicy, Fail, Finish, TierCall, TierResult, classify_error
from .signals import LOGPROB_SIGNALS, SignalParams, SignalValues, compute_signals, score_from_raw
from .stream import StreamAccumulator
from .tiers import Tier, build_tiers
from .tokens import TokenLogprobs, normalize_logprobs
from .trace import AttemptTrace, RequestTrace

__all__ = [
    "CONFIDENCE_METHODS",
    "LOGPROB_SIGNALS",
    "TOKEN_FILTERS",
    "AllTiersFailedError",
    "AttemptTrace",
    "Calibration",
    "CallTier",
    "Cascade",
    "CascadeError",
    "CascadePolicy",
    "ConfidenceRouterError",
    "ConfidenceSettings",
    "ConfigError",
    "EarlyAbort",
    "Fail",
    "Finish",
    "LogprobError",
    "MissingLogprobsError",
    "ModelSpec",
    "OverrideError",
    "RequestTrace",
    "RouterConfig",
    "SignalParams",
    "SignalValues",
    "StreamAccumulator",
    "Tier",
    "TierCall",
    "TierCallError",
    "TierResult",
    "TokenLogprobs",
    "apply_filter",
    "arun_policy",
    "build_tiers",
    "classify_error",
    "compute_signals",
    "drive",
    "filter_mask",
    "load_calibration",
    "load_config",
    "normalize_logprobs",
    "parse_config",
    "run_policy",
    "score_from_raw",
]

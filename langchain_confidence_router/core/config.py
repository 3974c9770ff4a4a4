"""The configuration schema (pydantic) and its YAML loader.

The reference block of the vLLM Semantic Router's confidence algorithm loads as is and means what it
says; everything it is silent about has a documented default. A bad file produces one
:class:`ConfigError` naming the file, every failing field path and what is allowed there.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator, model_validator

from .errors import ConfigError
from .filters import TOKEN_FILTERS
from .human import HumanSettings
from .metrics_settings import MetricsSettings
from .nologprob import ConsistencySettings, SelfVerifySettings
from .registry_settings import RegistrySettings
from .signals import LOGPROB_SIGNALS

#: Confidence methods a tier can use. Methods that need no logprobs register themselves here.
CONFIDENCE_METHODS: list[str] = [*LOGPROB_SIGNALS, "self_verify", "consistency"]
#: Methods that need extra calls instead of logprobs.
NO_LOGPROB_METHODS = frozenset({"self_verify", "consistency"})

EscalationOrder = Literal["small_to_large", "declared", "cost", "automix"]
TokenFilter = Literal["all", "stop", "tool_call_args", "answer"]
_SIZE_RE = re.compile(r"^\s*(?:(\d+)\s*x\s*)?(\d+(?:\.\d+)?)\s*([kmbt]?)\s*$", re.IGNORECASE)
_SIZE_UNITS = {"": 1.0, "k": 1e3, "m": 1e6, "b": 1e9, "t": 1e12}


def parse_size(size: str | float | int) -> float:
    """Parameter count from ``"7b"``, ``"1.5B"``, ``"135m"``, ``"8x7b"`` (experts multiply) or a number."""
    if isinstance(size, int | float) and not isinstance(size, bool):
        value = float(size)
    else:
        match = _SIZE_RE.match(str(size))
        if not match:
            raise ValueError(f"size {size!r} is not like '7b', '135m', '1.5b' or '8x7b'")
        experts, number, unit = match.groups()
        value = (int(experts) if experts else 1) * float(number) * _SIZE_UNITS[unit.lower()]
    if not 0.0 < value < math.inf:  # also NaN: the orders sort and take logarithms of sizes
        raise ValueError(f"size {size!r} is not a positive, finite parameter count")
    return value


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class HybridWeights(_Strict):
    logprob_weight: float = Field(0.5, ge=0.0, le=1.0, description="Weight for avg_logprob in hybrid")
    margin_weight: float = Field(0.5, ge=0.0, le=1.0, description="Weight for margin in hybrid")

    @model_validator(mode="after")
    def _sum_to_one(self) -> HybridWeights:
        total = self.logprob_weight + self.margin_weight
        if abs(total - 1.0) > 1e-6:
            raise ValueError(f"logprob_weight + margin_weight must sum to 1 (got {total:g})")
        return self


class SignalSettings(_Strict):
    bottom_percent: float = Field(10.0, gt=0.0, le=100.0, description="p of bottom_percent")
    group_window: int = Field(16, ge=1, description="window size w of lowest_group")
    tail_tokens: int = Field(16, ge=1, description="n of tail")


class Limits(_Strict):
    max_attempts: int | None = Field(None, ge=1, description="at most this many tier calls per request")
    attempt_timeout_s: float | None = Field(60.0, gt=0.0, description="per tier call; null for none")
    cost_budget_usd: float | None = Field(None, ge=0.0, description="stop escalating once spent")


class ConfidenceSettings(_Strict):
    confidence_method: str = Field("hybrid", description="signal (or method) compared with the threshold")
    threshold: float = Field(0.72, ge=0.0, le=1.0, description="accept when confidence >= threshold")
    escalation_order: EscalationOrder = "small_to_large"
    cost_quality_tradeoff: float = Field(
        0.3, ge=0.0, le=1.0, description="automix: 1 orders purely by cost (cheapest first), 0 by quality"
    )
    token_filter: TokenFilter = "stop"
    answer_pattern: str | None = Field(None, description="regex of the answer span for token_filter: answer")
    on_error: Literal["skip", "fail"] = "skip"
    skip_client_errors: bool = Field(False, description="with on_error: skip, also skip 4xx client errors")
    hybrid_weights: HybridWeights = Field(default_factory=HybridWeights)
    signal_params: SignalSettings = Field(default_factory=SignalSettings)
    top_logprobs: int = Field(5, ge=0, le=20, description="alternatives requested per token")
    missing_logprobs: Literal["escalate", "accept", "fail"] = "escalate"
    tool_calls: Literal["accept", "escalate", "score"] = Field(
        "accept", description="tool-call-only answers: accept, escalate, or score their argument tokens"
    )
    final_fallback: Literal["best", "last"] = Field(
        "best", description="answer returned when no tier is confident"
    )
    limits: Limits = Field(default_factory=Limits)
    self_verify: SelfVerifySettings = Field(default_factory=SelfVerifySettings)
    consistency: ConsistencySettings = Field(default_factory=ConsistencySettings)

    @field_validator("confidence_method")
    @classmethod
    def _known_method(cls, value: str) -> str:
        return _check_method(value)

    @field_validator("answer_pattern")
    @classmethod
    def _valid_regex(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                re.compile(value)
            except re.error as exc:
                raise ValueError(f"not a valid regular expression: {exc}") from exc
        return value

    @model_validator(mode="after")
    def _margin_needs_alternatives(self) -> ConfidenceSettings:
        if self.confidence_method in ("margin", "hybrid", "entropy") and self.top_logprobs < 2:
            raise ValueError(f"confidence_method {self.confidence_method} needs top_logprobs >= 2")
        return self


def _check_method(value: str) -> str:
    if value not in CONFIDENCE_METHODS:
        raise ValueError(f"{value!r} is not allowed; expected one of: {', '.join(CONFIDENCE_METHODS)}")
    return value


class AlgorithmConfig(_Strict):
    type: Literal["confidence"] = "confidence"
    confidence: ConfidenceSettings = Field(default_factory=ConfidenceSettings)


class EarlyAbort(_Strict):
    """Give up on a gated attempt mid-stream once the answer so far already looks rejected.

    The running confidence is the tier's own (signal, calibration, token filter) on the tokens received
    so far; see docs/signals.md ("Early abort") for which signals make this provably conservative.
    """

    after_tokens: int = Field(ge=1, description="tokens received before the rule may fire")
    below: float = Field(ge=0.0, le=1.0, description="abort when the running confidence is below this")
    check_every: int = Field(1, ge=1, description="re-score the prefix every this many tokens")


class ModelSpec(_Strict):
    """One candidate model: a LangChain model key or a LiteLLM model group."""

    name: str = Field(min_length=1)
    size: str | float | None = Field(None, description="parameter count such as 7b, 135m, 8x7b")
    input_cost_per_token: float | None = Field(None, ge=0.0)
    output_cost_per_token: float | None = Field(None, ge=0.0)
    threshold: float | None = Field(None, ge=0.0, le=1.0, description="overrides the global threshold")
    calibration: str | None = Field(None, description="calibration JSON, relative to the config file")
    confidence_method: str | None = None
    token_filter: TokenFilter | None = None
    quality: float | None = Field(None, description="automix: a quality figure such as benchmark accuracy")
    early_abort: EarlyAbort | None = Field(None, description="abort a gated attempt mid-stream (docs/signals.md)")
    hedge_after_ms: float | None = Field(
        None, gt=0.0, description="start the next tier as well when this one has not answered in this many ms"
    )

    @field_validator("size")
    @classmethod
    def _valid_size(cls, value: str | float | None) -> str | float | None:
        if value is not None:
            parse_size(value)
        return value

    @field_validator("confidence_method")
    @classmethod
    def _known_method(cls, value: str | None) -> str | None:
        return None if value is None else _check_method(value)

    @property
    def parameters(self) -> float | None:
        return None if self.size is None else parse_size(self.size)

    def cost(self, tokens_in: int | None, tokens_out: int | None) -> float | None:
        """Cost from per-token prices and usage; None when either is unknown."""
        if self.input_cost_per_token is None and self.output_cost_per_token is None:
            return None
        if tokens_in is None and tokens_out is None:
            return None
        return (tokens_in or 0) * (self.input_cost_per_token or 0.0) + (tokens_out or 0) * (
            self.output_cost_per_token or 0.0
        )


class RouterConfig(_Strict):
    """A whole configuration file: the algorithm block and the candidate models."""

    algorithm: AlgorithmConfig = Field(default_factory=AlgorithmConfig)
    models: list[ModelSpec] = Field(default_factory=list)
    human: HumanSettings | None = Field(None, description="human escalation past the largest model")
    metrics: MetricsSettings | None = Field(None, description="live Prometheus metrics (see docs/operations.md)")
    evidence: dict[str, Any] | None = Field(None, description="written by `tune`: how thresholds were chosen")
    registry: RegistrySettings | None = Field(
        None, description="take thresholds and calibrations from a threshold registry (see docs/operations.md)")

    _source: Path | None = PrivateAttr(None)

    @field_validator("models")
    @classmethod
    def _unique_names(cls, models: list[ModelSpec]) -> list[ModelSpec]:
        seen: set[str] = set()
        for spec in models:
            if spec.name in seen:
                raise ValueError(f"model name {spec.name!r} appears twice")
            seen.add(spec.name)
        return models

    @model_validator(mode="after")
    def _registry_replaces_inline_values(self) -> RouterConfig:
        if self.registry is None:
            for arm_name in ("control", "treatment"):
                ab = self.human.ab_test if self.human is not None else None
                if ab is not None and getattr(ab, arm_name).registry_version is not None:
                    raise ValueError(f"human.ab_test.{arm_name}.registry_version needs a registry: section")
            return self
        for i, spec in enumerate(self.models):
            for name in ("threshold", "calibration"):
                if getattr(spec, name) is not None:
                    raise ValueError(f"models[{i}].{name}: comes from the registry ({self.registry.name}) when a "
                                     "registry: section is set; remove it from the file")
        return self

    @property
    def confidence(self) -> ConfidenceSettings:
        return self.algorithm.confidence

    @property
    def source(self) -> Path | None:
        return self._source

    def resolve_path(self, path: str) -> Path:
        """A path from the file, relative to the file's folder."""
        p = Path(path).expanduser()
        if not p.is_absolute() and self._source is not None:
            p = self._source.parent / p
        return p

    def config_hash(self) -> str:
        """Short stable hash of the effective configuration, for traces and audit."""
        # metrics change what is exported, never a decision, so they leave the hash alone
        canonical = json.dumps(self.model_dump(mode="json", exclude={"evidence", "metrics"}), sort_keys=True)
        return hashlib.sha256(canonical.encode()).hexdigest()[:12]


def parse_config(data: Any, source: str | Path | None = None) -> RouterConfig:
    """Validate a mapping (from YAML, JSON or code) into a :class:`RouterConfig`."""
    label = str(source) if source is not None else "<config>"
    if isinstance(data, RouterConfig):
        return data
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"expected a mapping at the top level, got {type(data).__name__}", source=label)
    try:
        config = RouterConfig.model_validate(data)
    except ValidationError as exc:
        raise config_error_from(exc, label) from None
    if source is not None and not str(source).startswith("<"):
        config._source = Path(source).resolve()
    return config


def load_config(path: str | Path) -> RouterConfig:
    """Read and validate a YAML (or JSON) configuration file."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read the file ({exc.strerror or exc})", source=str(p)) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"not valid YAML{where}: {problem}", source=str(p)) from None
    except RecursionError:  # PyYAML's parser recurses once per nesting level
        raise ConfigError("not valid YAML: nested too deeply", source=str(p)) from None
    return parse_config(data, p)


def config_error_from(exc: ValidationError, source: str) -> ConfigError:
    """One readable error listing each failing field path and what it allows."""
    lines = []
    fields = []
    for err in exc.errors(include_url=False):
        path = ".".join(str(part) for part in err["loc"]) or "(top level)"
        fields.append(path)
        message = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            message = "unknown field (check its spelling and its place in the file)"
        got = err.get("input")
        shown = "" if err["type"] in ("missing", "extra_forbidden") or isinstance(got, dict | list) else (
            f" (got {got!r})"
        )
        lines.append(f"  {path}: {message}{shown}")
    return ConfigError("invalid configuration:\n" + "\n".join(lines), source=source, fields=fields)


__all__ = [
    "CONFIDENCE_METHODS",
    "TOKEN_FILTERS",
    "AlgorithmConfig",
    "ConfidenceSettings",
    "EarlyAbort",
    "HybridWeights",
    "Limits",
    "ModelSpec",
    "RouterConfig",
    "SignalSettings",
    "config_error_from",
    "load_config",
    "parse_config",
    "parse_size",
]

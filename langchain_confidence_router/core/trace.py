"""The per-request trace: what was tried, how confident each answer was, what it cost, and why.

Field names are part of the public API (documented in docs/trace.md); add fields, never rename.
"""

from __future__ import annotations

import time
import uuid
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

TRACE_SCHEMA_VERSION = 1

Decision = Literal["accept", "escalate", "error", "fallback", "cancelled"]
Outcome = Literal["accepted", "fallback", "error", "handoff", "clarify", "pending"]
Route = Literal["automated", "human_assisted", "human_primary", "clarify"]
#: What a tier call is for: an answer, one of several samples (consistency), a judge's verdict on an
#: answer (self_verify), or a clarifying question. ``TierCall.purpose`` and ``AttemptTrace.purpose``.
Purpose = Literal["answer", "sample", "verify", "clarify"]


class AttemptTrace(BaseModel):
    """One call to one tier."""

    model_config = ConfigDict(extra="allow")

    tier: int
    model: str
    purpose: Purpose = Field("answer", description="answer, or a side call: clarify, verify, sample")
    decision: Decision | None = None
    reason: str = ""
    method: str | None = None
    signals: dict[str, float | None] = Field(default_factory=dict, description="0..1 scores")
    raw_signals: dict[str, float | None] = Field(default_factory=dict)
    score: float | None = Field(None, description="the method's 0..1 score before calibration")
    confidence: float | None = Field(None, description="the value compared with the threshold")
    calibration: str | None = None
    threshold: float | None = None
    token_filter: str | None = None
    filter_fell_back: bool = False
    n_tokens: int | None = None
    n_scored_tokens: int | None = None
    has_logprobs: bool | None = None
    tool_call: bool = False
    error: str | None = None
    error_kind: str | None = None
    status_code: int | None = None
    latency_ms: float | None = None
    ttft_ms: float | None = None
    tokens_in: int | None = None
    tokens_out: int | None = None
    cost_usd: float | None = None
    tokens_in_estimated: bool = Field(
        False, description="tokens_in was counted from the prompt (a cut stream reports no usage), not billed usage")
    streamed: bool = False
    aborted_at_token: int | None = Field(None, description="early abort: tokens received when the rule fired")
    hedged: bool = Field(False, description="started as a hedge while an earlier attempt was still running")
    n_samples: int | None = Field(None, description="consistency: samples drawn")
    n_groups: int | None = Field(None, description="consistency: distinct answers among them")
    started_at: float = Field(default_factory=time.time)
    run_id: str | None = Field(None, description="LangChain adapter: the attempt's chain run id")
    model_run_id: str | None = Field(None, description="LangChain adapter: the tier model's own run id")


class RequestTrace(BaseModel):
    """Everything one request did. JSON-serialisable with ``model_dump_json()``."""

    model_config = ConfigDict(extra="allow")

    schema_version: int = TRACE_SCHEMA_VERSION
    request_id: str = Field(default_factory=lambda: uuid.uuid4().hex)
    config_hash: str | None = None
    started_at: float = Field(default_factory=time.time)
    attempts: list[AttemptTrace] = Field(default_factory=list)
    outcome: Outcome = "pending"
    final_tier: int | None = None
    final_model: str | None = None
    confidence: float | None = None
    route: Route = Field("automated", description="who handles the answer: see docs/human.md")
    trigger: str | None = Field(None, description="why a human or clarify route was taken")
    arm: str | None = Field(None, description="A/B threshold arm this request was assigned to")
    thresholds: dict[str, float] = Field(default_factory=dict, description="thresholds in force, by model")
    calibrations: dict[str, str] = Field(default_factory=dict, description="calibration versions, by model")
    registry: dict[str, Any] | None = Field(
        None, description="threshold-registry version in force: name, version, stale, error (docs/operations.md)")
    draft: str | None = Field(None, description="the AI answer handed to a human (only if text is stored)")
    reasons: list[str] = Field(default_factory=list)
    total_cost_usd: float = 0.0
    cost_complete: bool = True
    total_latency_ms: float | None = None
    ttft_ms: float | None = None
    tokens_in: int = 0
    tokens_out: int = 0
    metadata: dict[str, Any] = Field(default_factory=dict)

    @property
    def final_attempt(self) -> AttemptTrace | None:
        for attempt in self.attempts:
            if attempt.decision in ("accept", "fallback"):
                return attempt
        return None

    def add_attempt(self, attempt: AttemptTrace) -> None:
        self.attempts.append(attempt)
        if attempt.cost_usd is None:
            # a failed call is not billed; neither is a hedge that had failed before it was cancelled
            if attempt.decision != "error" and not (attempt.decision == "cancelled" and attempt.error):
                self.cost_complete = False
        else:
            self.total_cost_usd += attempt.cost_usd
        self.tokens_in += attempt.tokens_in or 0
        self.tokens_out += attempt.tokens_out or 0

    def summary(self) -> dict[str, Any]:
        """A short flat view for headers, logs and tables."""
        return {
            "request_id": self.request_id,
            "outcome": self.outcome,
            "route": self.route,
            "trigger": self.trigger,
            "final_model": self.final_model,
            "confidence": self.confidence,
            "attempts": len(self.attempts),
            "models_tried": [a.model for a in self.attempts],
            "total_cost_usd": self.total_cost_usd,
            "total_latency_ms": self.total_latency_ms,
        }

"""The ``metrics:`` section of a configuration: live Prometheus metrics, as plain data.

The core only validates the section; ``langchain_confidence_router.metrics`` reads it and owns
everything Prometheus (the core never imports ``prometheus_client``).
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class MetricsSettings(BaseModel):
    """Export Prometheus metrics for every request this configuration routes."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    enabled: bool = True
    name: str | None = Field(
        None, min_length=1, max_length=100,
        description="the `router` label of every series; default: the LiteLLM model group, else 'default'")
    port: int | None = Field(
        None, ge=1, le=65535,
        description="serve /metrics on this port (LangChain apps); leave unset behind the LiteLLM proxy's /metrics")
    addr: str = Field("0.0.0.0", description="address the metrics port listens on")
    queue_depth_interval_s: float = Field(
        15.0, gt=0.0, le=3600.0, description="how often a background thread reads the human queue depth")
    human_daily_capacity: int | None = Field(
        None, ge=1, description="reviews per day the team can do; exported for the queue-depth alert")

"""Operator switches of a cascade deployment (``litellm_params.cascade_options``).

They decide what leaves the gateway and what a proxy client may ask for, never how a request is
routed: routing lives in the cascade configuration (the same schema as the YAML file) and in the core
policy. In the proxy they come from the deployment only; a request cannot set them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from langchain_confidence_router.core import ConfigError
from langchain_confidence_router.core.config import config_error_from


class CascadeOptions(BaseModel):
    """What a cascade deployment reveals and how it behaves towards the Router."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    mode: Literal["cascade", "guardrail"] = Field(
        "cascade",
        description="cascade: walk the tiers; guardrail: call the first tier only and raise a low-confidence "
        "error so the Router's own `fallbacks` take over",
    )
    expose_confidence: bool = Field(
        False, description="put raw confidence values in the x-confidence-* headers and the body field"
    )
    response_field: bool = Field(False, description="add a `confidence_router` object to the JSON response body")
    headers: bool = Field(True, description="emit x-confidence-* headers (needs the proxy callback)")
    spend_logs_metadata: bool = Field(
        True, description="write the trace into metadata.spend_logs_metadata, which every LiteLLM logger sees"
    )
    max_n: int = Field(1, ge=1, le=128, description="largest `n` a proxy client may ask for (only choices[0] "
                       "is scored; every tier call returns n answers)")
    max_input_chars: int = Field(400_000, ge=1, description="largest total message content (characters) a proxy "
                                 "client may send; longer requests are refused before any tier call")
    trust_client_ids: bool = Field(
        False, description="key the A/B arm and the clarify count by the client's `user` and "
        "`metadata.conversation_id` (scoped to its API key) instead of by the API key and the first message",
    )


DEFAULT_OPTIONS = CascadeOptions()


def parse_options(data: Any, defaults: CascadeOptions = DEFAULT_OPTIONS) -> CascadeOptions:
    """Options from a deployment's ``cascade_options`` mapping layered over ``defaults``."""
    if data is None:
        return defaults
    if isinstance(data, CascadeOptions):
        return data
    if not isinstance(data, Mapping):
        raise ConfigError(f"expected a mapping, got {type(data).__name__}", source="litellm_params.cascade_options")
    try:
        return CascadeOptions.model_validate({**defaults.model_dump(), **data})
    except ValidationError as exc:
        raise config_error_from(exc, "litellm_params.cascade_options") from None

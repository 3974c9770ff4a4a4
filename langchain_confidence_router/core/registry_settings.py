"""The ``registry:`` section of a configuration: where this router's thresholds come from, as plain data.

The core only validates the section; ``langchain_confidence_router.registry`` reads it, talks to the
database and hands the core ready-made :class:`~langchain_confidence_router.core.tuning.TunedVersion`
objects (the core never imports SQLAlchemy).
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class RegistrySettings(BaseModel):
    """Take thresholds and calibrations from the promoted version of ``name`` in a threshold registry."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    url: str = Field(min_length=1, description="the registry database: a SQLite path or a postgresql:// URL")
    name: str = Field(min_length=1, max_length=128, description="which tuned configuration to follow")
    poll_s: float = Field(5.0, ge=0.05, le=3600.0,
                          description="how often a background thread checks for a new promoted version")
    cache: str | None = Field(None, min_length=1, description="local JSON file keeping the version in force, "
                              "used (stale) when the registry cannot be read at start-up; relative to the file")

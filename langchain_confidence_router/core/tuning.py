"""Tuned values from a threshold source (the threshold registry), applied to a configuration as tiers.

A source publishes :class:`SourceState` snapshots from a background thread; a :class:`~.engine.Cascade`
turns each one into a new tiers list (:func:`tuned_tiers`) and swaps it in with one reference
assignment, so a request always sees one whole version and never waits for the source.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .calibration import Calibration
from .config import ModelSpec, RouterConfig, parse_config
from .errors import ConfigError
from .tiers import Tier, build_tiers


@dataclass(frozen=True)
class ModelTuning:
    """What a version sets for one model; None leaves the configuration's value."""

    threshold: float | None = None
    confidence_method: str | None = None
    calibration: Calibration | None = None


@dataclass(frozen=True)
class TunedVersion:
    """One version of a tuned configuration: its chain (``models`` in escalation order) with per-model
    thresholds, methods and calibrations."""

    name: str
    version: int
    models: Mapping[str, ModelTuning]
    threshold: float | None = None
    confidence_method: str | None = None

    @classmethod
    def from_payload(cls, name: str, version: int, payload: Mapping[str, Any]) -> TunedVersion:
        """Parse the registry's JSON payload (``{"threshold", "confidence_method", "order", "models"}``)."""
        models: dict[str, ModelTuning] = {}
        entries = payload.get("models") or {}
        for model in payload.get("order") or list(entries):
            entry = entries[model]
            cal = entry.get("calibration")
            try:
                calibration = Calibration.from_dict(cal) if cal is not None else None
            except (ValueError, KeyError, TypeError) as exc:
                raise ConfigError(f"{name} v{version}: calibration of {model!r} is invalid: {exc}") from None
            models[str(model)] = ModelTuning(entry.get("threshold"), entry.get("confidence_method"), calibration)
        return cls(name, int(version), models, payload.get("threshold"), payload.get("confidence_method"))


@dataclass(frozen=True)
class SourceState:
    """What a threshold source knows now. ``tuned`` is the promoted version (the last one that could be
    read, when ``stale``); ``pinned`` are versions A/B arms name; ``error`` says why the source is stale."""

    name: str
    tuned: TunedVersion | None
    pinned: Mapping[int, TunedVersion] = field(default_factory=dict)
    stale: bool = False
    error: str | None = None
    source: str = ""

    def status(self, version: int | None = None) -> dict[str, Any]:
        """The ``registry`` block of a trace."""
        return {"name": self.name, "version": version if version is not None else (
            self.tuned.version if self.tuned else None), "stale": self.stale, "error": self.error}


def tuned_config(config: RouterConfig, tuned: TunedVersion, names: Sequence[str] | None = None) -> RouterConfig:
    """``config`` with the version's chain (its models, in its order) and their thresholds and methods.

    Everything else (prices, limits, the ``human:`` section) stays the file's. Every model of the
    version must be one this configuration can call (listed in ``models:``, or supplied as ``names``).
    """
    specs = {s.name: s for s in config.models} or {n: ModelSpec(name=n) for n in names or ()}
    unknown = [m for m in tuned.models if m not in specs]
    if unknown:
        raise ConfigError(f"{tuned.name} v{tuned.version} uses model(s) {', '.join(unknown)} that this "
                          f"configuration cannot call (it has: {', '.join(specs) or 'none'})")
    data = config.model_dump(mode="json", exclude_unset=True)
    conf = data.setdefault("algorithm", {}).setdefault("confidence", {})
    conf["escalation_order"] = "declared"  # the version's order is the one its chain was tuned in
    if tuned.threshold is not None:
        conf["threshold"] = tuned.threshold
    if tuned.confidence_method is not None:
        conf["confidence_method"] = tuned.confidence_method
    models = []
    for name, t in tuned.models.items():
        spec = specs[name].model_dump(mode="json", exclude_unset=True)
        if t.threshold is not None:
            spec["threshold"] = t.threshold
        if t.confidence_method is not None:
            spec["confidence_method"] = t.confidence_method
        models.append(spec)
    data["models"] = models
    data.pop("registry", None)  # the tuned copy only builds tiers; its values are inline now
    if isinstance(data.get("human"), dict):
        data["human"].pop("ab_test", None)  # arms naming registry versions are the cascade's business
    out = parse_config(data, source=f"<registry {tuned.name} v{tuned.version}>")
    out._source = config.source
    return out


def tuned_tiers(config: RouterConfig, names: Sequence[str] | None, tuned: TunedVersion) -> tuple[list[Tier], str]:
    """Tiers for ``config`` under ``tuned``, and a config hash that tells versions apart."""
    cfg = tuned_config(config, tuned, names)
    calibrations = {m: t.calibration for m, t in tuned.models.items() if t.calibration is not None}
    tiers, _ = build_tiers(cfg, None, calibrations=calibrations)
    cal_ids = sorted(f"{m}={c.id}" for m, c in calibrations.items())
    digest = hashlib.sha256("|".join([cfg.config_hash(), tuned.name, str(tuned.version), *cal_ids]).encode())
    return tiers, digest.hexdigest()[:12]

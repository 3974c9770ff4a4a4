"""Resolve the configured candidate models into the ordered tiers a cascade walks through."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from .calibration import Calibration, load_calibration
from .config import NO_LOGPROB_METHODS, ModelSpec, RouterConfig
from .errors import ConfigError


@dataclass(frozen=True)
class Tier:
    """One step of the cascade with everything the policy needs to judge its answer."""

    index: int
    name: str
    spec: ModelSpec
    method: str
    threshold: float
    token_filter: str
    calibration: Calibration | None = None
    calibration_error: str | None = None

    def cost(self, tokens_in: int | None, tokens_out: int | None) -> float | None:
        return self.spec.cost(tokens_in, tokens_out)


def build_tiers(config: RouterConfig, names: Sequence[str] | None = None,
                calibrations: Mapping[str, Calibration] | None = None) -> tuple[list[Tier], str]:
    """Tiers in escalation order, and a sentence saying how the order was decided.

    ``names`` are the models a caller supplies (LangChain objects by key, say). Without a
    ``models:`` list in the file they become the declared order; with one, both must agree.
    ``calibrations`` (by model name) are already loaded ones (the threshold registry's) that replace the files.
    """
    specs = _specs(config, names)
    if not specs:
        raise ConfigError("no models: list them under 'models:' or pass them to the router", source=_src(config))
    ordered, how = order_models(specs, config)
    settings = config.confidence
    tiers = []
    conservative = config.human is not None and config.human.enabled
    for i, spec in enumerate(ordered):
        calibration, calibration_error = (calibrations or {}).get(spec.name), None
        if calibration is None and spec.calibration:
            try:
                calibration = load_calibration(config.resolve_path(spec.calibration))
            except ConfigError as exc:
                if not conservative:
                    raise
                # with humans in the loop, a broken calibration sends requests to human review
                calibration_error = str(exc)
        tiers.append(
            Tier(
                index=i,
                name=spec.name,
                spec=spec,
                method=spec.confidence_method or settings.confidence_method,
                threshold=settings.threshold if spec.threshold is None else spec.threshold,
                token_filter=spec.token_filter or settings.token_filter,
                calibration=calibration,
                calibration_error=calibration_error,
            )
        )
    for tier in tiers:
        _check_early_abort(config, tier)
    judge = settings.self_verify.judge
    uses_verify = any(t.method == "self_verify" for t in tiers)
    if uses_verify and judge is not None and judge not in {t.name for t in tiers}:
        raise ConfigError(
            f"algorithm.confidence.self_verify.judge: {judge!r} is not one of the models "
            f"({', '.join(t.name for t in tiers)})", source=_src(config),
            fields=["algorithm.confidence.self_verify.judge"])
    return tiers, how


def _check_early_abort(config: RouterConfig, tier: Tier) -> None:
    """An abort bound above the tier's threshold would cut answers the decision accepts: refuse it."""
    rule = tier.spec.early_abort
    if rule is None:
        return
    i = next((j for j, s in enumerate(config.models) if s.name == tier.name), tier.index)
    if tier.method in NO_LOGPROB_METHODS:
        raise ConfigError(f"models[{i}].early_abort: {tier.name!r} uses {tier.method}, which needs no logprobs; "
                          "early abort watches token logprobs as they stream (use a logprob signal or remove "
                          "early_abort)", source=_src(config), fields=[f"models.{i}.early_abort"])
    if rule.below > tier.threshold:
        raise ConfigError(f"models[{i}].early_abort.below: {rule.below:g} is above the tier's threshold "
                          f"{tier.threshold:g}; the rule would abandon answers that end up accepted (set below "
                          "<= threshold)", source=_src(config), fields=[f"models.{i}.early_abort.below"])


def _src(config: RouterConfig) -> str | None:
    return str(config.source) if config.source else None


def _specs(config: RouterConfig, names: Sequence[str] | None) -> list[ModelSpec]:
    if names is None:
        return list(config.models)
    if not config.models:
        return [ModelSpec(name=n) for n in names]
    supplied = set(names)
    missing = [(i, s.name) for i, s in enumerate(config.models) if s.name not in supplied]
    if missing:
        i, name = missing[0]
        raise ConfigError(
            f"models[{i}].name: no model was supplied for {name!r}; supplied: {', '.join(names)}",
            source=_src(config), fields=[f"models.{i}.name"],
        )
    known = {s.name for s in config.models}
    extra = [n for n in names if n not in known]
    if extra:
        raise ConfigError(
            f"models: supplied model(s) {', '.join(extra)} are not in the file's models list "
            f"({', '.join(sorted(known))})", source=_src(config), fields=["models"],
        )
    return list(config.models)


def order_models(specs: list[ModelSpec], config: RouterConfig) -> tuple[list[ModelSpec], str]:
    """Apply ``escalation_order``; stable, so ties keep the declared order."""
    settings = config.confidence
    order = settings.escalation_order
    if order == "declared":
        return specs, "declared order"
    if order == "small_to_large":
        sizes = _complete(specs, [s.parameters for s in specs], "size", config)
        if sizes is None:
            return specs, "declared order (no model has a size)"
        return _sort(specs, sizes), "by size, smallest first"
    prices = [_price(s) for s in specs]
    if order == "cost":
        costs = _complete(specs, prices, "input_cost_per_token", config)
        if costs is None:
            return specs, "declared order (no model has prices)"
        return _sort(specs, costs), "by price, cheapest first"
    # automix: blend of cost (cheaper is better) and quality, weighted by cost_quality_tradeoff
    t = settings.cost_quality_tradeoff
    n = len(specs)
    cost = _fill(prices, [s.parameters for s in specs], n)
    quality = _fill([s.quality for s in specs], [math.log(p) if p else None for p in
                                                 (s.parameters for s in specs)], n)
    cost_n, quality_n = _normalise(cost), _normalise(quality)
    value = [t * (1.0 - c) + (1.0 - t) * q for c, q in zip(cost_n, quality_n, strict=True)]
    ordered = [s for _, s in sorted(zip(value, specs, strict=True), key=lambda p: -p[0])]
    return ordered, f"automix (cost_quality_tradeoff={t:g}: higher favours cheaper models first)"


def _price(spec: ModelSpec) -> float | None:
    if spec.input_cost_per_token is None and spec.output_cost_per_token is None:
        return None
    return (spec.input_cost_per_token or 0.0) + (spec.output_cost_per_token or 0.0)


def _complete(
    specs: list[ModelSpec], values: list[float | None], field: str, config: RouterConfig
) -> list[float] | None:
    if all(v is None for v in values):
        return None
    for i, v in enumerate(values):
        if v is None:
            raise ConfigError(
                f"models[{i}].{field}: model {specs[i].name!r} has none, but the order "
                f"{config.confidence.escalation_order!r} needs it on every model (or use 'declared')",
                source=_src(config), fields=[f"models.{i}.{field}"],
            )
    return [float(v) for v in values if v is not None]


def _sort(specs: list[ModelSpec], keys: list[float]) -> list[ModelSpec]:
    return [s for _, _, s in sorted(zip(keys, range(len(specs)), specs, strict=True))]


def _fill(primary: list[float | None], secondary: list[float | None], n: int) -> list[float]:
    """First available figure per model: the primary one, else the secondary, else declared rank."""
    if all(v is not None for v in primary):
        return [float(v) for v in primary if v is not None]
    if all(v is not None for v in secondary):
        return [float(v) for v in secondary if v is not None]
    return [float(i) for i in range(n)]


def _normalise(values: list[float]) -> list[float]:
    lo, hi = min(values), max(values)
    if hi <= lo:
        return [0.5] * len(values)
    return [(v - lo) / (hi - lo) for v in values]

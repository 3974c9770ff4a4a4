"""``confidence-router validate CONFIG``: check a configuration file and show what it resolves to."""

from __future__ import annotations

import argparse
import json

from ..core.abort import guarantee
from ..core.config import RouterConfig, load_config
from ..core.tiers import Tier, build_tiers


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("validate", help="check a configuration file")
    p.add_argument("config", help="YAML configuration file")
    p.add_argument("--json", action="store_true", help="print the effective configuration as JSON")
    p.set_defaults(func=run)


def _early_abort(tier: Tier, *, last: bool) -> str:
    """One line on a tier's early-abort rule: what it does and whether it is provably conservative."""
    rule = tier.spec.early_abort
    assert rule is not None
    if last:
        return "early_abort: ignored (the last tier is never gated)"
    verdict = guarantee(tier.method, tier.token_filter, tier.calibration)
    kind = "provably conservative" if verdict.conservative else "not provably conservative: tune and certify it"
    return (f"early_abort: after {rule.after_tokens} tokens, abort below {rule.below:g} "
            f"(checked every {rule.check_every}); {kind} ({verdict.why})")


def run(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    settings = config.confidence
    if args.json:
        print(json.dumps(config.model_dump(mode="json"), indent=2))
        return 0
    print(f"{args.config}: valid (config hash {config.config_hash()})")
    print(f"  method {settings.confidence_method}, threshold {settings.threshold:g}, "
          f"token filter {settings.token_filter}, on_error {settings.on_error}, "
          f"missing logprobs {settings.missing_logprobs}, final fallback {settings.final_fallback}")
    if config.registry is not None:
        _show_registry(config)
    elif config.models:
        tiers, how = build_tiers(config)
        print(f"  escalation order ({how}):")
        for tier in tiers:
            cal = f", calibration {tier.calibration.id}" if tier.calibration else ""
            print(f"    {tier.index}. {tier.name}: {tier.method} >= {tier.threshold:g}{cal}")
            if tier.spec.early_abort is not None:
                print("       " + _early_abort(tier, last=tier.index == len(tiers) - 1))
    else:
        print("  no models listed: the caller supplies them, in its own order")
    return 0


def _show_registry(config: RouterConfig) -> None:
    """The chain and thresholds come from the registry: show the version in force there."""
    from ..core.engine import Cascade

    reg = config.registry
    assert reg is not None
    print(f"  thresholds from the registry: name {reg.name}, polled every {reg.poll_s:g} s")
    cascade = Cascade.from_config(config)  # a registry that cannot be read without human: raises, naming it
    status = cascade.registry_status or {}
    if status.get("version") is None:
        print(f"  no version in force ({status.get('error')}): every request would go to human_assisted")
        return
    print(f"  version {status['version']} in force:")
    for tier in cascade.tiers:
        cal = f", calibration {tier.calibration.id}" if tier.calibration else ""
        print(f"    {tier.index}. {tier.name}: {tier.method} >= {tier.threshold:g}{cal}")

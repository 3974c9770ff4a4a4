"""``confidence-router evaluate``: replay a configuration on held-out runs next to the baselines.

``--json`` prints one object; its keys are documented in
:mod:`langchain_confidence_router.evaluation.evaluate` (and docs/evaluation.md): at least
``accuracy``, ``cost``, ``largest_accuracy``, ``largest_cost``, ``oracle_cost``, ``savings`` and
``escalation_rate``.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from ..core.config import load_config


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("evaluate", help="replay a configuration on recorded runs against baselines",
                       description="Offline evaluation: the cascade versus always-smallest, always-largest, "
                                   "random routing at the same escalation rate and the oracle.")
    p.add_argument("--runs", action="append", required=True, metavar="FILE",
                   help="held-out recorded runs (JSONL or JSONL.gz); repeat for several files")
    p.add_argument("--config", required=True, help="configuration to evaluate (e.g. from `tune`)")
    p.add_argument("--models", help="ladder for the baselines, comma-separated (default: the tuned file's "
                                    "evidence.candidates, else its chain)")
    p.add_argument("--json", action="store_true", help="print all figures as one JSON object")
    p.set_defaults(func=run)


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{x * 100:.1f}%"


def _num(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.3f}"


def _largest_alone(report: dict[str, Any]) -> bool:
    return list(report["models"]) == [report["largest_model"]]


def render(report: dict[str, Any]) -> str:
    """A plain-text summary of :func:`evaluate_config`'s report."""
    lines = [f"{report['n']} items; cascade {' -> '.join(report['models'])}", ""]
    if _largest_alone(report):
        lines[0] += (f" -- this is the largest model alone: the tuned configuration routes every request to "
                     f"{report['largest_model']}, so it saves nothing")
    lines.append(f"{'policy':18s} {'accuracy':>9s} {'mean cost $':>12s} {'savings':>8s} {'oracle share':>12s}")
    for name, row in report["baselines"].items():
        lines.append(f"{name:18s} {row['accuracy']:9.4f} {row['cost']:12.4g} {_pct(row['savings']):>8s} "
                     f"{_pct(row['oracle_savings_captured']):>12s}")
    lines.append("")
    lines.append(f"accuracy drop vs {report['largest_model']}: {report['accuracy_drop'] * 100:+.2f} points; "
                 f"escalation rate {_pct(report['escalation_rate'])}; fallback {_pct(report['fallback_rate'])}; "
                 f"{report['calls_per_request']:.2f} calls per request")
    for model, rate in report["escalation_rate_per_tier"].items():
        lines.append(f"  {model}: escalated {_pct(rate)} of the requests it saw; "
                     f"answered {_pct(report['served_share'][model])}")
    lines.append("")
    lines.append(f"signals (AUROC; ECE before -> after cross-fitted Platt, {report['ece_binning']}):")
    for model, sigs in report["signals"].items():
        parts = [f"{s} {_num(v['auroc'])}; {_num(v['ece_before'])}->{_num(v['ece_after'])}" for s, v in sigs.items()]
        lines.append(f"  {model}: " + (" | ".join(parts) if parts else "no signals"))
    for model, cal in report["calibration"].items():
        lines.append(f"  configured calibration of {model} ({cal['method']} on {', '.join(cal['inputs'])}): "
                     f"AUROC {_num(cal['auroc'])}, ECE {_num(cal['ece_before'])} -> {_num(cal['ece_after'])}, "
                     f"Brier {_num(cal['brier'])}")
    abort = report.get("early_abort")
    if abort:
        lines.append("")
        lines.append(f"early abort: {_pct(abort['aborted_share'])} of requests cut a gated attempt; accuracy "
                     f"{abort['accuracy_change'] * 100:+.2f} points vs no abort; output tokens "
                     f"{abort['output_tokens']:.1f} vs {abort['output_tokens_without']:.1f} per request "
                     f"(saved {abort['output_tokens_saved']:.1f})")
        if abort["latency_ms"] is not None:
            lines.append(f"  estimated latency {abort['latency_ms']:.0f} ms vs {abort['latency_ms_without']:.0f} ms "
                         f"per request (saved {_pct(abort['latency_saved_share'])})"
                         + (f"; escalated p50 {abort['escalated_p50_latency_ms']:.0f} ms vs "
                            f"{abort['escalated_p50_latency_ms_without']:.0f} ms"
                            if abort["escalated_p50_latency_ms"] is not None else ""))
        for model, row in abort["per_tier"].items():
            token = "n/a" if row["mean_abort_token"] is None else f"{row['mean_abort_token']:.1f}"
            lines.append(f"  {model}: cut {_pct(row['aborted_share'])} of the requests it saw, at token {token} on "
                         f"average; {row['wrongly_aborted']} cut answer(s) it would have served")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    from ..evaluation.evaluate import evaluate_config
    from ..evaluation.matrix import load_runs

    config = load_config(args.config)
    runs = load_runs(args.runs)
    candidates = [m.strip() for m in args.models.split(",") if m.strip()] if args.models else None
    report = evaluate_config(config, runs, candidates=candidates)
    if args.json:
        print(json.dumps({**report, "largest_alone": _largest_alone(report)}, indent=2))
    else:
        print(render(report))
    return 0

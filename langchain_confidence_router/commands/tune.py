"""``confidence-router tune``: choose chain, signal and per-model thresholds with an accuracy guarantee.

Example::

    confidence-router tune --runs train.jsonl.gz --config base.yaml --out tuned.yaml \\
        --max-accuracy-drop 0.01 --delta 0.05

writes ``tuned.yaml`` (loadable by ``load_config``) with the chosen ``models:`` in order, their
thresholds and calibration files (written next to it), ``escalation_order: declared`` and an
``evidence:`` block saying how the thresholds were chosen and what is guaranteed.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..core.config import RouterConfig, load_config
from ..core.errors import ConfigError


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("tune", help="fit per-model thresholds on labelled runs, with a guarantee",
                       description="Tune a cascade on recorded runs (Learn-then-Test, fixed-sequence testing).")
    p.add_argument("--runs", action="append", metavar="FILE",
                   help="recorded runs (JSONL or JSONL.gz); repeat for several files")
    p.add_argument("--labels", metavar="FILE", help="reviewers' labels (`confidence-router review export`): "
                   "refit each model's calibration from them, keeping the chain and thresholds (needs --config)")
    p.add_argument("--config", help="base configuration (settings, candidate models, prices)")
    p.add_argument("--out", required=True, help="tuned configuration to write (YAML)")
    p.add_argument("--models", help="candidate models in escalation order, comma-separated "
                                    "(default: the base configuration's models, else by mean cost)")
    target = p.add_mutually_exclusive_group()
    target.add_argument("--target-accuracy", type=float, help="absolute accuracy the cascade must reach")
    target.add_argument("--max-accuracy-drop", type=float,
                        help="allowed accuracy drop versus the largest (last) candidate, e.g. 0.01")
    p.add_argument("--delta", type=float, default=0.05, help="the guarantee fails with probability <= delta")
    p.add_argument("--calibrate", default="platt",
                   help="platt, isotonic, temperature, combiner or none; several comma-separated compete")
    p.add_argument("--signals", help="candidate signals, comma-separated (default: every recorded one the "
                                     "router computes at run time)")
    p.add_argument("--bound", default="binomial", choices=("binomial", "hoeffding_bentkus"),
                   help="test for an absolute target (a relative one always uses the paired test)")
    p.add_argument("--mode", default="auto", choices=("auto", "direct", "quantile", "split"),
                   help="direct: one threshold per signal certified on all items (<= 2 models); quantile: one "
                        "label-free path per sub-chain certified on all items (default for a relative target); "
                        "split: select on one part, certify on the other (default: auto)")
    p.add_argument("--select-fraction", type=float, default=0.3, help="split mode: share of items used to select")
    p.add_argument("--path-select-fraction", type=float, default=0.0,
                   help="quantile mode: share of items that choose one path, the rest certify it at the full delta "
                        "(default 0: every path certified on all items, delta shared between them)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random split")
    p.add_argument("--json", action="store_true", help="print the evidence as JSON")
    p.set_defaults(func=run)


def _csv(text: str | None) -> list[str] | None:
    return [t.strip() for t in text.split(",") if t.strip()] if text else None


def run(args: argparse.Namespace) -> int:
    if args.labels:
        return _recalibrate(args)
    if not args.runs:
        raise ConfigError("tune needs --runs (recorded runs) or --labels (review labels)")
    from ..evaluation.matrix import build_matrix, load_runs
    from ..evaluation.tune import tune, write_tuned_config

    base: RouterConfig | None = load_config(args.config) if args.config else None
    if base is not None and base.evidence:
        base = base.model_copy(update={"evidence": None})
    runs = load_runs(args.runs)
    models = _csv(args.models)
    names = models or ([s.name for s in base.models] if base and base.models else None)
    matrix = build_matrix(runs, names, base, progress=None)
    result = tune(
        matrix, base, models=models, target_accuracy=args.target_accuracy, max_accuracy_drop=args.max_accuracy_drop,
        delta=args.delta, calibrate=args.calibrate, signals=_csv(args.signals), mode=args.mode,
        select_fraction=args.select_fraction, bound=args.bound, seed=args.seed,
        path_select_fraction=args.path_select_fraction,
    )
    extra = {"runs": [str(Path(r)) for r in args.runs], "base_config": args.config}
    out = write_tuned_config(result, base, args.out, extra_evidence=extra)
    ev = result.evidence
    if args.json:
        print(json.dumps({**ev, "path_table": result.path}, indent=2))
        return 0
    chain = " -> ".join(f"{m} (>= {t:.4g})" if i < len(result.models) - 1 else m
                        for i, (m, t) in enumerate(zip(result.models, result.thresholds, strict=True)))
    exp = ev["expected"]
    print(f"wrote {out}")
    print(f"  chain: {chain}")
    print(f"  signal {ev['signal']}, calibration {ev['calibration']}; tuned on {ev['n']} items "
          f"({ev['mode']} mode: {ev['n_select']} select / {ev['n_certify']} certify)")
    if "target" in ev:
        print(f"  guarantee: {ev['guarantee']}; certified {ev['certified_configurations']} of "
              f"{ev['path_length']} configurations tested")
        if "note" in ev:
            print(f"  warning: {ev['note']}")
        for stop in ev.get("stopped_at", [])[:20] if ev.get("largest_alone") else []:
            bound = stop.get("drop_upper_bound")
            print(f"    path {stop['path']} stopped at step {stop['step']}: {' -> '.join(stop['models'])} "
                  f"thresholds {stop['thresholds']}, estimated drop {stop['estimated_drop'] * 100:+.2f} pts"
                  + (f", upper bound {bound * 100:.2f} pts" if bound is not None else "")
                  + f", cascade worse on {stop['n_cascade_worse']} items and better on {stop['n_cascade_better']}, "
                  f"p = {stop['p_value']:.3g}")
    print(f"  on the tuning items: accuracy {exp['accuracy']:.4f} (largest {exp['largest_accuracy']:.4f}), "
          f"mean cost ${exp['cost_usd']:.3g} (largest ${exp['largest_cost_usd']:.3g}), savings "
          f"{(exp['savings'] or 0) * 100:.1f}%")
    if not result.models:
        raise ConfigError("tuning produced no chain")
    return 0


def _recalibrate(args: argparse.Namespace) -> int:
    from ..evaluation.recalibrate import recalibrate_from_labels

    if not args.config:
        raise ConfigError("tune --labels needs --config: the configuration whose calibrations to refit")
    method = (args.calibrate or "platt").split(",")[0]
    summaries = recalibrate_from_labels(args.labels, load_config(args.config), args.out,
                                        method="platt" if method == "none" else method)
    print(f"wrote {args.out}")
    for s in summaries:
        print(f"  {s.model}: {s.note} ({s.n} labels, signal {s.signal})" + (f" -> {s.path}" if s.path else ""))
    return 0

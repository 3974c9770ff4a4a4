"""``confidence-router tune-abort``: fit the early-abort rules of a configuration, with a guarantee.

Example::

    confidence-router tune-abort --runs train.jsonl.gz --config tuned.yaml --out tuned-abort.yaml \\
        --max-accuracy-drop 0.01 --delta 0.05

keeps the chain and thresholds of ``tuned.yaml`` and writes ``early_abort`` on its gated tiers, plus
``evidence.early_abort`` (how the rules were chosen, the guarantee, the estimated savings).
"""

from __future__ import annotations

import argparse
import json

from ..core.config import load_config


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("tune-abort", help="fit early_abort rules on recorded runs, with an accuracy guarantee",
                       description="Choose early_abort (after_tokens, below) for the gated tiers of a configuration "
                                   "so that, with probability >= 1 - delta, accuracy drops by at most the bound "
                                   "versus the same configuration without early abort.")
    p.add_argument("--runs", action="append", required=True, metavar="FILE",
                   help="recorded runs with token logprobs (JSONL or JSONL.gz); repeat for several files")
    p.add_argument("--config", required=True, help="configuration whose gated tiers get rules (e.g. from `tune`)")
    p.add_argument("--out", required=True, help="configuration to write (YAML)")
    p.add_argument("--max-accuracy-drop", type=float, required=True,
                   help="allowed accuracy drop versus no early abort, e.g. 0.01")
    p.add_argument("--delta", type=float, default=0.05, help="the guarantee fails with probability <= delta")
    p.add_argument("--after-tokens", default="2,4,8,16,32", help="candidate minimum token counts, comma-separated")
    p.add_argument("--select-fraction", type=float, default=0.3, help="share of items used to choose after_tokens")
    p.add_argument("--seed", type=int, default=0, help="seed of the random split")
    p.add_argument("--json", action="store_true", help="print the evidence as JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..evaluation.matrix import load_runs
    from ..evaluation.tune_abort import tune_abort, write_abort_config

    config = load_config(args.config)
    runs = load_runs(args.runs)
    after = [int(a) for a in args.after_tokens.split(",") if a.strip()]
    result = tune_abort(config, runs, max_accuracy_drop=args.max_accuracy_drop, delta=args.delta,
                        after_tokens=after, select_fraction=args.select_fraction, seed=args.seed)
    out = write_abort_config(result, config, args.out)
    ev = result.evidence
    if args.json:
        print(json.dumps(ev, indent=2))
        return 0
    print(f"wrote {out}")
    print(f"  guarantee: {ev['guarantee']} ({ev['n_select']} select / {ev['n_certify']} certify items)")
    for name, rule in result.rules.items():
        print(f"  {name}: early_abort after_tokens {rule.after_tokens}, below {rule.below:.4g}")
    expected = ev.get("expected")
    if expected:
        saved = expected["latency_saved_share"]
        print(f"  on these runs: {expected['aborted_share'] * 100:.1f}% of requests cut a gated attempt; accuracy "
              f"{expected['accuracy_change'] * 100:+.2f} points; output tokens saved "
              f"{expected['output_tokens_saved']:.1f} per request"
              + (f"; estimated latency saved {saved * 100:.1f}%" if saved is not None else ""))
    return 0

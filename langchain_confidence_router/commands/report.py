"""``confidence-router report``: PNG plots and a small HTML page for a configuration on recorded runs.

Needs matplotlib (the ``report`` extra), imported only here.
"""

from __future__ import annotations

import argparse

from ..core.config import load_config


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("report", help="plots (reliability, signal histograms, cost/accuracy) and an HTML page",
                       description="Write reliability diagrams, signal histograms and the deferral / "
                                   "cost-accuracy curve with the baselines and the oracle, plus index.html.")
    p.add_argument("--runs", action="append", required=True, metavar="FILE",
                   help="recorded runs (JSONL or JSONL.gz); repeat for several files")
    p.add_argument("--config", required=True, help="configuration to report on (e.g. from `tune`)")
    p.add_argument("--out", required=True, help="output folder (created)")
    p.add_argument("--models", help="ladder for the baselines, comma-separated")
    p.add_argument("--title", help="page title")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..evaluation.matrix import load_runs
    from ..evaluation.report import write_report

    config = load_config(args.config)
    runs = load_runs(args.runs)
    candidates = [m.strip() for m in args.models.split(",") if m.strip()] if args.models else None
    files = write_report(config, runs, args.out, candidates=candidates, title=args.title)
    print(f"wrote {len(files)} files to {args.out}: " + ", ".join(f.name for f in files))
    return 0

"""``confidence-router monitor``: calibration (ECE), drift (PSI), route shares, A/B arms and warnings.

    confidence-router monitor --store reviews.db [--baseline FILE] [--window 500] [--json] [--strict]

Exit status 0; with ``--strict``, 3 when a warning or alert fired (for cron jobs and CI gates).
"""

from __future__ import annotations

import argparse
import json
import math

from ..human.monitor import (
    DEFAULT_BINS,
    DEFAULT_ECE_WARN,
    DEFAULT_MIN_SAMPLES,
    DEFAULT_PSI_ALERT,
    DEFAULT_PSI_WARN,
    DEFAULT_WINDOW,
    MonitorReport,
)
from .review import add_store_argument, open_cli_store, print_table

EXIT_WARNINGS = 3


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("monitor", help="calibration error, confidence drift, route shares and A/B arms")
    add_store_argument(p)
    p.add_argument("--baseline", help="baseline confidences: JSON list, calibration file with a fitted histogram, "
                                      "JSONL with 'confidence', or one number per line (default: first WINDOW "
                                      "decisions in the store)")
    p.add_argument("--window", type=int, default=DEFAULT_WINDOW,
                   help=f"last N labelled answers (ECE) and last N decisions (PSI, shares); default {DEFAULT_WINDOW}")
    p.add_argument("--ece-warn", type=float, default=DEFAULT_ECE_WARN,
                   help=f"ECE above which to warn, measured with the monitor's {DEFAULT_BINS} "
                        f"equal-width bins (report/tune use 15 equal-mass bins); default {DEFAULT_ECE_WARN}")
    p.add_argument("--psi-warn", type=float, default=DEFAULT_PSI_WARN, help=f"default {DEFAULT_PSI_WARN}")
    p.add_argument("--psi-alert", type=float, default=DEFAULT_PSI_ALERT, help=f"default {DEFAULT_PSI_ALERT}")
    p.add_argument("--min-samples", type=int, default=DEFAULT_MIN_SAMPLES,
                   help=f"fewest values before a figure may warn; default {DEFAULT_MIN_SAMPLES}")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("--strict", action="store_true", help=f"exit {EXIT_WARNINGS} when a warning or alert fired")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..human.monitor import Monitor

    with open_cli_store(args) as store:
        monitor = Monitor(store, window=args.window, baseline=args.baseline, ece_warn=args.ece_warn,
                          psi_warn=args.psi_warn, psi_alert=args.psi_alert, min_samples=args.min_samples)
        report = monitor.report()  # the CLI prints warnings itself; check() would log them twice
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
    else:
        render(report)
    return EXIT_WARNINGS if args.strict and report.warnings else 0


def _fmt(value: float | None, spec: str = ".3f") -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else format(value, spec)


def render(report: MonitorReport) -> None:
    """Human-readable report: summary figures, routes, models, arms, then warnings and notes."""
    print_table(
        f"confidence monitor: {report.n_decisions} decision(s) stored, window {report.window}",
        ("figure", "value", "based on"),
        [
            (f"ECE ({report.ece_binning}), automated", _fmt(report.ece),
             f"last {report.ece_n} labelled automated answer(s)"),
            (f"PSI ({report.bins} baseline quantile bins)", _fmt(report.psi),
             f"{report.psi_n_current} recent vs {report.psi_n_baseline} baseline ({report.psi_baseline})"),
        ],
    )
    if report.route_counts:
        print_table(f"routes, last {report.n_window} decision(s)", ("route", "count", "share"),
                    [(k, report.route_counts[k], f"{v:.1%}") for k, v in report.route_shares.items()])
        print_table("final models", ("model", "share"), [(k, f"{v:.1%}") for k, v in report.model_shares.items()])
    if report.arms is not None:
        rows = [(s.arm, s.n, s.n_labelled, _fmt(s.accuracy), _fmt(s.automated_accuracy), _fmt(s.automation_rate),
                 _fmt(s.mean_cost_usd, ".6f")) for s in report.arms.arms.values()]
        print_table("A/B arms (whole store)",
                    ("arm", "n", "labelled", "accuracy", "automated acc.", "automation", "mean cost $"), rows)
        if report.arms.tests:
            a, b = report.arms.control, report.arms.treatment
            print_table(f"{b} - {a} (two-proportion z-test)", ("metric", "difference", "z", "p-value"),
                        [(name, _fmt(t.diff, "+.3f"), _fmt(t.z, ".2f"), _fmt(t.p_value, ".4f"))
                         for name, t in report.arms.tests.items()])
    for w in report.warnings:
        print(f"{w.level.upper()}: {w.message}")
    if not report.warnings:
        print("no warnings")
    for note in report.notes:
        print(f"note: {note}")

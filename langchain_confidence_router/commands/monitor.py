"""``confidence-router monitor``: calibration (ECE), drift (PSI), route shares, A/B arms and warnings.

    confidence-router monitor --store reviews.db [--baseline FILE] [--window 500] [--json] [--strict]
    confidence-router monitor --store URL --every 15m --metrics-port 9465      # a service Prometheus scrapes
    confidence-router monitor --store URL --pushgateway http://pushgateway:9091  # one run, pushed (cron)

Exit status 0; with ``--strict``, 3 when a warning or alert fired (for cron jobs and CI gates).
With ``--every`` it runs until interrupted, exporting each run's figures as gauges.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import re
import time
from typing import TYPE_CHECKING

from ..core.errors import ConfigError
from ..human.monitor import (
    DEFAULT_BINS,
    DEFAULT_ECE_WARN,
    DEFAULT_MIN_SAMPLES,
    DEFAULT_PSI_ALERT,
    DEFAULT_PSI_WARN,
    DEFAULT_WINDOW,
    Monitor,
    MonitorReport,
)
from .review import add_store_argument, open_cli_store, print_table

if TYPE_CHECKING:
    from ..metrics.monitor_export import MonitorGauges

EXIT_WARNINGS = 3
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}
logger = logging.getLogger("langchain_confidence_router.commands.monitor")


def parse_duration(text: str) -> float:
    """Seconds in ``"15m"``, ``"30s"``, ``"1h"``, ``"500ms"``, ``"1d"`` or a plain number of seconds."""
    match = _DURATION.match(text)
    if not match or float(match.group(1)) <= 0:
        raise ConfigError(f"--every {text!r}: expected a positive duration such as 30s, 15m or 1h")
    return float(match.group(1)) * _UNITS[match.group(2)]


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
    p.add_argument("--every", metavar="DURATION",
                   help="run on a schedule until interrupted (e.g. 15m, 1h); prints one line (or JSON) per run")
    p.add_argument("--metrics-port", type=int, metavar="PORT",
                   help="with --every: serve the figures as Prometheus gauges on this port (/metrics)")
    p.add_argument("--metrics-addr", default="0.0.0.0", help="address for --metrics-port (default 0.0.0.0)")
    p.add_argument("--pushgateway", metavar="URL",
                   help="push each run's gauges to this Prometheus Pushgateway (for cron-style one-shot runs)")
    p.add_argument("--job", default="confidence_router_monitor", help="Pushgateway job name")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    every = parse_duration(args.every) if args.every else None
    if args.metrics_port is not None and every is None:
        raise ConfigError("--metrics-port needs --every: a single run ends before Prometheus could scrape it "
                          "(use --pushgateway for one-shot runs)")
    gauges = _gauges(args)
    with open_cli_store(args) as store:
        monitor = Monitor(store, window=args.window, baseline=args.baseline, ece_warn=args.ece_warn,
                          psi_warn=args.psi_warn, psi_alert=args.psi_alert, min_samples=args.min_samples)
        if every is None:
            report = monitor.report()  # the CLI prints warnings itself; check() would log them twice
            _export(report, args, gauges, scheduled=False)
            if args.json:
                print(json.dumps(report.to_dict(), indent=2))
            else:
                render(report)
            return EXIT_WARNINGS if args.strict and report.warnings else 0
        return _scheduled(monitor, every, args, gauges)


def _gauges(args: argparse.Namespace) -> MonitorGauges | None:
    """The gauges --metrics-port serves (on the default registry), after starting the port."""
    if args.metrics_port is None and not args.pushgateway:
        return None
    try:
        from ..metrics.monitor_export import MonitorGauges
    except ImportError:
        raise ConfigError("--metrics-port and --pushgateway need prometheus_client "
                          "(pip install 'langchain-confidence-router[metrics]')") from None
    if args.metrics_port is None:
        return None
    from ..metrics.server import serve_metrics

    serve_metrics(args.metrics_port, args.metrics_addr)
    return MonitorGauges()


def _export(report: MonitorReport, args: argparse.Namespace, gauges: MonitorGauges | None, *,
            scheduled: bool) -> None:
    if gauges is not None:
        gauges.update(report)
    if args.pushgateway:
        from ..metrics.monitor_export import push_report

        try:
            push_report(report, args.pushgateway, args.job)
        except OSError as exc:
            if not scheduled:
                raise ConfigError(f"--pushgateway {args.pushgateway}: push failed ({exc})") from None
            logger.error("monitor: push to %s failed: %s", args.pushgateway, exc)


def _scheduled(monitor: Monitor, every: float, args: argparse.Namespace, gauges: MonitorGauges | None) -> int:
    """Run every ``every`` seconds until interrupted; a failed run is logged and the schedule goes on."""
    next_run = time.monotonic()
    try:
        while True:
            try:
                report = monitor.check()  # logs the warnings, for the service's log
            except Exception:  # the store is down: keep the schedule; the stale timestamp gauge tells Prometheus
                logger.exception("monitor: run failed")
            else:
                _export(report, args, gauges, scheduled=True)
                print(json.dumps(report.to_dict()) if args.json else summary_line(report), flush=True)
            next_run += every
            time.sleep(max(0.0, next_run - time.monotonic()))
    except KeyboardInterrupt:
        return 0


def summary_line(report: MonitorReport) -> str:
    """One line per scheduled run: time, ECE (with its binning), PSI, warnings."""
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(report.generated_at))
    warned = ", ".join(f"{w.kind} {w.level}" for w in report.warnings) or "none"
    return (f"{stamp} ECE {_fmt(report.ece)} ({report.ece_binning}, n={report.ece_n}) "
            f"PSI {_fmt(report.psi)} (n={min(report.psi_n_baseline, report.psi_n_current)}) warnings: {warned}")


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

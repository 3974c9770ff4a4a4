"""``confidence-router review``: work the human review queue and feed labels back to calibration.

    confidence-router review --store reviews.db list [--limit 20] [--route human_primary] [--json]
    confidence-router review --store reviews.db label REQUEST_ID --correct|--wrong [--decision edited]
                                                      [--reviewer ann] [--note "..."]
    confidence-router review --store reviews.db export labels.jsonl [--since 2025-01-31]

``--store`` is a SQLite path or a PostgreSQL URL (default: ``$CONFIDENCE_ROUTER_STORE``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from dataclasses import asdict
from datetime import UTC, datetime
from typing import Any

STORE_ENV = "CONFIDENCE_ROUTER_STORE"
DECISIONS = ("approved", "edited", "rejected", "answered")


def add_store_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument("--store", default=os.environ.get(STORE_ENV),
                   help=f"SQLite file or postgresql:// URL (default: ${STORE_ENV})")


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("review", help="list, label and export the human review queue")
    add_store_argument(p)
    actions = p.add_subparsers(dest="review_action", metavar="ACTION")

    ls = actions.add_parser("list", help="pending review items, oldest first")
    ls.add_argument("--limit", type=int, default=20, help="at most this many items (default 20)")
    ls.add_argument("--route", choices=("human_assisted", "human_primary", "clarify", "automated"),
                    help="only this route (automated = spot checks)")
    ls.add_argument("--json", action="store_true", help="print JSON lines instead of a table")

    lb = actions.add_parser("label", help="record a reviewer's verdict and resolve the item")
    lb.add_argument("request_id")
    verdict = lb.add_mutually_exclusive_group(required=True)
    verdict.add_argument("--correct", dest="correct", action="store_true", help="the AI answer was right")
    verdict.add_argument("--wrong", dest="correct", action="store_false", help="the AI answer was wrong")
    lb.add_argument("--decision", help=f"what the reviewer did, e.g. {' / '.join(DECISIONS)}")
    lb.add_argument("--reviewer", help="who reviewed (default: $USER)", default=os.environ.get("USER"))
    lb.add_argument("--note", help="free-text note (credentials in it are redacted)")

    ex = actions.add_parser("export", help="labelled decisions as recorded-run JSONL for `confidence-router tune`")
    ex.add_argument("out", help="output file (.jsonl or .jsonl.gz)")
    ex.add_argument("--since", help="only decisions at or after this ISO-8601 date/time")

    p.set_defaults(func=run, _review_parser=p)


def parse_time(text: str | None) -> datetime | None:
    """ISO-8601 date or date-time; without a zone it is UTC (stores keep UTC epoch seconds)."""
    if text is None:
        return None
    value = datetime.fromisoformat(text)
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def iso(ts: float | None) -> str:
    return "" if ts is None else datetime.fromtimestamp(ts, tz=UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def print_table(title: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """A rich table when rich is installed, aligned plain text otherwise."""
    cells = [["" if v is None else str(v) for v in row] for row in rows]
    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:
        print(title)
        widths = [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(columns)]
        print("  " + "  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)))
        for r in cells:
            print("  " + "  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)))
        return
    table = Table(title=title, title_justify="left")
    for c in columns:
        table.add_column(c, overflow="fold")
    for r in cells:
        table.add_row(*r)
    console = Console(file=sys.stdout)
    if not console.is_terminal:  # piped or captured: rich would fold everything into 80 columns
        console = Console(file=sys.stdout, width=160)
    console.print(table)


def open_cli_store(args: argparse.Namespace) -> Any:
    from ..core.errors import ConfigError
    from ..human.store import open_store

    if not args.store:
        raise ConfigError(f"no store given: pass --store PATH|URL or set ${STORE_ENV}")
    return open_store(args.store, create=False)


def run(args: argparse.Namespace) -> int:
    if not args.review_action:
        args._review_parser.print_help()
        return 2
    with open_cli_store(args) as store:
        if args.review_action == "list":
            return _list(store, args)
        if args.review_action == "label":
            rec = store.label(args.request_id, args.correct, decision=args.decision, reviewer=args.reviewer,
                              note=args.note)
            print(f"labelled {rec.request_id}: {'correct' if rec.correct else 'wrong'}"
                  f"{f' ({rec.decision})' if rec.decision else ''}")
            return 0
        from ..evaluation.labels import export_labels

        n = export_labels(store, args.out, since=parse_time(args.since))
        print(f"wrote {n} labelled row(s) to {args.out}")
        return 0


def _list(store: Any, args: argparse.Namespace) -> int:
    items = store.pending(args.limit, route=args.route)
    if args.json:
        for item in items:
            print(json.dumps(asdict(item), ensure_ascii=False))
        return 0
    total = store.count()["pending"]
    rows = [
        (item.request_id, iso(item.ts), item.route, item.trigger,
         "" if item.confidence is None else f"{item.confidence:.3f}", item.final_model,
         _short(item.draft) if item.draft else "")
        for item in items
    ]
    print_table(f"{len(items)} of {total} pending review item(s)",
                ("request id", "time (UTC)", "route", "trigger", "confidence", "model", "draft"), rows)
    return 0


def _short(text: str, n: int = 60) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= n else flat[: n - 1] + "…"

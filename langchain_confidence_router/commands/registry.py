"""``confidence-router registry``: versioned thresholds that every replica follows.

    confidence-router registry push tuned.yaml --name support --url registry.db [--by ann] [--note "..."]
    confidence-router registry approve --name support --version 3 --by bob --url registry.db
    confidence-router registry promote --name support --version 3 --url registry.db [--by bob]
    confidence-router registry rollback --name support --url registry.db [--by bob]
    confidence-router registry history --name support --url registry.db [--json]

``--url`` is a SQLite path or a PostgreSQL URL (default: ``$CONFIDENCE_ROUTER_REGISTRY``). ``push`` takes
what ``confidence-router tune`` wrote; a version must be approved (by someone other than its pusher)
before it can be promoted.
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
from datetime import UTC, datetime
from typing import Any

REGISTRY_ENV = "CONFIDENCE_ROUTER_REGISTRY"


def _default_user() -> str:
    try:
        return os.environ.get("USER") or getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("registry", help="push, approve, promote and roll back versioned thresholds")
    actions = p.add_subparsers(dest="registry_action", metavar="ACTION")

    def action(name: str, help_text: str, *, version: bool = False, by_required: bool = False
               ) -> argparse.ArgumentParser:
        a = actions.add_parser(name, help=help_text, description=help_text)
        a.add_argument("--name", required=True, help="the tuned configuration's name, e.g. support")
        a.add_argument("--url", default=os.environ.get(REGISTRY_ENV),
                       help=f"registry: SQLite file or postgresql:// URL (default: ${REGISTRY_ENV})")
        if version:
            a.add_argument("--version", type=int, required=True, help="version number (see history)")
        if name != "history":
            a.add_argument("--by", required=by_required, default=None if by_required else _default_user(),
                           help="who does this" + ("" if by_required else " (default: $USER)"))
        return a

    push = action("push", "store a tuned configuration as a new version (pending approval)")
    push.add_argument("config", help="the tuned configuration `confidence-router tune` wrote")
    push.add_argument("--note", help="why this version (kept in the history)")
    action("approve", "record who approved a version", version=True, by_required=True)
    action("promote", "make an approved version the one every replica follows", version=True)
    action("rollback", "promote again the version that was in force before the current one")
    hist = action("history", "versions with status, approver, times and the tune evidence figures")
    hist.add_argument("--json", action="store_true", help="print JSON lines instead of a table")
    p.set_defaults(func=run, _registry_parser=p)


def run(args: argparse.Namespace) -> int:
    from ..core.errors import ConfigError

    if not getattr(args, "registry_action", None):
        args._registry_parser.print_help()
        return 2
    if not args.url:
        raise ConfigError(f"registry {args.registry_action}: give --url (a SQLite file or postgresql:// URL) or "
                          f"set ${REGISTRY_ENV}")
    from ..registry.store import open_registry

    with open_registry(args.url, create=args.registry_action == "push") as store:
        return _ACTIONS[args.registry_action](store, args)


def _push(store: Any, args: argparse.Namespace) -> int:
    from ..core.config import load_config
    from ..registry.store import payload_from_config

    config = load_config(args.config)
    version = store.push(args.name, payload_from_config(config), evidence=config.evidence, by=args.by,
                         source=str(args.config), note=args.note)
    print(f"pushed {args.name} v{version} by {args.by} (pending approval)")
    if not config.evidence:
        print("  note: the file has no evidence block (was it written by `confidence-router tune`?)")
    return 0


def _approve(store: Any, args: argparse.Namespace) -> int:
    record = store.approve(args.name, args.version, by=args.by)
    print(f"approved {args.name} v{record.version} by {record.approved_by} at {_time(record.approved_at)}")
    return 0


def _promote(store: Any, args: argparse.Namespace) -> int:
    record = store.promote(args.name, args.version, by=args.by)
    print(f"promoted {args.name} v{record.version} (approved by {record.approved_by}); replicas follow it "
          "within their poll_s")
    return 0


def _rollback(store: Any, args: argparse.Namespace) -> int:
    old, new = store.rollback(args.name, by=args.by)
    print(f"rolled back {args.name} from v{old} to v{new}; replicas follow it within their poll_s")
    return 0


def _history(store: Any, args: argparse.Namespace) -> int:
    records = store.history(args.name)
    if args.json:
        for r in records:
            print(json.dumps({"name": r.name, "version": r.version, "status": r.status, "pushed_by": r.pushed_by,
                              "pushed_at": r.pushed_at, "approved_by": r.approved_by, "approved_at": r.approved_at,
                              "promoted_at": r.promoted_at, "note": r.note, "source": r.source,
                              "figures": figures(r.evidence), "thresholds": thresholds(r.payload)}))
        return 0
    print(f"{args.name} in {store.url}")
    for r in records:
        print(f"  v{r.version:<3} {r.status:<11} pushed {_time(r.pushed_at)} by {r.pushed_by}; "
              + (f"approved {_time(r.approved_at)} by {r.approved_by}" if r.approved_at else "not approved")
              + (f"; promoted {_time(r.promoted_at)}" if r.promoted_at else ""))
        shown = ", ".join(f"{m} >= {t:.4g}" for m, t in thresholds(r.payload).items())
        print(f"       thresholds: {shown or '(global only)'}")
        fig = figures(r.evidence)
        if fig:
            print("       evidence: " + ", ".join(f"{k} {_fmt(v)}" for k, v in fig.items()))
        if r.note:
            print(f"       note: {r.note}")
    return 0


def thresholds(payload: dict[str, Any]) -> dict[str, float]:
    return {m: e["threshold"] for m, e in (payload.get("models") or {}).items() if e.get("threshold") is not None}


def figures(evidence: dict[str, Any] | None) -> dict[str, Any]:
    """The headline figures of a ``tune`` evidence block (what an approver looks at)."""
    if not evidence:
        return {}
    expected = evidence.get("expected") or {}
    out = {"accuracy": expected.get("accuracy"), "largest_accuracy": expected.get("largest_accuracy"),
           "savings": expected.get("savings"), "cost_usd": expected.get("cost_usd"), "n": evidence.get("n"),
           "signal": evidence.get("signal"), "calibration": evidence.get("calibration"),
           "guarantee": evidence.get("guarantee")}
    return {k: v for k, v in out.items() if v is not None}


def _fmt(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _time(ts: float | None) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%SZ") if ts else "-"


_ACTIONS = {"push": _push, "approve": _approve, "promote": _promote, "rollback": _rollback, "history": _history}

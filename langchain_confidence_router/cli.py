"""The ``confidence-router`` command.

Each subcommand lives in ``langchain_confidence_router/commands/<name>.py`` and exposes
``add_parser(subparsers)`` (which sets ``func`` on its parser) so features stay in their own modules.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import os
import sys
from collections.abc import Sequence

from .core.errors import ConfidenceRouterError

COMMANDS = ("validate", "demo", "collect", "tune", "tune_abort", "evaluate", "report", "review", "monitor",
            "registry")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="confidence-router",
        description="Cheapest model first; escalate when token-logprob confidence is low.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        module_name = f"{__package__}.commands.{name}"
        if importlib.util.find_spec(module_name) is None:
            continue
        importlib.import_module(module_name).add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # never fetch the cost map at import
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except ConfidenceRouterError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

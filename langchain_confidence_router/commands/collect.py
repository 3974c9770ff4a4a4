"""``confidence-router collect``: ask every model every dataset question and record graded runs.

Examples::

    # both local llama.cpp models (the [local] extra), the shipped quiz
    confidence-router collect examples/datasets/local_quiz.jsonl --local smollm2-135m,gemma3-270m \\
        --out examples/runs/local_quiz.jsonl

    # any OpenAI-compatible server; prices from a configuration's models list
    confidence-router collect quiz.jsonl --base-url http://127.0.0.1:8000/v1 --models small,large \\
        --config confidence.yaml --out runs.jsonl

Rows are appended one by one; running the same command again skips (item, model) pairs already
in the output, so an interrupted collection resumes where it stopped. See docs/local-model.md.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..core.config import RouterConfig, load_config
from ..core.errors import ConfigError


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("collect", help="record graded answers with logprobs from every model on a dataset",
                       description="Run a JSONL dataset (prompt, reference, grader) through each model and append "
                                   "recorded runs (logprobs, correctness, usage, cost, latency). Resumable.")
    p.add_argument("dataset", help="JSONL dataset: one {id, prompt, reference, grader} per line")
    p.add_argument("--out", required=True, help="recorded runs to append to (JSONL, or .jsonl.gz)")
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--local", metavar="KEYS",
                       help="local llama.cpp models to start, comma-separated (smollm2-135m,gemma3-270m)")
    where.add_argument("--base-url", help="an OpenAI-compatible API, e.g. http://127.0.0.1:8000/v1")
    p.add_argument("--models", help="with --base-url: model names to ask, comma-separated")
    p.add_argument("--api-key", help="with --base-url: API key (default: $OPENAI_API_KEY, else 'none')")
    p.add_argument("--config", help="configuration whose models give per-token prices and whose token filter "
                                    "and signal settings compute the recorded signals (default: the demo's)")
    p.add_argument("--limit", type=int, help="only the first N items")
    p.add_argument("--max-tokens", type=int, default=24, help="answer length cap (default 24)")
    p.add_argument("--top-logprobs", type=int, default=5, help="alternatives per token (default 5)")
    p.add_argument("--stream", action="store_true", help="stream answers (tokens are counted if usage is missing)")
    p.add_argument("--timeout", type=float, default=120.0, help="seconds per request (default 120)")
    p.add_argument("--n-ctx", type=int, default=1024, help="with --local: context size (default 1024)")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.add_argument("--no-progress", action="store_true", help="plain lines instead of a progress bar")
    p.set_defaults(func=run)


def _csv(text: str | None) -> list[str]:
    return [t.strip() for t in (text or "").split(",") if t.strip()]


@contextlib.contextmanager
def _servers(args: argparse.Namespace) -> Iterator[dict[str, tuple[str, str, str]]]:
    """name -> (base_url, served model, api key) for the requested models, starting local ones here."""
    if args.local:
        from ..local import LocalModelUnavailable, start_local_servers

        keys = _csv(args.local)
        if not keys:
            raise ConfigError("--local needs at least one model key, e.g. smollm2-135m")
        try:
            group = start_local_servers(keys, n_ctx=args.n_ctx)
        except LocalModelUnavailable as exc:
            raise ConfigError(str(exc)) from None
        with group:
            yield {k: (group[k].base_url, group[k].model, group[k].api_key) for k in keys}
        return
    names = _csv(args.models)
    if not names:
        raise ConfigError("--base-url needs --models (comma-separated model names)")
    key = args.api_key or os.environ.get("OPENAI_API_KEY") or "none"
    yield {n: (args.base_url, n, key) for n in names}


def run(args: argparse.Namespace) -> int:
    from ..evaluation.collect import (
        CollectSummary,
        Endpoint,
        collect,
        demo_config_path,
        load_items,
        nominal_prices,
        pending_pairs,
    )
    from ..evaluation.progress import progress_enabled

    items = load_items(args.dataset)[: args.limit] if args.limit else load_items(args.dataset)
    # the configuration prices the rows and sets how signals are computed (token filter, weights)
    config: RouterConfig = load_config(args.config or demo_config_path())
    prices = nominal_prices(config)
    dataset = Path(args.dataset).stem
    names = _csv(args.local or args.models)
    pending, skipped = pending_pairs(items, [Endpoint(n, "") for n in names], args.out)
    if names and not pending:  # resuming a finished collection: no need to start (or call) any model
        return _report(args, CollectSummary(skipped=skipped))
    with _servers(args) as served:
        endpoints = [Endpoint(name, url, model, key, *prices.get(name, (None, None)))
                     for name, (url, model, key) in served.items()]
        unpriced = [e.name for e in endpoints if e.input_cost_per_token is None and e.output_cost_per_token is None]
        if unpriced:
            print(f"note: no per-token price for {', '.join(unpriced)}; their rows get no cost_usd "
                  "(give prices in --config)", file=sys.stderr)
        kwargs: dict[str, Any] = dict(config=config, max_tokens=args.max_tokens, top_logprobs=args.top_logprobs,
                                      stream=args.stream, timeout=args.timeout, dataset=dataset)
        if progress_enabled(False if args.no_progress else None):
            summary = _with_bar(items, endpoints, args.out, kwargs)
        else:
            summary = collect(items, endpoints, args.out, on_record=_plain_line, **kwargs)
    return _report(args, summary)


def _report(args: argparse.Namespace, summary: Any) -> int:
    report = {"out": str(args.out), "added": summary.added, "skipped": summary.skipped,
              "failed": len(summary.failed), "accuracy": summary.accuracy()}
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        acc = ", ".join(f"{m} {a:.0%} ({summary.correct.get(m, 0)}/{summary.answered[m]})"
                        for m, a in summary.accuracy().items())
        print(f"{args.out}: added {summary.added} row(s), skipped {summary.skipped} already recorded"
              + (f", {len(summary.failed)} failed (rerun to retry)" if summary.failed else "")
              + (f"; accuracy of the new rows: {acc}" if acc else ""))
    for item_id, model, error in summary.failed[:5]:
        print(f"  failed: {model} on {item_id}: {error}", file=sys.stderr)
    return 1 if summary.failed else 0


def _plain_line(i: int, n: int, item: Any, endpoint: Any, result: Any) -> None:
    """One line per answer on stderr for logs and CI (no TTY); stdout keeps only the result."""
    if isinstance(result, Exception):
        print(f"[{i}/{n}] {endpoint.name} {item.id}: FAILED {type(result).__name__}: {result}", file=sys.stderr,
              flush=True)
        return
    mark = "correct" if result.correct else "wrong"
    print(f"[{i}/{n}] {endpoint.name} {item.id}: {mark} {result.latency_ms / 1000:.2f}s "
          f"{(result.model_extra or {}).get('answer', '')!r:.60}", file=sys.stderr, flush=True)


def _with_bar(items: Any, endpoints: Any, out: str, kwargs: dict[str, Any]) -> Any:
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from ..evaluation.collect import pending_pairs

    pending, _ = pending_pairs(items, endpoints, out)
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=Console(stderr=True), transient=True) as bar:
        def label(i: int) -> str:  # the pair being worked on, not the one just finished
            return f"{pending[i][1].name} {pending[i][0].id}" if i < len(pending) else "done"

        task = bar.add_task(label(0), total=len(pending))

        def advance(i: int, n: int, item: Any, endpoint: Any, result: Any) -> None:
            bar.update(task, advance=1, description=label(i))

        from ..evaluation.collect import collect

        return collect(items, endpoints, out, on_record=advance, **kwargs)

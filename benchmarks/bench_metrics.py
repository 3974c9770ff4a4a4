"""What the metrics observer adds to a request: the engine with and without it, side by side.

    python benchmarks/bench_metrics.py            # prints a table (microseconds per request, and the ratio)
    python benchmarks/bench_metrics.py --quick

The same cascades and instant call function as bench_engine.py, run alternately without observers
and with the metrics observer (prometheus_client counters and histograms, a private registry), so
the difference is the observer's in-memory updates on the request path. Median of ``--repeats``.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))

from bench_engine import canned, per_request_us
from prometheus_client import CollectorRegistry

from langchain_confidence_router.core import Cascade, run_policy
from langchain_confidence_router.metrics import metrics_observer
from langchain_confidence_router.metrics.instruments import RouterMetrics


def cascade(tiers: int, *, walk: bool) -> Cascade:
    """As bench_engine's, with prices, so the always-largest estimate is computed too."""
    models = [{"name": f"t{i}", "threshold": 1.0 if walk and i < tiers - 1 else 0.5, "input_cost_per_token": 1e-6,
               "output_cost_per_token": 2e-6} for i in range(tiers)]
    return Cascade.from_config({"algorithm": {"confidence": {"escalation_order": "declared"}}, "models": models})


def measure(n: int, repeats: int) -> list[dict[str, Any]]:
    rows = []
    call = canned(30)
    for name, tiers, walk in (("1 tier, accepted", 1, False), ("3 tiers, walks all 3", 3, True)):
        plain = cascade(tiers, walk=walk)
        observed = cascade(tiers, walk=walk)
        metrics = RouterMetrics(CollectorRegistry())
        observed.add_observer(metrics_observer(observed.config, name="bench", metrics=metrics))
        base, with_metrics = [], []
        for _ in range(repeats):  # alternate, so drift on a shared machine hits both alike
            base.append(per_request_us(lambda c=plain: run_policy(c.policy(), call), n, 1))
            with_metrics.append(per_request_us(lambda c=observed: run_policy(c.policy(), call), n, 1))
        b, m = sorted(base)[len(base) // 2], sorted(with_metrics)[len(with_metrics) // 2]
        rows.append({"scenario": f"{name} (30 tokens)", "plain_us": b, "metrics_us": m, "added_us": m - b,
                     "ratio": m / b})
    return rows


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=2000, help="requests per timed run")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per row (median)")
    parser.add_argument("--quick", action="store_true", help="--n 300 --repeats 3")
    args = parser.parse_args(argv)
    n, repeats = (300, 3) if args.quick else (args.n, args.repeats)
    rows = measure(n, repeats)
    print(f"metrics observer cost per request, instant call function; {os.cpu_count()} CPUs")
    print(f"{'scenario':<34} {'plain us':>9} {'metrics us':>11} {'added us':>9} {'ratio':>6}")
    for r in rows:
        print(f"{r['scenario']:<34} {r['plain_us']:>9.1f} {r['metrics_us']:>11.1f} {r['added_us']:>9.1f} "
              f"{r['ratio']:>6.2f}")
    return rows


if __name__ == "__main__":
    main()

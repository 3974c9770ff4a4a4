"""Recording on against off, through the real LiteLLM proxy with PostgreSQL, at 100 concurrent clients.

    python benchmarks/bench_recording.py              # 100 clients, 2 ABBA rounds; about 1-2 minutes
    python benchmarks/bench_recording.py --clients 100 --requests 4000 --rounds 3

One proxy (``litellm --config``, one uvicorn worker), a ``FakeOpenAIServer`` upstream (50 ms per call) and a
throwaway PostgreSQL server (started as the store tests start it). Two cascade groups that differ only in
recording: ``off`` has a ``human:`` section with no store; ``on`` has the same section plus
``store: postgresql://...`` and ``audit_log:``, so every request is queued for the background writer,
written to PostgreSQL in batches and appended to the audit log. Both always answer automatically
(threshold 0). The arms run in alternating blocks (off, on, on, off, ...) so machine drift hits both alike.

Prints throughput per arm and the ratio on/off (target >= 0.95), p50/p99 latency, errors, and the rows
found in PostgreSQL afterwards (every ``on`` request must be there: nothing dropped).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's package, here and in the proxy

from support.load import LoadResult, drive, proxy_config, start_proxy, start_upstream
from support.postgres import postgres_server
from support.proxy import stop

from langchain_confidence_router.human.store import open_store

ROOT = Path(__file__).resolve().parents[1]
PROMPT = [{"role": "user", "content": "What is 6 times 7?"}]
HUMAN = {"thresholds": {"automate": 0.0, "assist": 0.0}, "spot_check_rate": 0.02}
TARGET_RATIO = 0.95


def cascade(recording: dict[str, Any]) -> dict[str, Any]:
    return {"algorithm": {"confidence": {"threshold": 0.0}}, "models": [{"name": "small"}],
            "human": {**HUMAN, **recording}}


async def arms(url: str, clients: int, requests: int, rounds: int) -> dict[str, LoadResult]:
    results = {"off": LoadResult(), "on": LoadResult()}
    for name in results:  # warm-up, not counted
        await drive(url, lambda i, m=name: {"model": m, "messages": PROMPT}, max(clients, 200), clients,
                    timeout_s=180)
    size = max(clients, requests // (2 * rounds))
    for r in range(rounds):
        for name in ("off", "on", "on", "off") if r % 2 == 0 else ("on", "off", "off", "on"):
            await drive(url, lambda i, m=name: {"model": m, "messages": PROMPT}, size, clients, timeout_s=180,
                        result=results[name])
    return results


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clients", type=int, default=100)
    parser.add_argument("--requests", type=int, default=2000, help="requests per arm")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--no-audit", action="store_true", help="record to PostgreSQL only (no audit log)")
    parser.add_argument("--latency", type=float, default=0.05, help="upstream latency in seconds")
    args = parser.parse_args(argv)
    folder = Path(tempfile.mkdtemp(prefix="bench-recording-"))
    with postgres_server() as pg:
        upstream = start_upstream({"small": {}}, folder / "upstream.log", latency_s=args.latency)
        try:
            config = proxy_config(upstream.base_url, {
                "off": cascade({}),
                "on": cascade({"store": pg, **({} if args.no_audit else {"audit_log": str(folder / "audit.jsonl")})}),
            }, ("small",))
            proxy = start_proxy(config, folder, {"PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "tests")])})
            try:
                t0 = time.perf_counter()
                res = asyncio.run(arms(proxy.url, args.clients, args.requests, args.rounds))
                seconds = time.perf_counter() - t0
            finally:
                stop(proxy.process)  # graceful: the writer flushes at exit
        finally:
            upstream.close()
        with open_store(pg) as store:
            stored = store.count()["decisions"]
    off, on = res["off"], res["on"]
    ratio = on.throughput / off.throughput
    audit = folder / "audit.jsonl"
    audit_lines = len(audit.read_text().splitlines()) if audit.exists() else 0
    on_sent = len(on.outcomes) + max(args.clients, 200)
    print(f"{args.clients} clients, {len(off.outcomes)} requests per arm, {seconds:.0f} s, "
          f"upstream {args.latency * 1000:.0f} ms")
    print(f"{'arm':>4} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'errors':>6}")
    for name, r in (("off", off), ("on", on)):
        errors = sum(1 for o in r.outcomes if o.status != 200)
        print(f"{name:>4} {r.throughput:8.1f} {r.p50:8.1f} {r.percentile(99):8.1f} {errors:6d}")
    verdict = "PASS" if ratio >= TARGET_RATIO else "FAIL"
    print(f"throughput ratio on/off: {ratio:.3f} (target >= {TARGET_RATIO}) -> {verdict}")
    print(f"PostgreSQL decisions: {stored} of {on_sent} recorded requests; audit lines: {audit_lines}")
    return {"ratio": ratio, "stored": stored, "sent": on_sent}


if __name__ == "__main__":
    main()

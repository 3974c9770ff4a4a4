"""Recording on against off, through the real LiteLLM proxy with PostgreSQL, at 100 concurrent clients.

    python benchmarks/bench_recording.py              # 100 clients, 4 ABBA rounds of 8 s blocks; about 3 minutes
    python benchmarks/bench_recording.py --clients 100 --seconds 15 --rounds 6

One proxy (``litellm --config``, one uvicorn worker), a ``FakeOpenAIServer`` upstream (50 ms per call) and a
throwaway PostgreSQL server (started as the store tests start it). Two cascade groups that differ only in
recording: ``off`` has a ``human:`` section with no store; ``on`` has the same section plus
``store: postgresql://...`` and ``audit_log:``, so every request is queued for the background writer,
written to PostgreSQL in batches and appended to the audit log. Both always answer automatically
(threshold 0). The arms run in alternating blocks (off, on, on, off, ...) so machine drift hits both alike.

Each block keeps every client busy for ``--ramp`` + ``--seconds`` and counts only the requests that finish
in the last ``--seconds`` (all clients busy): the steady throughput. Blocks of a fixed number of requests,
as this benchmark had before, measured mostly ramp-up and drain (at 250 requests per block, each of the 100
clients sent 2-3 requests), so one slow request at a block's end stretched the whole block.

Prints throughput per arm and the ratio on/off (target >= 0.95), the ratio of each ABBA round, their
median and their mean with two standard errors (other work on a shared machine moves single blocks a lot;
``--aa`` runs the same with recording off in both arms, to see how far noise alone moves the ratio),
p50/p99 latency, errors, the CPU the proxy and PostgreSQL spent per request in each arm (read from /proc:
what recording costs, largely independent of how busy the machine is), and the rows found in PostgreSQL
afterwards (every ``on`` request must be there: nothing dropped).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's package, here and in the proxy

from support.load import MASTER_KEY, LoadResult, Outcome, drive, one_request, proxy_config, start_proxy, start_upstream
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


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU of these processes so far (Linux /proc; 0 for any that is gone)."""
    tick, total = os.sysconf("SC_CLK_TCK"), 0.0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / tick
    return total


def postgres_pids(url: str) -> list[int]:
    """The throwaway server's postmaster (found by its port) and its backends (current ones)."""
    port = url.rsplit(":", 1)[1].split("/")[0]
    procs: dict[int, tuple[int, str]] = {}
    for d in Path("/proc").glob("[0-9]*"):
        try:
            stat = (d / "stat").read_text()
            cmd = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        procs[int(d.name)] = (int(stat.rsplit(")", 1)[1].split()[1]), cmd)
    master = next((pid for pid, (_, cmd) in procs.items() if "postgres" in cmd and f"-p {port}" in cmd), None)
    return [] if master is None else [master] + [pid for pid, (ppid, _) in procs.items() if ppid == master]


@dataclass
class Block:
    """What one block measured in its steady window."""

    outcomes: list[Outcome] = field(default_factory=list)  # finished inside the window
    seconds: float = 0.0
    sent: int = 0  # every request of the block, window or not (each one must be recorded)
    cpu_proxy: float = 0.0
    cpu_postgres: float = 0.0


async def block(url: str, model: str, clients: int, ramp_s: float, seconds: float, proxy_pid: int,
                pg: list[int]) -> Block:
    """``clients`` busy for ``ramp_s + seconds``; counts what finishes in the last ``seconds``, and the CPU then."""
    out = Block()
    t0 = time.perf_counter()
    start, end = t0 + ramp_s, t0 + ramp_s + seconds
    connector = aiohttp.TCPConnector(limit=clients, limit_per_host=clients)
    async with aiohttp.ClientSession(connector=connector, headers={"Authorization": f"Bearer {MASTER_KEY}"}) as session:

        async def client() -> None:
            while time.perf_counter() < end:
                outcome = await one_request(session, url, {"model": model, "messages": PROMPT}, 180)
                out.sent += 1
                if start <= time.perf_counter() <= end:
                    out.outcomes.append(outcome)

        async def meter() -> None:
            await asyncio.sleep(ramp_s)
            proxy0, pg0, w0 = cpu_seconds([proxy_pid]), cpu_seconds(pg), time.perf_counter()
            await asyncio.sleep(max(0.0, end - time.perf_counter()))
            out.cpu_proxy = cpu_seconds([proxy_pid]) - proxy0
            out.cpu_postgres = cpu_seconds(pg) - pg0
            out.seconds = time.perf_counter() - w0

        await asyncio.gather(meter(), *(client() for _ in range(clients)))
    return out


async def arms(url: str, clients: int, ramp_s: float, seconds: float, rounds: int, proxy_pid: int, pg_url: str
               ) -> tuple[dict[str, LoadResult], dict[str, dict[str, float]], list[float], int]:
    results = {"off": LoadResult(), "on": LoadResult()}
    sent_on = 0
    for name in results:  # warm-up, not counted
        warm = await drive(url, lambda i, m=name: {"model": m, "messages": PROMPT}, max(clients, 200), clients,
                           timeout_s=180)
        sent_on += len(warm.outcomes) if name == "on" else 0
    cpu = {name: {"proxy": 0.0, "postgres": 0.0, "requests": 0.0} for name in results}
    round_ratios = []
    for r in range(rounds):
        per_round = {"off": LoadResult(), "on": LoadResult()}
        for name in ("off", "on", "on", "off") if r % 2 == 0 else ("on", "off", "off", "on"):
            pg = postgres_pids(pg_url)  # backends come and go with the pool: read them per block
            b = await block(url, name, clients, ramp_s, seconds, proxy_pid, pg)
            sent_on += b.sent if name == "on" else 0
            cpu[name]["proxy"] += b.cpu_proxy
            cpu[name]["postgres"] += b.cpu_postgres
            cpu[name]["requests"] += len(b.outcomes)
            for res in (results[name], per_round[name]):
                res.outcomes += b.outcomes
                res.seconds += b.seconds
        round_ratios.append(per_round["on"].throughput / per_round["off"].throughput)
    return results, cpu, round_ratios, sent_on


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clients", type=int, default=100)
    parser.add_argument("--seconds", type=float, default=8.0, help="steady seconds counted per block")
    parser.add_argument("--ramp", type=float, default=2.0, help="seconds per block before counting starts")
    parser.add_argument("--rounds", type=int, default=4, help="ABBA rounds (each: off, on, on, off or mirrored)")
    parser.add_argument("--no-audit", action="store_true", help="record to PostgreSQL only (no audit log)")
    parser.add_argument("--latency", type=float, default=0.05, help="upstream latency in seconds")
    parser.add_argument("--aa", action="store_true",
                        help="A/A check: the 'on' arm records nothing either (what the noise alone moves the ratio)")
    args = parser.parse_args(argv)
    folder = Path(tempfile.mkdtemp(prefix="bench-recording-"))
    with postgres_server() as pg:
        upstream = start_upstream({"small": {}}, folder / "upstream.log", latency_s=args.latency)
        try:
            config = proxy_config(upstream.base_url, {
                "off": cascade({}),
                "on": cascade({} if args.aa else
                              {"store": pg, **({} if args.no_audit else {"audit_log": str(folder / "audit.jsonl")})}),
            }, ("small",))
            proxy = start_proxy(config, folder, {"PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "tests")])})
            try:
                t0 = time.perf_counter()
                res, cpu, round_ratios, sent_on = asyncio.run(arms(proxy.url, args.clients, args.ramp, args.seconds,
                                                                   args.rounds, proxy.pid, pg))
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
    on_sent = 0 if args.aa else sent_on
    print(f"{args.clients} clients, {args.rounds} ABBA rounds of {args.ramp:g} + {args.seconds:g} s blocks, "
          f"{len(off.outcomes)} / {len(on.outcomes)} requests counted off / on, {seconds:.0f} s, "
          f"upstream {args.latency * 1000:.0f} ms")
    print(f"{'arm':>4} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'errors':>6}")
    for name, r in (("off", off), ("on", on)):
        errors = sum(1 for o in r.outcomes if o.status != 200)
        print(f"{name:>4} {r.throughput:8.1f} {r.p50:8.1f} {r.percentile(99):8.1f} {errors:6d}")
    for name in ("off", "on"):
        n = max(cpu[name]["requests"], 1)
        print(f"{name:>4} CPU per request: proxy {1000 * cpu[name]['proxy'] / n:.2f} ms, "
              f"PostgreSQL {1000 * cpu[name]['postgres'] / n:.2f} ms")
    median = statistics.median(round_ratios)
    spread = statistics.stdev(round_ratios) / len(round_ratios) ** 0.5 if len(round_ratios) > 1 else float("nan")
    print("ratio per ABBA round: " + ", ".join(f"{r:.3f}" for r in round_ratios) + f"; median {median:.3f}; "
          f"mean {statistics.fmean(round_ratios):.3f} +- {2 * spread:.3f} (2 standard errors: what noise allows)")
    cpu_on, cpu_off = (cpu[n]["proxy"] / max(cpu[n]["requests"], 1) for n in ("on", "off"))
    print(f"proxy CPU per request on/off: {cpu_on / cpu_off:.3f}")
    verdict = "PASS" if ratio >= TARGET_RATIO else "FAIL"
    print(f"throughput ratio on/off: {ratio:.3f} (target >= {TARGET_RATIO}) -> {verdict}")
    print(f"PostgreSQL decisions: {stored} of {on_sent} recorded requests; audit lines: {audit_lines}")
    return {"ratio": ratio, "median_round_ratio": median, "stored": stored, "sent": on_sent,
            "cpu_ratio": cpu_on / cpu_off}


if __name__ == "__main__":
    main()

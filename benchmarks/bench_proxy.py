"""Through the real LiteLLM proxy: a one-tier cascade against the same model group called directly.

    python benchmarks/bench_proxy.py                 # 1, 10, 100, 500 concurrent clients; about 4-5 minutes
    python benchmarks/bench_proxy.py --quick         # fewer requests; about 1-2 minutes
    python benchmarks/bench_proxy.py --profile       # also: where the proxy's CPU goes for cascade requests

Three processes, as in production: ``litellm --config`` (one uvicorn worker), a ``FakeOpenAIServer`` upstream
in its own ``python -c`` process (``--latency`` per call, default 50 ms, real OpenAI-shaped logprobs), and
the clients here (aiohttp, one connection per client). Model group ``small`` is called directly, and through
``smart`` = ``confidence/smart``, a cascade of the one tier ``small`` with threshold 0 (it always accepts:
what is measured is the adapter, not escalation). At each level the two arms run in alternating blocks
(direct, cascade, cascade, direct, ...) so machine drift hits both alike.

Columns: throughput (requests/s) and its ratio cascade/direct; p50 and p99 latency per arm and the
difference (added latency); the proxy's CPU per request (from /proc/<pid>/stat); errors. Below the table:
the proxy's memory (VmRSS) at start, after warm-up and at the end, and the cascade's own time inside the
proxy (trace ``total_latency_ms`` minus the tier call, from a file logger). Targets: ratio >= 0.95 at 100 and
500 clients, p99 added <= 5 ms. The machine's cores are shared by proxy, upstream and clients.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import pstats
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from support.proxy import stop
from test_reliability_load import (
    TRACE_LOGGER_SOURCE,
    LoadResult,
    ProxyProcess,
    drive,
    open_fds,
    proxy_config,
    read_traces,
    rss_kb,
    start_proxy,
    start_upstream,
)

CASCADE = {"algorithm": {"confidence": {"threshold": 0.0}}, "models": [{"name": "small"}]}
PROMPT = [{"role": "user", "content": "What is 6 times 7?"}]
FULL = {1: 200, 10: 600, 100: 2000, 500: 2000}
QUICK = {1: 50, 10: 200, 100: 500, 500: 1000}
TARGET_RATIO, TARGET_P99_MS = 0.95, 5.0
CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU of ``pid`` (all threads) from /proc/<pid>/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


@dataclass
class Arm:
    model: str
    result: LoadResult = field(default_factory=LoadResult)
    cpu_s: float = 0.0

    def add(self, block: LoadResult, cpu_s: float) -> None:
        self.result.outcomes += block.outcomes
        self.result.seconds += block.seconds
        self.cpu_s += cpu_s

    @property
    def errors(self) -> int:
        return sum(o.status != 200 for o in self.result.outcomes)

    @property
    def cpu_ms(self) -> float:
        n = len(self.result.outcomes)
        return self.cpu_s * 1000 / n if n else float("nan")


async def block(proxy: ProxyProcess, arm: Arm, n: int, clients: int) -> None:
    body = {"model": arm.model, "messages": PROMPT}
    c0 = cpu_seconds(proxy.pid)
    result = await drive(proxy.url, lambda i: body, n, clients, timeout_s=180)
    arm.add(result, cpu_seconds(proxy.pid) - c0)


async def level(proxy: ProxyProcess, clients: int, requests: int, rounds: int) -> tuple[Arm, Arm]:
    """Warm both arms, then ``rounds`` ABBA rounds of blocks of ``requests / (2 rounds)`` per arm."""
    direct, cascade = Arm("small"), Arm("smart")
    for arm in (direct, cascade):
        await block(proxy, Arm(arm.model), max(clients, min(requests // 4, 300)), clients)
    size = max(clients, requests // (2 * rounds))
    for r in range(rounds):
        for arm in (direct, cascade, cascade, direct) if r % 2 == 0 else (cascade, direct, direct, cascade):
            await block(proxy, arm, size, clients)
    return direct, cascade


def engine_time(log: Path, since: int) -> tuple[float, float]:
    """p50/p99 ms of the cascade's own time in the proxy: trace total minus its tier call."""
    own = [r["total_latency_ms"] - sum(a[3] or 0.0 for a in r["attempts"]) for r in read_traces(log)[since:]
           if r.get("total_latency_ms") is not None]
    if not own:
        return float("nan"), float("nan")
    own.sort()
    return statistics.median(own), own[min(len(own) - 1, round(0.99 * (len(own) - 1)))]


def run(levels: list[int], plan: dict[int, int], rounds: int, latency_s: float, folder: Path
        ) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    upstream = start_upstream({"small": {}}, folder / "upstream.log", latency_s=latency_s)
    log = folder / "traces.jsonl"
    (folder / "trace_file_logger.py").write_text(TRACE_LOGGER_SOURCE, encoding="utf-8")
    rows: list[dict[str, Any]] = []
    memory: dict[str, Any] = {}
    try:
        config = proxy_config(upstream.base_url, {"smart": CASCADE}, ("small",),
                              callbacks=("trace_file_logger.logger",))
        proxy = start_proxy(config, folder, {"TRACE_LOG": str(log)})
        try:
            memory["start_kb"], memory["start_fds"] = rss_kb(proxy.pid), open_fds(proxy.pid)[0]
            for clients in levels:
                seen = len(read_traces(log))
                t0 = time.perf_counter()
                direct, cascade = asyncio.run(level(proxy, clients, plan[clients], rounds))
                if "warm_kb" not in memory:
                    memory["warm_kb"] = rss_kb(proxy.pid)
                own_p50, own_p99 = engine_time(log, seen)
                d, c = direct.result, cascade.result
                rows.append({
                    "clients": clients, "requests": len(d.outcomes), "seconds": time.perf_counter() - t0,
                    "direct_rps": d.throughput, "cascade_rps": c.throughput, "ratio": c.throughput / d.throughput,
                    "p50_direct": d.p50, "p50_cascade": c.p50, "p99_direct": d.percentile(99),
                    "p99_cascade": c.percentile(99), "cpu_direct_ms": direct.cpu_ms, "cpu_cascade_ms": cascade.cpu_ms,
                    "errors": direct.errors + cascade.errors, "own_p50_ms": own_p50, "own_p99_ms": own_p99,
                })
                print_row(rows[-1], header=len(rows) == 1)
            time.sleep(2)
            memory["end_kb"], memory["end_fds"] = rss_kb(proxy.pid), open_fds(proxy.pid)[0]
        finally:
            stop(proxy.process)
    finally:
        upstream.close()
    return rows, memory


HEADER = (f"{'clients':>7} {'req/arm':>7} {'direct/s':>8} {'casc/s':>8} {'ratio':>6} {'p50 d':>7} {'p50 c':>7} "
          f"{'+p50':>6} {'p99 d':>7} {'p99 c':>7} {'+p99':>7} {'cpu d':>6} {'cpu c':>6} {'own p50':>7} "
          f"{'own p99':>7} {'err':>4}")


def print_row(r: dict[str, Any], header: bool = False) -> None:
    if header:
        print(HEADER)
        print("-" * len(HEADER))
    print(f"{r['clients']:>7} {r['requests']:>7} {r['direct_rps']:>8.1f} {r['cascade_rps']:>8.1f} {r['ratio']:>6.2f} "
          f"{r['p50_direct']:>7.1f} {r['p50_cascade']:>7.1f} {r['p50_cascade'] - r['p50_direct']:>+6.1f} "
          f"{r['p99_direct']:>7.1f} {r['p99_cascade']:>7.1f} {r['p99_cascade'] - r['p99_direct']:>+7.1f} "
          f"{r['cpu_direct_ms']:>6.2f} {r['cpu_cascade_ms']:>6.2f} {r['own_p50_ms']:>7.2f} {r['own_p99_ms']:>7.2f} "
          f"{r['errors']:>4}", flush=True)


def summary(rows: list[dict[str, Any]], memory: dict[str, Any], latency_s: float) -> None:
    print()
    print("req/s per arm; latencies in ms (p50/p99 of successful requests); cpu = proxy CPU ms per request; "
          "own = the cascade's time inside the proxy outside its tier call (trace total - attempt latency)")
    print(f"upstream latency {latency_s * 1000:.0f} ms; {os.cpu_count()} CPUs shared by proxy, upstream and clients")
    mb = 1024.0
    growth = (memory["end_kb"] - memory["warm_kb"]) / mb
    print(f"proxy VmRSS: start {memory['start_kb'] / mb:.0f} MB, after the first level "
          f"{memory['warm_kb'] / mb:.0f} MB, end {memory['end_kb'] / mb:.0f} MB ({growth:+.1f} MB after the first "
          f"level); open fds {memory['start_fds']} -> {memory['end_fds']}")
    for r in rows:
        if r["clients"] in (100, 500):
            ok_ratio = r["ratio"] >= TARGET_RATIO
            added = r["p99_cascade"] - r["p99_direct"]
            print(f"target at {r['clients']} clients: ratio {r['ratio']:.2f} >= {TARGET_RATIO}: "
                  f"{'met' if ok_ratio else 'MISSED'}; p99 added {added:+.1f} ms <= {TARGET_P99_MS:g} ms: "
                  f"{'met' if added <= TARGET_P99_MS else 'MISSED'}")


# ---------------------------------------------------------------------------- --profile: where the CPU goes

_PROFILED_PROXY = """
import cProfile, os, sys, threading, time
sys.argv = ["litellm", *sys.argv[2:]]
from litellm.proxy.proxy_cli import run_server
out = os.environ["PROFILE_OUT"]
profiler = cProfile.Profile()

def snapshots():  # on request, not at exit: uvicorn's shutdown can outlast stop()'s grace period
    for name in ("warm", "end"):
        while not os.path.exists(f"{out}.{name}.request"):
            time.sleep(0.1)
        profiler.dump_stats(f"{out}.tmp")  # taken under the GIL; the profiled thread is the event loop's
        os.replace(f"{out}.tmp", f"{out}.{name}")

threading.Thread(target=snapshots, daemon=True).start()
profiler.enable()
run_server()
"""


def _snapshot(out: Path, name: str) -> pstats.Stats:
    Path(f"{out}.{name}.request").touch()
    deadline = time.monotonic() + 60
    while not Path(f"{out}.{name}").exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    return pstats.Stats(f"{out}.{name}")


def profile(requests: int, clients: int, latency_s: float, folder: Path) -> None:
    """Cascade requests only, the proxy under cProfile; CPU by package (cProfile inflates everything alike).

    Two snapshots of the profiler, after a warm-up and after ``requests`` measured requests: their
    difference is the measured requests alone (no start-up, no imports, no warm-up).
    """
    import subprocess

    from support.proxy import free_port, wait_ready

    folder.mkdir(parents=True, exist_ok=True)
    upstream = start_upstream({"small": {}}, folder / "upstream.log", latency_s=latency_s)
    out = folder / "proxy.prof"
    try:
        config_path = folder / "config.yaml"
        import yaml

        config_path.write_text(yaml.safe_dump(proxy_config(upstream.base_url, {"smart": CASCADE}, ("small",))))
        port = free_port()
        env = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True", "LITELLM_LOG": "ERROR", "PROFILE_OUT": str(out)}
        env.pop("DATABASE_URL", None)
        with (folder / "proxy.log").open("wb") as log:
            process = subprocess.Popen([sys.executable, "-c", _PROFILED_PROXY, "--", "--config", str(config_path),
                                        "--host", "127.0.0.1", "--port", str(port)], cwd=folder, env=env,
                                       stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            wait_ready(f"http://127.0.0.1:{port}", process, folder / "proxy.log")
            body = {"model": "smart", "messages": PROMPT}
            asyncio.run(drive(f"http://127.0.0.1:{port}", lambda i: body, 200, clients))
            time.sleep(1)  # let the warm-up's success callbacks run
            warm = _snapshot(out, "warm")
            asyncio.run(drive(f"http://127.0.0.1:{port}", lambda i: body, requests, clients))
            time.sleep(1)
            end = _snapshot(out, "end")
        finally:
            stop(process)
    finally:
        upstream.close()
    before: dict[Any, float] = {key: row[2] for key, row in warm.stats.items()}  # type: ignore[attr-defined]
    own = {key: row[2] - before.get(key, 0.0) for key, row in end.stats.items()}  # type: ignore[attr-defined]
    total = sum(own.values())
    by_package: dict[str, float] = {}
    for (filename, _line, _name), seconds in own.items():
        by_package[package_of(filename)] = by_package.get(package_of(filename), 0.0) + seconds
    print(f"\nproxy CPU by package for {requests} cascade requests at {clients} clients (cProfile, own time; "
          f"{total * 1000 / requests:.1f} ms/request profiled):")
    for name, seconds in sorted(by_package.items(), key=lambda kv: -kv[1])[:16]:
        print(f"  {name:<34} {seconds / total * 100:5.1f}%  {seconds * 1000 / requests:6.2f} ms/request")
    print("top functions by own time:")
    for (filename, line, name), seconds in sorted(own.items(), key=lambda kv: -kv[1])[:15]:
        print(f"  {seconds * 1000 / requests:6.3f} ms/request  {package_of(filename)}: {name} (line {line})")


def package_of(filename: str) -> str:
    """A short owner for a profiled file: litellm subpackage, our packages, or the stdlib/third-party name."""
    path = filename.replace("\\", "/")
    for marker in ("/litellm_hooks/", "/langchain_confidence_router/"):
        if marker in path:
            return marker.strip("/")
    if "/site-packages/" in path:
        rest = path.split("/site-packages/", 1)[1].split("/")
        return "/".join(rest[:2]) if rest[0] == "litellm" and len(rest) > 2 else rest[0]
    if filename.startswith("<") or filename == "~":
        return "builtins (C)"
    return "stdlib: " + Path(path).stem


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--levels", default="1,10,100,500", help="concurrent clients, comma-separated")
    parser.add_argument("--requests", type=int, default=None, help="requests per arm at every level")
    parser.add_argument("--rounds", type=int, default=2, help="ABBA rounds per level")
    parser.add_argument("--latency", type=float, default=0.05, help="upstream latency in seconds")
    parser.add_argument("--quick", action="store_true", help="fewer requests per level")
    parser.add_argument("--profile", action="store_true", help="then profile cascade requests at 100 clients")
    args = parser.parse_args(argv)
    levels = [int(x) for x in args.levels.split(",")]
    base = QUICK if args.quick else FULL
    plan = {c: args.requests or base.get(c, 1000) for c in levels}
    print(f"bench_proxy: litellm proxy, one-tier always-accept cascade vs direct; levels {levels}; "
          f"requests per arm {plan}")
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench_proxy_") as folder:
        rows, memory = run(levels, plan, args.rounds, args.latency, Path(folder))
        summary(rows, memory, args.latency)
        if args.profile:
            profile(500 if args.quick else 1500, 100, args.latency, Path(folder) / "profile")
    print(f"whole run: {time.perf_counter() - t0:.0f} s")
    return rows


if __name__ == "__main__":
    main()

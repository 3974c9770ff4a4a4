"""Overhead of a confidence cascade behind a litellm.Router, against the same model group called directly.

One command, one table::

    python benchmarks/bench_litellm_router.py            # 100 clients (the target) and a light-load row
    python benchmarks/bench_litellm_router.py --clients 100 --requests 600 --rounds 4

The upstream is ``FakeOpenAIServer(latency_s=0.05)`` in its own process (so it does not compete with
the Router for the GIL). ``small`` is priced like a real model (LiteLLM takes a slower zero-cost
diagnostic path for unpriced ones). The cascade is one tier (``small``) with threshold 0, so it always
accepts: what is measured is the adapter's cost, not escalation. All arms use the same Router and run
in blocks of rotating order so that drift in machine load hits them alike:

* direct: ``small``;
* direct+logprobs: ``small`` asking for logprobs, exactly what the cascade's tier call costs;
* outer floor: ``noop``, a custom provider that returns a canned answer at once, i.e. what LiteLLM
  itself spends on the outer ``confidence/...`` call (Router, logging, usage tracking, cost);
* cascade: ``smart`` = ``confidence/smart``.

cascade - (direct+logprobs) - (outer floor) is what the adapter and the scoring core add. Targets:
throughput ratio >= 0.95, added median latency <= 2 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import os
import statistics
import time
from dataclasses import dataclass, field
from typing import Any

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

CASCADE = {"algorithm": {"confidence": {"threshold": 0.0}}, "models": [{"name": "small"}]}
PRICE = {"input_cost_per_token": 1.5e-7, "output_cost_per_token": 6e-7}  # gpt-4o-mini's list price


def _serve(queue: Any, latency_s: float) -> None:
    from langchain_confidence_router.testing import FakeOpenAIServer

    server = FakeOpenAIServer(latency_s=latency_s, record_requests=False)
    server.start()
    queue.put(server.base_url)
    while True:
        time.sleep(3600)


@dataclass
class Arm:
    latencies_ms: list[float] = field(default_factory=list)
    seconds: float = 0.0
    cpu_s: float = 0.0
    requests: int = 0
    errors: int = 0

    @property
    def throughput(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    @property
    def median_ms(self) -> float:
        return statistics.median(self.latencies_ms) if self.latencies_ms else float("nan")

    @property
    def p99_ms(self) -> float:
        return statistics.quantiles(self.latencies_ms, n=100)[-1] if len(self.latencies_ms) > 100 else float("nan")

    @property
    def cpu_ms_per_request(self) -> float:
        return self.cpu_s * 1000.0 / self.requests if self.requests else float("nan")


async def block(router: Any, model: str, requests: int, clients: int, arm: Arm, **params: Any) -> None:
    """``clients`` concurrent callers sharing ``requests`` calls of ``model``."""
    remaining = requests
    messages = [{"role": "user", "content": "What is 6 times 7?"}]

    async def client() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            t0 = time.perf_counter()
            try:
                await router.acompletion(model=model, messages=messages, **params)
            except Exception:
                arm.errors += 1
                continue
            arm.latencies_ms.append((time.perf_counter() - t0) * 1000.0)

    t0, c0 = time.perf_counter(), time.process_time()
    await asyncio.gather(*(client() for _ in range(clients)))
    arm.seconds += time.perf_counter() - t0
    arm.cpu_s += time.process_time() - c0
    arm.requests += requests


LOGPROBS = {"logprobs": True, "top_logprobs": 5}


async def measure(router: Any, clients: int, requests: int, rounds: int) -> tuple[Arm, Arm, Arm, Arm]:
    """Direct, direct asking for logprobs (what every tier call asks), the outer-call floor and the cascade."""
    direct, direct_lp, floor, cascade = Arm(), Arm(), Arm(), Arm()
    arms: list[tuple[str, Arm, dict[str, Any]]] = [("small", direct, {}), ("small", direct_lp, LOGPROBS),
                                                   ("noop", floor, {}), ("smart", cascade, {})]
    for model, _, params in arms:  # warm up every path
        await block(router, model, min(200, requests), clients, Arm(), **params)
    for i in range(rounds):
        for model, arm, params in arms[i % 4:] + arms[:i % 4]:
            await block(router, model, requests, clients, arm, **params)
    return direct, direct_lp, floor, cascade


def canned_provider() -> Any:
    """``noop/...``: a custom provider answering at once with a recorded tier response (set ``.response``)."""
    from litellm import CustomLLM

    class Canned(CustomLLM):
        response: Any = None

        async def acompletion(self, *args: Any, model_response: Any = None, **kwargs: Any) -> Any:
            model_response.choices = list(self.response.choices)
            model_response.usage = self.response.usage
            model_response._hidden_params["response_cost"] = self.response._hidden_params.get("response_cost")
            return model_response

    return Canned()


def build_router(base_url: str) -> Any:
    import litellm

    import litellm_hooks

    litellm_hooks.register()
    canned = canned_provider()
    litellm.custom_provider_map = [*litellm.custom_provider_map, {"provider": "noop", "custom_handler": canned}]
    litellm.utils.custom_llm_setup()
    router = litellm.Router(model_list=[
        {"model_name": "small", "litellm_params": {"model": "openai/small", "api_base": base_url, "api_key": "test",
                                                   **PRICE}},
        {"model_name": "smart", "litellm_params": {"model": "confidence/smart", "cascade": CASCADE,
                                                   "input_cost_per_token": 0, "output_cost_per_token": 0}},
        {"model_name": "noop", "litellm_params": {"model": "noop/small", "input_cost_per_token": 0,
                                                  "output_cost_per_token": 0}},
    ])
    litellm_hooks.register(router)
    canned.response = asyncio.run(router.acompletion(model="small", messages=[{"role": "user", "content": "Hi"}],
                                                     **LOGPROBS))
    return router


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=100)
    parser.add_argument("--light-clients", type=int, default=1, help="a second, unsaturated row (0: skip)")
    parser.add_argument("--requests", type=int, default=400, help="requests per block")
    parser.add_argument("--rounds", type=int, default=3, help="blocks per arm, in rotating order")
    parser.add_argument("--latency", type=float, default=0.05, help="upstream latency in seconds")
    args = parser.parse_args(argv)

    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    upstream = ctx.Process(target=_serve, args=(queue, args.latency), daemon=True)
    upstream.start()
    rows = []
    try:
        router = build_router(queue.get(timeout=60))
        for clients in [args.clients] + ([args.light_clients] if args.light_clients else []):
            requests = args.requests if clients == args.clients else max(50, args.requests // 4)
            direct, direct_lp, floor, cascade = asyncio.run(measure(router, clients, requests, args.rounds))
            rows.append({
                "clients": clients,
                "offered_rps": clients / args.latency,
                "direct_rps": direct.throughput,
                "cascade_rps": cascade.throughput,
                "throughput_ratio": cascade.throughput / direct.throughput,
                "direct_median_ms": direct.median_ms,
                "cascade_median_ms": cascade.median_ms,
                "added_median_ms": cascade.median_ms - direct.median_ms,
                "direct_p99_ms": direct.p99_ms,
                "cascade_p99_ms": cascade.p99_ms,
                "direct_cpu_ms": direct.cpu_ms_per_request,
                "direct_logprobs_cpu_ms": direct_lp.cpu_ms_per_request,
                "direct_logprobs_rps": direct_lp.throughput,
                "floor_cpu_ms": floor.cpu_ms_per_request,
                "cascade_cpu_ms": cascade.cpu_ms_per_request,
                "adapter_cpu_ms": cascade.cpu_ms_per_request - direct_lp.cpu_ms_per_request - floor.cpu_ms_per_request,
                "errors": direct.errors + direct_lp.errors + floor.errors + cascade.errors,
            })
    finally:
        upstream.kill()
        upstream.join(5)
    print_table(rows, os.cpu_count() or 0)
    return rows


def print_table(rows: list[dict[str, Any]], cpus: int) -> None:
    header = (f"{'clients':>7} {'offered':>8} {'direct':>8} {'cascade':>8} {'ratio':>6} {'p50 d':>8} {'p50 c':>8} "
              f"{'+p50':>8} {'p99 d':>8} {'p99 c':>8} {'+p99':>8} {'cpu d':>6} {'d+lp':>6} {'floor':>6} "
              f"{'cpu c':>6} {'adapt':>6} {'err':>4}")
    print(f"litellm.Router, one-tier always-accept cascade vs direct; upstream latency 50 ms; {cpus} CPUs")
    print("throughput in requests/s, latency in ms; cpu = process CPU ms per request: d = direct, d+lp = direct "
          "asking for logprobs (= the tier call), floor = LiteLLM's own cost of the outer custom-provider call, "
          "c = cascade, adapt = c - (d+lp) - floor (adapter + scoring)")
    print(header)
    print("-" * len(header))
    for r in rows:
        print(f"{r['clients']:>7} {r['offered_rps']:>8.0f} {r['direct_rps']:>8.1f} {r['cascade_rps']:>8.1f} "
              f"{r['throughput_ratio']:>6.2f} {r['direct_median_ms']:>8.1f} {r['cascade_median_ms']:>8.1f} "
              f"{r['added_median_ms']:>+8.1f} {r['direct_p99_ms']:>8.1f} {r['cascade_p99_ms']:>8.1f} "
              f"{r['cascade_p99_ms'] - r['direct_p99_ms']:>+8.1f} {r['direct_cpu_ms']:>6.2f} "
              f"{r['direct_logprobs_cpu_ms']:>6.2f} {r['floor_cpu_ms']:>6.2f} {r['cascade_cpu_ms']:>6.2f} "
              f"{r['adapter_cpu_ms']:>+6.2f} {r['errors']:>4}")
    for r in rows[:1]:  # the saturated row: there the throughput ratio is the ratio of CPU per request
        litellm_ms = r["direct_logprobs_cpu_ms"] + r["floor_cpu_ms"]
        share = litellm_ms / r["cascade_cpu_ms"] * 100
        print(f"{r['clients']} clients: LiteLLM's two calls (d+lp + floor) are {share:.0f}% of the cascade's CPU; "
              f"with a zero-cost adapter the ratio would be at most {r['direct_cpu_ms'] / litellm_ms:.2f}")
    print("targets: ratio >= 0.95, added median <= 2 ms")


if __name__ == "__main__":
    main()

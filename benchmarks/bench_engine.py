"""Engine overhead per request: the policy and the scoring, with a call function that answers instantly.

    python benchmarks/bench_engine.py            # prints a table (microseconds per request)
    python benchmarks/bench_engine.py --quick    # fewer repetitions

What a request costs the router before any network I/O: ``Cascade.policy()`` (a fresh state machine and
trace), the driver loop (``run_policy``, or ``arun_policy`` with its per-attempt ``asyncio.wait_for``), the
logprob normaliser, the token filter, every signal, and the trace bookkeeping. The call function returns
a canned ``TierResult`` with OpenAI-shaped logprobs (a plain dict, as the OpenAI client parses it), so
nothing else is measured. Rows:

* 1 tier, accepted;
* 3 tiers, accepted by the first (the common case: the others are never called);
* 3 tiers, walking all three (two escalations, three answers scored);
* 3 tiers answering without logprobs (each escalates, the fallback is returned): the policy alone;

each for answers of 30 and 300 tokens (top-5 alternatives), and the cost of serialising the trace to JSON
(what the adapters do once per request). Median of ``--repeats`` timed runs of ``--n`` requests each.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import time
from collections.abc import Callable
from typing import Any

from langchain_confidence_router.core import Cascade, TierCall, TierResult, arun_policy, run_policy


def answer_logprobs(n: int, confident: bool, k: int = 5, seed: int = 0) -> dict[str, Any]:
    """An OpenAI ``choices[0].logprobs`` dict of ``n`` tokens with ``k`` alternatives each."""
    rnd = random.Random(seed)
    content = []
    for i in range(n):
        chosen = -rnd.expovariate(40.0 if confident else 1.0)
        alts = sorted((chosen - rnd.expovariate(0.3 if confident else 3.0) for _ in range(k - 1)), reverse=True)
        tok = f" w{i % 50}" if i % 7 else "."
        content.append({"token": tok, "logprob": chosen, "bytes": list(tok.encode()),
                        "top_logprobs": [{"token": tok, "logprob": chosen, "bytes": None}]
                        + [{"token": f" a{j}", "logprob": a, "bytes": None} for j, a in enumerate(alts)]})
    return {"content": content, "refusal": None}


def cascade(tiers: int, *, walk: bool) -> Cascade:
    """``tiers`` models; with ``walk`` every tier but the last has threshold 1.0, so the request escalates."""
    models = [{"name": f"t{i}", "threshold": 1.0 if walk and i < tiers - 1 else 0.5} for i in range(tiers)]
    return Cascade.from_config({"algorithm": {"confidence": {"escalation_order": "declared"}}, "models": models})


def canned(tokens: int | None) -> Callable[[TierCall], TierResult]:
    """An instant call function; ``tokens=None`` answers without logprobs."""
    logprobs = None if tokens is None else answer_logprobs(tokens, confident=True)
    text = "The answer is 42." if tokens is None else " ".join(f"w{i}" for i in range(tokens))

    def call(_: TierCall) -> TierResult:
        # a fresh result per call, as an adapter builds one from each response
        return TierResult(text=text, logprobs=logprobs, tokens_in=20, tokens_out=tokens or 5)

    return call


def per_request_us(fn: Callable[[], Any], n: int, repeats: int) -> float:
    """Median over ``repeats`` runs of the mean time of ``fn`` in microseconds."""
    for _ in range(min(n, 200)):  # warm caches (numpy dispatch, pydantic validators)
        fn()
    runs = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        runs.append((time.perf_counter() - t0) / n * 1e6)
    return statistics.median(runs)


def per_request_us_async(make: Callable[[], Any], n: int, repeats: int) -> float:
    """The same for a coroutine factory, all ``n`` awaited in one event loop (no loop start-up counted)."""

    async def batch(count: int) -> float:
        t0 = time.perf_counter()
        for _ in range(count):
            await make()
        return time.perf_counter() - t0

    async def main() -> float:
        await batch(min(n, 200))
        return statistics.median([await batch(n) / n * 1e6 for _ in range(repeats)])

    return asyncio.run(main())


def measure(n: int, repeats: int) -> list[dict[str, Any]]:
    rows = []
    scenarios: list[tuple[str, Cascade, int | None, int]] = []
    for tokens in (30, 300):
        scenarios += [
            (f"1 tier, accepted ({tokens} tokens)", cascade(1, walk=False), tokens, 1),
            (f"3 tiers, first accepts ({tokens} tokens)", cascade(3, walk=False), tokens, 1),
            (f"3 tiers, walks all 3 ({tokens} tokens)", cascade(3, walk=True), tokens, 3),
        ]
    scenarios.append(("3 tiers, walks all 3, no logprobs", _no_logprob_walk(), None, 3))
    for name, casc, tokens, calls in scenarios:
        call = canned(tokens)

        async def acall(c: TierCall, call: Callable[[TierCall], TierResult] = call) -> TierResult:
            return call(c)

        finish = casc.run(call)
        assert len(finish.trace.attempts) == calls, (name, finish.trace.attempts)
        sync_us = per_request_us(lambda casc=casc, call=call: run_policy(casc.policy(), call), n, repeats)
        async_us = per_request_us_async(lambda casc=casc, acall=acall: arun_policy(casc.policy(), acall), n, repeats)
        dump_us = per_request_us(lambda trace=finish.trace: trace.model_dump_json(), n, repeats)
        rows.append({"scenario": name, "tier_calls": calls, "sync_us": sync_us, "async_us": async_us,
                     "per_call_us": sync_us / calls, "trace_json_us": dump_us})
    return rows


def _no_logprob_walk() -> Cascade:
    """3 tiers answering without logprobs: each escalates (missing_logprobs: escalate), the best is returned."""
    return cascade(3, walk=False)


def print_table(rows: list[dict[str, Any]]) -> None:
    print(f"engine overhead per request (policy + scoring + trace), instant call function; {os.cpu_count()} CPUs")
    header = (f"{'scenario':<38} {'calls':>5} {'sync us':>9} {'async us':>9} {'us/call':>8} {'trace JSON us':>14}")
    print(header)
    print("-" * len(header))
    for r in rows:
        print(f"{r['scenario']:<38} {r['tier_calls']:>5} {r['sync_us']:>9.1f} {r['async_us']:>9.1f} "
              f"{r['per_call_us']:>8.1f} {r['trace_json_us']:>14.1f}")
    print("sync: run_policy; async: arun_policy (adds asyncio.wait_for per attempt); "
          "trace JSON: model_dump_json of the finished trace")


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=2000, help="requests per timed run")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per row (median)")
    parser.add_argument("--quick", action="store_true", help="--n 300 --repeats 3")
    args = parser.parse_args(argv)
    n, repeats = (300, 3) if args.quick else (args.n, args.repeats)
    rows = measure(n, repeats)
    print_table(rows)
    return rows


if __name__ == "__main__":
    main()

"""What hedging (``hedge_after_ms``) does to latency, answers and cost, replayed from recorded runs.

    python benchmarks/bench_hedging.py                          # the recorded local quiz
    python benchmarks/bench_hedging.py --runs RUNS.jsonl --models small large --threshold 0.6

For a two-tier cascade (declared order) it replays sequential escalation and hedging with ``hedge_after_ms``
set to several percentiles of the first tier's recorded latency (``evaluation/hedging.py``: the live drivers'
rules on a timeline built from each run's ``latency_ms``), and prints p50/p95 end-to-end latency of all
requests and of escalated ones (those sequential escalation sends past the first tier), accuracy, the share
of requests hedged and the cost hedging adds (a cancelled call counted at its full recorded cost: an upper
bound). The threshold is the same for every row; nothing is tuned on these items.

Then what hedging costs a request that needs no hedge (a confident first tier answering at once): the
driver overhead per request with ``hedge_after_ms`` off and set (never reached), blocking and async, with
an instant call function (bench_engine's), side by side. That is the delay hedging adds to the first
tier's answer (and first token) when it is not needed.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from bench_engine import canned, per_request_us, per_request_us_async

from langchain_confidence_router.core import Cascade, TierCall, TierResult, arun_policy, parse_config, run_policy
from langchain_confidence_router.evaluation.hedging import latency_matrix, replay_hedged
from langchain_confidence_router.evaluation.matrix import build_matrix, load_runs

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", default=str(REPO / "examples" / "runs" / "local_quiz.jsonl"))
    parser.add_argument("--models", nargs=2, default=["smollm2-135m", "gemma3-270m"])
    parser.add_argument("--threshold", type=float, default=0.6)
    parser.add_argument("--percentiles", type=float, nargs="+", default=[25, 50, 75, 90])
    parser.add_argument("--n", type=int, default=2000, help="requests per timed run of the overhead section")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    runs = load_runs(args.runs)
    matrix = build_matrix(runs, args.models)
    config = parse_config({"algorithm": {"confidence": {"escalation_order": "declared", "threshold": args.threshold}},
                           "models": [{"name": m} for m in args.models]})
    first = latency_matrix(runs, matrix)[:, 0]
    plain = replay_hedged(config, runs, matrix, [None, None])
    escalated = plain.escalated
    print(f"{args.runs}: {matrix.n} items, {args.models[0]} -> {args.models[1]}, threshold {args.threshold:g}; "
          f"{int(escalated.sum())} escalated sequentially")
    print(f"{args.models[0]} latency ms: p50 {np.percentile(first, 50):.0f}, p90 {np.percentile(first, 90):.0f}")
    header = (f"{'hedge_after_ms':>18} {'p50 all':>8} {'p95 all':>8} {'p50 esc':>8} {'p95 esc':>8} "
              f"{'accuracy':>9} {'hedged':>7} {'cost':>8}")
    print(header)
    print("-" * len(header))
    rows = [("sequential", None)] + [(f"p{q:g} = {np.percentile(first, q):.0f}", float(np.percentile(first, q)))
                                     for q in args.percentiles]
    for label, after in rows:
        out = plain if after is None else replay_hedged(config, runs, matrix, [after, None])
        cost = out.cost.sum() / plain.cost.sum() - 1.0
        print(f"{label:>18} {out.percentile(50):8.0f} {out.percentile(95):8.0f} "
              f"{out.percentile(50, escalated):8.0f} {out.percentile(95, escalated):8.0f} "
              f"{out.accuracy:9.3f} {out.hedged.mean():7.0%} {cost:+8.0%}")
    print("latency: end-to-end ms; esc: requests sequential escalation sends to the second tier; "
          "cost: total cost against sequential")
    print()
    overhead(args.n, args.repeats)


def overhead(n: int, repeats: int) -> None:
    call = canned(30)

    async def acall(c: TierCall) -> TierResult:
        return call(c)

    print("driver overhead for a confident first tier (instant call function, 30 tokens), us per request")
    print(f"{'hedge_after_ms':>16} {'sync us':>9} {'async us':>9}")
    base: tuple[float, float] | None = None
    for after in (None, 60_000.0):
        first = {"name": "t0"} if after is None else {"name": "t0", "hedge_after_ms": after}
        casc = Cascade.from_config({"algorithm": {"confidence": {"escalation_order": "declared", "threshold": 0.5}},
                                    "models": [first, {"name": "t1"}]})
        assert len(casc.run(call).trace.attempts) == 1
        sync_us = per_request_us(lambda casc=casc: run_policy(casc.policy(), call), n, repeats)
        async_us = per_request_us_async(lambda casc=casc: arun_policy(casc.policy(), acall), n, repeats)
        label = "off" if after is None else f"{after:g}"
        ratio = "" if base is None else f"   (x{sync_us / base[0]:.2f} sync, x{async_us / base[1]:.2f} async)"
        print(f"{label:>16} {sync_us:9.1f} {async_us:9.1f}{ratio}")
        base = base or (sync_us, async_us)


if __name__ == "__main__":
    main()

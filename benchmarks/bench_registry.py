"""Threshold registry: what following a registry costs a request, and how fast a promotion arrives.

    python benchmarks/bench_registry.py            # SQLite registry in a temporary folder
    python benchmarks/bench_registry.py --quick

1. Request overhead: the same two-tier cascade with inline thresholds and following a registry (the
   poller running in the background at ``poll_s`` 0.05, so it competes for the interpreter), driven
   with an instant call function; alternating timed blocks, median microseconds per request and the
   ratio registry/inline.
2. Pickup delay: ``--promotions`` alternating promotions of two versions, each timed from the end of
   the promote transaction until the cascade's tiers carry the new version, at ``poll_s`` 0.5 s
   (a random pause before each, so promotions do not line up with the poller's ticks; expected:
   uniform over 0 .. poll_s plus the read).
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's package

from bench_engine import answer_logprobs

from langchain_confidence_router.core import Cascade, TierCall, TierResult, run_policy
from langchain_confidence_router.registry.client import stop_all
from langchain_confidence_router.registry.store import open_registry

MODELS = [{"name": "small"}, {"name": "large"}]
SETTINGS = {"confidence": {"escalation_order": "declared", "confidence_method": "avg_logprob"}}


def payload(small: float) -> dict[str, object]:
    return {"threshold": 0.72, "confidence_method": "avg_logprob", "order": ["small", "large"],
            "models": {"small": {"threshold": small}, "large": {"threshold": 0.0}}}


def per_request_us(cascade: Cascade, n: int) -> float:
    result = TierResult(text="The answer is 42.", logprobs=answer_logprobs(30, confident=True))

    def call(_: TierCall) -> TierResult:
        return result

    t0 = time.perf_counter()
    for _ in range(n):
        run_policy(cascade.policy(), call)
    return (time.perf_counter() - t0) / n * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--promotions", type=int, default=20)
    args = parser.parse_args()
    n, blocks = (500, 5) if args.quick else (2000, 9)
    with tempfile.TemporaryDirectory() as tmp:
        url = str(Path(tmp) / "registry.db")
        with open_registry(url) as store:
            for small in (0.1, 0.2):
                v = store.push("bench", payload(small), by="ann")
                store.approve("bench", v, by="bob")
            store.promote("bench", 1, by="bob")

            inline = Cascade.from_config({"algorithm": SETTINGS, "models": [
                {"name": "small", "threshold": 0.1}, {"name": "large", "threshold": 0.0}]})
            following = Cascade.from_config({"algorithm": SETTINGS, "models": MODELS,
                                             "registry": {"url": url, "name": "bench", "poll_s": 0.05}})
            times: dict[str, list[float]] = {"inline": [], "registry": []}
            per_request_us(inline, n // 5)
            per_request_us(following, n // 5)
            for _ in range(blocks):
                times["inline"].append(per_request_us(inline, n))
                times["registry"].append(per_request_us(following, n))
            med = {k: statistics.median(v) for k, v in times.items()}
            print(f"request overhead, median of {blocks} blocks of {n} requests (2 tiers, 30-token answer):")
            print(f"  inline thresholds   {med['inline']:8.1f} us/request")
            print(f"  following registry  {med['registry']:8.1f} us/request (poller at poll_s 0.05)")
            print(f"  ratio registry/inline {med['registry'] / med['inline']:.3f}")
            stop_all()  # the same cascade, its poller stopped: what the request path itself costs
            quiet: dict[str, list[float]] = {"inline": [], "registry": []}
            for _ in range(blocks):
                quiet["inline"].append(per_request_us(inline, n))
                quiet["registry"].append(per_request_us(following, n))
            q = {k: statistics.median(v) for k, v in quiet.items()}
            print(f"  poller stopped: inline {q['inline']:.1f}, registry {q['registry']:.1f} us/request, "
                  f"ratio {q['registry'] / q['inline']:.3f}")

            slow = Cascade.from_config({"algorithm": SETTINGS, "models": MODELS,
                                        "registry": {"url": url, "name": "bench", "poll_s": 0.5}})
            delays = []
            version = 1
            rnd = random.Random(0)
            for _ in range(args.promotions):
                time.sleep(rnd.uniform(0.0, 0.5))  # promotions do not line up with the poller's ticks
                version = 2 if version == 1 else 1
                store.promote("bench", version, by="bob")
                t0 = time.perf_counter()
                while (slow.registry_status or {}).get("version") != version:
                    time.sleep(0.001)
                delays.append((time.perf_counter() - t0) * 1000)
            stop_all()
        delays.sort()
        print(f"pickup delay at poll_s 500 ms over {len(delays)} promotions: "
              f"median {statistics.median(delays):.0f} ms, "
              f"max {delays[-1]:.0f} ms, min {delays[0]:.0f} ms")


if __name__ == "__main__":
    main()

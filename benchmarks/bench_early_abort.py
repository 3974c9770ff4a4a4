"""Early abort: what watching a hidden stream costs, and what a confident first tier's caller waits for.

    python benchmarks/bench_early_abort.py            # both tables
    python benchmarks/bench_early_abort.py --quick    # fewer repetitions

1. The abort tracker's CPU time per token (``AbortTracker.feed``, one token per chunk as providers stream),
   for answers of 100 and 1,000 tokens, ``check_every`` 1, 8 and 32, for ``min_logprob`` and ``hybrid``.
2. Time to the first token the caller sees (LangChain ``stream``) and whole-request time when the first tier
   is confident, with and without ``early_abort`` on it, side by side in one run against a local
   OpenAI-compatible server that writes a token every 2 ms: the rule must not make a confident first tier's
   answer reach the caller later.
"""

from __future__ import annotations

import argparse
import statistics
import time

from langchain_confidence_router.core.abort import AbortTracker
from langchain_confidence_router.core.config import EarlyAbort
from langchain_confidence_router.core.signals import SignalParams


def entries(n: int) -> list[dict[str, object]]:
    return [{"token": f" w{i}", "logprob": -0.05, "top_logprobs": [{"token": f" w{i}", "logprob": -0.05},
                                                                    {"token": " x", "logprob": -3.0}]}
            for i in range(n)]


def tracker_table(repeats: int) -> None:
    print("abort tracker CPU per token (us), one token per chunk, stop filter")
    print(f"{'signal':12s} {'tokens':>7s} {'every 1':>9s} {'every 8':>9s} {'every 32':>9s}")
    for method in ("min_logprob", "hybrid"):
        for n in (100, 1000):
            answer = entries(n)
            row = []
            for every in (1, 8, 32):
                times = []
                for _ in range(repeats):
                    t = AbortTracker(EarlyAbort(after_tokens=1, below=0.01, check_every=every), method=method,
                                     token_filter="stop", threshold=0.5, params=SignalParams())
                    t0 = time.perf_counter()
                    for e in answer:
                        t.feed([e])
                    times.append((time.perf_counter() - t0) / n * 1e6)
                row.append(statistics.median(times))
            print(f"{method:12s} {n:7d} " + " ".join(f"{v:9.1f}" for v in row))


def ttft_table(n: int) -> None:
    from langchain_openai import ChatOpenAI

    from langchain_confidence_router.langchain import ConfidenceRouter
    from langchain_confidence_router.testing import FakeOpenAIServer, ModelBehaviour

    answer = " ".join(f"word{i}" for i in range(50))
    models = {"small": ModelBehaviour(answer=answer, token_delay_s=0.002), "large": ModelBehaviour()}
    with FakeOpenAIServer(models, record_requests=False) as server:
        def router(rule: bool) -> ConfidenceRouter:
            small: dict[str, object] = {"name": "small"}
            if rule:
                small["early_abort"] = {"after_tokens": 4, "below": 0.3}
            config = {"algorithm": {"confidence": {"confidence_method": "min_logprob", "threshold": 0.3}},
                      "models": [small, {"name": "large"}]}
            chats = {m: ChatOpenAI(model=m, base_url=server.base_url, api_key="t", max_retries=0) for m in models}
            return ConfidenceRouter(models=chats, config=config)

        routers = {"without": router(False), "with": router(True)}
        samples: dict[str, tuple[list[float], list[float]]] = {k: ([], []) for k in routers}
        for _ in range(n):
            for label, r in routers.items():  # interleaved, so both see the same machine load
                t0 = time.perf_counter()
                first = None
                for chunk in r.stream("What is 6 times 7?"):
                    if first is None and chunk.text:
                        first = time.perf_counter() - t0
                total = time.perf_counter() - t0
                samples[label][0].append((first or total) * 1000)
                samples[label][1].append(total * 1000)
    print(f"\nconfident first tier (50 tokens, 2 ms each), LangChain stream, median of {n}")
    print(f"{'early_abort':12s} {'TTFT ms':>9s} {'total ms':>9s}")
    for label, (ttft, total) in samples.items():
        print(f"{label:12s} {statistics.median(ttft):9.1f} {statistics.median(total):9.1f}")
    ratio = statistics.median(samples["with"][0]) / statistics.median(samples["without"][0])
    print(f"TTFT with / without: {ratio:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    tracker_table(3 if args.quick else 9)
    ttft_table(10 if args.quick else 40)


if __name__ == "__main__":
    main()

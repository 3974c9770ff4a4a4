"""Added latency of ConfidenceRouter over calling the same ChatOpenAI directly (one command, prints a table).

    python benchmarks/bench_langchain.py [--n 500]

A one-tier router (its only tier always accepts) against the same ChatOpenAI on the same local fake
OpenAI-compatible server, interleaved call by call in one run (order alternating), median over ``n``
calls each. The server runs in its own process so its work does not compete with the client for the
GIL. Rows:

* ``direct``: the ChatOpenAI exactly as the user configured it (no logprobs);
* ``direct + logprobs``: the same model with the fields the router sets (logprobs, top_logprobs=5,
  stream_usage), i.e. the same HTTP request and response the router's tier makes;
* ``router``: ``ConfidenceRouter(models={"m": chat})``.

"Added" is router minus direct (what a user pays for switching), split into the bigger logprob
response and the router's own work (chain run, attempt run, scoring, trace). Streaming rows measure
time to the first token (first chunk with text) the caller receives.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import statistics
import time
from collections.abc import Callable, Iterator
from typing import Any

from langchain_openai import ChatOpenAI

from langchain_confidence_router.langchain import ConfidenceRouter

PROMPT = "What is 6 times 7?"
TARGET_MS = 1.5


def _serve(queue: Any, stop: Any) -> None:
    from langchain_confidence_router.testing import FakeOpenAIServer, ModelBehaviour

    with FakeOpenAIServer({"m": ModelBehaviour()}, record_requests=False) as server:
        queue.put(server.base_url)
        stop.wait()


def _timed(fn: Callable[[], Any]) -> float:
    t0 = time.perf_counter()
    fn()
    return (time.perf_counter() - t0) * 1000.0


def _ttft(stream: Callable[[], Iterator[Any]]) -> float:
    t0 = time.perf_counter()
    first = None
    for chunk in stream():
        if first is None and chunk.text:
            first = (time.perf_counter() - t0) * 1000.0
    assert first is not None, "the stream carried no text"
    return first


def run(n: int, base_url: str) -> dict[str, list[float]]:
    chat = ChatOpenAI(model="m", base_url=base_url, api_key="bench", max_retries=0)
    with_logprobs = chat.model_copy(update={"logprobs": True, "top_logprobs": 5, "stream_usage": True})
    router = ConfidenceRouter(models={"m": chat})
    calls: dict[str, Callable[[], float]] = {
        "direct": lambda: _timed(lambda: chat.invoke(PROMPT)),
        "direct + logprobs": lambda: _timed(lambda: with_logprobs.invoke(PROMPT)),
        "router": lambda: _timed(lambda: router.invoke(PROMPT)),
        "ttft direct": lambda: _ttft(lambda: chat.stream(PROMPT)),
        "ttft direct + logprobs": lambda: _ttft(lambda: with_logprobs.stream(PROMPT)),
        "ttft router": lambda: _ttft(lambda: router.stream(PROMPT)),
    }
    assert router.invoke(PROMPT).response_metadata["confidence_router"]["outcome"] == "accepted"
    for fn in calls.values():  # warm up connections and caches
        for _ in range(30):
            fn()
    times: dict[str, list[float]] = {name: [] for name in calls}
    names = list(calls)
    for i in range(n):
        for name in names if i % 2 == 0 else reversed(names):  # interleaved, order alternating
            times[name].append(calls[name]())
    return times


def report(times: dict[str, list[float]]) -> str:
    med = {name: statistics.median(values) for name, values in times.items()}
    rows = [f"{'call':<24}{'median ms':>11}{'p90 ms':>9}{'n':>6}"]
    for name, values in times.items():
        p90 = statistics.quantiles(values, n=10)[-1]
        rows.append(f"{name:<24}{med[name]:>11.3f}{p90:>9.3f}{len(values):>6}")
    added = med["router"] - med["direct"]
    rows += [
        "",
        f"added by the router (invoke, median):  {added:+.3f} ms   target <= {TARGET_MS} ms: "
        f"{'met' if added <= TARGET_MS else 'MISSED'}",
        f"  of which the logprob response:       {med['direct + logprobs'] - med['direct']:+.3f} ms",
        f"  of which the router's own work:      {med['router'] - med['direct + logprobs']:+.3f} ms",
        f"time to first token, router - direct: {med['ttft router'] - med['ttft direct']:+.3f} ms "
        f"(router - direct + logprobs: {med['ttft router'] - med['ttft direct + logprobs']:+.3f} ms)",
    ]
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> dict[str, list[float]]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=500, help="calls per row (default 500)")
    args = parser.parse_args(argv)
    ctx = mp.get_context("spawn")
    queue, stop = ctx.Queue(), ctx.Event()
    server = ctx.Process(target=_serve, args=(queue, stop), daemon=True)
    server.start()
    try:
        times = run(args.n, queue.get(timeout=60))
    finally:
        stop.set()
        server.join(10)
    print(report(times))
    return times


if __name__ == "__main__":
    main()

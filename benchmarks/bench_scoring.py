"""Scoring cost per answer: all signals from OpenAI-shaped dicts and from arrays, vs pure Python.

Run: ``python benchmarks/bench_scoring.py`` (``--quick`` for fewer repetitions). Both
implementations run side by side in the same process, so the ratio is the figure to trust.
"""

from __future__ import annotations

import argparse
import math
import random
import statistics
import time
from collections.abc import Callable

from langchain_confidence_router.core import (
    SignalParams,
    TokenLogprobs,
    apply_filter,
    compute_signals,
    normalize_logprobs,
)

PARAMS = SignalParams()


def make_answer(n: int, k: int = 5, seed: int = 0) -> dict:
    rnd = random.Random(seed)
    content = []
    for i in range(n):
        chosen = -rnd.expovariate(3.0)
        alts = sorted((chosen - rnd.expovariate(0.7) for _ in range(k - 1)), reverse=True)
        tok = f" w{i % 50}" if i % 7 else "."
        content.append({"token": tok, "logprob": chosen, "bytes": list(tok.encode()),
                        "top_logprobs": [{"token": tok, "logprob": chosen, "bytes": None}]
                        + [{"token": f" a{j}", "logprob": a, "bytes": None} for j, a in enumerate(alts)]})
    return {"content": content, "refusal": None}


def pure_python_signals(content: list[dict], p: SignalParams = PARAMS) -> dict[str, float]:
    """The same signals written the straightforward way, one token at a time."""
    lp = [e["logprob"] for e in content]
    n = len(lp)
    mean = sum(lp) / n
    out = {"avg_logprob": min(1.0, max(0.0, (mean + 3) / 3)), "geometric_mean": math.exp(mean),
           "min_logprob": math.exp(min(lp))}
    m = max(1, math.ceil(n * p.bottom_percent / 100))
    out["bottom_percent"] = math.exp(sum(sorted(lp)[:m]) / m)
    w = min(p.group_window, n)
    out["lowest_group"] = math.exp(min(sum(lp[i:i + w]) / w for i in range(n - w + 1)))
    t = min(p.tail_tokens, n)
    out["tail"] = math.exp(sum(lp[-t:]) / t)
    margins, entropies = [], []
    for e in content:
        tops = sorted((a["logprob"] for a in e["top_logprobs"]), reverse=True)
        if len(tops) < 2:
            continue
        margins.append(tops[0] - tops[1])
        mx = tops[0]
        exps = [math.exp(x - mx) for x in tops]
        z = sum(exps)
        h = -sum((x / z) * math.log(x / z) for x in exps if x > 0)
        entropies.append(h / math.log(len(tops)))
    margin = sum(margins) / len(margins)
    out["margin"] = 1 - math.exp(-margin / 3)
    out["entropy"] = 1 - sum(entropies) / len(entropies)
    out["hybrid"] = p.logprob_weight * out["avg_logprob"] + p.margin_weight * out["margin"]
    return out


def timed(fn: Callable[[], object], repeats: int) -> float:
    """Median microseconds per call over ``repeats`` batches."""
    inner = 20
    samples = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(inner):
            fn()
        samples.append((time.perf_counter() - t0) / inner * 1e6)
    return statistics.median(samples)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    repeats = 5 if args.quick else 25
    print(f"{'tokens':>7} {'path':<28} {'core us':>10} {'pure-Py us':>11} {'ratio':>7} {'tokens/s (core)':>16}")
    for n in (16, 256, 4096):
        answer = make_answer(n)
        content = answer["content"]
        arrays = normalize_logprobs(answer)
        assert isinstance(arrays, TokenLogprobs)
        # agreement check: the benchmark compares like with like
        ours = compute_signals(arrays).score
        ref = pure_python_signals(content)
        for name, value in ref.items():
            assert math.isclose(ours[name], value, rel_tol=1e-9, abs_tol=1e-12), name
        rows = [
            ("from dicts (normalise+all)", lambda a=answer: compute_signals(normalize_logprobs(a))),
            ("from dicts, stop filter", lambda a=answer: compute_signals(apply_filter(normalize_logprobs(a),
                                                                                       "stop").tokens)),
            ("from arrays (all signals)", lambda t=arrays: compute_signals(t)),
        ]
        pure = timed(lambda c=content: pure_python_signals(c), repeats)
        for label, fn in rows:
            core = timed(fn, repeats)
            print(f"{n:>7} {label:<28} {core:>10.1f} {pure:>11.1f} {pure / core:>6.1f}x {n / core * 1e6:>16,.0f}")


if __name__ == "__main__":
    main()

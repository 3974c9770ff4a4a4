"""Confidence without logprobs on real local models: self_verify and consistency against avg_logprob.

One command (``python benchmarks/bench_nologprob.py``) starts SmolLM2-135M and Gemma-3-270M with llama.cpp and,
for every item of ``examples/datasets/local_quiz.jsonl`` and each model, measures

* ``self_verify``: one judge call by the same model (the core's ``VERIFY_PROMPT`` quoting the recorded answer, as
  a new user turn after the question; logprobs on, top_logprobs 5, max_tokens 4, temperature 0), read with the
  core's ``verify_confidence``;
* ``consistency``: 5 samples at temperature 0.7 without logprobs (max_tokens 24), grouped with the item's grader
  kind (number -> numeric, choice -> choice, else exact) by the core's ``majority``;

with the extra calls' cost (the nominal prices of ``data/demo.yaml``) and latency. These are merged into a copy of
the recorded run ``examples/runs/local_quiz.jsonl`` as ``signals.self_verify`` / ``signals.consistency`` (and a
``methods`` object with ``extra_cost_usd`` / ``extra_latency_ms`` per method), written to
``examples/runs/local_quiz_methods.jsonl``. That file is a cache: it is reused unless ``--recompute``.

Then it prints, per model, the AUROC of each signal for predicting the recorded answer's correctness and the
extra cost/latency per request, and a SmolLM->Gemma cascade per signal with the threshold chosen IN-SAMPLE
(41 items: indicative, not a guarantee). Correctness is the recorded temperature-0 answer's; a consistency tier
would return the majority sample instead, which this benchmark does not grade.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

from langchain_confidence_router.core.config import load_config
from langchain_confidence_router.core.nologprob import VERIFY_PROMPT, majority, verify_confidence
from langchain_confidence_router.evaluation.collect import (
    QuizItem,
    demo_config_path,
    load_items,
    nominal_prices,
)
from langchain_confidence_router.evaluation.matrix import build_matrix
from langchain_confidence_router.evaluation.metrics import auroc
from langchain_confidence_router.evaluation.runs import read_runs

REPO = Path(__file__).resolve().parents[1]
DATASET = REPO / "examples" / "datasets" / "local_quiz.jsonl"
RUNS = REPO / "examples" / "runs" / "local_quiz.jsonl"
OUT = REPO / "examples" / "runs" / "local_quiz_methods.jsonl"
SMALL, LARGE = "smollm2-135m", "gemma3-270m"
MODELS = (SMALL, LARGE)
SAMPLES, SAMPLE_TEMPERATURE, SAMPLE_MAX_TOKENS = 5, 0.7, 24
JUDGE_MAX_TOKENS, JUDGE_TOP_LOGPROBS = 4, 5
COMPARE = {"number": "numeric", "choice": "choice"}
SIGNALS = ("avg_logprob", "hybrid", "self_verify", "consistency")


@dataclass
class Reply:
    text: str
    logprobs: list[dict[str, Any]] | None
    tokens_in: int
    tokens_out: int
    latency_ms: float


def _chat(client: Any, base_url: str, model: str, messages: list[dict[str, str]], **params: Any) -> Reply:
    t0 = time.perf_counter()
    response = client.post(f"{base_url}/chat/completions", json={"model": model, "messages": messages, **params},
                           headers={"Authorization": "Bearer local"}, timeout=180)
    response.raise_for_status()
    data = response.json()
    choice = data["choices"][0]
    usage = data.get("usage") or {}
    content = (choice.get("logprobs") or {}).get("content")
    return Reply((choice.get("message") or {}).get("content") or "", content,
                 int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0),
                 (time.perf_counter() - t0) * 1000.0)


def _cost(model: str, replies: Sequence[Reply], prices: dict[str, tuple[float | None, float | None]]) -> float:
    p_in, p_out = prices[model]
    return sum(r.tokens_in * (p_in or 0.0) + r.tokens_out * (p_out or 0.0) for r in replies)


def measure(item: QuizItem, model: str, answer: str, base_url: str, client: Any,
            prices: dict[str, tuple[float | None, float | None]]) -> dict[str, Any]:
    """Both methods for one recorded answer: signals and per-method extra cost/latency."""
    question = {"role": "user", "content": item.prompt}
    judge = _chat(client, base_url, model, [question, {"role": "user", "content": VERIFY_PROMPT.format(answer=answer)}],
                  max_tokens=JUDGE_MAX_TOKENS, temperature=0, logprobs=True, top_logprobs=JUDGE_TOP_LOGPROBS)
    p_yes, how = verify_confidence(judge.text, judge.logprobs)
    samples = [_chat(client, base_url, model, [question], max_tokens=SAMPLE_MAX_TOKENS,
                     temperature=SAMPLE_TEMPERATURE) for _ in range(SAMPLES)]
    compare = COMPARE.get(item.grader, "exact")
    index, share, groups = majority([s.text for s in samples], compare)
    return {
        "signals": {"self_verify": p_yes, "consistency": share},
        "methods": {
            "self_verify": {"extra_calls": 1, "extra_cost_usd": _cost(model, [judge], prices),
                            "extra_latency_ms": round(judge.latency_ms, 1), "judge_reply": judge.text, "read_as": how},
            "consistency": {"extra_calls": SAMPLES, "extra_cost_usd": _cost(model, samples, prices),
                            "extra_latency_ms": round(sum(s.latency_ms for s in samples), 1), "compare": compare,
                            "samples": [s.text for s in samples], "groups": len(groups),
                            "majority": samples[index].text if groups else None},
        },
    }


def recompute(out: Path) -> None:
    import httpx

    from langchain_confidence_router.local import start_local_servers

    items = {i.id: i for i in load_items(DATASET)}
    rows = [json.loads(line) for line in RUNS.read_text(encoding="utf-8").splitlines() if line.strip()]
    prices = nominal_prices()
    t0 = time.perf_counter()
    with start_local_servers(MODELS, n_ctx=1024) as group, httpx.Client() as client:
        print(f"servers up in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
        for k, row in enumerate(rows, start=1):
            item = items[row["item_id"]]
            extra = measure(item, row["model"], row.get("answer") or "", group[row["model"]].base_url, client, prices)
            row["signals"] = {**(row.get("signals") or {}),
                              **{k2: v for k2, v in extra["signals"].items() if v is not None}}
            row["methods"] = extra["methods"]
            print(f"[{k}/{len(rows)}] {row['model']} {row['item_id']}: self_verify={extra['signals']['self_verify']}"
                  f" consistency={extra['signals']['consistency']:.2f} ({time.perf_counter() - t0:.0f} s)",
                  file=sys.stderr)
    tmp = out.with_suffix(".tmp")
    tmp.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    tmp.replace(out)
    print(f"wrote {out} in {time.perf_counter() - t0:.0f} s", file=sys.stderr)


# ------------------------------------------------------------------------------------------------ report


def cascade(small_score: np.ndarray, correct: np.ndarray, cost: np.ndarray, extra: np.ndarray
            ) -> tuple[float, float, float, float]:
    """Best in-sample threshold for SmolLM->Gemma: (threshold, accuracy, mean cost, escalation rate).

    Accept SmolLM when its score >= threshold, else pay for Gemma too (the last tier accepts). The method's extra
    calls are paid on every request. Most accurate threshold wins; ties go to the cheapest.
    """
    score = np.where(np.isnan(small_score), -np.inf, small_score)  # no score: escalate
    best: tuple[float, float, float, float] | None = None
    for t in [*np.unique(score[np.isfinite(score)]), np.inf]:
        accept = score >= t
        acc = float(np.mean(np.where(accept, correct[:, 0], correct[:, 1])))
        c = float(np.mean(cost[:, 0] + extra + np.where(accept, 0.0, cost[:, 1])))
        key = (acc, -c)
        if best is None or key > (best[1], -best[2]):
            best = (float(t), acc, c, float(np.mean(~accept)))
    assert best is not None
    return best


def report(path: Path) -> str:
    config = load_config(demo_config_path())
    runs = read_runs(path)
    matrix = build_matrix(runs, list(MODELS), config)
    rows = {(r.item_id, r.model): r.model_extra or {} for r in runs}
    lines = [f"{matrix.n} items; AUROC = how well the signal ranks correct above wrong answers (0.5 = chance)."]

    def extra_of(method: str, model: str, field: str) -> np.ndarray:
        return np.array([((rows[(i, model)].get("methods") or {}).get(method) or {}).get(field, 0.0) or 0.0
                         for i in matrix.item_ids], dtype=float)

    latency = {m: np.array([runs.get(i, m).latency_ms or np.nan for i in matrix.item_ids]) for m in MODELS}
    for model in MODELS:
        j = matrix.index(model)
        answer_cost, answer_ms = float(np.mean(matrix.cost[:, j])), float(np.nanmean(latency[model]))
        lines += ["", f"{model}: accuracy {np.mean(matrix.correct[:, j]):.0%}, answer call ${answer_cost:.2e}, "
                      f"{answer_ms:.0f} ms",
                  f"  {'signal':<12} {'AUROC':>6} {'extra calls':>11} {'extra $/req':>11} {'x answer':>8} "
                  f"{'extra ms/req':>12} {'x answer':>8}"]
        for name in SIGNALS:
            values = matrix.signals.get(name)
            a = auroc(values[:, j], matrix.correct[:, j]) if values is not None else math.nan
            if name in ("self_verify", "consistency"):
                c, ms = float(np.mean(extra_of(name, model, "extra_cost_usd"))), float(
                    np.mean(extra_of(name, model, "extra_latency_ms")))
                calls = "1 judge" if name == "self_verify" else f"{SAMPLES} samples"
                lines.append(f"  {name:<12} {a:>6.3f} {calls:>11} {c:>11.2e} {c / answer_cost:>7.1f}x "
                             f"{ms:>12.0f} {ms / answer_ms:>7.1f}x")
            else:
                lines.append(f"  {name:<12} {a:>6.3f} {'0':>11} {0:>11.2e} {0:>7.1f}x {0:>12.0f} {0:>7.1f}x")
    lines += ["", f"Cascade {SMALL} -> {LARGE}, threshold on {SMALL}'s signal chosen IN-SAMPLE on these {matrix.n} "
                  "items (most accurate, then cheapest): indicative, not a guarantee.",
              "  Cost includes the method's extra calls on SmolLM; consistency's 5 samples are counted on top of the "
              "recorded answer.",
              f"  {'policy':<20} {'threshold':>10} {'accuracy':>8} {'$/request':>10} {'escalated':>9}"]
    correct, cost = matrix.correct.astype(float), matrix.cost
    for m, j in ((SMALL, 0), (LARGE, 1)):
        lines.append(f"  {'always ' + m:<20} {'-':>10} {np.mean(correct[:, j]):>8.1%} {np.mean(cost[:, j]):>10.2e} "
                     f"{(100.0 if j else 0.0):>8.0f}%")
    oracle = np.maximum(correct[:, 0], correct[:, 1])
    lines.append(f"  {'oracle (bound)':<20} {'-':>10} {np.mean(oracle):>8.1%} {'':>10} "
                 f"{np.mean(correct[:, 0] == 0):>9.0%}")
    for name in SIGNALS:
        values = matrix.signals.get(name)
        if values is None:
            continue
        extra = extra_of(name, SMALL, "extra_cost_usd") if name in ("self_verify", "consistency") else np.zeros(
            matrix.n)
        t, acc, c, esc = cascade(values[:, 0], correct, cost, extra)
        lines.append(f"  {'cascade on ' + name:<20} {t:>10.3f} {acc:>8.1%} {c:>10.2e} {esc:>9.0%}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--recompute", action="store_true", help="measure again even if the output file exists")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    if args.recompute or not args.out.exists():
        recompute(args.out)
    else:
        print(f"using cached {args.out} (--recompute to measure again)", file=sys.stderr)
    print(report(args.out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Escalation latency on the real local models: sequential vs early abort vs hedging vs both.

One command, figures on stdout (see docs/latency.md)::

    python benchmarks/bench_latency.py                      # live: SmolLM2 then Gemma, both adapters
    python benchmarks/bench_latency.py --limit 40 --adapters langchain
    python benchmarks/bench_latency.py --offline            # replay of examples/runs/long_answers.jsonl

**Live.** Starts the two llama.cpp servers of the ``local`` extra (``start_local_servers``, as
``confidence-router demo`` does), builds one cascade per mode from the packaged demo configuration
(SmolLM2-135M tier 1, Gemma-3-270M tier 2) and asks the items of the recorded long-answer set through
the LangChain ``ConfidenceRouter`` (``ChatOpenAI`` tiers) and a ``litellm.Router`` whose cascade
deployments are ``confidence/<mode>``. Modes run interleaved item by item in rotating order (ABCD,
BCDA, ...) so machine noise hits them alike; each figure is also printed as a ratio to sequential.

**Offline.** Replays the same modes on the recorded runs with the public replay API
(``evaluation.replay.replay_request``: the real policy, driven by the adapters' loop, fed recorded
answers, which applies ``early_abort`` to prefixes where the checkout supports it). Latency is
estimated per model as ``a + b * tokens`` (least squares on the recorded latency and output tokens),
so an attempt aborted at token k costs ``a + b * k``; hedging is laid on a timeline: the next tier
starts ``hedge_after_ms`` after the current one unless it has finished, and the first acceptable
answer in time wins (ties to the earlier tier).

Per mode: p50/p95 end-to-end latency of the escalated requests (those that reached tier 2 in the
sequential run, so every mode is judged on the same requests) and of all requests, output tokens
and cost of rejected attempts, accuracy (the dataset's grader), the cost of cancelled hedge losers,
and (live) the time to first token of a confident tier 1 when streaming. Target: escalated p50 down
>= 30% against sequential at an accuracy change within +-1 point.

The option names are those of the configuration (``early_abort: {after_tokens, below}`` and
``hedge_after_ms`` per model); a mode whose keys this checkout's configuration rejects is printed as
"not available in this checkout" and skipped.
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import os
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # offline: no cost-map download

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # this checkout's package, not another installed copy

from langchain_confidence_router.core.config import parse_config  # noqa: E402
from langchain_confidence_router.core.engine import Cascade  # noqa: E402
from langchain_confidence_router.evaluation.collect import QuizItem, demo_config_path, grade, load_items  # noqa: E402

DATASET = ROOT / "examples" / "datasets" / "long_answers.jsonl"
RUNS = ROOT / "examples" / "runs" / "long_answers.jsonl.gz"
MODES = ("sequential", "abort", "hedge", "both")
ADAPTERS = ("langchain", "litellm")
TARGET_P50_CUT = 0.30
TARGET_ACCURACY_PTS = 1.0


# ----------------------------------------------------------------------------------------- configurations


def mode_configs(base: dict[str, Any], after_tokens: int | None, below: float | None, hedge_after_ms: float | None
                 ) -> tuple[dict[str, dict[str, Any]], dict[str, str]]:
    """One configuration per mode, and why any mode is unavailable in this checkout.

    Options go on every tier but the last (it has no next tier to abort to or hedge with). A value given
    on the command line wins; else the base configuration's own (a rule from ``tune-abort``, say); else
    the defaults. Sequential has neither option, whatever the base configuration says."""
    configs: dict[str, dict[str, Any]] = {}
    missing: dict[str, str] = {}
    for mode in MODES:
        cfg = copy.deepcopy(base)
        for spec in cfg["models"]:
            rule = spec.pop("early_abort", None) or {}
            hedge = spec.pop("hedge_after_ms", None)
            if spec is cfg["models"][-1]:
                continue
            if mode in ("abort", "both"):
                spec["early_abort"] = {**rule, "after_tokens": after_tokens or rule.get("after_tokens", 8),
                                       "below": below if below is not None else rule.get("below", 0.8)}
            if mode in ("hedge", "both"):
                spec["hedge_after_ms"] = hedge_after_ms or hedge or 2000.0
        try:
            parse_config(cfg)
        except Exception as exc:  # ConfigError / ValidationError: the keys are not in this checkout
            missing[mode] = " ".join(str(exc).split())[:200]
            continue
        configs[mode] = cfg
    return configs, missing


def describe(configs: dict[str, dict[str, Any]]) -> str:
    """The options each mode actually runs with, per tier."""
    parts = []
    for mode, cfg in configs.items():
        opts = [f"{m['name']}: " + ", ".join(f"{k}={m[k]}" for k in ("early_abort", "hedge_after_ms") if k in m)
                for m in cfg["models"] if "early_abort" in m or "hedge_after_ms" in m]
        parts.append(f"{mode} ({'; '.join(opts) or 'no options'})")
    return "; ".join(parts)


# ----------------------------------------------------------------------------------------- measurements


@dataclass
class Result:
    """One request in one mode: what the user waited for and what was paid."""

    item_id: str
    latency_ms: float
    correct: bool
    escalated: bool
    rejected_tokens: int = 0
    rejected_cost: float = 0.0
    cancelled_cost: float = 0.0
    total_cost: float = 0.0
    error: str | None = None


def from_trace(item: QuizItem, trace: dict[str, Any], answer: str | None, latency_ms: float,
               correct: bool | None = None) -> Result:
    """Split a trace's attempts into the served one, rejected ones and cancelled hedge losers."""
    final_tier = trace.get("final_tier")
    rejected_tokens, rejected_cost, cancelled_cost = 0, 0.0, 0.0
    escalated = False  # the request reached tier 2 (sequential: tier 1 was not accepted)
    for a in trace.get("attempts") or []:
        if a.get("purpose", "answer") != "answer":
            continue
        escalated = escalated or (a.get("tier") or 0) > 0
        served = a.get("tier") == final_tier and a.get("decision") in ("accept", "fallback")
        if a.get("decision") == "cancelled":
            cancelled_cost += a.get("cost_usd") or 0.0
        elif not served:
            rejected_tokens += a.get("tokens_out") or 0
            rejected_cost += a.get("cost_usd") or 0.0
    if correct is None:
        correct = answer is not None and grade(item, answer)
    return Result(item.id, latency_ms, correct, escalated, rejected_tokens, rejected_cost, cancelled_cost,
                  float(trace.get("total_cost_usd") or 0.0))


def pct(values: Sequence[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


@dataclass
class Summary:
    n: int
    escalated: int
    p50_esc: float
    p95_esc: float
    p50_all: float
    p95_all: float
    accuracy: float
    rejected_tokens: float
    rejected_cost: float
    cancelled_cost: float
    cost: float
    errors: int
    ttft_ms: float | None = None


def summarise(results: Sequence[Result], escalated_ids: set[str], ttft: Sequence[float] = ()) -> Summary:
    ok = [r for r in results if r.error is None]
    esc = [r.latency_ms for r in ok if r.item_id in escalated_ids]
    lat = [r.latency_ms for r in ok]
    n = max(len(ok), 1)
    return Summary(len(ok), len(esc), pct(esc, 50), pct(esc, 95), pct(lat, 50), pct(lat, 95),
                   100.0 * sum(r.correct for r in ok) / n, sum(r.rejected_tokens for r in ok) / n,
                   sum(r.rejected_cost for r in ok) / n, sum(r.cancelled_cost for r in ok) / n,
                   sum(r.total_cost for r in ok) / n, len(results) - len(ok),
                   statistics.median(ttft) if ttft else None)


def print_table(title: str, summaries: dict[str, Summary], missing: dict[str, str]) -> None:
    """Absolute figures per mode, then ratios to sequential and the verdict on the target."""
    print(f"\n== {title} ==")
    head = (f"{'mode':<11}{'n':>5}{'esc':>5}{'esc p50 s':>10}{'esc p95 s':>10}{'all p50 s':>10}{'all p95 s':>10}"
            f"{'acc %':>7}{'rej tok/req':>12}{'rej $/req':>11}{'hedge $/req':>12}{'$/req':>10}{'TTFT s':>8}")
    print(head)
    for mode in MODES:
        if mode in missing:
            print(f"{mode:<11}not available in this checkout ({missing[mode]})")
            continue
        s = summaries.get(mode)
        if s is None:
            continue
        ttft = "" if s.ttft_ms is None else f"{s.ttft_ms / 1000:.2f}"
        print(f"{mode:<11}{s.n:>5}{s.escalated:>5}{s.p50_esc / 1000:>10.2f}{s.p95_esc / 1000:>10.2f}"
              f"{s.p50_all / 1000:>10.2f}{s.p95_all / 1000:>10.2f}{s.accuracy:>7.1f}{s.rejected_tokens:>12.1f}"
              f"{s.rejected_cost:>11.2e}{s.cancelled_cost:>12.2e}{s.cost:>10.2e}{ttft:>8}"
              + (f"  ({s.errors} failed)" if s.errors else ""))
    base = summaries.get("sequential")
    if base is None:
        return
    for mode, s in summaries.items():
        if mode == "sequential":
            continue
        ratio = s.p50_esc / base.p50_esc if base.p50_esc else float("nan")
        delta = s.accuracy - base.accuracy
        met = ratio <= 1 - TARGET_P50_CUT and abs(delta) <= TARGET_ACCURACY_PTS
        ttft = ("" if s.ttft_ms is None or not base.ttft_ms else f", TTFT x{s.ttft_ms / base.ttft_ms:.2f}")
        print(f"{mode:<11}vs sequential: escalated p50 x{ratio:.2f}, p95 x{_ratio(s.p95_esc, base.p95_esc)}, "
              f"all p50 x{_ratio(s.p50_all, base.p50_all)}, accuracy {delta:+.1f} pt, "
              f"rejected tokens x{_ratio(s.rejected_tokens, base.rejected_tokens)}, cost per request "
              f"{s.cost - base.cost:+.2e} ({_ratio(s.cost, base.cost)}x){ttft} -> target "
              f"(p50 -{TARGET_P50_CUT:.0%}, +-{TARGET_ACCURACY_PTS:g} pt) {'MET' if met else 'not met'}")


def _ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}" if b and np.isfinite(a) and np.isfinite(b) else "n/a"


# ----------------------------------------------------------------------------------------- offline replay


def latency_model(records: Sequence[Any]) -> tuple[float, float]:
    """(a, b) of latency_ms = a + b * tokens_out by least squares, both >= 0."""
    rows = [(r.tokens_out, r.latency_ms) for r in records if r.tokens_out is not None and r.latency_ms is not None]
    if len(rows) < 2:
        raise SystemExit("the recorded runs need latency_ms and tokens_out to estimate latency")
    x, y = np.array(rows, dtype=float).T
    b, a = np.polyfit(x, y, 1) if np.ptp(x) > 0 else (0.0, float(y.mean()))
    if a < 0 or b < 0:  # answers of nearly one length fit badly: a per-token rate through the origin instead
        a, b = 0.0, float(y.sum() / max(x.sum(), 1.0))
    return float(a), float(b)


def run_offline(args: argparse.Namespace, configs: dict[str, dict[str, Any]], missing: dict[str, str],
                items: dict[str, QuizItem]) -> None:
    from langchain_confidence_router.core.policy import Finish, TierResult
    from langchain_confidence_router.core.tiers import build_tiers
    from langchain_confidence_router.evaluation.matrix import build_matrix, load_runs
    from langchain_confidence_router.evaluation.replay import replay_request, tier_confidence

    runs = load_runs(args.runs)
    models = [m["name"] for m in configs["sequential"]["models"]]
    fits = {m: latency_model(runs.for_model(m)) for m in models}
    for m, (a, b) in fits.items():
        print(f"latency estimate {m}: {a / 1000:.2f} s + {b:.1f} ms/token")
    ids = spread([i for i in runs.item_ids(models) if i in items], args.limit)
    print(f"{len(ids)} recorded items ({args.runs})")

    def answer_fn(item_id: str) -> Callable[[Any], Any]:
        def answer(call: Any) -> Any:
            r = runs.get(item_id, call.tier.name)
            assert r is not None
            return TierResult(text=str((r.model_extra or {}).get("answer", "")),
                              logprobs=[e.model_dump() for e in r.logprobs or []] or None,
                              cost_usd=r.cost_usd, tokens_in=r.tokens_in, tokens_out=r.tokens_out)
        return answer

    def attempt_ms(item_id: str, model: str, a: dict[str, Any]) -> float:
        """The recorded latency, or the estimate up to the token where early abort cut the attempt."""
        record = runs.get(item_id, model)
        assert record is not None
        cut = a.get("aborted_at_token")
        if cut is None:
            return float(record.latency_ms or 0.0)
        fa, fb = fits[model]
        return min(float(record.latency_ms or 0.0), fa + fb * cut)

    results: dict[str, list[Result]] = {m: [] for m in configs}
    base_cfg = parse_config(configs["sequential"])
    tiers, _ = build_tiers(base_cfg)
    matrix = build_matrix(runs, models, base_cfg)
    row = {item: i for i, item in enumerate(matrix.item_ids)}
    acceptable = {t.name: tier_confidence(t, matrix.raw(t.name), matrix.n) >= t.threshold for t in tiers}
    for mode, cfg in configs.items():
        cascade = Cascade.from_config(cfg)
        hedge = {m["name"]: m.get("hedge_after_ms") for m in cfg["models"]}
        for current in ids:
            action = replay_request(cascade, answer_fn(current))
            trace = (action.trace if isinstance(action, Finish) else action.error.trace).model_dump(mode="json")
            attempts = [a for a in trace["attempts"] if a.get("purpose", "answer") == "answer"]
            served = trace.get("final_model")
            correct = served is not None and bool(runs.get(current, served).correct)  # type: ignore[union-attr]
            latency = sum(attempt_ms(current, a["model"], a) for a in attempts)
            if any(hedge.values()):
                latency, served, cancelled = hedged_timeline(
                    models, hedge, {a["model"]: attempt_ms(current, a["model"], a) for a in attempts},
                    {m: attempt_ms(current, m, {}) for m in models},
                    {m: bool(acceptable[m][row[current]]) for m in models},
                    {a["model"]: a.get("aborted_at_token") is not None for a in attempts}, served)
                correct = served is not None and bool(runs.get(current, served).correct)  # type: ignore[union-attr]
                result = from_trace(items[current], trace, None, latency, correct)
                result.cancelled_cost = sum(runs.get(current, m).cost_usd or 0.0 for m in cancelled)  # type: ignore[union-attr]
                result.total_cost += result.cancelled_cost
            else:
                result = from_trace(items[current], trace, None, latency, correct)
            results[mode].append(result)
    escalated = {r.item_id for r in results["sequential"] if r.escalated}
    print_table("offline replay (estimated latency)", {m: summarise(rs, escalated) for m, rs in results.items()},
                missing)


def hedged_timeline(models: Sequence[str], hedge: dict[str, float | None], sequential_ms: dict[str, float],
                    full_ms: dict[str, float], acceptable: dict[str, bool], aborted: dict[str, bool],
                    fallback: str | None) -> tuple[float, str | None, list[str]]:
    """When the answer arrives and from whom, with each tier started early by ``hedge_after_ms``.

    A tier's answer is acceptable when its recorded confidence clears its threshold and it was not
    aborted; the first acceptable one in time wins (ties to the earlier tier) and the still-running
    later tiers are cancelled (billed in full here: an upper bound). With none acceptable the
    sequential fallback is served once every tier has finished."""
    start, ends = 0.0, {}
    for i, m in enumerate(models):
        duration = sequential_ms.get(m, full_ms[m])
        ends[m] = start + duration
        h = hedge.get(m)
        start = start + (min(h, duration) if h is not None else duration)
        if i + 1 < len(models) and acceptable[m] and not aborted.get(m) and ends[m] <= start:
            break  # answered and accepted before the next tier was due: it never starts
    ok = [(t, i, m) for i, (m, t) in enumerate(ends.items()) if acceptable[m] and not aborted.get(m)]
    if ok:
        t, _, winner = min(ok)
        cancelled = [m for m, e in ends.items() if m != winner and e > t]
        return t, winner, cancelled
    return max(ends.values()), fallback, []


# ----------------------------------------------------------------------------------------- live


def spread(ids: Sequence[str], limit: int | None) -> list[str]:
    """``limit`` ids evenly spaced over the set (every category, not just the first one), or all."""
    if not limit or limit >= len(ids):
        return list(ids)
    return [ids[round(i * len(ids) / limit)] for i in range(limit)]


def langchain_runner(configs: dict[str, dict[str, Any]], urls: dict[str, str], max_tokens: int
                     ) -> dict[str, Callable[[QuizItem, bool], tuple[Result, float | None]]]:
    from langchain_openai import ChatOpenAI

    from langchain_confidence_router.langchain import TRACE_KEY, ConfidenceRouter

    def router_for(cfg: dict[str, Any]) -> Any:
        # ChatOpenAI sends max_completion_tokens, which llama-cpp-python ignores: max_tokens goes in extra_body
        models = {k: ChatOpenAI(base_url=urls[k], api_key="local", model=k, temperature=0,  # type: ignore[arg-type]
                                max_tokens=max_tokens, extra_body={"max_tokens": max_tokens}, max_retries=0)
                  for k in urls}
        return ConfidenceRouter.from_config(parse_config(cfg), models=models)

    def runner(router: Any) -> Callable[[QuizItem, bool], tuple[Result, float | None]]:
        def ask(item: QuizItem, stream: bool) -> tuple[Result, float | None]:
            t0 = time.perf_counter()
            ttft = None
            try:
                if stream:
                    parts, trace = [], {}
                    for chunk in router.stream(item.prompt):
                        if chunk.text and ttft is None:
                            ttft = (time.perf_counter() - t0) * 1000
                        parts.append(chunk.text)
                        trace = chunk.response_metadata.get(TRACE_KEY) or trace
                    text = "".join(parts)
                else:
                    message = router.invoke(item.prompt)
                    text, trace = message.text, message.response_metadata[TRACE_KEY]
            except Exception as exc:
                return _failed(item, exc), None
            return from_trace(item, trace, text, (time.perf_counter() - t0) * 1000), ttft
        return ask

    return {mode: runner(router_for(cfg)) for mode, cfg in configs.items()}


def litellm_runner(configs: dict[str, dict[str, Any]], urls: dict[str, str], max_tokens: int,
                   loop: asyncio.AbstractEventLoop
                   ) -> dict[str, Callable[[QuizItem, bool], tuple[Result, float | None]]]:
    import litellm

    import litellm_hooks

    litellm_hooks.register()  # before building the Router: it must know the `confidence` provider
    model_list: list[dict[str, Any]] = [
        {"model_name": k, "litellm_params": {"model": f"openai/{k}", "api_base": u, "api_key": "local",
                                             "num_retries": 0}} for k, u in urls.items()]
    model_list += [{"model_name": f"latency-{mode}", "litellm_params": {"model": f"confidence/latency-{mode}",
                                                                         "cascade": cfg}}
                   for mode, cfg in configs.items()]
    router = litellm.Router(model_list=model_list)
    litellm_hooks.register(router)

    async def call(group: str, item: QuizItem, stream: bool) -> tuple[Result, float | None]:
        messages = [{"role": "user", "content": item.prompt}]
        t0 = time.perf_counter()
        ttft = None
        try:
            if stream:
                response = await router.acompletion(model=group, messages=messages, max_tokens=max_tokens,
                                                    temperature=0, stream=True)
                parts = []
                async for chunk in response:
                    delta = chunk.choices[0].delta.content if chunk.choices else None
                    if delta and ttft is None:
                        ttft = (time.perf_counter() - t0) * 1000
                    parts.append(delta or "")
                text, trace = "".join(parts), {}
            else:
                response = await router.acompletion(model=group, messages=messages, max_tokens=max_tokens,
                                                    temperature=0)
                text = response.choices[0].message.content or ""
                trace = response._hidden_params[litellm_hooks.TRACE_KEY]
        except Exception as exc:
            return _failed(item, getattr(exc, "__cause__", None) or exc), None
        return from_trace(item, trace, text, (time.perf_counter() - t0) * 1000), ttft

    def runner(group: str) -> Callable[[QuizItem, bool], tuple[Result, float | None]]:
        return lambda item, stream: loop.run_until_complete(call(group, item, stream))

    return {mode: runner(f"latency-{mode}") for mode in configs}


def _failed(item: QuizItem, exc: BaseException) -> Result:
    return Result(item.id, float("nan"), False, False, error=f"{type(exc).__name__}: {exc}")


@dataclass
class Collected:
    results: dict[str, list[Result]] = field(default_factory=dict)
    ttft: dict[str, list[float]] = field(default_factory=dict)


def run_live(args: argparse.Namespace, configs: dict[str, dict[str, Any]], missing: dict[str, str],
             items: dict[str, QuizItem]) -> None:
    from langchain_confidence_router.local import start_local_servers

    asked = [items[i] for i in spread(list(items), args.limit)]
    models = [m["name"] for m in configs["sequential"]["models"]]
    adapters = [a.strip() for a in args.adapters.split(",") if a.strip()]
    print(f"{len(asked)} items x {len(configs)} modes x {len(adapters)} adapter(s), max_tokens {args.max_tokens}; "
          f"starting {', '.join(models)}...", flush=True)
    t_start = time.perf_counter()
    loop = asyncio.new_event_loop()
    with start_local_servers(models, n_ctx=args.n_ctx) as group:
        urls = {k: group[k].base_url for k in models}
        for adapter in adapters:
            runners = (langchain_runner(configs, urls, args.max_tokens) if adapter == "langchain"
                       else litellm_runner(configs, urls, args.max_tokens, loop))
            got = Collected({m: [] for m in runners}, {m: [] for m in runners})
            order = list(runners)
            for i, item in enumerate(asked):
                rotated = order[i % len(order):] + order[: i % len(order)]  # ABCD, BCDA, ...: drift hits all
                for mode in rotated:
                    result, _ = runners[mode](item, False)
                    got.results[mode].append(result)
                print(f"  [{adapter} {i + 1}/{len(asked)}] {item.id}: "
                      + ", ".join(f"{m} {got.results[m][-1].latency_ms / 1000:.1f}s" for m in order), flush=True)
            # TTFT of a confident first tier: items tier 1 answered and kept in the sequential run, streamed
            confident = [item for item, r in zip(asked, got.results["sequential"], strict=True)
                         if r.error is None and not r.escalated][: args.ttft_items]
            for i, item in enumerate(confident):
                rotated = order[i % len(order):] + order[: i % len(order)]
                for mode in rotated:
                    _, ttft = runners[mode](item, True)
                    if ttft is not None:
                        got.ttft[mode].append(ttft)
            escalated = {r.item_id for r in got.results["sequential"] if r.escalated}
            print_table(f"live, {adapter} adapter ({len(confident)} confident items streamed for TTFT)",
                        {m: summarise(got.results[m], escalated, got.ttft[m]) for m in runners}, missing)
    loop.close()
    print(f"\ndone in {time.perf_counter() - t_start:.0f} s")


# ----------------------------------------------------------------------------------------- main


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--offline", action="store_true", help="replay the recorded runs instead of calling the models")
    p.add_argument("--limit", type=int, help="N items spread over the set (default: 10 live, all offline)")
    p.add_argument("--adapters", default="langchain,litellm", help="live: comma-separated, langchain and/or litellm")
    p.add_argument("--dataset", type=Path, default=DATASET)
    p.add_argument("--runs", type=Path, default=RUNS, help="offline: the recorded runs")
    p.add_argument("--config", type=Path, default=demo_config_path(),
                   help="base cascade (default: the demo's); its own early_abort / hedge_after_ms are used "
                        "unless the options below are given")
    p.add_argument("--after-tokens", type=int, help="early_abort.after_tokens (else the config's, else 8)")
    p.add_argument("--below", type=float, help="early_abort.below (else the config's, else 0.8)")
    p.add_argument("--hedge-after-ms", type=float, help="hedge_after_ms (else the config's, else 2000)")
    p.add_argument("--max-tokens", type=int, default=128, help="live answer cap (the recording's: 128)")
    p.add_argument("--ttft-items", type=int, default=3, help="live: confident items streamed for TTFT")
    p.add_argument("--n-ctx", type=int, default=1024)
    args = p.parse_args(argv)
    if args.limit is None and not args.offline:
        args.limit = 10  # 10 items x 4 modes x 2 adapters: about ten minutes on a busy 2-core machine
    base = yaml.safe_load(args.config.read_text(encoding="utf-8"))
    configs, missing = mode_configs(base, args.after_tokens, args.below, args.hedge_after_ms)
    if "sequential" not in configs:
        raise SystemExit(f"the base configuration does not load: {missing['sequential']}")
    print(f"modes: {', '.join(configs)} (not available: {', '.join(missing) or 'none'})")
    print(describe(configs))
    print(f"target: escalated p50 down >= {TARGET_P50_CUT:.0%} at accuracy within +-{TARGET_ACCURACY_PTS:g} pt "
          "of sequential")
    items = {i.id: i for i in load_items(args.dataset)}
    if args.offline:
        run_offline(args, configs, missing, items)
    else:
        run_live(args, configs, missing, items)
    return 0


if __name__ == "__main__":
    sys.exit(main())

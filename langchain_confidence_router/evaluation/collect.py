"""Collect recorded runs: ask every model every question of a dataset, grade the answers, keep the logprobs.

A dataset is JSONL, one item per line::

    {"id": "arith-01", "prompt": "What is 2 + 3? Answer with just the number.", "reference": "5", "grader": "number"}

Each (item, model) pair becomes one :class:`~.runs.RunRecord` appended to the output file as soon as
it is answered (so a crash loses at most one answer, and a second run skips what is already there).
A record keeps the answer's full per-token logprobs (top-k alternatives included), whether it was
correct, usage, a cost from per-token prices, the latency, and the raw confidence signals computed
the way the router computes them at run time (token filter and signal parameters of a configuration).

Graders (tiny models answer in sentences, so each one looks for the answer *inside* the text):

``exact``
    Normalised equality (case, accents, punctuation, spacing and a leading article ignored). For a
    ``yes``/``no`` reference the first yes/no word of the answer decides. Otherwise the reference
    counts when it appears as a whole word (sequence) in a short answer (at most 40 words).
``number``
    The last number in the answer (``1,023``, ``-4``, ``2.5``; number words ``zero`` .. ``ninety``
    when no digit appears) equals the reference numerically.
``regex``
    The reference is a regular expression searched in the answer (add ``(?i)`` yourself).
``choice``
    The answer's option letter equals the reference letter. The letter is, in order: the whole answer
    (``B``, ``(b)``, ``B.``; any case), a leading ``B)`` / ``B.``, ``answer is B`` / ``option B``, a ``B)`` anywhere,
    then the one option whose text (parsed from ``A) ... B) ...`` in the prompt or from the item's
    ``choices``) the answer mentions, then a lone capital letter among the options (an ``A`` before a
    lower-case word is the article, not an option).
"""

from __future__ import annotations

import json
import math
import re
import time
import unicodedata
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from ..core.config import RouterConfig, load_config, parse_config
from ..core.errors import ConfigError
from ..core.filters import apply_filter
from ..core.signals import SignalParams, compute_signals
from ..core.tokens import normalize_logprobs
from .runs import PathLike, RunRecord, append_run, read_runs

__all__ = [
    "GRADERS",
    "CollectSummary",
    "Endpoint",
    "QuizItem",
    "answer_signals",
    "ask",
    "choice_letter",
    "collect",
    "collect_iter",
    "demo_config_path",
    "grade",
    "grade_choice",
    "grade_exact",
    "grade_number",
    "grade_regex",
    "last_number",
    "load_items",
    "nominal_prices",
    "parse_options",
    "pending_pairs",
    "record_for",
]

# --------------------------------------------------------------------------------------------- dataset


@dataclass(frozen=True)
class QuizItem:
    """One dataset question with its reference answer and the grader that checks answers against it."""

    id: str
    prompt: str
    reference: str
    grader: str = "exact"
    choices: Mapping[str, str] | None = None


def load_items(path: PathLike) -> list[QuizItem]:
    """Read a JSONL dataset; a bad line or unknown grader is a :class:`ConfigError` naming the line."""
    p = Path(path)
    try:
        lines = p.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise ConfigError(f"cannot read the dataset ({exc.strerror or exc})", source=str(p)) from None
    items: list[QuizItem] = []
    seen: set[str] = set()
    for lineno, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        where = f"{p}:{lineno}"
        try:
            row = json.loads(line)
            item = QuizItem(
                id=str(row.get("id", row.get("item_id", lineno))),
                prompt=str(row["prompt"]),
                reference=str(row["reference"]),
                grader=str(row.get("grader", "exact")),
                choices=row.get("choices"),
            )
        except (json.JSONDecodeError, KeyError, TypeError, AttributeError) as exc:
            raise ConfigError(f"not a dataset item (needs prompt and reference): {exc}", source=where) from None
        if item.grader not in GRADERS:
            raise ConfigError(f"unknown grader {item.grader!r}; allowed: {', '.join(GRADERS)}", source=where)
        if item.grader == "regex":
            try:
                re.compile(item.reference)
            except re.error as exc:
                raise ConfigError(f"reference is not a valid regular expression: {exc}", source=where) from None
        if item.id in seen:
            raise ConfigError(f"item id {item.id!r} appears twice", source=where)
        seen.add(item.id)
        items.append(item)
    if not items:
        raise ConfigError("the dataset has no items", source=str(p))
    return items


# --------------------------------------------------------------------------------------------- graders

_ARTICLES = ("the ", "a ", "an ")
_SHORT_ANSWER_WORDS = 40


def _normalise(text: str) -> str:
    """Case-, accent-, punctuation- and spacing-insensitive form used by ``exact``."""
    text = unicodedata.normalize("NFKD", text)
    text = "".join(ch for ch in text if not unicodedata.combining(ch)).casefold()
    text = re.sub(r"[^\w\s]", " ", text)
    text = " ".join(text.split())
    text = re.sub(r"^answer\s+", "", text)
    for article in _ARTICLES:
        if text.startswith(article):
            text = text[len(article):]
            break
    return text


def grade_exact(answer: str, reference: str) -> bool:
    """Normalised equality; a yes/no reference is matched by the first yes/no word; else a whole-word hit."""
    ans, ref = _normalise(answer), _normalise(reference)
    if not ref:
        return not ans
    if ans == ref:
        return True
    if ref in ("yes", "no"):
        first = re.search(r"\b(yes|no)\b", ans)
        return first is not None and first.group(1) == ref
    if len(ans.split()) > _SHORT_ANSWER_WORDS:
        return False
    return re.search(rf"(?<!\w){re.escape(ref)}(?!\w)", ans) is not None


_NUMBER_RE = re.compile(r"(?<![\w.])-?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?![\d])")
_UNITS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven", "twelve",
          "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen"]
_TENS = {"twenty": 20, "thirty": 30, "forty": 40, "fifty": 50, "sixty": 60, "seventy": 70, "eighty": 80,
         "ninety": 90}
_WORD_NUMBERS = {**{w: i for i, w in enumerate(_UNITS)}, **_TENS}
_WORD_RE = re.compile(r"\b(" + "|".join(sorted(_WORD_NUMBERS, key=len, reverse=True)) + r")\b", re.IGNORECASE)


def last_number(text: str) -> float | None:
    """The last number written in digits, else the last number word (``eight``), else None."""
    found = _NUMBER_RE.findall(text)
    if found:
        return float(found[-1].replace(",", ""))
    words = _WORD_RE.findall(text)
    return float(_WORD_NUMBERS[words[-1].lower()]) if words else None


def grade_number(answer: str, reference: str) -> bool:
    """The last number in the answer equals the reference (relative tolerance 1e-9)."""
    got = last_number(answer)
    want = last_number(reference)
    if got is None or want is None:
        return False
    return math.isclose(got, want, rel_tol=1e-9, abs_tol=1e-12)


def grade_regex(answer: str, reference: str) -> bool:
    """The reference pattern is found in the answer."""
    return re.search(reference, answer) is not None


_OPTION_RE = re.compile(r"(?<![\w(])\(?([A-J])\)\s*")


def parse_options(prompt: str) -> dict[str, str]:
    """``{"A": "Carrot", ...}`` from ``A) Carrot B) Apple ...`` in a prompt; {} unless letters run A, B, ..."""
    marks = list(_OPTION_RE.finditer(prompt))
    letters = [m.group(1) for m in marks]
    if len(marks) < 2 or letters != [chr(ord("A") + i) for i in range(len(letters))]:
        return {}
    options: dict[str, str] = {}
    for i, mark in enumerate(marks):
        end = marks[i + 1].start() if i + 1 < len(marks) else len(prompt)
        text = prompt[mark.end():end]
        if i + 1 == len(marks):  # the last option ends at its sentence: "D) Onion. Answer with ..."
            text = re.split(r"(?<=\w)[.?!]\s|\n", text, maxsplit=1)[0]
        options[mark.group(1)] = text.strip().rstrip(".,;:?!").strip()
    return options


def choice_letter(answer: str, prompt: str = "", choices: Mapping[str, str] | None = None) -> str | None:
    """The option letter an answer picks, or None when it names none (or several) unambiguously."""
    options = dict(choices) if choices else parse_options(prompt)
    letters = "".join(options) or "ABCD"
    cls = f"[{letters}]"
    text = answer.strip()
    whole = re.fullmatch(rf"\(?({cls})\)?[.):]?", text, re.IGNORECASE)  # the whole answer: B, (b), B.
    if whole:
        return whole.group(1).upper()
    patterns = (
        rf"^\(?({cls})[.):](?:\s|$)",  # a leading "B)" / "B." / "B:"
        rf"(?i:answer|option|choice)\s*(?:is|:)?\s*\(?({cls})\b",
        rf"(?<![\w(])\(?({cls})\)",  # "... B) Apple" anywhere
    )
    for pattern in patterns:
        match = re.search(pattern, text)
        if match:
            return match.group(1)
    if options:
        said = _normalise(text)
        hits = [k for k, v in options.items()
                if _normalise(v) and re.search(rf"(?<!\w){re.escape(_normalise(v))}(?!\w)", said)]
        if len(hits) == 1:
            return hits[0]
    lone = [m.group(1) for m in re.finditer(rf"(?<![\w'])({cls})(?![\w'])", text)
            if not (m.group(1) == "A" and re.match(r"\s+[a-z]", text[m.end():]))]
    return lone[0] if len(set(lone)) == 1 else None


def grade_choice(answer: str, reference: str, prompt: str = "", choices: Mapping[str, str] | None = None) -> bool:
    """The answer's option letter (see :func:`choice_letter`) equals the reference letter."""
    want = reference.strip().strip("()").strip().upper()[:1]
    return choice_letter(answer, prompt, choices) == want


GRADERS: dict[str, Callable[..., bool]] = {
    "exact": grade_exact,
    "number": grade_number,
    "regex": grade_regex,
    "choice": grade_choice,
}


def grade(item: QuizItem, answer: str) -> bool:
    """Grade one answer to one item with the item's grader."""
    if item.grader == "choice":
        return grade_choice(answer, item.reference, item.prompt, item.choices)
    return GRADERS[item.grader](answer, item.reference)


# --------------------------------------------------------------------------------------------- models


@dataclass(frozen=True)
class Endpoint:
    """One model behind an OpenAI-compatible chat completions API; ``name`` is what the runs record."""

    name: str
    base_url: str
    model: str | None = None
    api_key: str = "none"
    input_cost_per_token: float | None = None
    output_cost_per_token: float | None = None
    extra_body: Mapping[str, Any] = field(default_factory=dict)

    @property
    def served_model(self) -> str:
        return self.model or self.name

    def cost(self, tokens_in: int | None, tokens_out: int | None) -> float | None:
        if self.input_cost_per_token is None and self.output_cost_per_token is None:
            return None
        return (tokens_in or 0) * (self.input_cost_per_token or 0.0) + (tokens_out or 0) * (
            self.output_cost_per_token or 0.0)


def demo_config_path() -> Path:
    """The packaged demo configuration (``data/demo.yaml``)."""
    return Path(str(resources.files("langchain_confidence_router") / "data" / "demo.yaml"))


def nominal_prices(config: RouterConfig | None = None) -> dict[str, tuple[float | None, float | None]]:
    """Per-token (input, output) prices by model name: the configuration's, else the demo's nominal ones."""
    cfg = config if config is not None else load_config(demo_config_path())
    return {m.name: (m.input_cost_per_token, m.output_cost_per_token) for m in cfg.models}


@dataclass
class Answer:
    """One model's answer: text, logprob entries (OpenAI shape), usage and timing."""

    text: str
    logprobs: list[dict[str, Any]] | None
    tokens_in: int | None
    tokens_out: int | None
    latency_ms: float
    usage: str  # "reported" by the server, or "counted" from the streamed tokens
    finish_reason: str | None = None


def _body(endpoint: Endpoint, prompt: str, max_tokens: int, top_logprobs: int, stream: bool) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": endpoint.served_model,
        "messages": [{"role": "user", "content": prompt}],
        "max_tokens": max_tokens,
        "temperature": 0,
        "logprobs": True,
        # llama.cpp returns no logprobs at all with top_logprobs 0 or absent
        "top_logprobs": max(1, top_logprobs),
        "stream": stream,
    }
    if stream:  # OpenAI-style servers then send usage in a last chunk; llama.cpp ignores it
        body["stream_options"] = {"include_usage": True}
    body.update(endpoint.extra_body)
    return body


def _round_entries(entries: Iterable[Mapping[str, Any]], digits: int = 5) -> list[dict[str, Any]]:
    """OpenAI logprob entries without ``bytes`` and with rounded numbers: a third of the file size."""
    out = []
    for e in entries:
        row: dict[str, Any] = {"token": e.get("token", ""), "logprob": _r(e.get("logprob"), digits)}
        tops = e.get("top_logprobs")
        if tops is not None:
            row["top_logprobs"] = [{"token": t.get("token", ""), "logprob": _r(t.get("logprob"), digits)}
                                   for t in tops]
        out.append(row)
    return out


def _r(value: Any, digits: int) -> float:
    x = float(value)
    return x if not math.isfinite(x) else round(x, digits)


def ask(client: Any, endpoint: Endpoint, prompt: str, *, max_tokens: int = 24, top_logprobs: int = 5,
        stream: bool = False, timeout: float = 120.0) -> Answer:
    """One chat completion with logprobs (``client`` is an ``httpx.Client``); streamed when asked."""
    url = endpoint.base_url.rstrip("/") + "/chat/completions"
    headers = {"Authorization": f"Bearer {endpoint.api_key}"}
    body = _body(endpoint, prompt, max_tokens, top_logprobs, stream)
    t0 = time.perf_counter()
    if not stream:
        response = client.post(url, json=body, headers=headers, timeout=timeout)
        response.raise_for_status()
        data = response.json()
        choice = data["choices"][0]
        usage = data.get("usage") or {}
        content = (choice.get("logprobs") or {}).get("content")
        text = (choice.get("message") or {}).get("content") or ""
        entries = None if content is None else _round_entries(content)
        tokens_in, tokens_out = usage.get("prompt_tokens"), usage.get("completion_tokens")
        how = "reported"
        if tokens_out is None:
            tokens_out, how = (len(entries) if entries is not None else None), "counted"
        return Answer(text, entries, tokens_in, tokens_out, _ms(t0), how, choice.get("finish_reason"))
    parts: list[str] = []
    collected: list[dict[str, Any]] = []
    saw_logprobs = False
    chunks_with_text = 0
    tokens_in = tokens_out = None
    finish = None
    with client.stream("POST", url, json=body, headers=headers, timeout=timeout) as response:
        response.raise_for_status()
        for line in response.iter_lines():
            if not line.startswith("data:"):
                continue
            payload = line[5:].strip()
            if payload == "[DONE]":
                break
            chunk = json.loads(payload)
            usage = chunk.get("usage") or {}
            tokens_in = usage.get("prompt_tokens", tokens_in)
            tokens_out = usage.get("completion_tokens", tokens_out)
            for choice in chunk.get("choices") or []:
                delta = (choice.get("delta") or {}).get("content")
                if delta:
                    parts.append(delta)
                    chunks_with_text += 1
                content = (choice.get("logprobs") or {}).get("content")
                if content is not None:
                    saw_logprobs = True
                    collected.extend(content)
                finish = choice.get("finish_reason") or finish
    entries = _round_entries(collected) if saw_logprobs else None
    how = "reported"
    if tokens_out is None:  # llama.cpp streams carry no usage: count the streamed tokens instead
        tokens_out, how = (len(entries) if entries is not None else chunks_with_text), "counted"
    return Answer("".join(parts), entries, tokens_in, tokens_out, _ms(t0), how, finish)


def _ms(t0: float) -> float:
    return round((time.perf_counter() - t0) * 1000.0, 1)


def answer_signals(entries: Sequence[Mapping[str, Any]] | None, config: RouterConfig | None = None
                   ) -> dict[str, float] | None:
    """Raw signals of an answer exactly as the router computes them (the configuration's token filter)."""
    if not entries:
        return None
    tokens = normalize_logprobs(list(entries))
    if tokens is None or not len(tokens):
        return None
    cfg = config if config is not None else parse_config({})
    s = cfg.confidence
    params = SignalParams(
        logprob_weight=s.hybrid_weights.logprob_weight, margin_weight=s.hybrid_weights.margin_weight,
        bottom_percent=s.signal_params.bottom_percent, group_window=s.signal_params.group_window,
        tail_tokens=s.signal_params.tail_tokens)
    filtered = apply_filter(tokens, s.token_filter, answer_pattern=s.answer_pattern)
    raw = compute_signals(filtered.tokens, None, params).raw
    return {k: round(v, 6) for k, v in raw.items() if v is not None and math.isfinite(v)}


# --------------------------------------------------------------------------------------------- collection


@dataclass
class CollectSummary:
    """What one collection did: rows written, pairs skipped as already recorded, failures (retried next run)."""

    added: int = 0
    skipped: int = 0
    failed: list[tuple[str, str, str]] = field(default_factory=list)
    correct: dict[str, int] = field(default_factory=dict)
    answered: dict[str, int] = field(default_factory=dict)

    def accuracy(self) -> dict[str, float]:
        return {m: self.correct.get(m, 0) / n for m, n in self.answered.items() if n}


def pending_pairs(items: Sequence[QuizItem], endpoints: Sequence[Endpoint], out: PathLike
                  ) -> tuple[list[tuple[QuizItem, Endpoint]], int]:
    """(item, endpoint) pairs not yet in ``out``, and how many were already there (resumption)."""
    done: set[tuple[str, str]] = set()
    if Path(out).is_file():
        done = {(r.item_id, r.model) for r in read_runs(out, on_error="skip")}
    pairs = [(item, ep) for ep in endpoints for item in items]
    todo = [(item, ep) for item, ep in pairs if (item.id, ep.name) not in done]
    return todo, len(pairs) - len(todo)


def record_for(item: QuizItem, endpoint: Endpoint, answer: Answer, config: RouterConfig | None = None,
               dataset: str | None = None) -> RunRecord:
    """The recorded-run row of one answer (graded, priced, with its raw signals)."""
    extra: dict[str, Any] = {"answer": answer.text, "reference": item.reference, "grader": item.grader,
                             "usage": answer.usage}
    if answer.finish_reason:
        extra["finish_reason"] = answer.finish_reason
    if dataset:
        extra["dataset"] = dataset
    return RunRecord(
        item_id=item.id,
        model=endpoint.name,
        correct=grade(item, answer.text),
        cost_usd=endpoint.cost(answer.tokens_in, answer.tokens_out),
        logprobs=answer.logprobs,  # type: ignore[arg-type]  # validated into TokenLogprob rows
        signals=answer_signals(answer.logprobs, config),
        latency_ms=answer.latency_ms,
        tokens_in=answer.tokens_in,
        tokens_out=answer.tokens_out,
        **extra,
    )


def collect_iter(
    pairs: Sequence[tuple[QuizItem, Endpoint]],
    out: PathLike,
    *,
    config: RouterConfig | None = None,
    max_tokens: int = 24,
    top_logprobs: int = 5,
    stream: bool = False,
    timeout: float = 120.0,
    dataset: str | None = None,
    client: Any = None,
) -> Iterator[tuple[QuizItem, Endpoint, RunRecord | Exception]]:
    """Answer each pair, append its record to ``out`` at once, and yield it (or the error, not written)."""
    import httpx

    own = client is None
    # loopback servers must not go through an HTTP(S)_PROXY from the environment
    http = client or httpx.Client(trust_env=not all(_loopback(ep.base_url) for _, ep in pairs))
    try:
        for item, endpoint in pairs:
            try:
                answer = ask(http, endpoint, item.prompt, max_tokens=max_tokens, top_logprobs=top_logprobs,
                             stream=stream, timeout=timeout)
            except (httpx.HTTPError, ValueError, KeyError, IndexError) as exc:
                yield item, endpoint, exc
                continue
            record = record_for(item, endpoint, answer, config, dataset)
            append_run(record, out)
            yield item, endpoint, record
    finally:
        if own:
            http.close()


def _loopback(url: str) -> bool:
    return re.match(r"^https?://(127\.0\.0\.1|localhost|\[::1\])(:|/|$)", url) is not None


def collect(
    items: Sequence[QuizItem],
    endpoints: Sequence[Endpoint],
    out: PathLike,
    *,
    on_record: Callable[[int, int, QuizItem, Endpoint, RunRecord | Exception], None] | None = None,
    **kwargs: Any,
) -> CollectSummary:
    """Run every pending (item, endpoint) pair into ``out`` (see :func:`collect_iter` for the options)."""
    pairs, skipped = pending_pairs(items, endpoints, out)
    summary = CollectSummary(skipped=skipped)
    for i, (item, endpoint, result) in enumerate(collect_iter(pairs, out, **kwargs), start=1):
        if isinstance(result, Exception):
            summary.failed.append((item.id, endpoint.name, f"{type(result).__name__}: {result}"))
        else:
            summary.added += 1
            summary.answered[endpoint.name] = summary.answered.get(endpoint.name, 0) + 1
            summary.correct[endpoint.name] = summary.correct.get(endpoint.name, 0) + int(result.correct)
        if on_record is not None:
            on_record(i, len(pairs), item, endpoint, result)
    return summary

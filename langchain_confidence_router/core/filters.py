"""Token filters: which tokens of an answer count towards its confidence.

Whitespace, punctuation and end-of-turn tokens are near-certain in right and wrong answers alike,
so they dilute a mean; tool-call JSON keys are forced by the schema; a chain-of-thought answer's
final answer span is what matters. A filter that would leave nothing falls back to all tokens and
says so, because an empty selection would otherwise read as "no logprobs".
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from functools import lru_cache
from typing import Literal

import numpy as np

from .tokens import TokenLogprobs

TokenFilterName = Literal["all", "stop", "tool_call_args", "answer"]
TOKEN_FILTERS: tuple[str, ...] = ("all", "stop", "tool_call_args", "answer")

#: Default answer span: what follows "answer is" / "answer:" up to the end of that line.
DEFAULT_ANSWER_PATTERN = r"(?i)answer\s*(?:is|:)\s*(?P<answer>[^\n]+)"

_SPECIAL_TOKENS = frozenset(
    {"</s>", "<s>", "<eos>", "<bos>", "<pad>", "<unk>", "<end_of_turn>", "<start_of_turn>", "<|endoftext|>"}
)
_SPECIAL_RE = re.compile(r"^<\|[^|>]*\|>$|^\[/?(INST|SYS)\]$")
_TOOL_ARG_KEYS = frozenset({"arguments", "args", "parameters", "input"})


@dataclass(frozen=True, slots=True)
class FilterResult:
    tokens: TokenLogprobs
    name: str
    n_total: int
    fell_back: bool


@lru_cache(maxsize=65536)
def is_stop_token(token: str) -> bool:
    """True for tokens that say nothing about the answer: blank, punctuation-only or special."""
    stripped = token.strip()
    if not stripped:
        return True
    if stripped in _SPECIAL_TOKENS or _SPECIAL_RE.match(stripped):
        return True
    return all(unicodedata.category(ch)[0] == "P" for ch in stripped)


def filter_mask(
    tokens: TokenLogprobs, name: str, *, answer_pattern: str | re.Pattern[str] | None = None
) -> np.ndarray:
    """Boolean mask of the tokens that filter ``name`` keeps."""
    n = len(tokens)
    if name == "all":
        return np.ones(n, dtype=bool)
    if name == "stop":
        return np.fromiter((not is_stop_token(t) for t in tokens.tokens), dtype=bool, count=n)
    if name == "answer":
        span = answer_span(tokens.text, answer_pattern or DEFAULT_ANSWER_PATTERN)
        return _span_mask(tokens, [span] if span else [])
    if name == "tool_call_args":
        return _span_mask(tokens, tool_argument_spans(tokens.text))
    raise ValueError(f"unknown token filter {name!r}; allowed: {', '.join(TOKEN_FILTERS)}")


def apply_filter(
    tokens: TokenLogprobs, name: str, *, answer_pattern: str | re.Pattern[str] | None = None
) -> FilterResult:
    """Apply a filter; if it keeps nothing, keep everything and record the fallback."""
    n = len(tokens)
    if name == "all" or n == 0:
        return FilterResult(tokens, name, n, False)
    mask = filter_mask(tokens, name, answer_pattern=answer_pattern)
    if not mask.any():
        return FilterResult(tokens, name, n, True)
    if mask.all():
        return FilterResult(tokens, name, n, False)
    return FilterResult(tokens.select(mask), name, n, False)


def _span_mask(tokens: TokenLogprobs, spans: list[tuple[int, int]]) -> np.ndarray:
    n = len(tokens)
    if not spans:
        return np.zeros(n, dtype=bool)
    lengths = np.fromiter((len(t) for t in tokens.tokens), dtype=np.int64, count=n)
    ends = np.cumsum(lengths)
    starts = ends - lengths
    mask = np.zeros(n, dtype=bool)
    for lo, hi in spans:
        mask |= (starts < hi) & (ends > lo)
    return mask


@lru_cache(maxsize=64)
def _compiled(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern)


def answer_span(text: str, pattern: str | re.Pattern[str]) -> tuple[int, int] | None:
    """Character span of the final answer: the last match's ``answer`` group (or group 1, or all)."""
    regex = _compiled(pattern) if isinstance(pattern, str) else pattern
    last = None
    for last in regex.finditer(text):  # noqa: B007 - we want the last match
        pass
    if last is None:
        return None
    group: int | str = "answer" if "answer" in regex.groupindex else (1 if regex.groups else 0)
    lo, hi = last.span(group)
    if lo < 0 or hi <= lo:
        return None
    return lo, hi


def tool_argument_spans(text: str) -> list[tuple[int, int]]:
    """Spans of scalar values inside tool-call arguments in a (possibly partial) JSON text.

    Values under a key named ``arguments``/``args``/``parameters``/``input`` are kept; when no such
    key exists the text is taken to be the arguments object itself and every scalar value counts.
    Keys and JSON punctuation never count: the schema forces them.
    """
    spans = _scalar_value_spans(text)
    under_args = [(lo, hi) for lo, hi, path in spans if _TOOL_ARG_KEYS.intersection(path)]
    return under_args if under_args else [(lo, hi) for lo, hi, _ in spans]


def _scalar_value_spans(text: str) -> list[tuple[int, int, tuple[str, ...]]]:
    """Tolerant one-pass JSON scanner: (start, end, key path) of every scalar value."""
    out: list[tuple[int, int, tuple[str, ...]]] = []
    # each frame: [kind, current key, expecting a key]
    stack: list[list[object]] = []
    i, n = 0, len(text)

    def path() -> tuple[str, ...]:
        return tuple(str(f[1]) for f in stack if f[0] == "obj" and f[1] is not None)

    while i < n:
        c = text[i]
        if c == '"':
            j = i + 1
            while j < n and text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            end = min(j, n)
            if stack and stack[-1][0] == "obj" and stack[-1][2]:
                stack[-1][1] = text[i + 1 : end]
                stack[-1][2] = False
            elif end > i + 1:
                out.append((i + 1, end, path()))
            i = j + 1
        elif c == "{":
            stack.append(["obj", None, True])
            i += 1
        elif c == "[":
            stack.append(["arr", None, False])
            i += 1
        elif c in "}]":
            if stack:
                stack.pop()
            i += 1
        elif c == ",":
            if stack and stack[-1][0] == "obj":
                stack[-1][2] = True
            i += 1
        elif c == ":" or c.isspace():
            i += 1
        else:
            j = i
            while j < n and text[j] not in ',}]" \n\t\r':
                j += 1
            if stack and not (stack[-1][0] == "obj" and stack[-1][2]):
                out.append((i, j, path()))
            i = max(j, i + 1)
    return out

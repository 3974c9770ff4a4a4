"""Early abort: give up on a gated attempt mid-stream once the answer so far already looks rejected.

Sans-I/O. :class:`AbortTracker` is fed the chosen-token logprob entries of a hidden stream as they
arrive and says when to stop. It scores the prefix exactly as the policy scores a whole answer
(:func:`~.tokens.normalize_logprobs`, :func:`~.filters.apply_filter` with the tier's filter,
:func:`~.signals.compute_signals`, the tier's calibration), so the running confidence of a prefix is the
confidence the policy would give an answer that ended there. The live router and offline replay both
use this class, so they abort at the same token.

Whether "the prefix is below ``below``" implies "the whole answer is rejected" depends on the signal:
:func:`guarantee` says which configurations are provably conservative (docs/signals.md, "Early abort").
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .config import EarlyAbort
from .filters import apply_filter, filter_mask
from .signals import SignalParams, compute_signals
from .tokens import TokenLogprobs, normalize_logprobs

#: Signals whose running value can only fall as tokens are added (a minimum over a growing set), so a
#: prefix already below a bound stays below it. ``lowest_group`` only once a full window was seen.
NON_INCREASING_SIGNALS = frozenset({"min_logprob", "lowest_group"})
#: Token filters that keep or drop each token by looking at that token alone, so a prefix's kept tokens
#: are a prefix of the whole answer's kept tokens.
PREFIX_STABLE_FILTERS = frozenset({"all", "stop"})


@dataclass(frozen=True, slots=True)
class Guarantee:
    """Whether an abort rule can only cut answers the final decision would reject, and if not, why."""

    conservative: bool
    why: str


def guarantee(method: str, token_filter: str, calibration: Any = None) -> Guarantee:
    """Is "prefix confidence < below <= threshold" proof that the whole answer is rejected?

    Yes when the signal never rises as tokens are added (a minimum), the filter judges each token alone,
    and the calibration (if any) is a non-decreasing map of that one signal. Otherwise the rule is a
    heuristic that must be tuned and certified on recorded runs (``tune --early-abort``).
    """
    if method == "tail":
        return Guarantee(False, "tail judges the last tokens of the answer, which have not arrived yet")
    if method == "bottom_percent":
        return Guarantee(False, "bottom_percent averages a share of tokens that grows with the answer")
    if method not in NON_INCREASING_SIGNALS:
        return Guarantee(False, f"{method} is an average over the answer: a weak start can be outweighed later")
    if token_filter not in PREFIX_STABLE_FILTERS:
        return Guarantee(False, f"token_filter {token_filter} depends on text that has not arrived yet")
    if calibration is not None and not _monotone(calibration, method):
        return Guarantee(False, f"calibration {calibration.method} is not a non-decreasing map of {method}")
    return Guarantee(True, f"{method} never rises as tokens arrive; token_filter {token_filter} judges each "
                           "token alone" + ("; the calibration is monotone" if calibration is not None else ""))


def _monotone(calibration: Any, method: str) -> bool:
    if calibration.method == "combiner" or calibration.signal != method:
        return False
    params = calibration.params
    if calibration.method == "platt":
        return float(params.get("a", 0.0)) >= 0.0
    if calibration.method == "temperature":
        return float(params.get("temperature", 0.0)) > 0.0
    ys = list(params.get("y") or [])
    return all(b >= a for a, b in itertools.pairwise(ys))


class AbortTracker:
    """The running confidence of one gated attempt's prefix, and whether the rule fired.

    ``feed(entries)`` after each stream chunk returns True once the attempt should be abandoned:
    at least ``after_tokens`` tokens received, the filter kept some of them (no fallback to all tokens),
    and the confidence of the prefix is below ``min(below, threshold)``. The threshold caps the bound so
    a per-request threshold override can never make the rule cut an answer the decision would accept.
    """

    def __init__(self, rule: EarlyAbort, *, method: str, token_filter: str, threshold: float,
                 params: SignalParams, calibration: Any = None, answer_pattern: str | None = None) -> None:
        self.rule = rule
        self.method = method
        self.token_filter = token_filter
        self.threshold = threshold
        self.bound = min(rule.below, threshold)
        self.params = params
        self.calibration = calibration
        self.answer_pattern = answer_pattern
        self.min_scored = params.group_window if method == "lowest_group" else 1
        self._names = None if calibration is not None else (method,)
        self._parts: list[TokenLogprobs] = []
        # a prefix-stable filter keeps or drops each token on its own: filter each part once, on arrival
        self._incremental = token_filter in PREFIX_STABLE_FILTERS
        self._kept: list[TokenLogprobs] = []
        self.n_tokens = 0
        self._next_check = rule.after_tokens
        self.confidence: float | None = None
        self.fired_at: int | None = None
        self.disabled = False

    def disable(self) -> None:
        """Never fire for this attempt (a tool call started: its acceptance may not depend on confidence)."""
        self.disabled = True

    def feed(self, entries: Sequence[Any] | None) -> bool:
        """Add one chunk's logprob entries; True when the attempt should be aborted now."""
        if self.fired_at is not None:
            return True
        if not entries:
            return False
        part = normalize_logprobs({"content": list(entries)})
        if part is None or len(part) == 0:
            return False
        self._parts.append(part)
        if self._incremental:
            mask = None if self.token_filter == "all" else filter_mask(part, self.token_filter)
            self._kept.append(part if mask is None or mask.all() else part.select(mask))
        self.n_tokens += len(part)
        if self.disabled or self.n_tokens < self._next_check:
            return False
        every = self.rule.check_every
        self._next_check = self.n_tokens + every - (self.n_tokens - self.rule.after_tokens) % every
        self.confidence = self.score()
        if self.confidence is not None and self.confidence < self.bound:
            self.fired_at = self.n_tokens
            return True
        return False

    def prefix(self) -> TokenLogprobs:
        """Every token received so far, as one :class:`TokenLogprobs`."""
        if len(self._parts) > 1:
            self._parts = [concat(self._parts)]
        return self._parts[0] if self._parts else TokenLogprobs.empty()

    def score(self) -> float | None:
        """The confidence the policy would give an answer that ended here (None: cannot be judged yet)."""
        if self._incremental:  # the same tokens apply_filter keeps from the prefix, without re-filtering it
            if len(self._kept) > 1:
                self._kept = [concat(self._kept)]
            kept = self._kept[0] if self._kept else TokenLogprobs.empty()
        else:
            filtered = apply_filter(self.prefix(), self.token_filter, answer_pattern=self.answer_pattern)
            kept = TokenLogprobs.empty() if filtered.fell_back else filtered.tokens
        if len(kept) < self.min_scored:  # nothing kept yet: the filter would fall back to every token
            return None
        values = compute_signals(kept, self._names, self.params)
        if self.calibration is not None:
            return self.calibration.predict(values.raw)
        value = values.score.get(self.method)
        return None if value is None or math.isnan(value) else value

    def reason(self) -> str:
        """The trace's wording of why the attempt was abandoned."""
        conf = "n/a" if self.confidence is None else f"{self.confidence:.3f}"
        return f"early abort at token {self.fired_at}: running {self.method} {conf} < below {self.bound:.3f}"


def concat(parts: Iterable[TokenLogprobs]) -> TokenLogprobs:
    """Join token runs end to end, padding the top-k matrices to the widest."""
    parts = [p for p in parts if len(p)]
    if not parts:
        return TokenLogprobs.empty()
    if len(parts) == 1:
        return parts[0]
    k = max(p.k for p in parts)
    tops = [p.top_logprobs if p.k == k else np.pad(p.top_logprobs, ((0, 0), (0, k - p.k)),
                                                   constant_values=-math.inf) for p in parts]
    return TokenLogprobs(tuple(t for p in parts for t in p.tokens), np.concatenate([p.logprobs for p in parts]),
                         np.concatenate(tops), np.concatenate([p.top_counts for p in parts]))


def first_abort(tracker: AbortTracker, entries: Sequence[Any], chunk_tokens: int = 1) -> int | None:
    """Offline: feed a recorded answer's entries ``chunk_tokens`` at a time, as a stream would deliver them;
    the token count at which the rule fires, or None when it lets the whole answer through."""
    for start in range(0, len(entries), chunk_tokens):
        if tracker.feed(entries[start:start + chunk_tokens]):
            return tracker.fired_at
    return None


__all__ = ["NON_INCREASING_SIGNALS", "PREFIX_STABLE_FILTERS", "AbortTracker", "Guarantee", "concat",
           "first_abort", "guarantee"]

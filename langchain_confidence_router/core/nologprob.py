"""Confidence without logprobs: self-verification by a judge, and agreement between samples.

Anthropic, Bedrock Claude, Mistral and some local servers return no logprobs, and tool-call turns
have none either. These two methods buy a confidence with extra calls instead:

* ``self_verify``: a judge model (the same one, or a named one) is asked whether the answer is
  correct with :data:`VERIFY_PROMPT`. Confidence = P("yes") from the judge's first-token logprobs,
  renormalised over yes/no; without logprobs, a number the judge wrote (0..1 or a percentage), else
  1.0 for a plain "yes" and 0.0 for a plain "no".
* ``consistency``: n samples at a temperature; answers are grouped by a comparison (exact after
  normalisation, numeric, choice letter, or a user function); confidence = the majority's share and
  the majority answer is returned.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from .tokens import _entries, _get

VERIFY_PROMPT = (
    "Here is a proposed answer to the user's last message:\n\n{answer}\n\n"
    "Is the proposed answer correct? Reply with just yes or no."
)
_YES = frozenset({"yes", "y", "true", "correct"})
_NO = frozenset({"no", "n", "false", "incorrect", "wrong"})
_BARE_NUMBER_RE = re.compile(
    r"^\s*(?:(?:probability|confidence|p)\s*[:=]?\s*)?(?P<value>\d+(?:\.\d+)?|\.\d+)\s*(?P<percent>%)?\s*\.?\s*$",
    re.IGNORECASE)
_NUMBER_RE = re.compile(r"[-+]?\d[\d,]*(?:\.\d+)?|[-+]?\.\d+")
_CHOICE_RE = re.compile(r"(?:answer(?: is)?|option|choice)?\s*[:(\[]?\s*\b([A-J])\b[)\].:]?", re.IGNORECASE)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SelfVerifySettings(_Strict):
    judge: str | None = Field(None, description="model that judges; default: the model that answered")
    prompt: str = Field(VERIFY_PROMPT, description="must contain {answer}")
    max_tokens: int = Field(8, ge=1)
    top_logprobs: int = Field(5, ge=0, le=20)


class ConsistencySettings(_Strict):
    samples: int = Field(5, ge=2, le=32)
    temperature: float = Field(0.7, ge=0.0, le=2.0)
    compare: str = Field("exact", description="exact, numeric, choice, or 'module:function(a, b) -> bool'")


# ------------------------------------------------------------------------------------------ verify


def verify_confidence(text: str, logprobs: Any) -> tuple[float | None, str]:
    """Confidence from a judge's reply, and how it was read (logprobs, number, text, unreadable)."""
    try:
        p = p_yes(logprobs)
    except ValueError:
        p = None
    if p is not None:
        return p, "logprobs"
    number = _BARE_NUMBER_RE.match(text or "")
    if number:  # only a reply that is just a number or a percentage: "the answer is 42" is no probability
        value = float(number.group("value"))
        if number.group("percent") or value > 1.0:
            value /= 100.0
        if 0.0 <= value <= 1.0:
            return value, "number"
    words = (text or "").strip().split()
    word = re.sub(r"[^a-z]", "", words[0].lower()) if words else ""
    if word in _YES:
        return 1.0, "text"
    if word in _NO:
        return 0.0, "text"
    return None, "unreadable"


def p_yes(logprobs: Any) -> float | None:
    """P(yes) / (P(yes) + P(no)) at the judge's first word, from its top alternatives."""
    if logprobs is None:
        return None
    entries = _entries(logprobs, "")
    if not isinstance(entries, list):
        return None
    for entry in entries:
        token = _get(entry, "token") or ""
        if not re.sub(r"[^a-z]", "", str(token).lower()):
            continue  # leading whitespace or punctuation
        alternatives = {str(token): _get(entry, "logprob")}
        for alt in _get(entry, "top_logprobs") or ():
            alternatives.setdefault(str(_get(alt, "token") or ""), _get(alt, "logprob"))
        yes = no = 0.0
        for tok, lp in alternatives.items():
            if lp is None or not isinstance(lp, int | float) or math.isnan(lp) or lp > 0:
                continue
            word = re.sub(r"[^a-z]", "", tok.lower())
            if word in _YES:
                yes += math.exp(lp)
            elif word in _NO:
                no += math.exp(lp)
        return yes / (yes + no) if yes + no > 0 else None
    return None


# ------------------------------------------------------------------------------------------ consistency


def normalise_text(text: str) -> str:
    return re.sub(r"\s+", " ", text.strip().lower()).strip(" .!?;:\"'")


def extract_number(text: str) -> float | None:
    numbers = _NUMBER_RE.findall(text or "")
    if not numbers:
        return None
    try:
        return float(numbers[-1].replace(",", ""))
    except ValueError:
        return None


def extract_choice(text: str) -> str | None:
    match = _CHOICE_RE.search(text or "")
    return match.group(1).upper() if match else None


CompareName = Literal["exact", "numeric", "choice"]


def answer_key(text: str, compare: str) -> object:
    """The value answers are grouped by."""
    if compare == "numeric":
        n = extract_number(text)
        return None if n is None else round(n, 6)
    if compare == "choice":
        return extract_choice(text)
    return normalise_text(text)


def majority(
    texts: Sequence[str], compare: str | Callable[[str, str], bool] = "exact"
) -> tuple[int, float, list[list[int]]]:
    """Index of a majority answer, the majority's share, and the groups (indices) found.

    Answers with no readable value (no number for ``numeric``) form no group and count against
    the majority: an unreadable sample is a disagreeing sample.
    """
    n = len(texts)
    if n == 0:
        raise ValueError("no samples")
    groups: list[list[int]] = []
    if callable(compare):
        for i, text in enumerate(texts):
            for group in groups:
                if compare(texts[group[0]], text):
                    group.append(i)
                    break
            else:
                groups.append([i])
    else:
        by_key: dict[object, list[int]] = {}
        for i, text in enumerate(texts):
            key = answer_key(text, compare)
            if key is None or key == "":
                continue
            by_key.setdefault(key, []).append(i)
        groups = list(by_key.values())
    if not groups:
        return 0, 0.0, []
    best = max(groups, key=len)  # ties: the group seen first
    return best[0], len(best) / n, groups

"""One normalised shape for token logprobs, whatever produced them.

OpenAI and LiteLLM return ``{"content": [{"token", "logprob", "top_logprobs": [...]}, ...]}`` as dicts
or as pydantic objects; LangChain puts the same dict in ``AIMessage.response_metadata["logprobs"]``;
streams spread it over chunks; the legacy completions API uses parallel lists. Everything is turned
into :class:`TokenLogprobs`: numpy arrays that the signals can work on without Python loops.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .errors import LogprobError

#: Float noise from a log-softmax can put a top token a hair above zero; values up to this are
#: taken as 0. Anything larger is a real error in the upstream data.
POSITIVE_TOLERANCE = 1e-5

_NEG_INF = -math.inf


@dataclass(frozen=True, slots=True)
class TokenLogprobs:
    """Chosen-token logprobs of one answer plus the top-k alternatives at each position.

    ``top_logprobs`` is an ``(n, k)`` matrix padded with ``-inf`` on the right; ``top_counts[i]``
    says how many entries of row ``i`` are real (a real ``-inf`` and padding are told apart by it).
    """

    tokens: tuple[str, ...]
    logprobs: np.ndarray
    top_logprobs: np.ndarray
    top_counts: np.ndarray

    def __len__(self) -> int:
        return int(self.logprobs.shape[0])

    @property
    def text(self) -> str:
        return "".join(self.tokens)

    @property
    def k(self) -> int:
        """Width of the top-k matrix (the largest number of alternatives at any position)."""
        return int(self.top_logprobs.shape[1])

    def select(self, mask: np.ndarray) -> TokenLogprobs:
        """The tokens where ``mask`` is true, in order."""
        idx = np.flatnonzero(mask)
        return TokenLogprobs(
            tokens=tuple(self.tokens[i] for i in idx),
            logprobs=self.logprobs[idx],
            top_logprobs=self.top_logprobs[idx],
            top_counts=self.top_counts[idx],
        )

    @classmethod
    def empty(cls) -> TokenLogprobs:
        return cls((), np.zeros(0), np.zeros((0, 0)), np.zeros(0, dtype=np.int64))

    @classmethod
    def from_arrays(
        cls,
        logprobs: Sequence[float] | np.ndarray,
        top_logprobs: Sequence[Sequence[float]] | np.ndarray | None = None,
        top_counts: Sequence[int] | np.ndarray | None = None,
        tokens: Sequence[str] | None = None,
    ) -> TokenLogprobs:
        """Build from arrays (validated). Without ``top_logprobs`` each row holds the chosen token only."""
        lp = _as_float_array(logprobs, "logprobs")
        if lp.ndim != 1:
            raise LogprobError(f"expected a 1-d array of logprobs, got shape {lp.shape}", "logprobs")
        n = lp.shape[0]
        if top_logprobs is None:
            top = lp.reshape(n, 1).copy()
            counts = np.ones(n, dtype=np.int64)
        else:
            top = _as_float_array(top_logprobs, "top_logprobs")
            if top.ndim != 2 or top.shape[0] != n:
                raise LogprobError(f"expected shape ({n}, k), got {top.shape}", "top_logprobs")
            counts = (
                np.full(n, top.shape[1], dtype=np.int64)
                if top_counts is None
                else np.asarray(top_counts, dtype=np.int64)
            )
            if counts.shape != (n,) or (counts < 0).any() or (counts > top.shape[1]).any():
                raise LogprobError("counts must be one per token, between 0 and k", "top_counts")
            top = top.copy()
            top[np.arange(top.shape[1])[None, :] >= counts[:, None]] = _NEG_INF
        if tokens is None:
            toks: tuple[str, ...] = ("",) * n
        else:
            toks = tuple(str(t) for t in tokens)
            if len(toks) != n:
                raise LogprobError(f"{len(toks)} tokens for {n} logprobs", "tokens")
        return cls(toks, _checked(lp, "logprob"), _checked(top, "top_logprobs"), counts)


def normalize_logprobs(obj: Any) -> TokenLogprobs | None:
    """Turn any supported logprob shape into :class:`TokenLogprobs`.

    Returns ``None`` when the input carries no logprobs at all (``None``, ``{"content": None}``, a
    message without logprob metadata, a stream none of whose chunks had any), so callers can apply
    their missing-logprobs policy. Raises :class:`LogprobError` for anything malformed.
    """
    if isinstance(obj, TokenLogprobs):
        return obj
    try:
        entries = _entries(obj, "")
        if entries is None:
            return None
        if isinstance(entries, _Legacy):
            return entries.to_token_logprobs()
        return _from_entries(entries)
    except LogprobError:
        raise
    except (TypeError, ValueError, KeyError, AttributeError, IndexError, RecursionError) as exc:
        # the legacy shape and odd entries are read with plain Python: any surprise is malformed input
        raise LogprobError(f"unreadable logprobs ({type(exc).__name__}: {exc})") from exc


# --------------------------------------------------------------------------------------------
# locating the per-token entries inside whatever was passed


@dataclass(slots=True)
class _Legacy:
    """Legacy completions shape: parallel lists ``tokens``, ``token_logprobs``, ``top_logprobs``."""

    tokens: list[Any]
    token_logprobs: list[Any]
    top: list[Any] | None

    def to_token_logprobs(self) -> TokenLogprobs:
        if len(self.tokens) != len(self.token_logprobs):
            raise LogprobError("tokens and token_logprobs differ in length", "token_logprobs")
        if self.top is None:
            return TokenLogprobs.from_arrays(self.token_logprobs, tokens=self.tokens)
        rows = [sorted(dict(r or {}).values(), reverse=True) for r in self.top]
        if len(rows) != len(self.tokens):
            raise LogprobError("top_logprobs and tokens differ in length", "top_logprobs")
        k = max((len(r) for r in rows), default=0)
        mat = [list(r) + [_NEG_INF] * (k - len(r)) for r in rows]
        counts = [len(r) for r in rows]
        return TokenLogprobs.from_arrays(
            self.token_logprobs, np.array(mat, dtype=float).reshape(len(rows), k), counts, self.tokens
        )


def _get(obj: Any, key: str) -> Any:
    if isinstance(obj, Mapping):
        return obj.get(key)
    return getattr(obj, key, None)


def _is_entry(obj: Any) -> bool:
    if isinstance(obj, Mapping):
        return "logprob" in obj
    return hasattr(obj, "logprob") and not isinstance(obj, str | bytes)


def _entries(obj: Any, path: str) -> list[Any] | _Legacy | None:
    """Find the list of per-token entries in ``obj``; None means "no logprobs here"."""
    if obj is None:
        return None
    if isinstance(obj, str | bytes | int | float | bool):
        raise LogprobError(f"expected logprobs, got {type(obj).__name__}", path or "logprobs")
    if isinstance(obj, Mapping):
        if "content" in obj and not isinstance(obj["content"], str):
            return _entry_list(obj["content"], f"{path}content")
        if "token_logprobs" in obj:
            return _Legacy(list(obj.get("tokens") or []), list(obj["token_logprobs"] or []),
                           obj.get("top_logprobs"))
        if "choices" in obj:
            return _from_choices(obj["choices"], f"{path}choices")
        if "logprobs" in obj:
            return _entries(obj["logprobs"], f"{path}logprobs.")
        if "response_metadata" in obj:
            return _entries(obj["response_metadata"], f"{path}response_metadata.")
        if "delta" in obj or "message" in obj or "text" in obj or "finish_reason" in obj:
            return None  # a choice or chunk that carries no logprobs
        raise LogprobError(
            f"unrecognised logprobs mapping with keys {sorted(map(str, obj))[:6]}", path or "logprobs"
        )
    if isinstance(obj, list | tuple):
        if not obj:
            return []
        if _is_entry(obj[0]):
            return _entry_list(obj, path or "content")
        return _from_chunks(obj, path)
    # objects: LangChain messages, litellm/OpenAI pydantic objects
    metadata = getattr(obj, "response_metadata", None)
    if isinstance(metadata, Mapping):
        return _entries(metadata.get("logprobs"), f"{path}response_metadata.logprobs.")
    content = getattr(obj, "content", _MISSING)
    if content is not _MISSING and not isinstance(content, str):
        return _entry_list(content, f"{path}content")
    choices = getattr(obj, "choices", None)
    if choices is not None:
        return _from_choices(choices, f"{path}choices")
    if hasattr(obj, "logprobs"):
        return _entries(obj.logprobs, f"{path}logprobs.")
    if hasattr(obj, "model_dump"):
        return _entries(obj.model_dump(), path)
    raise LogprobError(f"unrecognised logprobs object of type {type(obj).__name__}", path or "logprobs")


_MISSING = object()


def _entry_list(content: Any, path: str) -> list[Any] | None:
    if content is None:
        return None
    if not isinstance(content, list | tuple):
        raise LogprobError(f"expected a list of token entries, got {type(content).__name__}", path)
    return list(content)


def _from_choices(choices: Any, path: str) -> list[Any] | None:
    if not choices:
        return None
    return _entries(_get(choices[0], "logprobs"), f"{path}[0].logprobs.")


def _from_chunks(chunks: Iterable[Any], path: str) -> list[Any] | None:
    """Concatenate the entries of stream chunks in order; chunks without logprobs are skipped."""
    out: list[Any] = []
    found = False
    for i, chunk in enumerate(chunks):
        part = _entries(chunk, f"{path}[{i}].")
        if isinstance(part, _Legacy):
            raise LogprobError("legacy logprobs cannot be mixed into a chunk list", f"{path}[{i}]")
        if part is not None:
            found = True
            out.extend(part)
    return out if found else None


# --------------------------------------------------------------------------------------------
# entries -> arrays


def _from_entries(entries: list[Any]) -> TokenLogprobs:
    n = len(entries)
    if n == 0:
        return TokenLogprobs.empty()
    try:  # fast path: plain dicts as OpenAI sends them
        lp = [e["logprob"] for e in entries]
        tops = [e.get("top_logprobs") or () for e in entries]
        counts = [len(t) for t in tops]
        flat = [t["logprob"] for row in tops for t in row]
        tokens = tuple(t if isinstance(t := e.get("token"), str) else "" for e in entries)
    except (TypeError, KeyError, AttributeError):
        pass
    else:
        return _assemble(tokens, lp, counts, flat)
    try:  # fast path for objects: litellm / openai pydantic entries
        lp = [e.logprob for e in entries]
        tops = [e.top_logprobs or () for e in entries]
        counts = [len(t) for t in tops]
        flat = [t.logprob for row in tops for t in row]
        tokens = tuple(t if isinstance(t := e.token, str) else "" for e in entries)
    except (TypeError, AttributeError):
        return _from_entries_slow(entries)
    return _assemble(tokens, lp, counts, flat)


def _from_entries_slow(entries: list[Any]) -> TokenLogprobs:
    """Entries as objects, or malformed ones: read each with a precise error path."""
    lp: list[Any] = []
    counts: list[int] = []
    flat: list[Any] = []
    tokens: list[str] = []
    for i, e in enumerate(entries):
        if not _is_entry(e):
            raise LogprobError("token entry has no 'logprob'", f"content[{i}]")
        lp.append(_get(e, "logprob"))
        tok = _get(e, "token")
        tokens.append(tok if isinstance(tok, str) else "")
        row = _get(e, "top_logprobs") or ()
        if not isinstance(row, list | tuple):
            raise LogprobError("expected a list", f"content[{i}].top_logprobs")
        for j, t in enumerate(row):
            if not _is_entry(t):
                raise LogprobError("alternative has no 'logprob'", f"content[{i}].top_logprobs[{j}]")
            flat.append(_get(t, "logprob"))
        counts.append(len(row))
    return _assemble(tuple(tokens), lp, counts, flat)


def _assemble(tokens: tuple[str, ...], lp: list[Any], counts: list[int], flat: list[Any]) -> TokenLogprobs:
    n = len(lp)
    lp_arr = _checked(_scalars(lp, n, "content[].logprob"), "logprob")
    counts_arr = np.asarray(counts, dtype=np.int64)
    k = int(counts_arr.max()) if n else 0
    top = np.full((n, k), _NEG_INF)
    if flat:
        flat_arr = _scalars(flat, len(flat), "content[].top_logprobs[].logprob")
        top[np.arange(k)[None, :] < counts_arr[:, None]] = flat_arr
        top = _checked(top, "top_logprobs")
    return TokenLogprobs(tokens, lp_arr, top, counts_arr)


def _scalars(values: list[Any], n: int, path: str) -> np.ndarray:
    """One number per entry: a list (or other nested value) in place of a logprob is malformed."""
    arr = _as_float_array(values, path)
    if arr.shape != (n,):
        raise LogprobError("each logprob must be a single number", path)
    return arr


def _as_float_array(values: Any, path: str) -> np.ndarray:
    try:
        arr = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError, OverflowError) as exc:
        raise LogprobError(f"logprobs must be numbers ({exc})", path) from exc
    if arr.dtype != np.float64:
        raise LogprobError("logprobs must be numbers", path)
    return arr


def _checked(arr: np.ndarray, what: str) -> np.ndarray:
    """Reject NaN, +inf and positive values; clamp float noise just above zero."""
    bad = np.isnan(arr) | (arr > POSITIVE_TOLERANCE)
    if bad.any():
        pos = np.argwhere(bad)[0]
        value = arr[tuple(pos)]
        where = f"content[{pos[0]}]" + (f".top_logprobs[{pos[1]}]" if arr.ndim == 2 else "")
        if math.isnan(value):
            raise LogprobError("logprob is NaN or missing", where)
        raise LogprobError(f"logprob must be <= 0, got {value!r}", where)
    if (arr > 0).any():
        arr = np.minimum(arr, 0.0)
    return arr

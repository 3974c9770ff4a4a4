"""Recorded runs: one JSONL row per (item, model), replayed offline to tune and evaluate routing.

A recorded run says whether one model answered one item correctly, what that cost, and how
confident it looked (raw token logprobs and/or precomputed raw signal values). Replaying rows
from several models on the same items simulates any cascade without calling a model again, so
thresholds can be fitted on one split and measured on another.

Format (JSONL, or JSONL.gz when the file name ends in ``.gz``)::

    {"item_id": "mmlu-17", "model": "llama3.1-8b", "correct": true, "cost_usd": 1.2e-05,
     "logprobs": [{"token": "B", "logprob": -0.01,
                   "top_logprobs": [{"token": "B", "logprob": -0.01}, {"token": "C", "logprob": -4.7}]}],
     "signals": {"avg_logprob": -0.01}, "latency_ms": 230, "tokens_in": 120, "tokens_out": 1}

``logprobs`` and ``signals`` are optional; unknown fields are kept and written back unchanged.
``signals`` holds RAW values in the scoring core's units (see ``core/signals.py``): higher is more
confident except for ``entropy``. A NaN signal value is read as "missing" and dropped.
"""

from __future__ import annotations

import gzip
import json
import logging
import math
import os
import tempfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import IO, Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, ValidationError, field_validator

from ..core.errors import ConfidenceRouterError

__all__ = [
    "RecordedRuns",
    "RunFormatError",
    "RunRecord",
    "TokenLogprob",
    "TopLogprob",
    "append_run",
    "iter_runs",
    "read_runs",
    "write_runs",
]

logger = logging.getLogger(__name__)

PathLike = str | os.PathLike[str]


class RunFormatError(ConfidenceRouterError, ValueError):
    """A recorded-runs file that cannot be read; the message names the file and the line."""

    def __init__(self, message: str, *, path: str, line: int | None = None) -> None:
        self.path = path
        self.line = line
        where = f"{path}:{line}" if line is not None else path
        super().__init__(f"{where}: {message}")


class TopLogprob(BaseModel):
    """One alternative at a token position (OpenAI ``top_logprobs`` entry)."""

    model_config = ConfigDict(extra="allow")

    token: str = ""
    logprob: float


class TokenLogprob(BaseModel):
    """One generated token with its logprob and, optionally, the top-k alternatives."""

    model_config = ConfigDict(extra="allow")

    token: str = ""
    logprob: float
    top_logprobs: list[TopLogprob] | None = None


class RunRecord(BaseModel):
    """One model's recorded answer to one item. Unknown fields are kept (``extra="allow"``)."""

    model_config = ConfigDict(extra="allow")

    item_id: str
    model: str
    correct: bool
    cost_usd: float | None = None
    logprobs: list[TokenLogprob] | None = None
    signals: dict[str, float] | None = None
    latency_ms: float | None = None
    tokens_in: int | None = None
    tokens_out: int | None = None

    @field_validator("item_id", mode="before")
    @classmethod
    def _item_id_as_str(cls, value: Any) -> Any:
        # Dataset row indices are often ints; ids are compared as strings everywhere else.
        if isinstance(value, int) and not isinstance(value, bool):
            return str(value)
        return value

    @field_validator("signals", mode="before")
    @classmethod
    def _drop_missing_signals(cls, value: Any) -> Any:
        # NaN/None mean "not measured"; dropping them keeps one representation of missing.
        if isinstance(value, dict):
            return {k: v for k, v in value.items() if v is not None and not (isinstance(v, float) and math.isnan(v))}
        return value

    @field_validator("signals")
    @classmethod
    def _finite_signals(cls, value: dict[str, float] | None) -> dict[str, float] | None:
        if value:
            bad = [k for k, v in value.items() if not math.isfinite(v)]
            if bad:
                raise ValueError(f"signal(s) {bad} are infinite; clip raw values before recording")
        return value

    def signal(self, name: str) -> float | None:
        """The raw value of one signal, or None when it was not recorded."""
        return None if self.signals is None else self.signals.get(name)

    def to_json_dict(self) -> dict[str, Any]:
        """A JSON-ready dict: unset optional fields are left out, unknown fields kept as given."""
        data = self.model_dump(mode="json", exclude_none=True)
        for key, value in (self.model_extra or {}).items():
            if value is None:  # exclude_none must not eat an unknown field that was null on purpose
                data[key] = None
        return data


class RecordedRuns:
    """Recorded runs indexed by (item_id, model), with aligned numpy views for replay.

    ``models`` and ``items`` keep first-seen order. A second row for the same (item, model) replaces
    the first (a resumed collection re-ran it) and is counted in ``n_duplicates``. Matrix helpers
    keep only items answered by every requested model, so rows line up across models.
    """

    def __init__(self, records: Iterable[RunRecord] = ()) -> None:
        self._by_key: dict[tuple[str, str], RunRecord] = {}
        self._models: dict[str, None] = {}
        self._items: dict[str, None] = {}
        self.n_duplicates = 0
        for record in records:
            self.add(record)

    # ---------------------------------------------------------------- basic container

    def add(self, record: RunRecord) -> None:
        key = (record.item_id, record.model)
        if key in self._by_key:
            self.n_duplicates += 1
        self._by_key[key] = record
        self._models.setdefault(record.model, None)
        self._items.setdefault(record.item_id, None)

    @property
    def records(self) -> list[RunRecord]:
        return list(self._by_key.values())

    @property
    def models(self) -> list[str]:
        return list(self._models)

    @property
    def items(self) -> list[str]:
        return list(self._items)

    def get(self, item_id: str, model: str) -> RunRecord | None:
        return self._by_key.get((item_id, model))

    def __contains__(self, key: object) -> bool:
        return key in self._by_key

    def __len__(self) -> int:
        return len(self._by_key)

    def __iter__(self) -> Iterator[RunRecord]:
        return iter(self._by_key.values())

    def __repr__(self) -> str:
        return f"RecordedRuns({len(self)} records, {len(self._items)} items, models={self.models})"

    def for_model(self, model: str) -> list[RunRecord]:
        return [r for r in self._by_key.values() if r.model == model]

    # ---------------------------------------------------------------- alignment

    def _models_or_all(self, models: Sequence[str] | None) -> list[str]:
        if models is None:
            return self.models
        if isinstance(models, str):
            raise TypeError("models must be a sequence of model names, not a single string")
        unknown = [m for m in models if m not in self._models]
        if unknown:
            raise KeyError(f"no records for model(s) {unknown}; recorded models: {self.models}")
        return list(models)

    def item_ids(self, models: Sequence[str] | None = None) -> list[str]:
        """Items answered by every one of ``models`` (all recorded models by default), first-seen order."""
        ms = self._models_or_all(models)
        keep = [i for i in self._items if all((i, m) in self._by_key for m in ms)]
        dropped = len(self._items) - len(keep)
        if dropped:
            logger.info(
                "aligning %d model(s): dropped %d of %d items not answered by all", len(ms), dropped, len(self._items)
            )
        return keep

    def n_dropped(self, models: Sequence[str] | None = None) -> int:
        """How many recorded items the alignment over ``models`` leaves out."""
        return len(self._items) - len(self.item_ids(models))

    def _matrix(self, models: Sequence[str] | None, value: Callable[[RunRecord], Any], dtype: type) -> np.ndarray:
        ms = self._models_or_all(models)
        ids = self.item_ids(ms)
        by_key = self._by_key
        out = np.array([[value(by_key[(i, m)]) for m in ms] for i in ids], dtype=dtype)
        return out.reshape(len(ids), len(ms))

    def correct_matrix(self, models: Sequence[str] | None = None) -> np.ndarray:
        """``(n_items, n_models)`` bool: was each aligned item answered correctly by each model."""
        return self._matrix(models, lambda r: r.correct, bool)

    def cost_matrix(self, models: Sequence[str] | None = None) -> np.ndarray:
        """``(n_items, n_models)`` float USD; NaN where a row has no cost."""
        return self._matrix(models, lambda r: np.nan if r.cost_usd is None else r.cost_usd, float)

    def signal_matrix(self, signal: str, models: Sequence[str] | None = None) -> np.ndarray:
        """``(n_items, n_models)`` raw values of ``signal``; NaN where it was not recorded."""

        def value(r: RunRecord) -> float:
            v = None if r.signals is None else r.signals.get(signal)
            return np.nan if v is None else v

        return self._matrix(models, value, float)

    def subset(self, item_ids: Iterable[str]) -> RecordedRuns:
        """The runs of the given items only (e.g. a train or test split); unknown ids are an error."""
        wanted = set(item_ids)
        unknown = wanted.difference(self._items)
        if unknown:
            raise KeyError(f"{len(unknown)} item id(s) not recorded, e.g. {sorted(unknown)[:5]}")
        return RecordedRuns(r for r in self._by_key.values() if r.item_id in wanted)

    # ---------------------------------------------------------------- reporting

    def summary(self) -> dict[str, dict[str, Any]]:
        """Per model: n, accuracy, mean cost and the fraction of rows carrying each signal."""
        out: dict[str, dict[str, Any]] = {}
        for model in self._models:
            rows = self.for_model(model)
            costs = [r.cost_usd for r in rows if r.cost_usd is not None]
            names: dict[str, int] = {}
            for r in rows:
                for k in r.signals or {}:
                    names[k] = names.get(k, 0) + 1
            out[model] = {
                "n": len(rows),
                "accuracy": sum(r.correct for r in rows) / len(rows),
                "mean_cost_usd": (sum(costs) / len(costs)) if costs else None,
                "cost_coverage": len(costs) / len(rows),
                "logprobs_coverage": sum(r.logprobs is not None for r in rows) / len(rows),
                "signal_coverage": {k: v / len(rows) for k, v in sorted(names.items())},
            }
        return out


# -------------------------------------------------------------------- reading and writing


def _open_text(path: Path, mode: Literal["r", "w", "a"]) -> IO[str]:
    if path.name.endswith(".gz"):
        return gzip.open(path, mode + "t", encoding="utf-8")  # type: ignore[return-value]
    return open(path, mode, encoding="utf-8")


def _dumps(record: RunRecord) -> str:
    return json.dumps(record.to_json_dict(), ensure_ascii=False, separators=(",", ":"))


def _short_errors(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors()[:3]:
        loc = ".".join(str(p) for p in err["loc"]) or "(row)"
        parts.append(f"{loc}: {err['msg']}")
    more = len(exc.errors()) - 3
    return "; ".join(parts) + (f"; and {more} more" if more > 0 else "")


def iter_runs(path: PathLike, *, on_error: Literal["raise", "skip"] = "raise") -> Iterator[RunRecord]:
    """Yield the records of one file. Blank lines are skipped; bad rows raise (or are skipped, logged)."""
    p = Path(path)
    with _open_text(p, "r") as fh:
        for lineno, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                data = json.loads(line)
            except json.JSONDecodeError as exc:
                err = RunFormatError(f"invalid JSON ({exc.msg} at column {exc.colno})", path=str(p), line=lineno)
                if on_error == "raise":
                    raise err from exc
                logger.warning("skipping %s", err)
                continue
            try:
                yield RunRecord.model_validate(data)
            except ValidationError as exc:
                err = RunFormatError(f"not a valid run record: {_short_errors(exc)}", path=str(p), line=lineno)
                if on_error == "raise":
                    raise err from exc
                logger.warning("skipping %s", err)


def read_runs(
    path_or_paths: PathLike | Iterable[PathLike], *, on_error: Literal["raise", "skip"] = "raise"
) -> RecordedRuns:
    """Read one or more JSONL(.gz) files into :class:`RecordedRuns` (later rows win on duplicates).

    ``on_error="skip"`` logs and skips bad rows, e.g. a line cut short when a collection crashed.
    """
    paths = [path_or_paths] if isinstance(path_or_paths, str | os.PathLike) else list(path_or_paths)
    runs = RecordedRuns()
    for p in paths:
        for record in iter_runs(p, on_error=on_error):
            runs.add(record)
    return runs


def write_runs(records: Iterable[RunRecord], path: PathLike) -> int:
    """Write records to ``path`` (gzip when it ends in ``.gz``), atomically; returns the row count.

    The file is written next to its destination and renamed, so a crash never leaves half a file.
    """
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".gz" if p.name.endswith(".gz") else "", dir=p.parent)
    os.close(fd)
    n = 0
    try:
        with _open_text(Path(tmp), "w") as fh:
            for record in records:
                fh.write(_dumps(record))
                fh.write("\n")
                n += 1
        os.replace(tmp, p)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return n


def append_run(record: RunRecord, path: PathLike) -> None:
    """Append one record (for resumable collection). ``.gz`` files get one gzip member per call."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    line = _dumps(record) + "\n"
    if not p.name.endswith(".gz") and p.exists() and p.stat().st_size > 0:
        with open(p, "rb") as fh:
            fh.seek(-1, os.SEEK_END)
            if fh.read(1) != b"\n":  # a previous write was cut short: keep it on its own line
                line = "\n" + line
    with _open_text(p, "a") as fh:
        fh.write(line)

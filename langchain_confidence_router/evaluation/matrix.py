"""Recorded runs as aligned numpy arrays: what replay, tuning and evaluation compute on.

:class:`RunMatrix` holds, for items answered by every model of interest, the correctness, the
cost and every raw signal as ``(n_items, n_models)`` arrays. Rows that carry token ``logprobs`` get
their raw signals recomputed exactly as the router would at run time (core ``normalize_logprobs``,
``apply_filter`` with the configured token filter, ``compute_signals`` with the configured
parameters), so offline replay and the live router judge an answer the same way. Recorded
``signals`` fill in what logprobs cannot give (and everything, for sources without logprobs).
A missing ``cost_usd`` is priced from the configuration's per-token prices.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..core.config import ModelSpec, RouterConfig
from ..core.errors import ConfigError
from ..core.filters import apply_filter
from ..core.signals import LOGPROB_SIGNALS, SignalParams, compute_signals
from ..core.tokens import normalize_logprobs
from .progress import track
from .runs import RecordedRuns, read_runs

__all__ = ["RunMatrix", "build_matrix", "load_runs", "runtime_signals", "signal_params"]


@dataclass
class RunMatrix:
    """Aligned arrays over items (rows) and models (columns); signals hold RAW values, NaN = missing."""

    models: list[str]
    item_ids: list[str]
    correct: np.ndarray
    cost: np.ndarray
    signals: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def n(self) -> int:
        return len(self.item_ids)

    def index(self, model: str) -> int:
        try:
            return self.models.index(model)
        except ValueError:
            raise KeyError(f"model {model!r} is not in the recorded runs ({', '.join(self.models)})") from None

    def take(self, rows: np.ndarray | Sequence[int]) -> RunMatrix:
        """The given rows (items) only, e.g. one side of a split."""
        idx = np.asarray(rows)
        return RunMatrix(list(self.models), [self.item_ids[i] for i in np.arange(self.n)[idx]],
                         self.correct[idx], self.cost[idx], {k: v[idx] for k, v in self.signals.items()})

    def select(self, models: Sequence[str]) -> RunMatrix:
        """The given models (columns), in that order."""
        cols = [self.index(m) for m in models]
        return RunMatrix(list(models), list(self.item_ids), self.correct[:, cols], self.cost[:, cols],
                         {k: v[:, cols] for k, v in self.signals.items()})

    def raw(self, model: str) -> dict[str, np.ndarray]:
        """One model's raw signals by name (1-d arrays over items)."""
        j = self.index(model)
        return {k: v[:, j] for k, v in self.signals.items()}

    def available_signals(self, models: Sequence[str] | None = None, min_coverage: float = 0.5) -> list[str]:
        """Signals present on at least ``min_coverage`` of the items for every one of ``models``."""
        cols = [self.index(m) for m in (models or self.models)]
        out = []
        for name, values in self.signals.items():
            if self.n and all(np.mean(~np.isnan(values[:, j])) >= min_coverage for j in cols):
                out.append(name)
        return out


def signal_params(config: RouterConfig | None) -> SignalParams:
    """The signal parameters a configuration gives the policy (weights, percent, window, tail)."""
    if config is None:
        return SignalParams()
    s = config.confidence
    return SignalParams(
        logprob_weight=s.hybrid_weights.logprob_weight,
        margin_weight=s.hybrid_weights.margin_weight,
        bottom_percent=s.signal_params.bottom_percent,
        group_window=s.signal_params.group_window,
        tail_tokens=s.signal_params.tail_tokens,
    )


def _spec(config: RouterConfig | None, model: str) -> ModelSpec | None:
    if config is None:
        return None
    return next((s for s in config.models if s.name == model), None)


def _fallback_price(model: str, tokens_in: int | None, tokens_out: int | None) -> float | None:
    from .converters import PRICES

    price = PRICES.get(model)
    if price is None or (tokens_in is None and tokens_out is None):
        return None
    return ((tokens_in or 0) * price.input_per_m + (tokens_out or 0) * price.output_per_m) / 1e6


def build_matrix(
    runs: RecordedRuns,
    models: Sequence[str] | None = None,
    config: RouterConfig | None = None,
    *,
    progress: bool | None = None,
) -> RunMatrix:
    """Align ``runs`` over ``models`` (all recorded models by default) into a :class:`RunMatrix`.

    Raises :class:`ConfigError` when a requested model has no runs or a row has no cost and none
    can be computed from per-token prices (the configuration's, else the converters' table).
    """
    try:
        ms = list(models) if models is not None else runs.models
        ids = runs.item_ids(ms)
    except KeyError as exc:
        raise ConfigError(str(exc.args[0]) if exc.args else str(exc)) from None
    if not ids:
        raise ConfigError(f"no item was answered by every one of the models {', '.join(ms)}")
    params = signal_params(config)
    settings = config.confidence if config is not None else None
    n, m = len(ids), len(ms)
    correct = np.zeros((n, m), dtype=bool)
    cost = np.full((n, m), np.nan)
    signals: dict[str, np.ndarray] = {}

    def column(name: str) -> np.ndarray:
        if name not in signals:
            signals[name] = np.full((n, m), np.nan)
        return signals[name]

    filters = {}
    for model in ms:
        spec = _spec(config, model)
        filters[model] = (spec.token_filter if spec and spec.token_filter else None) or (
            settings.token_filter if settings else "all")
    rows = ((i, j, item, model) for i, item in enumerate(ids) for j, model in enumerate(ms))
    for i, j, item, model in track(rows, "reading runs", total=n * m, enabled=progress):
        record = runs.get(item, model)
        assert record is not None
        correct[i, j] = record.correct
        c = record.cost_usd
        if c is None:
            spec = _spec(config, model)
            c = spec.cost(record.tokens_in, record.tokens_out) if spec else None
            if c is None:
                c = _fallback_price(model, record.tokens_in, record.tokens_out)
        if c is None:
            raise ConfigError(
                f"run of model {model!r} on item {item!r} has no cost_usd, and no per-token price is known "
                "for it: add input_cost_per_token/output_cost_per_token to the model in the configuration")
        cost[i, j] = c
        for name, value in (record.signals or {}).items():
            column(name)[i, j] = value
        if record.logprobs:
            tokens = normalize_logprobs([e.model_dump() for e in record.logprobs])
            if tokens is not None and len(tokens):
                pattern = settings.answer_pattern if settings else None
                filtered = apply_filter(tokens, filters[model], answer_pattern=pattern)
                values = compute_signals(filtered.tokens, None, params)
                for name, value in values.raw.items():
                    column(name)[i, j] = np.nan if value is None else value
    _derive_hybrid(signals, params)
    return RunMatrix(ms, ids, correct, cost, signals)


def _derive_hybrid(signals: dict[str, np.ndarray], params: SignalParams) -> None:
    """hybrid where it is missing but avg_logprob and margin were recorded (same formula as the core)."""
    if "avg_logprob" not in signals or "margin" not in signals:
        return
    from .calibrate import score_array

    a = score_array("avg_logprob", signals["avg_logprob"])
    mg = score_array("margin", signals["margin"])
    derived = params.logprob_weight * a + params.margin_weight * mg
    if "hybrid" in signals:
        signals["hybrid"] = np.where(np.isnan(signals["hybrid"]), derived, signals["hybrid"])
    else:
        signals["hybrid"] = derived


def runtime_signals(available: Sequence[str]) -> list[str]:
    """The signals among ``available`` that the router computes at run time (so can be tuned on)."""
    return [s for s in (*LOGPROB_SIGNALS, "self_verify", "consistency") if s in available]



def load_runs(paths: str | Path | Sequence[str | Path]) -> RecordedRuns:
    """Read recorded-run files for the CLI; a missing file or empty result is a :class:`ConfigError`."""
    items = [paths] if isinstance(paths, str | Path) else list(paths)
    for p in items:
        if not Path(p).is_file():
            raise ConfigError(f"recorded runs file not found: {p}")
    runs = read_runs(items)
    if not len(runs):
        raise ConfigError(f"no recorded runs in {', '.join(map(str, items))}")
    return runs

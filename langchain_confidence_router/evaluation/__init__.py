"""Offline evaluation: recorded runs (one row per item and model) and converters from public data.

Converter names are imported lazily so ``python -m ...evaluation.converters`` runs without a
double-import warning and reading runs does not pay for the converters.
"""

from typing import Any

from .runs import (
    RecordedRuns,
    RunFormatError,
    RunRecord,
    TokenLogprob,
    TopLogprob,
    append_run,
    iter_runs,
    read_runs,
    write_runs,
)

_CONVERTER_NAMES = ("CONVERTERS", "PRICES", "Price", "convert", "cost_usd")

__all__ = [
    "CONVERTERS",
    "PRICES",
    "Price",
    "RecordedRuns",
    "RunFormatError",
    "RunRecord",
    "TokenLogprob",
    "TopLogprob",
    "append_run",
    "convert",
    "cost_usd",
    "iter_runs",
    "read_runs",
    "write_runs",
]


def __getattr__(name: str) -> Any:
    if name in _CONVERTER_NAMES:
        from . import converters

        return getattr(converters, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

"""Offline evaluation: recorded runs (one row per item and model) and converters from public data.

Every name is imported on first use: ``python -m ...evaluation.converters`` runs without a
double-import warning, reading runs does not pay for the converters, and the monitor can use
:mod:`.metrics` without loading the recorded-run format.
"""

from typing import Any

_RUN_NAMES = ("RecordedRuns", "RunFormatError", "RunRecord", "TokenLogprob", "TopLogprob", "append_run",
              "iter_runs", "read_runs", "write_runs")
_CONVERTER_NAMES = ("CONVERTERS", "PRICES", "Price", "convert", "cost_usd")
#: Tuning and evaluation names, imported on first use so reading runs stays light.
_LAZY = {
    "fit_calibration": "calibrate", "predict_array": "calibrate", "score_array": "calibrate",
    "auroc": "metrics", "ece": "metrics", "brier": "metrics", "reliability_bins": "metrics",
    "reliability_table": "metrics", "binning_label": "metrics",
    "RunMatrix": "matrix", "build_matrix": "matrix", "load_runs": "matrix",
    "replay_config": "replay", "replay_tiers": "replay", "replay_with_policy": "replay", "ReplayOutcome": "replay",
    "tune": "tune", "write_tuned_config": "tune", "TuneResult": "tune", "TuneError": "tune",
    "evaluate_config": "evaluate", "EVALUATE_KEYS": "evaluate",
    "write_report": "report", "make_runs": "synthetic",
}

__all__ = [
    *_LAZY,
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
    if name in _RUN_NAMES:
        from . import runs

        return getattr(runs, name)
    if name in _CONVERTER_NAMES:
        from . import converters

        return getattr(converters, name)
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

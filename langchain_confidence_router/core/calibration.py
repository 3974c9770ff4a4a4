"""Per-model calibration maps applied at run time: raw signal(s) -> probability of being correct.

Fitting lives in ``langchain_confidence_router.evaluation.calibrate``; this module only reads the
small versioned JSON files it writes and applies them, with numpy and nothing else.

File format (``format: confidence-router/calibration``, ``version: 1``)::

    {"format": "confidence-router/calibration", "version": 1, "model": "llama3.1-8b",
     "method": "platt", "signal": "avg_logprob", "params": {"a": 2.1, "b": 0.4}, "fitted": {...}}

Methods: ``platt`` (sigmoid(a*x + b) on the raw signal), ``temperature`` (sigmoid(logit(s) / T) on the
signal's 0..1 score), ``isotonic`` (monotone piecewise-linear map given by ``x`` and ``y`` knots on the
raw signal), ``combiner`` (logistic regression over several raw signals: standardised with ``mean``
and ``scale``, missing values imputed with the mean, weights ``coef`` and ``intercept``).
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .errors import ConfigError
from .signals import score_from_raw

CALIBRATION_FORMAT = "confidence-router/calibration"
CALIBRATION_VERSION = 1
CALIBRATION_METHODS = ("platt", "temperature", "isotonic", "combiner")


def _sigmoid(z: float) -> float:
    if z >= 0:
        return 1.0 / (1.0 + math.exp(-z))
    e = math.exp(z)
    return e / (1.0 + e)


@dataclass(frozen=True)
class Calibration:
    """A fitted map from raw signals to P(correct)."""

    method: str
    params: Mapping[str, Any]
    signal: str | None = None
    signals: tuple[str, ...] = ()
    model: str | None = None
    fitted: Mapping[str, Any] = field(default_factory=dict)
    version: int = CALIBRATION_VERSION

    def __post_init__(self) -> None:
        if self.method not in CALIBRATION_METHODS:
            raise ValueError(f"method {self.method!r} is not one of {', '.join(CALIBRATION_METHODS)}")
        if self.method == "combiner" and not self.signals:
            raise ValueError("a combiner needs 'signals'")
        if self.method != "combiner" and not self.signal:
            raise ValueError(f"a {self.method} calibration needs 'signal'")

    @property
    def inputs(self) -> tuple[str, ...]:
        return self.signals if self.method == "combiner" else (str(self.signal),)

    @property
    def id(self) -> str:
        """Short content hash, recorded in traces as the calibration version used."""
        digest = hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()[:10]
        return f"{self.model or 'model'}:{self.method}:{digest}"

    def predict(self, raw: Mapping[str, float | None]) -> float | None:
        """P(correct) from raw signal values; None when the needed signal is missing."""
        p = self.params
        if self.method == "combiner":
            x = np.array([_nan_if_none(raw.get(s)) for s in self.signals], dtype=float)
            mean = np.asarray(p["mean"], dtype=float)
            scale = np.asarray(p["scale"], dtype=float)
            x = np.where(np.isfinite(x), x, mean)
            z = float(np.dot((x - mean) / scale, np.asarray(p["coef"], dtype=float)) + float(p["intercept"]))
            return _sigmoid(z)
        value = raw.get(str(self.signal))
        if value is None or math.isnan(value):
            return None
        if self.method == "platt":
            return _sigmoid(float(p["a"]) * _finite(value) + float(p["b"]))
        if self.method == "temperature":
            s = score_from_raw(str(self.signal), value)
            if s is None:
                return None
            s = min(max(s, 1e-12), 1 - 1e-12)
            return _sigmoid(math.log(s / (1 - s)) / float(p["temperature"]))
        # isotonic
        return float(np.interp(_finite(value), p["x"], p["y"]))

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "format": CALIBRATION_FORMAT,
            "version": self.version,
            "model": self.model,
            "method": self.method,
            "params": dict(self.params),
            "fitted": dict(self.fitted),
        }
        if self.method == "combiner":
            out["signals"] = list(self.signals)
        else:
            out["signal"] = self.signal
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Calibration:
        if data.get("format") != CALIBRATION_FORMAT:
            raise ValueError(f"'format' must be {CALIBRATION_FORMAT!r}")
        if data.get("version") != CALIBRATION_VERSION:
            raise ValueError(f"unsupported calibration version {data.get('version')!r}")
        cal = cls(
            method=str(data.get("method")),
            params=dict(data.get("params") or {}),
            signal=data.get("signal"),
            signals=tuple(data.get("signals") or ()),
            model=data.get("model"),
            fitted=dict(data.get("fitted") or {}),
        )
        cal.predict(dict.fromkeys(cal.inputs, -0.5))  # fail now on missing parameters, not per request
        return cal

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n", encoding="utf-8")


def load_calibration(path: str | Path) -> Calibration:
    """Read a calibration file; a bad one raises :class:`ConfigError` naming the file."""
    p = Path(path)
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
        return Calibration.from_dict(data)
    except OSError as exc:
        raise ConfigError(f"cannot read calibration file ({exc.strerror or exc})", source=str(p)) from None
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ConfigError(f"invalid calibration file: {exc}", source=str(p)) from None


def _nan_if_none(value: float | None) -> float:
    return math.nan if value is None else float(value)


def _finite(value: float) -> float:
    """Map -inf (a zero-probability token) to a large negative number the maps can take."""
    return max(value, -1e6) if value != -math.inf else -1e6

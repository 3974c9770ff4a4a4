"""Refit each model's calibration from reviewers' labels (``confidence-router tune --labels``).

Review labels come one model per request (the model whose answer was judged), so they cannot drive
chain selection, which needs every model's answer on the same items. What they can do is keep each
model's confidence honest as traffic drifts: refit its calibration on its own labelled answers and
point the configuration at the new file. Thresholds then compare against the refitted probability.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from ..core.config import RouterConfig
from ..core.errors import ConfigError
from ..core.tiers import build_tiers
from .calibrate import fit_calibration
from .runs import read_runs

MIN_LABELS = 30


@dataclass
class RefitSummary:
    model: str
    n: int
    signal: str
    path: str | None
    note: str
    metrics: dict[str, Any]


def recalibrate_from_labels(
    labels_path: str | Path, config: RouterConfig, out_path: str | Path, *, method: str = "platt",
    min_labels: int = MIN_LABELS,
) -> list[RefitSummary]:
    """Write ``out_path``: ``config`` with each labelled model's calibration refitted on its labels."""
    runs = read_runs(labels_path)
    tiers, _ = build_tiers(config)
    out = Path(out_path)
    data = config.model_dump(mode="json", exclude_none=True)
    summaries: list[RefitSummary] = []
    for tier in tiers:
        rows = [r for r in runs.records if r.model == tier.name and r.signals and r.signals.get(tier.method)
                is not None]
        correct = np.array([bool(r.correct) for r in rows])
        if len(rows) < min_labels or correct.all() or not correct.any():
            summaries.append(RefitSummary(tier.name, len(rows), tier.method, None,
                                          f"kept: {len(rows)} usable labels (need {min_labels}, both outcomes)", {}))
            continue
        raw = {tier.method: np.array([float(r.signals[tier.method]) for r in rows])}  # type: ignore[index]
        cal = fit_calibration(method, raw, correct, signal=tier.method, model=tier.name,
                              extra={"source": str(labels_path), "from": "review labels"})
        cal_path = out.with_name(f"{out.stem}.{tier.name}.calibration.json")
        cal.save(cal_path)
        spec = next(m for m in data["models"] if m["name"] == tier.name)
        spec["calibration"] = cal_path.name
        summaries.append(RefitSummary(tier.name, len(rows), tier.method, str(cal_path), "refitted",
                                      dict(cal.fitted)))
    if not any(s.path for s in summaries):
        raise ConfigError(f"no model had enough labels to refit (need {min_labels} with both outcomes)",
                          source=str(labels_path))
    data["evidence"] = {"recalibrated_from": str(labels_path), "method": method,
                        "models": {s.model: {"n": s.n, "signal": s.signal, "note": s.note} for s in summaries}}
    out.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return summaries

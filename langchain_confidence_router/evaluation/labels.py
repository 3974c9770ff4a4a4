"""Reviewer labels from the review store as recorded runs, so ``confidence-router tune`` can recalibrate.

This lives on the evaluation side: the store knows decisions and labels, the evaluation side knows
the recorded-run format.
"""

from __future__ import annotations

import logging
import os
from datetime import datetime
from typing import Any

from .runs import RunRecord, write_runs

__all__ = ["export_labels"]

logger = logging.getLogger(__name__)


def export_labels(store: Any, path: str | os.PathLike[str], *, since: float | datetime | None = None) -> int:
    """Write the labelled decisions of ``store`` as recorded-run JSONL (``.gz`` ok).

    One row per labelled request that had a scored answer: ``item_id`` = request id, ``model`` =
    the model whose confidence decided, ``correct`` = the latest label, ``signals`` = that
    answer's raw signals, plus ``confidence``, ``cost_usd`` and the route/arm/review decision as
    extra fields. Returns the number of rows written (the file is replaced atomically).
    """
    records = []
    skipped = 0
    for r in store.decisions(since, labelled=True):
        model = r.scored_model or r.final_model
        if model is None or r.correct is None:
            skipped += 1  # handed to a person before any model answered: nothing to calibrate
            continue
        records.append(RunRecord(
            item_id=r.request_id, model=model, correct=r.correct, cost_usd=r.scored_cost_usd,
            signals=dict(r.signals) or None, confidence=r.confidence, route=r.route, arm=r.arm,
            review_decision=r.label_decision, calibration=r.calibrations.get(model),
        ))
    if skipped:
        logger.info("export: %d labelled request(s) had no model answer and were left out", skipped)
    return write_runs(records, path)

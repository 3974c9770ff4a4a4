"""The tuner on real recorded runs (LifeEval BoolQ, Llama-3.1 8B -> 70B); skipped without ../shared/data."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from langchain_confidence_router.core.config import parse_config
from langchain_confidence_router.evaluation.converters import convert_lifeeval
from langchain_confidence_router.evaluation.evaluate import evaluate_config
from langchain_confidence_router.evaluation.matrix import build_matrix
from langchain_confidence_router.evaluation.replay import replay_tiers
from langchain_confidence_router.evaluation.tune import tune, write_tuned_config

MODELS = ["Meta-Llama-3.1-8B-Instruct", "Meta-Llama-3.1-70B-Instruct"]


def test_boolq_tuned_on_one_half_holds_on_the_other(shared_data: Path, tmp_path: Path) -> None:
    matrix = build_matrix(convert_lifeeval(shared_data, "BoolQ"), MODELS)
    perm = np.random.default_rng(0).permutation(matrix.n)
    train, test = matrix.take(np.sort(perm[: matrix.n // 2])), matrix.take(np.sort(perm[matrix.n // 2:]))
    result = tune(train, None, max_accuracy_drop=0.01, delta=0.05)
    ev = result.evidence
    assert ev["certified"] and ev["mode"] == "direct" and ev["target"]["kind"] == "relative"
    assert ev["certify_split"]["drop_upper_bound"] <= 0.01 + 1e-9
    base = parse_config({})
    out = replay_tiers(result.tiers(base), base.confidence, test)
    drop = test.correct[:, 1].mean() - out.accuracy
    savings = 1 - out.mean_cost / test.cost[:, 1].mean()
    assert drop < 0.02 and savings > 0.03, (drop, savings)
    path = write_tuned_config(result, base, tmp_path / "boolq.yaml")
    from langchain_confidence_router.core.config import load_config

    report = evaluate_config(load_config(path), test)
    assert report["accuracy"] == out.accuracy and report["candidates"] == MODELS
    assert report["signals"][MODELS[0]]["avg_logprob"]["auroc"] > 0.55

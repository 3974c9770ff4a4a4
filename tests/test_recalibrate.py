"""Review labels flow back into calibration: store -> label -> export -> tune --labels -> a loadable config."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import yaml

from langchain_confidence_router.cli import main
from langchain_confidence_router.core import Cascade, TierResult, load_config, parse_config
from langchain_confidence_router.human.recording import flush_all


def entries(score: float) -> dict:
    lp = 3 * score - 3  # avg_logprob score = (lp + 3) / 3
    return {"content": [{"token": "w", "logprob": lp, "top_logprobs": [{"token": "w", "logprob": lp}]}]}


def test_labels_refit_the_calibration(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from langchain_confidence_router.human import open_store

    config_path = tmp_path / "live.yaml"
    config = {"algorithm": {"confidence": {"escalation_order": "declared", "confidence_method": "avg_logprob",
                                           "threshold": 0.0}},
              "models": [{"name": "small"}], "human": {"store": "reviews.db", "spot_check_rate": 1.0}}
    config_path.write_text(yaml.safe_dump(config))
    cascade = Cascade.from_config(load_config(config_path))
    rnd = random.Random(0)
    truth = {}
    for i in range(80):
        score = rnd.random()
        done = cascade.run(lambda tc, s=score: TierResult(text="a", logprobs=entries(s)), request_text=f"q{i}")
        truth[done.trace.request_id] = rnd.random() < score  # higher confidence, more often right
    assert flush_all(10)  # recording is written in the background
    store = open_store(str(tmp_path / "reviews.db"))
    for request_id, correct in truth.items():
        store.label(request_id, correct=correct, reviewer="test")
    labels = tmp_path / "labels.jsonl"
    assert main(["review", "--store", str(tmp_path / "reviews.db"), "export", str(labels)]) == 0
    out = tmp_path / "recalibrated.yaml"
    assert main(["tune", "--labels", str(labels), "--config", str(config_path), "--out", str(out)]) == 0
    assert "refitted" in capsys.readouterr().out
    tuned = load_config(out)
    assert tuned.models[0].calibration and tuned.evidence["recalibrated_from"] == str(labels)
    tier = Cascade.from_config(tuned).tiers[0]
    assert tier.calibration is not None and tier.calibration.method == "platt"
    low, high = tier.calibration.predict({"avg_logprob": -2.7}), tier.calibration.predict({"avg_logprob": -0.1})
    assert low < high  # the refitted map keeps the signal's direction


def test_too_few_labels_is_a_clear_error(tmp_path: Path) -> None:
    labels = tmp_path / "labels.jsonl"
    labels.write_text('{"item_id": "r1", "model": "small", "correct": true, "signals": {"hybrid": 0.9}}\n')
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump(parse_config({"models": [{"name": "small"}]}).model_dump(mode="json")))
    assert main(["tune", "--labels", str(labels), "--config", str(cfg), "--out", str(tmp_path / "o.yaml")]) == 1

"""Converters against the real shared data: accuracy and AUROC must match the data READMEs.

The data lives outside the repository (``../shared/data`` relative to the repo root); without it
these tests skip.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
import pytest

from langchain_confidence_router.evaluation.converters import (
    CONVERTERS,
    DATASET_DIRS,
    LOGPROB_FLOOR,
    PRICES,
    TAO_LLAMA3_LADDER,
    TAO_QWEN25_LADDER,
    Price,
    convert,
    convert_lifeeval,
    convert_plaut,
    convert_routellm,
    convert_tao_mmlu_pro,
    cost_usd,
)
from langchain_confidence_router.evaluation.runs import RecordedRuns, read_runs

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def _need(name: str) -> Path:
    folder = DATA / DATASET_DIRS[name]
    if not folder.is_dir():
        pytest.skip(f"shared data folder {folder} is absent (recorded data is kept outside the repo)")
    return folder


def _auroc(score: np.ndarray, correct: np.ndarray) -> float:
    """Mann-Whitney AUROC with tied scores counted half (what sklearn's roc_auc_score gives)."""
    keep = ~np.isnan(score)
    s, y = score[keep], correct[keep]
    pos, neg = s[y], s[~y]
    order = np.sort(neg)
    below = np.searchsorted(order, pos, side="left")
    ties = np.searchsorted(order, pos, side="right") - below
    return float((below + 0.5 * ties).sum() / (len(pos) * len(neg)))


def _accuracy(runs: RecordedRuns, model: str) -> float:
    return float(runs.correct_matrix([model]).mean())


# ------------------------------------------------------------------ Tao et al. (MMLU-Pro)


@pytest.fixture(scope="module")
def tao_summary() -> dict[str, dict[str, str]]:
    folder = _need("tao_mmlu_pro")
    with open(folder / "SUMMARY_computed.csv", newline="") as fh:
        return {row["model"]: row for row in csv.DictReader(fh)}


@pytest.mark.parametrize("ladder", [TAO_QWEN25_LADDER, TAO_LLAMA3_LADDER], ids=["qwen2.5", "llama3"])
def test_tao_ladders_match_summary(ladder: tuple[str, ...], tao_summary: dict[str, dict[str, str]]) -> None:
    runs = convert_tao_mmlu_pro(DATA, ladder)
    assert runs.models == list(ladder)
    assert len(runs.item_ids()) == 12032 and runs.n_dropped() == 0
    for model in ladder:
        ref = tao_summary[model]
        assert _accuracy(runs, model) == pytest.approx(float(ref["acc"]), abs=6e-4), model
        conf = runs.signal_matrix("geometric_mean", [model])[:, 0]
        assert np.mean(~np.isnan(conf)) == pytest.approx(float(ref["logit_cov"]), abs=1e-3)
        auroc = _auroc(conf, runs.correct_matrix([model])[:, 0])
        assert auroc == pytest.approx(float(ref["auroc_logitconf"]), abs=6e-4), model


def test_tao_readme_qwen_figures() -> None:
    _need("tao_mmlu_pro")
    runs = convert_tao_mmlu_pro(DATA, "qwen2.5")
    for model, acc in zip(TAO_QWEN25_LADDER, (0.388, 0.505, 0.570, 0.659), strict=True):
        assert _accuracy(runs, model) == pytest.approx(acc, abs=6e-4)


def test_tao_rows_and_signals() -> None:
    _need("tao_mmlu_pro")
    runs = convert_tao_mmlu_pro(DATA / DATASET_DIRS["tao_mmlu_pro"], ["Qwen2.5-7B-Instruct"], limit=300)
    rows = runs.records
    assert len(rows) == 300
    assert rows[0].item_id == "mmlu_pro-0" and rows[-1].item_id == "mmlu_pro-299"
    for r in rows:
        s = r.signals or {}
        assert s["geometric_mean"] == s["mean_token_prob"]
        assert s["avg_logprob"] == pytest.approx(math.log(s["geometric_mean"]))
        assert 0 <= s.get("verbal", 0.5) <= 1
        assert r.tokens_in == 350 and r.tokens_out and r.tokens_out > 0
        assert r.cost_usd == pytest.approx((350 + r.tokens_out) * 0.20 / 1e6)
        assert r.correct == (r.answer is not None and r.answer == r.reference)  # type: ignore[attr-defined]


def test_tao_model_without_logprobs_has_verbal_only() -> None:
    _need("tao_mmlu_pro")
    runs = convert_tao_mmlu_pro(DATA, ["gemma-3-4b-it"], limit=200)
    keys = {k for r in runs for k in (r.signals or {})}
    assert keys == {"verbal"}


# ------------------------------------------------------------------ Plaut et al. (MSP)


def test_plaut_mmlu_llama3_matches_readme() -> None:
    _need("plaut")
    runs = convert_plaut(DATA)
    assert runs.models == ["Llama3-8b", "Llama3-70b"]
    assert len(runs.item_ids()) == 6000
    correct = runs.correct_matrix()
    msp = runs.signal_matrix("geometric_mean")
    for j, (acc, auroc) in enumerate([(0.567, 0.762), (0.753, 0.839)]):
        assert correct[:, j].mean() == pytest.approx(acc, abs=6e-4)
        assert _auroc(msp[:, j], correct[:, j]) == pytest.approx(auroc, abs=6e-4)
    lp = runs.signal_matrix("avg_logprob")
    assert np.array_equal(lp, runs.signal_matrix("min_logprob"))
    assert np.allclose(np.exp(lp[msp > 1e-8]), msp[msp > 1e-8])
    assert lp.min() >= LOGPROB_FLOOR


def test_plaut_limit_and_costs() -> None:
    _need("plaut")
    runs = convert_plaut(DATA, "arc", ["Llama-7b", "gpt-4-turbo"], "second", 1, limit=300)
    assert len(runs.item_ids()) == 300 and runs.items[0] == "arc-0"
    big = runs.get("arc-0", "gpt-4-turbo")
    assert big is not None and big.tokens_out == 1 and big.tokens_in == 120 + 70
    assert big.cost_usd == pytest.approx((190 * 10.0 + 30.0) / 1e6)
    assert "max_logit" not in (big.model_extra or {})  # the GPT runs have no logits


def test_plaut_errors() -> None:
    _need("plaut")
    with pytest.raises(ValueError, match="unknown Plaut dataset"):
        convert_plaut(DATA, "gsm8k")
    with pytest.raises(ValueError, match="Llama3-8b"):
        convert_plaut(DATA, "mmlu", ["Llama3-8b"], few_shot=1, limit=10)


# ------------------------------------------------------------------ LifeEval


LLAMA = ("Meta-Llama-3.1-8B-Instruct", "Meta-Llama-3.1-70B-Instruct")


@pytest.mark.parametrize(("qset", "accs", "n"), [("SciQ", (0.911, 0.953), 1000), ("BoolQ", (0.667, 0.761), 3270)])
def test_lifeeval_matches_readme(qset: str, accs: tuple[float, float], n: int) -> None:
    _need("lifeeval")
    parsed = convert_lifeeval(DATA, qset, include_unparsed=False)
    for model, acc in zip(LLAMA, accs, strict=True):
        rows = parsed.for_model(model)
        assert sum(r.correct for r in rows) / len(rows) == pytest.approx(acc, abs=6e-4)
    everything = convert_lifeeval(DATA, qset)
    assert len(everything.item_ids()) == n
    for model, acc in zip(LLAMA, accs, strict=True):
        # Unparseable answers count as wrong here, so accuracy can only be a little lower.
        assert acc - 0.02 < _accuracy(everything, model) <= acc


def test_lifeeval_option_signals() -> None:
    _need("lifeeval")
    runs = convert_lifeeval(DATA, "sciq", limit=300)
    assert len(runs) == 600
    for r in runs:
        s = r.signals
        if s is None:  # unparseable answer
            assert r.answer not in ("A", "B", "C", "D")  # type: ignore[attr-defined]
            assert not r.correct
            continue
        probs = r.option_probs  # type: ignore[attr-defined]
        p_top = max(probs.values()) / sum(probs.values())
        assert s["geometric_mean"] == pytest.approx(p_top)  # the chosen option is always the argmax
        assert s["avg_logprob"] == pytest.approx(max(math.log(p_top), LOGPROB_FLOOR))
        assert s["margin"] >= 0 and 0 <= s["entropy"] <= 1 and 0 <= s["verbal"] <= 1
    y = runs.correct_matrix()[:, 0]
    # Higher probability, lower entropy: both must rank correct answers above wrong ones.
    assert _auroc(runs.signal_matrix("geometric_mean")[:, 0], y) > 0.7
    assert _auroc(runs.signal_matrix("entropy")[:, 0], y) < 0.3


def test_lifeeval_unknown_qset() -> None:
    _need("lifeeval")
    with pytest.raises(ValueError, match="SciQ"):
        convert_lifeeval(DATA, "halueval")


# ------------------------------------------------------------------ RouteLLM


@pytest.mark.parametrize(("task", "n", "accs"), [("gsm8k", 1319, (0.638, 0.857)), ("mmlu", 14042, (0.681, 0.806))])
def test_routellm_matches_readme(task: str, n: int, accs: tuple[float, float]) -> None:
    _need("routellm")
    runs = convert_routellm(DATA, task)
    assert len(runs.item_ids()) == n
    for model, acc in zip(runs.models, accs, strict=True):
        assert _accuracy(runs, model) == pytest.approx(acc, abs=6e-4)
    assert all(r.signals is None for r in runs)
    flagged = {r.item_id for r in runs if r.contaminated}  # type: ignore[attr-defined]
    assert len(flagged) == {"gsm8k": 12, "mmlu": 5}[task]
    clean = convert_routellm(DATA, task, drop_contaminated=True)
    assert len(clean.item_ids()) == n - len(flagged)


def test_routellm_costs_from_text_length() -> None:
    _need("routellm")
    runs = convert_routellm(DATA, "gsm8k", limit=300)
    assert len(runs.item_ids()) == 300
    cost = runs.cost_matrix()
    assert (cost[:, 1] > cost[:, 0]).all()  # GPT-4 is dearer on every item
    for r in runs:
        assert r.tokens_in and r.tokens_out and r.tokens_in > 10 and r.tokens_out > 0
        price = PRICES[r.model]
        expected = (r.tokens_in * price.input_per_m + r.tokens_out * price.output_per_m) / 1e6
        assert r.cost_usd == pytest.approx(expected)


# ------------------------------------------------------------------ registry, prices


def test_convert_writes_a_readable_file(tmp_path: Path) -> None:
    _need("lifeeval")
    out = tmp_path / "sciq.jsonl.gz"
    runs = convert("lifeeval", DATA, out, qset="SciQ", limit=50)
    again = read_runs(out)
    assert [r.to_json_dict() for r in again] == [r.to_json_dict() for r in runs]
    assert set(CONVERTERS) == {"tao_mmlu_pro", "plaut", "lifeeval", "routellm"}
    with pytest.raises(KeyError, match="unknown converter"):
        convert("nope", DATA, out)


def test_missing_data_dir_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="tao_mmlu_pro_80models"):
        convert_tao_mmlu_pro(tmp_path)


def test_prices() -> None:
    assert cost_usd("gpt-4o", 1_000_000, 1_000_000) == pytest.approx(12.5)
    with pytest.raises(KeyError, match="prices="):
        cost_usd("mystery-model", 1, 1)
    assert cost_usd("mystery-model", 1e6, 0, {"mystery-model": Price(1.0, 2.0, "test")}) == 1.0
    for name, price in PRICES.items():
        assert 0 < price.input_per_m <= price.output_per_m <= 100, name

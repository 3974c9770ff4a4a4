"""`confidence-router tune / evaluate / report` end to end on a small synthetic recorded-runs file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from langchain_confidence_router.cli import main
from langchain_confidence_router.core.config import load_config
from langchain_confidence_router.core.tiers import build_tiers
from langchain_confidence_router.evaluation.evaluate import EVALUATE_KEYS
from langchain_confidence_router.evaluation.runs import write_runs
from langchain_confidence_router.evaluation.synthetic import make_runs

REQUIRED_JSON_KEYS = ("accuracy", "cost", "largest_accuracy", "largest_cost", "oracle_cost", "savings",
                      "escalation_rate")


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("runs")
    train, test = make_runs(500, seed=1), make_runs(300, seed=2)
    write_runs(train, root / "train.jsonl.gz")
    write_runs(test, root / "test.jsonl")
    base = root / "base.yaml"
    base.write_text(
        "algorithm:\n  confidence:\n    token_filter: stop\n    escalation_order: small_to_large\n"
        "models:\n"
        "  - {name: large, size: 70b, input_cost_per_token: 2.0e-6, output_cost_per_token: 2.0e-6}\n"
        "  - {name: tiny, size: 1b, input_cost_per_token: 1.0e-7, output_cost_per_token: 1.0e-7}\n"
        "  - {name: medium, size: 8b, input_cost_per_token: 4.0e-7, output_cost_per_token: 4.0e-7}\n"
    )
    return {"train": root / "train.jsonl.gz", "test": root / "test.jsonl", "base": base, "root": root}


@pytest.fixture(scope="module")
def tuned(files: dict[str, Path]) -> Path:
    out = files["root"] / "out" / "tuned.yaml"
    code = main(["tune", "--runs", str(files["train"]), "--config", str(files["base"]), "--out", str(out),
                 "--max-accuracy-drop", "0.03", "--delta", "0.1", "--signals", "avg_logprob,margin"])
    assert code == 0
    return out


def test_tune_writes_a_loadable_config_with_evidence(tuned: Path) -> None:
    config = load_config(tuned)
    tiers, how = build_tiers(config)
    assert how == "declared order"
    names = [t.name for t in tiers]
    order = ["tiny", "medium", "large"]
    assert names == sorted(names, key=order.index), "a sub-chain keeps the candidates' size order"
    assert tiers[-1].threshold == 0.0
    for tier in tiers:
        assert tier.calibration is not None and (tuned.parent / tier.spec.calibration).is_file()
        assert tier.spec.input_cost_per_token is not None
    ev = config.evidence or {}
    assert ev["candidates"] == order
    assert ev["target"] == {"kind": "relative", "max_accuracy_drop": 0.03, "reference_model": "large",
                            "reference_accuracy_tuning": ev["target"]["reference_accuracy_tuning"],
                            "target_accuracy_estimate": ev["target"]["target_accuracy_estimate"]}
    assert ev["delta"] == 0.1 and ev["signal"] in ("avg_logprob", "margin")
    assert ev["expected"]["accuracy"] >= ev["expected"]["largest_accuracy"] - 0.1


def test_evaluate_json_has_the_documented_keys(tuned: Path, files: dict[str, Path],
                                               capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["evaluate", "--runs", str(files["test"]), "--config", str(tuned), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert set(REQUIRED_JSON_KEYS) <= set(report)
    assert set(EVALUATE_KEYS) <= set(report)
    assert report["n"] == 300 and report["largest_model"] == "large"
    assert report["savings"] == pytest.approx(1 - report["cost"] / report["largest_cost"])
    assert report["oracle_cost"] <= report["largest_cost"]


def test_evaluate_plain_text(tuned: Path, files: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["evaluate", "--runs", str(files["test"]), "--config", str(tuned)]) == 0
    text = capsys.readouterr().out
    for word in ("always_smallest", "always_largest", "cascade", "random_routing", "oracle", "AUROC"):
        assert word in text


def test_report_writes_pngs_and_html(tuned: Path, files: dict[str, Path]) -> None:
    out = files["root"] / "report"
    assert main(["report", "--runs", str(files["test"]), "--config", str(tuned), "--out", str(out)]) == 0
    pngs = sorted(out.glob("*.png"))
    names = {p.name for p in pngs}
    assert "tradeoff.png" in names
    assert any(n.startswith("reliability_") for n in names) and any(n.startswith("signals_") for n in names)
    for p in pngs:
        assert p.stat().st_size > 1000 and p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    page = (out / "index.html").read_text()
    assert "<img" in page and "tradeoff.png" in page and "oracle" in page


def test_cli_errors_are_clear(files: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["tune", "--runs", str(tmp_path / "nope.jsonl"), "--out", str(tmp_path / "x.yaml"),
                 "--target-accuracy", "0.8"]) == 1
    assert "recorded runs file not found" in capsys.readouterr().err
    assert main(["tune", "--runs", str(files["train"]), "--out", str(tmp_path / "x.yaml"),
                 "--target-accuracy", "0.8", "--signals", "verbal"]) == 1
    assert "not computed by the router" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["tune", "--runs", str(files["train"]), "--out", str(tmp_path / "x.yaml"),
              "--target-accuracy", "0.8", "--max-accuracy-drop", "0.01"])
    assert main(["evaluate", "--runs", str(files["test"]), "--config", str(tmp_path / "missing.yaml")]) == 1
    assert "cannot read" in capsys.readouterr().err


def test_tune_without_target_and_absolute_target(files: dict[str, Path], tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "free.yaml"
    assert main(["tune", "--runs", str(files["train"]), "--out", str(out), "--calibrate", "isotonic",
                 "--signals", "avg_logprob", "--json"]) == 0
    ev = json.loads(capsys.readouterr().out)
    assert ev["guarantee"].startswith("none") and ev["calibration"] == "isotonic"
    assert load_config(out).models
    out2 = tmp_path / "abs.yaml"
    assert main(["tune", "--runs", str(files["train"]), "--out", str(out2), "--target-accuracy", "0.7",
                 "--calibrate", "combiner", "--json"]) == 0
    ev = json.loads(capsys.readouterr().out)
    assert ev["target"]["kind"] == "absolute" and ev["calibration"] == "combiner"
    assert build_tiers(load_config(out2))[0][0].calibration is not None


def test_tune_path_select_fraction_flag(files: dict[str, Path], tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    # a share of the items chooses one quantile path, the rest certifies it at the full delta
    args = ["tune", "--runs", str(files["train"]), "--config", str(files["base"]), "--out", str(tmp_path / "t.yaml"),
            "--max-accuracy-drop", "0.03", "--delta", "0.1", "--signals", "avg_logprob,margin", "--json"]
    assert main([*args, "--path-select-fraction", "0.3"]) == 0
    ev = json.loads(capsys.readouterr().out)
    assert ev["mode"] == "quantile" and ev["families_tested"] == 1 and ev["level_per_family"] == 0.1
    assert ev["n_select"] == 150 and ev["n_certify"] == 350
    assert {row["path"] for row in ev["path_table"]} == {0}
    assert main([*args, "--path-select-fraction", "0.99"]) == 1
    assert "--path-select-fraction) must be 0 or in [0.05, 0.95], got 0.99" in capsys.readouterr().err

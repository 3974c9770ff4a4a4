"""Monitoring: ECE and PSI on hand-computed cases, and a monitor over a recorded set with known figures."""

from __future__ import annotations

import gzip
import json
import logging
import math
from pathlib import Path

import numpy as np
import pytest

from langchain_confidence_router.cli import main as cli_main
from langchain_confidence_router.core.errors import ConfigError
from langchain_confidence_router.core.trace import AttemptTrace, RequestTrace
from langchain_confidence_router.human.monitor import (
    Monitor,
    MonitorWarning,
    baseline_from_store,
    compute_ece,
    compute_psi,
    confidence_histogram,
    load_baseline,
    reliability_bins,
)
from langchain_confidence_router.human.store import ReviewStore, open_store

T0 = 1_700_000_000.0
EPS = 1e-4


def trace(route: str, conf: float | None, ts: float, arm: str | None = None) -> RequestTrace:
    t = RequestTrace(route=route, confidence=conf, final_model="small", started_at=ts, arm=arm, outcome="accepted")
    t.add_attempt(AttemptTrace(tier=0, model="small", decision="accept", confidence=conf, cost_usd=0.002))
    return t


def add(store: ReviewStore, route: str, conf: float | None, ts: float, correct: bool | None = None,
        arm: str | None = None) -> None:
    t = trace(route, conf, ts, arm)
    store.record(t)
    if correct is not None:
        store.label(t.request_id, correct)


@pytest.fixture
def store(tmp_path: Path) -> ReviewStore:
    return open_store(tmp_path / "m.db")


# ------------------------------------------------------------------------------------------ ECE


def test_ece_hand_computed() -> None:
    # bin 1: conf 0.15, accuracy 0.5 -> |0.5 - 0.15| * 2/4; bin 8: conf 0.85, accuracy 1 -> 0.15 * 2/4
    assert compute_ece([0.15, 0.15, 0.85, 0.85], [0, 1, 1, 1]) == pytest.approx(0.175 + 0.075)
    # perfectly calibrated within each bin
    assert compute_ece([0.25] * 4 + [0.75] * 4, [1, 0, 0, 0, 1, 1, 1, 0]) == pytest.approx(0.0)
    assert compute_ece([0.9, 0.9], [False, False]) == pytest.approx(0.9)
    assert compute_ece([1.0, 0.0], [True, False]) == pytest.approx(0.0)  # the ends of the range fit in


def test_ece_bins_are_equal_width_with_floor_boundaries() -> None:
    # 0.3 belongs to [0.3, 0.4) with 0.39: one bin, mean conf 0.345, accuracy 0.5
    assert compute_ece([0.3, 0.39], [1, 0]) == pytest.approx(0.155)
    # with 2 bins, 0.5 starts the upper bin: |1 - 0.5| * 1/2 + |0 - 0.2| * 1/2
    assert compute_ece([0.5, 0.2], [1, 0], bins=2) == pytest.approx(0.35)
    table = reliability_bins([0.3, 0.39, 0.95], [1, 0, 1])
    assert table[3]["n"] == 2 and table[3]["accuracy"] == 0.5 and table[9]["n"] == 1 and table[0]["n"] == 0


def test_ece_input_checks() -> None:
    assert math.isnan(compute_ece([], []))
    with pytest.raises(ValueError, match="length"):
        compute_ece([0.5], [1, 0])
    with pytest.raises(ValueError, match=r"0\.\.1"):
        compute_ece([1.2], [1])
    with pytest.raises(ValueError, match=r"0\.\.1"):
        compute_ece([math.nan], [1])


# ------------------------------------------------------------------------------------------ PSI


def test_psi_hand_computed_two_bins() -> None:
    # baseline median 0.25: p = [0.5, 0.5]; current q = [0.75, 0.25]
    expected = (0.75 - 0.5) * math.log(0.75 / 0.5) + (0.25 - 0.5) * math.log(0.25 / 0.5)
    assert expected == pytest.approx(0.274653, abs=1e-6)
    assert compute_psi([0.1, 0.2, 0.3, 0.4], [0.1, 0.1, 0.1, 0.4], bins=2) == pytest.approx(expected)


def test_psi_empty_bin_is_smoothed_with_epsilon() -> None:
    expected = (1 - 0.5) * math.log(1 / 0.5) + (EPS - 0.5) * math.log(EPS / 0.5)
    assert compute_psi([0.1, 0.2, 0.3, 0.4], [0.1, 0.2], bins=2) == pytest.approx(expected)


def test_psi_deciles_of_a_uniform_baseline() -> None:
    baseline = np.arange(1000) / 1000  # deciles at 0.0999, 0.1998, ...: 100 values per bin
    assert compute_psi(baseline, baseline) == pytest.approx(0.0)
    current = np.arange(500) / 1000  # fills the lower five bins, 0.2 each, and leaves five empty
    expected = 5 * (0.2 - 0.1) * math.log(2) + 5 * (EPS - 0.1) * math.log(EPS / 0.1)
    assert compute_psi(baseline, current) == pytest.approx(expected)
    assert compute_psi(current, baseline) > 0.2


def test_psi_tied_baseline_and_empty_inputs() -> None:
    assert compute_psi([0.9] * 50, [0.9] * 10) == pytest.approx(0.0)  # one distinct value: edges merge
    assert compute_psi([0.9] * 50, [0.5] * 10) > 1.0
    assert math.isnan(compute_psi([], [0.5]))
    assert math.isnan(compute_psi([0.5], [math.nan]))


# ------------------------------------------------------------------------------------------ monitor


def test_monitor_figures_on_a_recorded_set(store: ReviewStore, caplog: pytest.LogCaptureFixture) -> None:
    # 10 old labelled automated answers (confident and all wrong) fall outside the window of 40
    for i in range(10):
        add(store, "automated", 0.95, T0 + i, correct=False)
    # window: 20 at 0.9 with 18 right (calibrated), 20 at 0.75 with 10 right (|10 - 15| / 40)
    for i in range(40):
        conf, right = (0.9, (i // 2) % 10 != 0) if i % 2 == 0 else (0.75, i % 4 == 1)
        add(store, "automated", conf, T0 + 100 + i, correct=right)
    seen: list[MonitorWarning] = []
    baseline = np.arange(1000) / 1000  # uniform: 0.75 falls in decile 7, 0.9 in decile 9
    monitor = Monitor(store, window=40, baseline=baseline, on_warning=seen.append)
    with caplog.at_level(logging.WARNING, logger="langchain_confidence_router.human.monitor"):
        report = monitor.check()

    assert report.ece_n == 40 and report.ece == pytest.approx(5 / 40)
    psi = 2 * (0.5 - 0.1) * math.log(0.5 / 0.1) + 8 * (EPS - 0.1) * math.log(EPS / 0.1)
    assert report.psi == pytest.approx(psi) and report.psi_n_current == 40 and report.psi_n_baseline == 1000
    assert report.route_shares == {"automated": 1.0} and report.n_decisions == 50 and report.n_window == 40
    assert report.reliability[7]["n"] == 20 and report.reliability[7]["accuracy"] == 0.5
    assert [(w.kind, w.level) for w in seen] == [("ece", "warning"), ("psi", "alert")]
    assert seen[0].value == pytest.approx(0.125) and seen[0].threshold == 0.08
    levels = {r.levelname for r in caplog.records}
    assert levels == {"WARNING", "ERROR"}
    data = report.to_dict()
    json.dumps(data, allow_nan=False)  # the --json output is strict JSON
    assert data["ece"] == pytest.approx(0.125) and data["arms"] is None

    # larger window: the 10 confident-and-wrong answers now count
    wide = Monitor(store, window=50, baseline=baseline).report()
    assert wide.ece == pytest.approx((5 + 10 * 0.95) / 50)


def test_monitor_shares_default_baseline_and_quiet_when_stable(store: ReviewStore) -> None:
    confs = [0.05 + 0.03 * i for i in range(30)]
    for i, c in enumerate(confs):  # the first 30 decisions are the baseline
        add(store, "automated", c, T0 + i, arm="control" if i % 2 else "treatment")
    routes = ["automated"] * 15 + ["human_assisted"] * 10 + ["human_primary"] * 5
    for i, (c, r) in enumerate(zip(confs, routes, strict=True)):  # the same confidences again
        add(store, r, c, T0 + 100 + i, arm="control" if i % 2 else "treatment")
    report = Monitor(store, window=30, min_samples=10).check()
    assert report.psi == pytest.approx(0.0) and report.psi_n_baseline == 30 and report.psi_n_current == 30
    assert report.route_shares == pytest.approx({"automated": 0.5, "human_assisted": 1 / 3, "human_primary": 1 / 6})
    assert report.route_counts == {"automated": 15, "human_assisted": 10, "human_primary": 5}
    assert report.model_shares == {"small": 1.0}
    assert report.arms is not None and set(report.arms.arms) == {"control", "treatment"}
    assert report.arms.arms["control"].n == 30 and "automation_rate" in report.arms.tests
    assert report.warnings == [] and report.ece is None and report.ece_n == 0
    assert baseline_from_store(store, 30) == pytest.approx(confs)


def test_few_samples_report_but_do_not_warn(store: ReviewStore) -> None:
    for i in range(5):
        add(store, "automated", 0.95, T0 + i, correct=False)
    seen: list[MonitorWarning] = []
    report = Monitor(store, window=100, baseline=[0.1, 0.2, 0.3], on_warning=seen.append).check()
    assert report.ece == pytest.approx(0.95) and report.psi is not None and report.psi > 0.2
    assert seen == [] and report.warnings == []
    assert any("ECE from 5" in n for n in report.notes) and any("PSI from" in n for n in report.notes)


def test_thresholds_are_configurable_and_a_broken_callback_is_contained(
    store: ReviewStore, caplog: pytest.LogCaptureFixture
) -> None:
    for i in range(40):
        add(store, "automated", 0.85, T0 + i, correct=i % 10 != 0)  # accuracy 0.9 in bin 8: ECE 0.05
    assert Monitor(store, baseline=[0.85] * 40).report().warnings == []

    def pager(_: MonitorWarning) -> None:
        raise RuntimeError("pager down")

    with caplog.at_level(logging.WARNING):
        report = Monitor(store, baseline=[0.85] * 40, ece_warn=0.04, on_warning=pager).check()
    assert [w.kind for w in report.warnings] == ["ece"]
    assert "callback failed" in caplog.text
    shifted = Monitor(store, baseline=np.linspace(0.8, 0.9, 40), psi_warn=0.01, psi_alert=1e9).report()
    assert [(w.kind, w.level) for w in shifted.warnings] == [("psi", "warning")]


# ------------------------------------------------------------------------------------------ baselines


def test_load_baseline_formats(tmp_path: Path) -> None:
    (tmp_path / "list.json").write_text("[0.1, 0.5, 0.9]")
    assert load_baseline(tmp_path / "list.json").tolist() == [0.1, 0.5, 0.9]
    cal = {"format": "confidence-router/calibration", "version": 1, "model": "m", "method": "platt",
           "signal": "avg_logprob", "params": {"a": 1, "b": 0},
           "fitted": {"histogram": {"edges": [0.0, 0.5, 1.0], "counts": [2, 4]}}}
    (tmp_path / "cal.json").write_text(json.dumps(cal))
    values = load_baseline(tmp_path / "cal.json")
    assert values.tolist() == pytest.approx([0.125, 0.375, 0.5625, 0.6875, 0.8125, 0.9375])
    cal["fitted"] = {"histogram": {"edges": [0.0, 0.5, 1.0], "counts": [0.25, 0.75]}}  # proportions
    (tmp_path / "cal2.json").write_text(json.dumps(cal))
    values = load_baseline(tmp_path / "cal2.json")
    assert len(values) == 10_000 and np.mean(values < 0.5) == pytest.approx(0.25)
    (tmp_path / "obj.json").write_text(json.dumps({"confidences": [0.3, 0.4]}))
    assert load_baseline(tmp_path / "obj.json").tolist() == [0.3, 0.4]
    with gzip.open(tmp_path / "rows.jsonl.gz", "wt") as fh:
        fh.write('{"item_id": "a", "confidence": 0.7}\n\n{"item_id": "b"}\n{"confidence": 0.2}\n')
    assert load_baseline(tmp_path / "rows.jsonl.gz").tolist() == [0.7, 0.2]
    (tmp_path / "plain.txt").write_text("0.4\n0.6\n")
    assert load_baseline(tmp_path / "plain.txt").tolist() == [0.4, 0.6]


def test_histogram_round_trip_through_a_calibration_file(tmp_path: Path) -> None:
    from langchain_confidence_router.core.calibration import Calibration

    fitted_conf = np.random.default_rng(7).beta(5, 2, size=2000)
    hist = confidence_histogram(fitted_conf)
    assert sum(hist["counts"]) == 2000 and len(hist["edges"]) == 51
    cal = Calibration("platt", {"a": 1.0, "b": 0.0}, signal="avg_logprob", model="m", fitted={"histogram": hist})
    cal.save(tmp_path / "m.calibration.json")
    baseline = load_baseline(tmp_path / "m.calibration.json")
    assert len(baseline) == 2000
    # binned to 1/50, the baseline still looks like the data it came from, and unlike a shifted one
    assert compute_psi(baseline, fitted_conf) < 0.02
    assert compute_psi(baseline, fitted_conf * 0.7) > 0.2


@pytest.mark.parametrize(("name", "text", "match"), [
    ("nohist.json", '{"format": "confidence-router/calibration", "fitted": {"n": 3}}', "histogram"),
    ("empty.json", "[]", "no confidence values"),
    ("bad.txt", "zero\n", "invalid baseline"),
    ("badhist.json", '{"histogram": {"edges": [0, 1], "counts": [1, 2]}}', "edges"),
])
def test_load_baseline_errors_name_the_file(tmp_path: Path, name: str, text: str, match: str) -> None:
    (tmp_path / name).write_text(text)
    with pytest.raises(ConfigError, match=match) as err:
        load_baseline(tmp_path / name)
    assert name in str(err.value)
    with pytest.raises(ConfigError, match="cannot read"):
        load_baseline(tmp_path / "absent.json")


# ------------------------------------------------------------------------------------------ CLI


def test_monitor_cli(store: ReviewStore, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for i in range(40):  # 30 automated, half of them right; 10 human-assisted
        route = "automated" if i % 4 else "human_assisted"
        add(store, route, 0.75, T0 + i, correct=(i // 4) % 2 == 0, arm="control" if i % 2 else "treatment")
    db = store.engine.url.database
    base = tmp_path / "baseline.json"
    base.write_text(json.dumps(list(np.linspace(0.0, 1.0, 50))))

    assert cli_main(["monitor", "--store", str(db), "--baseline", str(base), "--window", "40", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["ece"] == pytest.approx(0.25) and data["ece_n"] == 30  # 0.75 claimed, 0.5 right
    assert data["route_shares"] == {"automated": 0.75, "human_assisted": 0.25}
    assert {w["kind"] for w in data["warnings"]} == {"ece", "psi"}
    assert set(data["arms"]["arms"]) == {"control", "treatment"}

    assert cli_main(["monitor", "--store", str(db), "--baseline", str(base), "--window", "40"]) == 0
    text = capsys.readouterr().out
    for needle in ("ECE", "PSI", "0.250", "human_assisted", "25.0%", "A/B arms", "z-test", "WARNING:", "ALERT:"):
        assert needle in text
    assert cli_main(["monitor", "--store", str(db), "--baseline", str(base), "--strict"]) == 3
    capsys.readouterr()
    assert cli_main(["monitor", "--store", str(db), "--baseline", str(tmp_path / "absent.json")]) == 1
    assert "cannot read baseline" in capsys.readouterr().err


def test_monitor_cli_plain_text_without_rich(
    store: ReviewStore, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import builtins

    real_import = builtins.__import__

    def no_rich(name: str, *args: object, **kwargs: object) -> object:
        if name.startswith("rich"):
            raise ImportError("no rich here")
        return real_import(name, *args, **kwargs)  # type: ignore[arg-type]

    add(store, "automated", 0.9, T0, correct=True)
    monkeypatch.setattr(builtins, "__import__", no_rich)
    assert cli_main(["monitor", "--store", str(store.engine.url.database)]) == 0
    out = capsys.readouterr().out
    assert "┃" not in out and "automated" in out and "no warnings" in out and "note:" in out


# ------------------------------------------------------------------------------------------ one ECE, two binnings

# by hand, 2 bins over conf [0.1, 0.2, 0.3, 0.9], correct [0, 1, 0, 1]:
# equal-width: [0, .5) holds 0.1, 0.2, 0.3 (mean 0.2, accuracy 1/3) -> 3/4 * (1/3 - 0.2) = 0.1;
#              [.5, 1] holds 0.9 (accuracy 1) -> 1/4 * 0.1 = 0.025; ECE 0.125
# equal-mass:  {0.1, 0.2} (mean 0.15, accuracy 0.5) -> 1/2 * 0.35; {0.3, 0.9} (mean 0.6, accuracy 0.5)
#              -> 1/2 * 0.1; ECE 0.225
HAND_CONF, HAND_HITS = [0.1, 0.2, 0.3, 0.9], [0, 1, 0, 1]


def test_both_binnings_hand_computed() -> None:
    from langchain_confidence_router.evaluation import metrics

    assert metrics.ece(HAND_CONF, HAND_HITS, 2, binning="equal_width") == pytest.approx(0.125)
    assert metrics.ece(HAND_CONF, HAND_HITS, 2, binning="equal_mass") == pytest.approx(0.225)
    assert compute_ece(HAND_CONF, HAND_HITS, 2) == pytest.approx(0.125)  # the monitor's default is equal-width
    assert compute_ece(HAND_CONF, HAND_HITS, 2, binning="equal_mass") == pytest.approx(0.225)
    mass = reliability_bins(HAND_CONF, HAND_HITS, 2, binning="equal_mass")
    assert [(r["low"], r["high"], r["n"]) for r in mass] == [(0.1, 0.2, 2), (0.3, 0.9, 2)]
    assert [r["confidence"] for r in mass] == pytest.approx([0.15, 0.6])
    assert metrics.confidence_histogram(HAND_CONF, 2)["counts"] == [3, 1]
    assert metrics.confidence_histogram(HAND_CONF, 2, binning="equal_mass") == {"edges": [0.1, 0.25, 0.9],
                                                                                 "counts": [2, 2]}
    assert confidence_histogram(HAND_CONF, 2) == metrics.confidence_histogram(HAND_CONF, 2, binning="equal_width")
    with pytest.raises(ValueError, match="equal_width"):
        metrics.ece(HAND_CONF, HAND_HITS, 2, binning="quantile")  # type: ignore[arg-type]


def test_monitor_and_report_ece_agree_given_the_same_binning(store: ReviewStore) -> None:
    from langchain_confidence_router.evaluation import metrics

    rng = np.random.default_rng(7)
    conf = rng.uniform(0.3, 1.0, 60)
    hits = rng.uniform(size=60) < conf ** 2  # overconfident, so ECE is well above zero
    for i, (c, h) in enumerate(zip(conf, hits, strict=True)):
        add(store, "automated", float(c), T0 + i, correct=bool(h))
    # the report and tune compute ECE with metrics' defaults (equal-mass, 15 bins)
    report_ece = metrics.reliability_bins(conf, hits).ece
    monitor_mass = Monitor(store, window=60, bins=metrics.DEFAULT_BINS, binning="equal_mass").report()
    assert monitor_mass.ece == pytest.approx(report_ece) and monitor_mass.ece_binning == "equal-mass, 15 bins"
    monitor_width = Monitor(store, window=60).report()
    assert monitor_width.ece_binning == "equal-width, 10 bins"
    assert monitor_width.ece == pytest.approx(metrics.ece(conf, hits, 10, binning="equal_width"))
    assert abs(monitor_width.ece - report_ece) > 1e-3  # the binnings really differ on this data
    assert monitor_width.to_dict()["ece_binning"] == "equal-width, 10 bins"

"""The recorded-run format: round trips, kept unknown fields, located errors, aligned matrices."""

from __future__ import annotations

import gzip
import json
import math
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from langchain_confidence_router.evaluation.runs import (
    RecordedRuns,
    RunFormatError,
    RunRecord,
    append_run,
    read_runs,
    write_runs,
)


def _full_record() -> RunRecord:
    return RunRecord.model_validate(
        {
            "item_id": "mmlu-17",
            "model": "llama3.1-8b",
            "correct": True,
            "cost_usd": 1.2e-05,
            "logprobs": [
                {
                    "token": "B",
                    "logprob": -0.01,
                    "bytes": [66],
                    "top_logprobs": [{"token": "B", "logprob": -0.01}, {"token": "C", "logprob": -4.7}],
                }
            ],
            "signals": {"avg_logprob": -0.01, "margin": 4.69},
            "latency_ms": 230,
            "tokens_in": 120,
            "tokens_out": 1,
            "category": "physics",
            "nested_extra": {"a": [1, 2, {"b": None}]},
            "null_extra": None,
        }
    )


def _records() -> list[RunRecord]:
    return [
        _full_record(),
        RunRecord(item_id="mmlu-18", model="llama3.1-8b", correct=False),
        RunRecord(item_id="mmlu-17", model="gpt-4o", correct=True, cost_usd=3e-4, signals={"verbal": 0.9}),
    ]


@pytest.mark.parametrize("name", ["runs.jsonl", "runs.jsonl.gz"])
def test_round_trip(tmp_path: Path, name: str) -> None:
    path = tmp_path / "sub" / name
    assert write_runs(_records(), path) == 3
    runs = read_runs(path)
    assert [r.to_json_dict() for r in runs] == [r.to_json_dict() for r in _records()]
    assert runs.records == _records()
    if name.endswith(".gz"):
        assert path.read_bytes()[:2] == b"\x1f\x8b"
    else:
        assert len(path.read_text().splitlines()) == 3


def test_unknown_fields_survive(tmp_path: Path) -> None:
    path = tmp_path / "runs.jsonl"
    write_runs([_full_record()], path)
    row = json.loads(path.read_text())
    assert row["category"] == "physics"
    assert row["nested_extra"] == {"a": [1, 2, {"b": None}]}
    assert "null_extra" in row and row["null_extra"] is None
    assert row["logprobs"][0]["bytes"] == [66]
    record = read_runs(path).records[0]
    assert record.model_extra == {"category": "physics", "nested_extra": {"a": [1, 2, {"b": None}]}, "null_extra": None}


def test_unset_optional_fields_are_not_written(tmp_path: Path) -> None:
    path = tmp_path / "runs.jsonl"
    write_runs([RunRecord(item_id="x", model="m", correct=False)], path)
    assert json.loads(path.read_text()) == {"item_id": "x", "model": "m", "correct": False}


def test_read_several_files(tmp_path: Path) -> None:
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl.gz"
    write_runs(_records()[:2], a)
    write_runs(_records()[2:], b)
    runs = read_runs([a, b])
    assert len(runs) == 3
    assert runs.models == ["llama3.1-8b", "gpt-4o"]


@pytest.mark.parametrize("name", ["bad.jsonl", "bad.jsonl.gz"])
def test_bad_json_names_file_and_line(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    good = json.dumps({"item_id": "1", "model": "m", "correct": True})
    text = f"{good}\n\n{good}\n{{not json\n"
    if name.endswith(".gz"):
        path.write_bytes(gzip.compress(text.encode()))
    else:
        path.write_text(text)
    with pytest.raises(RunFormatError, match=rf"{name}:4: invalid JSON") as info:
        read_runs(path)
    assert info.value.line == 4 and info.value.path == str(path)


def test_invalid_row_names_file_line_and_field(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text(
        json.dumps({"item_id": "1", "model": "m", "correct": True})
        + "\n"
        + json.dumps({"item_id": "2", "model": "m"})
        + "\n"
    )
    with pytest.raises(RunFormatError, match=r"bad\.jsonl:2: not a valid run record: correct: Field required"):
        read_runs(path)


def test_skip_mode_keeps_good_rows(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps({"item_id": "1", "model": "m", "correct": True}) + '\n[1, 2]\n{"item\n')
    runs = read_runs(path, on_error="skip")
    assert [r.item_id for r in runs] == ["1"]


@pytest.mark.parametrize("name", ["runs.jsonl", "runs.jsonl.gz"])
def test_append_run_resumable(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    for record in _records():
        append_run(record, path)
    assert read_runs(path).records == _records()


def test_append_after_truncated_line_starts_a_new_line(tmp_path: Path) -> None:
    path = tmp_path / "runs.jsonl"
    append_run(_records()[1], path)
    with open(path, "a") as fh:
        fh.write('{"item_id": "cut sh')  # a crash mid-write
    append_run(_records()[2], path)
    with pytest.raises(RunFormatError, match=r"runs\.jsonl:2:"):
        read_runs(path)
    assert read_runs(path, on_error="skip").records == [_records()[1], _records()[2]]


def test_signal_values_nan_is_missing_and_inf_is_rejected() -> None:
    r = RunRecord(item_id="1", model="m", correct=True, signals={"avg_logprob": math.nan, "margin": 1.0})
    assert r.signals == {"margin": 1.0}
    assert r.signal("avg_logprob") is None
    with pytest.raises(ValidationError, match="infinite"):
        RunRecord(item_id="1", model="m", correct=True, signals={"min_logprob": -math.inf})


def test_int_item_id_becomes_str() -> None:
    assert RunRecord.model_validate({"item_id": 7, "model": "m", "correct": False}).item_id == "7"


@settings(max_examples=60, deadline=None)
@given(
    signals=st.dictionaries(
        st.text(min_size=1, max_size=8), st.floats(allow_nan=False, allow_infinity=False), max_size=4
    ),
    extra=st.dictionaries(
        st.text(min_size=1, max_size=8).filter(lambda k: k not in RunRecord.model_fields),
        st.none() | st.booleans() | st.integers() | st.text(max_size=5),
        max_size=3,
    ),
    correct=st.booleans(),
)
def test_json_round_trip_property(signals: dict[str, float], extra: dict[str, object], correct: bool) -> None:
    record = RunRecord(item_id="i", model="m", correct=correct, signals=signals or None, **extra)
    again = RunRecord.model_validate(json.loads(json.dumps(record.to_json_dict())))
    assert again == record
    assert again.to_json_dict() == record.to_json_dict()


# ------------------------------------------------------------------ alignment


def _grid() -> RecordedRuns:
    rows = [
        RunRecord(item_id="q1", model="small", correct=True, cost_usd=1.0, signals={"avg_logprob": -0.1}),
        RunRecord(item_id="q2", model="small", correct=False, cost_usd=1.0, signals={"avg_logprob": -2.0}),
        RunRecord(item_id="q3", model="small", correct=False, cost_usd=1.0),
        RunRecord(item_id="q1", model="big", correct=True, cost_usd=10.0, signals={"avg_logprob": -0.05}),
        RunRecord(item_id="q3", model="big", correct=True),
        RunRecord(item_id="q4", model="big", correct=False, cost_usd=10.0),
    ]
    return RecordedRuns(rows)


def test_aligned_matrices_drop_items_not_answered_by_all() -> None:
    runs = _grid()
    assert runs.models == ["small", "big"]
    assert runs.items == ["q1", "q2", "q3", "q4"]
    assert runs.item_ids() == ["q1", "q3"]
    assert runs.n_dropped() == 2
    correct = runs.correct_matrix()
    assert correct.dtype == bool and correct.shape == (2, 2)
    assert correct.tolist() == [[True, True], [False, True]]
    cost = runs.cost_matrix(["big", "small"])
    assert cost[0].tolist() == [10.0, 1.0]
    assert np.isnan(cost[1, 0]) and cost[1, 1] == 1.0
    sig = runs.signal_matrix("avg_logprob")
    assert sig[0].tolist() == [-0.1, -0.05]
    assert np.isnan(sig[1]).all()
    assert np.isnan(runs.signal_matrix("never_recorded")).all()


def test_single_model_alignment_keeps_its_items() -> None:
    runs = _grid()
    assert runs.item_ids(["small"]) == ["q1", "q2", "q3"]
    assert runs.n_dropped(["small"]) == 1
    assert runs.correct_matrix(["small"]).shape == (3, 1)


def test_alignment_with_no_common_items_has_zero_rows() -> None:
    runs = RecordedRuns(
        [RunRecord(item_id="a", model="x", correct=True), RunRecord(item_id="b", model="y", correct=True)]
    )
    assert runs.correct_matrix().shape == (0, 2)
    assert runs.signal_matrix("margin").shape == (0, 2)
    assert runs.n_dropped() == 2


def test_unknown_model_and_bare_string_are_errors() -> None:
    runs = _grid()
    with pytest.raises(KeyError, match="nope"):
        runs.correct_matrix(["small", "nope"])
    with pytest.raises(TypeError):
        runs.correct_matrix("small")


def test_subset_for_splits() -> None:
    runs = _grid()
    train = runs.subset(["q1", "q4"])
    assert sorted(train.items) == ["q1", "q4"]
    assert len(train) == 3
    assert train.item_ids() == ["q1"]
    with pytest.raises(KeyError, match="q9"):
        runs.subset(["q9"])


def test_duplicate_rows_last_wins() -> None:
    runs = RecordedRuns(
        [RunRecord(item_id="q1", model="m", correct=False), RunRecord(item_id="q1", model="m", correct=True)]
    )
    assert len(runs) == 1 and runs.n_duplicates == 1
    assert runs.get("q1", "m").correct is True  # type: ignore[union-attr]
    assert ("q1", "m") in runs


def test_summary_reports_accuracy_and_coverage() -> None:
    s = _grid().summary()
    assert s["small"]["n"] == 3
    assert s["small"]["accuracy"] == pytest.approx(1 / 3)
    assert s["small"]["signal_coverage"] == {"avg_logprob": pytest.approx(2 / 3)}
    assert s["big"]["cost_coverage"] == pytest.approx(2 / 3)

"""The recorded long-answer set: its dataset is what the generator writes, and its runs are usable.

Early abort and hedging are measured on this set (benchmarks/bench_latency.py, docs/latency.md), so
it must hold long answers with per-token logprobs from both local models, graded by the dataset's
own grader. No model runs here: the recording is read from the committed files.
"""

from __future__ import annotations

import importlib.util
import re
from collections import Counter
from pathlib import Path
from statistics import median
from types import ModuleType

import pytest

from langchain_confidence_router.evaluation.collect import grade, load_items
from langchain_confidence_router.evaluation.runs import read_runs

REPO = Path(__file__).resolve().parents[1]
DATASET = REPO / "examples" / "datasets" / "long_answers.jsonl"
SCRIPT = REPO / "examples" / "datasets" / "make_long_answers.py"
RUNS = REPO / "examples" / "runs" / "long_answers.jsonl.gz"
MODELS = ("smollm2-135m", "gemma3-270m")


def _generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("make_long_answers", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _sentences(text: str) -> int:
    return len([s for s in re.split(r"(?<=[.!?])\s+", text.strip()) if re.search(r"\w", s)])


def test_the_generator_writes_the_committed_dataset_exactly() -> None:
    gen = _generator()
    assert gen.render(gen.build()) == DATASET.read_text(encoding="utf-8")
    assert gen.main(["--check", "--out", str(DATASET)]) == 0


def test_the_generator_check_flags_a_stale_file(tmp_path: Path) -> None:
    stale = tmp_path / "long_answers.jsonl"
    stale.write_text(DATASET.read_text(encoding="utf-8").replace("Paris", "Lyon", 1), encoding="utf-8")
    assert _generator().main(["--check", "--out", str(stale)]) == 1


def test_the_dataset_asks_for_explanations_graded_by_one_key_fact() -> None:
    items = load_items(DATASET)  # unique ids, known graders, references that compile
    assert len(items) >= 300
    assert all(i.grader == "regex" for i in items)
    assert all(re.search(r"sentences|explain", i.prompt, re.IGNORECASE) for i in items)
    # the key fact grades: a sentence stating it is right, the same sentence without it is wrong
    by_id = {i.id: i for i in items}
    assert grade(by_id["capital-01"], "The capital of France is Paris. It is known for the Eiffel Tower.")
    assert not grade(by_id["capital-01"], "The capital of France is Lyon. It is known for food.")
    assert grade(by_id["symbol-16"], "Iron's symbol is Fe, from the Latin ferrum. It is used in steel.")
    assert not grade(by_id["symbol-16"], "Iron's symbol is F. It is used in steel.")
    assert grade(by_id["count-01"], "A spider has eight legs. Insects have six.")
    assert not grade(by_id["count-04"], "An octagon has twenty-eight sides.")  # not "eight" after a hyphen


@pytest.fixture(scope="module")
def runs():  # type: ignore[no-untyped-def]
    if not RUNS.is_file():
        pytest.fail(f"the recorded run {RUNS} is missing: record it with the collect command in docs/latency.md")
    return read_runs(RUNS)


def test_the_recording_holds_both_models_on_at_least_300_items(runs) -> None:  # type: ignore[no-untyped-def]
    assert set(runs.models) == set(MODELS)
    ids = runs.item_ids(list(MODELS))
    assert len(ids) >= 300
    assert set(ids) <= {i.id for i in load_items(DATASET)}


def test_every_row_has_per_token_logprobs_usage_and_latency(runs) -> None:  # type: ignore[no-untyped-def]
    for r in runs:
        assert r.logprobs, (r.item_id, r.model)
        assert all(e.top_logprobs for e in r.logprobs), (r.item_id, r.model)
        assert r.latency_ms is not None and r.latency_ms > 0
        assert r.tokens_in and r.tokens_out == len(r.logprobs)
        assert r.cost_usd is not None


def test_the_recorded_grades_match_the_dataset_grader(runs) -> None:  # type: ignore[no-untyped-def]
    items = {i.id: i for i in load_items(DATASET)}
    for r in runs:
        assert r.correct == grade(items[r.item_id], (r.model_extra or {})["answer"]), (r.item_id, r.model)


def test_the_small_model_writes_multi_sentence_answers_and_is_sometimes_wrong(runs) -> None:  # type: ignore[no-untyped-def]
    small = runs.for_model("smollm2-135m")
    answers = [(r.model_extra or {})["answer"] for r in small]
    multi = sum(_sentences(a) >= 2 for a in answers)
    assert multi >= 0.4 * len(answers)  # 47% as recorded; one-liners are mostly capitals and symbols
    assert median(r.tokens_out for r in small) >= 20  # 33.5 as recorded (Gemma's few-shot answers: 4)
    for model in MODELS:  # mixed difficulty: neither model is always right or always wrong
        marks = Counter(r.correct for r in runs.for_model(model))
        assert marks[True] >= 30 and marks[False] >= 30, (model, marks)

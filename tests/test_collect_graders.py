"""The dataset graders of ``collect`` on hand-written answers (no model, no server).

Tiny local models answer in sentences ("The capital of France is Paris."), so each grader has to
find the answer inside the text without being fooled by the article "A" or an echoed question.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from langchain_confidence_router.core.errors import ConfigError
from langchain_confidence_router.evaluation.collect import (
    Endpoint,
    QuizItem,
    answer_signals,
    choice_letter,
    grade,
    grade_choice,
    grade_exact,
    grade_number,
    grade_regex,
    last_number,
    load_items,
    nominal_prices,
    parse_options,
    pending_pairs,
)
from langchain_confidence_router.evaluation.runs import RunRecord, append_run

QUIZ = Path(__file__).resolve().parents[1] / "examples" / "datasets" / "local_quiz.jsonl"


@pytest.mark.parametrize(
    ("answer", "reference", "expected"),
    [
        ("Paris", "Paris", True),
        (" paris.", "Paris", True),
        ("The capital of France is Paris.", "Paris", True),
        ("Brasília", "Brasilia", True),  # accents ignored
        ("The Blue sky", "blue", True),
        ("The capital of France is Lyon.", "Paris", False),
        ("Parisian food is great", "Paris", False),  # whole words only
        ("The chemical symbol for gold is Au.", "Au", True),
        ("Gold is a metal.", "Au", False),
        ("yes", "yes", True),
        ("Yes, the sun is a star.", "yes", True),
        ("No, the sun is not a star. Yes, really.", "yes", False),  # the first yes/no word decides
        ("No, Paris is not in Germany.", "no", True),
        ("Nobody knows", "no", False),
        ("", "Paris", False),
        ("Answer: Rome", "Rome", True),
    ],
)
def test_exact(answer: str, reference: str, expected: bool) -> None:
    assert grade_exact(answer, reference) is expected


def test_exact_ignores_references_buried_in_long_answers() -> None:
    rambling = " ".join(["word"] * 45) + " Paris"
    assert grade_exact(rambling, "Paris") is False
    assert grade_exact(" ".join(["word"] * 10) + " Paris", "Paris") is True


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("2 + 3 = 5", 5.0),
        ("12 * 12 = 144.", 144.0),
        ("345 + 678 = 1,023", 1023.0),
        ("The temperature is -4 degrees", -4.0),
        ("100-37", 37.0),  # a minus between numbers is subtraction, not a sign
        ("It is 2.5 kg", 2.5),
        ("Water freezes at 0°C.", 0.0),
        ("A spider has eight legs.", 8.0),
        ("The answer is 8. A spider has eight legs", 8.0),  # digits win over words
        ("no number here", None),
    ],
)
def test_last_number(text: str, value: float | None) -> None:
    assert last_number(text) == value


@pytest.mark.parametrize(
    ("answer", "reference", "expected"),
    [
        ("5", "5", True),
        ("2 + 3 = 5", "5", True),
        ("9 - 4 = 3", "5", False),
        ("1,023", "1023", True),
        ("The result is 42.0", "42", True),
        ("7 + 5 = 12\nThe answer is just the number itself.", "12", True),
        ("I cannot say", "12", False),
        ("Eight", "8", True),
    ],
)
def test_number(answer: str, reference: str, expected: bool) -> None:
    assert grade_number(answer, reference) is expected


def test_regex() -> None:
    assert grade_regex("The capital of Brazil is Brasília.", r"(?i)\bbras[ií]lia\b")
    assert grade_regex("It's H2O", r"(?i)\bH\s*(?:2|₂)\s*O\b")
    assert not grade_regex("Shakespearean", r"(?i)\bshakespeare\b")
    assert grade_regex("William Shakespeare", r"(?i)\bshakespeare\b")


FRUIT = "Which of these is a fruit? A) Carrot B) Apple C) Potato D) Onion. Answer with the letter only."
HEXAGON = "How many sides does a hexagon have? A) 5 B) 8 C) 6 D) 7. Answer with the letter only."
GAS = ("Which gas do plants absorb from the air? A) Oxygen B) Carbon dioxide C) Helium D) Nitrogen. "
       "Answer with the letter only.")


def test_options_are_parsed_from_the_prompt() -> None:
    assert parse_options(FRUIT) == {"A": "Carrot", "B": "Apple", "C": "Potato", "D": "Onion"}
    assert parse_options(GAS)["B"] == "Carbon dioxide"
    assert parse_options(GAS)["D"] == "Nitrogen"
    assert parse_options("What is 2 + 2?") == {}


@pytest.mark.parametrize(
    ("answer", "prompt", "letter"),
    [
        ("B", FRUIT, "B"),
        (" (B)", FRUIT, "B"),
        ("b.", FRUIT, "B"),  # a whole answer may be lower case
        ("I'd say b", FRUIT, None),  # inside a sentence only capitals count
        ("B) Apple", FRUIT, "B"),
        ("A) Venus", FRUIT, "A"),
        ("The answer is C.", FRUIT, "C"),
        ("I think it is B) Apple, clearly", FRUIT, "B"),
        ("An apple is a fruit.", FRUIT, "B"),  # the option's text
        ("A hexagon has 6 sides.", HEXAGON, "C"),  # "A" the article is not option A
        ("Plants absorb carbon dioxide.", GAS, "B"),
        ("Carrot or apple", FRUIT, None),  # two options named: ambiguous
        ("I don't know", FRUIT, None),
        ("D", "", "D"),  # no options in the prompt: letters A-D
    ],
)
def test_choice_letter(answer: str, prompt: str, letter: str | None) -> None:
    assert choice_letter(answer, prompt) == letter


def test_choice_grader_and_explicit_choices() -> None:
    assert grade_choice("B) Apple", "B", FRUIT)
    assert grade_choice("(b)", "(B)", FRUIT)
    assert grade_choice("Apple", "b", FRUIT)  # the reference letter is case-insensitive
    assert not grade_choice("A) Carrot", "B", FRUIT)
    assert grade_choice("It is the fish.", "C", "Pick one.", {"A": "dog", "B": "cat", "C": "fish"})


def test_grade_dispatches_on_the_item_grader() -> None:
    item = QuizItem("mc", FRUIT, "B", "choice")
    assert grade(item, "An apple.")
    assert grade(QuizItem("n", "2+3?", "5", "number"), "2 + 3 = 5")
    assert not grade(QuizItem("e", "Capital?", "Paris", "exact"), "Berlin")


def test_shipped_quiz_loads_and_every_reference_passes_its_own_grader() -> None:
    items = load_items(QUIZ)
    assert len(items) == 41
    for item in items:
        reference_answer = item.reference if item.grader != "regex" else {
            "fact-07": "Brasília", "fact-12": "Shakespeare", "fact-15": "H2O"}[item.id]
        assert grade(item, reference_answer), item.id


def test_bad_datasets_are_clear_errors(tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"id": "x", "prompt": "p", "reference": "r", "grader": "fuzzy"}) + "\n")
    with pytest.raises(ConfigError, match=r"bad.jsonl:1.*unknown grader 'fuzzy'"):
        load_items(bad)
    bad.write_text(json.dumps({"id": "x", "prompt": "p"}) + "\n")
    with pytest.raises(ConfigError, match="needs prompt and reference"):
        load_items(bad)
    bad.write_text(json.dumps({"id": "x", "prompt": "p", "reference": "(", "grader": "regex"}) + "\n")
    with pytest.raises(ConfigError, match="not a valid regular expression"):
        load_items(bad)


def test_resume_skips_recorded_pairs(tmp_path: Path) -> None:
    items = [QuizItem("a", "p", "r"), QuizItem("b", "p", "r")]
    endpoints = [Endpoint("m1", "http://127.0.0.1:1/v1"), Endpoint("m2", "http://127.0.0.1:1/v1")]
    out = tmp_path / "runs.jsonl"
    append_run(RunRecord(item_id="a", model="m1", correct=True), out)
    todo, skipped = pending_pairs(items, endpoints, out)
    assert skipped == 1
    assert [(i.id, e.name) for i, e in todo] == [("b", "m1"), ("a", "m2"), ("b", "m2")]


def test_signals_and_nominal_prices() -> None:
    entries = [{"token": " Paris", "logprob": -0.1, "top_logprobs": [{"token": " Paris", "logprob": -0.1},
                                                                      {"token": " Lyon", "logprob": -2.5}]},
               {"token": ".", "logprob": -0.01, "top_logprobs": [{"token": ".", "logprob": -0.01}]}]
    raw = answer_signals(entries)
    assert raw is not None
    assert raw["avg_logprob"] == pytest.approx(-0.1)  # the "stop" filter drops the full stop
    assert raw["margin"] == pytest.approx(2.4)
    assert answer_signals(None) is None
    prices = nominal_prices()
    assert set(prices) == {"smollm2-135m", "gemma3-270m"}
    small_in, small_out = prices["smollm2-135m"]
    large_in, large_out = prices["gemma3-270m"]
    assert small_in and large_in and small_out and large_out
    assert small_in < large_in and small_out < large_out
    assert Endpoint("m", "u", input_cost_per_token=1e-6, output_cost_per_token=2e-6).cost(10, 5) == pytest.approx(2e-5)

"""A/B arms: deterministic SHA-256 assignment, the z-test, and the per-arm comparison."""

from __future__ import annotations

import hashlib
import math
import subprocess
import sys
from pathlib import Path

import pytest

from langchain_confidence_router.core import human as core_human
from langchain_confidence_router.core.trace import AttemptTrace, RequestTrace
from langchain_confidence_router.human.abtest import assign_arm, compare_arms, two_proportion_ztest
from langchain_confidence_router.human.store import open_store

KEYS = [f"user-{i}" for i in range(10_000)]


def reference_arm(key: str, share: float, salt: str) -> str:
    """The documented rule, written out independently: first 8 digest bytes as a fraction of 2**64."""
    bucket = int(hashlib.sha256(f"{salt}:{key}".encode()).hexdigest()[:16], 16) / 2**64
    return "treatment" if bucket < share else "control"


def test_assignment_is_stable_and_follows_the_documented_hash() -> None:
    arms = [assign_arm(k, 0.3, "exp-1") for k in KEYS[:2000]]
    assert arms == [assign_arm(k, 0.3, "exp-1") for k in KEYS[:2000]]
    assert arms == [reference_arm(k, 0.3, "exp-1") for k in KEYS[:2000]]
    # the router's policy uses the same assignment, so offline analysis agrees with what ran
    assert arms == [core_human.assign_arm(k, 0.3, "exp-1") for k in KEYS[:2000]]


def test_assignment_is_the_same_in_another_process() -> None:
    keys = KEYS[:300]
    code = ("import sys; from langchain_confidence_router.human.abtest import assign_arm; "
            "print(''.join('t' if assign_arm(k, 0.5, 'exp-2') == 'treatment' else 'c' "
            "for k in sys.stdin.read().split()))")
    out = subprocess.run([sys.executable, "-c", code], input="\n".join(keys), capture_output=True, text=True,
                         check=True, timeout=60, env={"PYTHONHASHSEED": "12345", "PATH": ""},
                         cwd=Path(__file__).resolve().parents[1]).stdout.strip()
    assert out == "".join("t" if assign_arm(k, 0.5, "exp-2") == "treatment" else "c" for k in keys)


@pytest.mark.parametrize("share", [0.05, 0.3, 0.5, 0.9])
def test_treatment_share_is_close_to_target(share: float) -> None:
    observed = sum(assign_arm(k, share, "exp-3") == "treatment" for k in KEYS) / len(KEYS)
    assert abs(observed - share) < 0.015  # about 3 binomial standard deviations at 10k keys


def test_edge_shares_salt_and_argument_checks() -> None:
    assert {assign_arm(k, 0.0, "s") for k in KEYS[:500]} == {"control"}
    assert {assign_arm(k, 1.0, "s") for k in KEYS[:500]} == {"treatment"}
    a = [assign_arm(k, 0.5, "salt-a") for k in KEYS[:500]]
    b = [assign_arm(k, 0.5, "salt-b") for k in KEYS[:500]]
    assert 150 < sum(x != y for x, y in zip(a, b, strict=True)) < 350  # a new salt reshuffles about half
    with pytest.raises(ValueError, match=r"0\.\.1"):
        assign_arm("k", 1.5, "s")
    with pytest.raises(ValueError, match=r"0\.\.1"):
        assign_arm("k", math.nan, "s")
    with pytest.raises(TypeError):
        assign_arm(42, 0.5, "s")  # type: ignore[arg-type]


def test_two_proportion_ztest_hand_computed() -> None:
    # 50/100 vs 65/100: pooled 0.575, se = sqrt(0.575 * 0.425 * 0.02) = 0.0699106
    t = two_proportion_ztest(50, 100, 65, 100)
    assert t.diff == pytest.approx(0.15)
    assert t.z == pytest.approx(0.15 / math.sqrt(0.575 * 0.425 * 0.02))
    assert t.z == pytest.approx(2.1456, abs=1e-4)
    assert t.p_value == pytest.approx(0.03190, abs=1e-4)  # two-sided normal tail at z = 2.1456
    assert two_proportion_ztest(65, 100, 50, 100).z == pytest.approx(-t.z)
    same = two_proportion_ztest(10, 10, 20, 20)
    assert same.z == 0.0 and same.p_value == 1.0
    assert math.isnan(two_proportion_ztest(0, 0, 1, 2).p_value)


def _trace(i: int, arm: str | None, route: str, cost: float) -> RequestTrace:
    t = RequestTrace(route=route, arm=arm, confidence=0.5, final_model="m", started_at=1e9 + i, outcome="accepted")
    t.add_attempt(AttemptTrace(tier=0, model="m", decision="accept", confidence=0.5, cost_usd=cost))
    return t


def test_compare_arms_on_known_counts(tmp_path: Path) -> None:
    with open_store(tmp_path / "ab.db") as store:
        # control: 100 requests, 60 automated, 40 labelled of which 30 right; cost 0.01 each
        # treatment: 100 requests, 80 automated, 40 labelled of which 20 right; cost 0.02 each
        plan = {"control": (60, 30, 0.01), "treatment": (80, 20, 0.02)}
        i = 0
        for arm, (n_auto, n_right, cost) in plan.items():
            for j in range(100):
                t = _trace(i, arm, "automated" if j < n_auto else "human_assisted", cost)
                store.record(t)
                if j % 5 in (0, 1):  # 40 labelled, spread over both routes
                    store.label(t.request_id, (j // 5) * 2 + j % 5 < n_right)
                i += 1
        store.record(_trace(i, None, "automated", 1.0))  # not in the experiment: left out
        result = compare_arms(store)
        rows = store.decisions()

    c, t = result.arms["control"], result.arms["treatment"]
    assert (c.n, c.n_automated, c.n_labelled, c.n_correct) == (100, 60, 40, 30)
    assert (t.n, t.n_automated, t.n_labelled, t.n_correct) == (100, 80, 40, 20)
    assert c.accuracy == pytest.approx(0.75) and t.accuracy == pytest.approx(0.5)
    assert c.automation_rate == pytest.approx(0.6) and t.automation_rate == pytest.approx(0.8)
    assert c.mean_cost_usd == pytest.approx(0.01) and t.mean_cost_usd == pytest.approx(0.02)
    assert c.n_automated_labelled == 24 and t.n_automated_labelled == 32
    assert (result.control, result.treatment) == ("control", "treatment")
    assert result.tests["accuracy"] == two_proportion_ztest(30, 40, 20, 40)
    assert result.tests["accuracy"].diff == pytest.approx(-0.25)
    # automation 0.6 vs 0.8: pooled 0.7, se = sqrt(0.7 * 0.3 * 0.02)
    auto = result.tests["automation_rate"]
    assert auto.z == pytest.approx(0.2 / math.sqrt(0.7 * 0.3 * 0.02)) and auto.p_value < 0.01
    assert result.tests["automated_accuracy"].n1 == 24
    # the same comparison from rows (no SQL aggregation) agrees
    from_rows = compare_arms(rows)
    assert from_rows.arms == result.arms and from_rows.tests == result.tests
    assert compare_arms(rows, since=1e9 + 100).arms.keys() == {"treatment"}
    assert result.to_dict()["tests"]["accuracy"]["p_value"] == pytest.approx(result.tests["accuracy"].p_value)


def test_compare_arms_without_a_pair_has_no_tests() -> None:
    assert compare_arms([]).arms == {}
    one = compare_arms([])
    assert one.tests == {} and one.control is None
    rows_store_free = compare_arms(
        [type("R", (), {"arm": "a", "route": "automated", "correct": True, "cost_usd": 1.0, "ts": 0.0})(),
         type("R", (), {"arm": "b", "route": "automated", "correct": False, "cost_usd": None, "ts": 0.0})()])
    assert (rows_store_free.control, rows_store_free.treatment) == ("a", "b")  # any two arms, sorted
    assert rows_store_free.arms["b"].mean_cost_usd is None

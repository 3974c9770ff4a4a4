"""Hedging replayed offline from recorded latencies (evaluation/hedging.py): the live drivers' rules on a
timeline, and no change at all without ``hedge_after_ms``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from langchain_confidence_router.core import parse_config
from langchain_confidence_router.core.errors import ConfigError
from langchain_confidence_router.evaluation.hedging import latency_matrix, replay_hedged, replay_hedged_arrays
from langchain_confidence_router.evaluation.matrix import build_matrix, load_runs
from langchain_confidence_router.evaluation.replay import replay_config

RUNS = Path(__file__).resolve().parents[1] / "examples" / "runs" / "local_quiz.jsonl"
SURE, UNSURE = 0.9, 0.2


def two_tiers(conf: tuple[float, float], latency: tuple[float, float], after: float | None = 100.0,
              **kwargs: object) -> tuple[int, float, float, int, bool]:
    out = replay_hedged_arrays(np.array([conf]), [0.5, 0.5], np.array([[True, False]]), np.array([[1.0, 10.0]]),
                               np.array([latency]), [after, None], **kwargs)  # type: ignore[arg-type]
    return int(out.served[0]), float(out.latency_ms[0]), float(out.cost[0]), int(out.calls[0]), bool(out.hedged[0])


def test_answered_before_hedge_after_ms_nothing_else_is_called() -> None:
    assert two_tiers((SURE, SURE), (80.0, 50.0)) == (0, 80.0, 1.0, 1, False)
    assert two_tiers((UNSURE, SURE), (80.0, 50.0)) == (1, 130.0, 11.0, 2, False)  # sequential escalation


def test_confident_earlier_answer_first_wins_and_the_hedge_is_billed() -> None:
    assert two_tiers((SURE, SURE), (300.0, 500.0)) == (0, 300.0, 11.0, 2, True)


def test_rejected_earlier_answer_lets_the_running_hedge_win_from_its_own_start() -> None:
    assert two_tiers((UNSURE, SURE), (300.0, 500.0)) == (1, 600.0, 11.0, 2, True)  # 100 + 500, not 300 + 500


def test_acceptable_hedge_that_answers_first_wins_even_over_an_acceptable_earlier_tier() -> None:
    assert two_tiers((SURE, SURE), (900.0, 200.0)) == (1, 300.0, 11.0, 2, True)


def test_unacceptable_hedge_that_answers_first_is_held() -> None:
    assert two_tiers((SURE, UNSURE), (900.0, 200.0)) == (0, 900.0, 11.0, 2, True)
    # both rejected: the best answer (final_fallback) once the earlier one is judged
    assert two_tiers((0.3, 0.4), (900.0, 200.0)) == (1, 900.0, 11.0, 2, True)


def test_limits_stop_the_hedge() -> None:
    assert two_tiers((UNSURE, SURE), (300.0, 500.0), max_attempts=1) == (0, 300.0, 1.0, 1, False)
    # the earlier answer spends the budget: the running hedge is cancelled, its cost still counted
    assert two_tiers((UNSURE, SURE), (300.0, 500.0), cost_budget_usd=1.0) == (0, 300.0, 11.0, 2, True)


def quiz_config(after: float | None = None) -> object:
    first = {"name": "smollm2-135m"} if after is None else {"name": "smollm2-135m", "hedge_after_ms": after}
    return parse_config({"algorithm": {"confidence": {"escalation_order": "declared", "threshold": 0.6}},
                         "models": [first, {"name": "gemma3-270m"}]})


def test_without_hedging_it_is_replay_with_summed_latencies() -> None:
    runs = load_runs(RUNS)
    matrix = build_matrix(runs, ["smollm2-135m", "gemma3-270m"])
    config = quiz_config()
    plain = replay_config(config, matrix)
    hedged = replay_hedged(config, runs, matrix)
    assert np.array_equal(hedged.served, plain.served) and np.array_equal(hedged.calls, plain.calls)
    assert np.allclose(hedged.cost, plain.cost) and not hedged.hedged.any()
    latency = latency_matrix(runs, matrix)
    expected = np.where(plain.calls == 1, latency[:, 0], latency.sum(axis=1))
    assert np.allclose(hedged.latency_ms, expected)
    assert 0 < plain.calls.sum() - len(plain.calls) < len(plain.calls)  # the quiz has both outcomes


def test_hedging_on_the_recorded_quiz_is_never_slower_and_costs_more() -> None:
    runs = load_runs(RUNS)
    matrix = build_matrix(runs, ["smollm2-135m", "gemma3-270m"])
    plain = replay_hedged(quiz_config(), runs, matrix)
    median = float(np.median(latency_matrix(runs, matrix)[:, 0]))
    hedged = replay_hedged(quiz_config(median), runs, matrix)
    assert hedged.hedged.any()
    assert np.all(hedged.latency_ms <= plain.latency_ms + 1e-9)
    assert hedged.percentile(50, plain.escalated) < plain.percentile(50, plain.escalated)
    assert hedged.cost.sum() > plain.cost.sum()
    with pytest.raises(ConfigError, match="one value per tier"):
        replay_hedged(quiz_config(), runs, matrix, [100.0])


def test_a_hedge_that_becomes_the_current_attempt_hedges_from_its_own_start() -> None:
    conf = np.array([[UNSURE, UNSURE, SURE]])
    latency = np.array([[300.0, 1000.0, 100.0]])
    out = replay_hedged_arrays(conf, [0.5] * 3, np.ones((1, 3), dtype=bool), np.ones((1, 3)), latency,
                               [100.0, 250.0, None])
    # tier 1 starts at 100 (a hedge), becomes current at 300 when tier 0 is rejected; its own 250 ms are up
    # at 350, so tier 2 starts then and answers at 450, acceptable, before tier 1 (1100): it wins
    assert (int(out.served[0]), float(out.latency_ms[0]), int(out.calls[0])) == (2, 450.0, 3)


def lp(value: float, gap: float) -> dict:
    return {"content": [{"token": f"t{i}", "logprob": value, "top_logprobs": [
        {"token": f"t{i}", "logprob": value}, {"token": "x", "logprob": value - gap}]} for i in range(3)]}


@pytest.mark.parametrize(("sure", "latency"), [
    ((True, True), (60.0, 60.0)), ((True, True), (300.0, 500.0)), ((False, True), (300.0, 500.0)),
    ((True, True), (700.0, 150.0)), ((True, False), (700.0, 150.0)),
])
def test_the_replay_agrees_with_the_live_driver(sure: tuple[bool, bool], latency: tuple[float, float]) -> None:
    """The same two tiers driven live (core/hedge.py, calls that sleep their latency) and replayed."""
    import asyncio

    from langchain_confidence_router.core import Cascade, TierCall, TierResult, arun_policy

    answers = {name: TierResult(text=name, logprobs=lp(-0.01, 5.0) if ok else lp(-1.5, 0.2), tokens_in=1,
                                tokens_out=3) for name, ok in zip(("s", "l"), sure, strict=True)}
    delays = dict(zip(("s", "l"), latency, strict=True))

    async def call(c: TierCall) -> TierResult:
        await asyncio.sleep(delays[c.tier.name] / 1000.0)
        return answers[c.tier.name]

    cas = Cascade.from_config({"algorithm": {"confidence": {"escalation_order": "declared", "threshold": 0.5}},
                               "models": [{"name": "s", "hedge_after_ms": 100.0}, {"name": "l"}]})
    live = asyncio.run(arun_policy(cas.policy(), call)).trace
    conf = [[0.9 if ok else 0.2 for ok in sure]]  # SURE and UNSURE score about 0.9 and 0.3
    replayed = replay_hedged_arrays(np.array(conf), [0.5, 0.5], np.ones((1, 2), dtype=bool), np.ones((1, 2)),
                                    np.array([latency]), [100.0, None])
    assert live.final_tier == int(replayed.served[0])
    assert len(live.attempts) == int(replayed.calls[0])
    assert any(a.hedged for a in live.attempts) == bool(replayed.hedged[0])
    assert live.total_latency_ms == pytest.approx(float(replayed.latency_ms[0]), abs=80.0)


# ---------------------------------------------------------------------------- early abort inside hedges

def cut_two_tiers(latency: tuple[float, float], cut_ms: float, conf1: float = SURE, after: float | None = 100.0,
                  **kwargs: object) -> tuple[int, float, float, int, bool, bool]:
    """Tier 0 (unsure) cut by early abort ``cut_ms`` after its start, at a cost of 0.5 instead of 1."""
    out = replay_hedged_arrays(np.array([[UNSURE, conf1]]), [0.5, 0.5], np.array([[True, False]]),
                               np.array([[1.0, 10.0]]), np.array([latency]), [after, None],
                               abort_at=np.array([[4, 0]]), abort_ms=np.array([[cut_ms, latency[1]]]),
                               abort_cost=np.array([[0.5, np.nan]]), **kwargs)  # type: ignore[arg-type]
    assert out.aborted is not None
    return (int(out.served[0]), float(out.latency_ms[0]), float(out.cost[0]), int(out.calls[0]),
            bool(out.hedged[0]), bool(out.aborted[0, 0]))


def test_a_cut_before_the_hedge_is_due_escalates_at_once() -> None:
    assert cut_two_tiers((900.0, 500.0), 50.0) == (1, 550.0, 10.5, 2, False, True)


def test_a_cut_after_the_hedge_started_adopts_the_running_hedge() -> None:
    assert cut_two_tiers((900.0, 500.0), 300.0) == (1, 600.0, 10.5, 2, True, True)  # 100 + 500


def test_a_cut_answer_is_never_the_fallback() -> None:
    # tier 1 rejected too: best would pick tier 0's 0.2 over 0.1 if it were an answer; it is not
    assert cut_two_tiers((900.0, 500.0), 300.0, conf1=0.1)[0] == 1
    # the last call is never cut: with max_attempts 1 tier 0 is final, answers whole, and is the fallback
    assert cut_two_tiers((900.0, 500.0), 300.0, max_attempts=1) == (0, 900.0, 1.0, 1, False, False)


def test_without_hedging_the_cuts_are_those_of_the_vectorised_replay() -> None:
    """replay_hedged with early-abort rules and no hedge_after_ms: the answers, calls, costs and cuts of
    replay_tiers with the same abort table, and the latency request_totals estimates."""
    from langchain_confidence_router.core import Cascade
    from langchain_confidence_router.evaluation.early_abort import abort_table, request_totals
    from langchain_confidence_router.evaluation.replay import replay_tiers
    from langchain_confidence_router.evaluation.synthetic import make_runs

    runs = make_runs(160, seed=5)
    names = ["tiny", "medium", "large"]
    cfg = parse_config({"algorithm": {"confidence": {"confidence_method": "min_logprob", "threshold": 0.6,
                                                     "escalation_order": "declared", "token_filter": "all"}},
                        "models": [{"name": "tiny", "early_abort": {"after_tokens": 2, "below": 0.6}},
                                   {"name": "medium", "early_abort": {"after_tokens": 3, "below": 0.5}},
                                   {"name": "large"}]})
    cascade = Cascade.from_config(cfg)
    matrix = build_matrix(runs, names, cfg)
    table = abort_table(cascade.tiers, cfg.confidence, runs, matrix)
    plain = replay_tiers(cascade.tiers, cfg.confidence, matrix, table)
    hedged = replay_hedged(cfg, runs, matrix)
    assert plain.aborted is not None and plain.aborted.any() and hedged.aborted is not None
    assert np.array_equal(hedged.served, plain.served) and np.array_equal(hedged.calls, plain.calls)
    assert np.array_equal(hedged.aborted, plain.aborted) and np.allclose(hedged.cost, plain.cost)
    _, latency = request_totals(plain.calls, table, plain.aborted)
    assert np.allclose(hedged.latency_ms, latency)
    # hedging the first tier: every cut still happens, and no request is slower
    with_hedge = replay_hedged(cfg, runs, matrix, [float(np.median(latency_matrix(runs, matrix)[:, 0])) / 2,
                                                   None, None])
    assert with_hedge.hedged.any() and with_hedge.aborted is not None
    assert np.all(with_hedge.latency_ms <= hedged.latency_ms + 1e-9)


def stream_lp(value: float, n: int) -> list[dict]:
    return [{"token": f"t{i}", "logprob": value, "top_logprobs": [{"token": f"t{i}", "logprob": value}]}
            for i in range(n)]


@pytest.mark.parametrize(("sure", "first_ms", "after"), [
    (False, 0.0, 400.0),  # cut at about 50 ms, long before the hedge is due: escalates at once
    (False, 400.0, 100.0),  # cut at about 450 ms, after the hedge started at 100 ms: the hedge is adopted
    (True, 0.0, 100.0),  # confident, never cut, whole at about 300 ms: wins over the hedge (600 ms)
])
def test_the_replay_agrees_with_the_live_driver_on_a_gated_tier(sure: bool, first_ms: float, after: float) -> None:
    """A gated first tier streaming 30 tokens 10 ms apart (after ``first_ms``), driven live by the hedging
    drive loop and replayed with the cut it makes."""
    import asyncio

    from langchain_confidence_router.core import Cascade, TierCall, TierResult
    from langchain_confidence_router.core import drive as core_drive

    n_tokens, token_ms, large_ms, rule_at = 30, 10.0, 500.0, 5
    entries = stream_lp(-0.01 if sure else -3.0, n_tokens)

    class Gated:
        def __init__(self) -> None:
            self.received: list[dict] = []
            self.tool_call = False

        async def open(self) -> Any:
            async def chunks() -> Any:
                await asyncio.sleep(first_ms / 1000.0)
                for entry in entries:
                    await asyncio.sleep(token_ms / 1000.0)
                    yield entry
            return chunks()

        def add(self, chunk: dict) -> list[dict]:
            self.received.append(chunk)
            return [chunk]

        def result(self) -> TierResult:
            return TierResult(text="s", logprobs={"content": self.received}, tokens_in=1,
                              tokens_out=len(self.received))

    class IO(core_drive.AsyncAttemptIO):
        async def call(self, call: TierCall) -> TierResult:
            await asyncio.sleep(large_ms / 1000.0)
            return TierResult(text="l", logprobs={"content": stream_lp(-0.01, 3)}, tokens_in=1, tokens_out=3)

        def gated(self, call: TierCall) -> Gated:
            return Gated()

    cas = Cascade.from_config({"algorithm": {"confidence": {"confidence_method": "min_logprob", "threshold": 0.5,
                                                            "escalation_order": "declared"}},
                               "models": [{"name": "s", "hedge_after_ms": after,
                                           "early_abort": {"after_tokens": rule_at, "below": 0.5}},
                                          {"name": "l"}]})
    live = asyncio.run(core_drive.arun(cas.policy(), IO())).trace
    whole_ms = first_ms + n_tokens * token_ms
    cut_ms = first_ms + rule_at * token_ms
    replayed = replay_hedged_arrays(
        np.array([[0.99 if sure else 0.05, 0.99]]), [0.5, 0.5], np.ones((1, 2), dtype=bool), np.ones((1, 2)),
        np.array([[whole_ms, large_ms]]), [after, None], abort_at=np.array([[0 if sure else rule_at, 0]]),
        abort_ms=np.array([[cut_ms, large_ms]]), abort_cost=np.array([[0.5, np.nan]]))
    assert replayed.aborted is not None
    assert live.final_tier == int(replayed.served[0])
    assert len(live.attempts) == int(replayed.calls[0])
    assert any(a.hedged for a in live.attempts) == bool(replayed.hedged[0])
    assert (live.attempts[0].aborted_at_token is not None) == bool(replayed.aborted[0, 0])
    if not sure:
        assert live.attempts[0].aborted_at_token == rule_at
    assert live.total_latency_ms == pytest.approx(float(replayed.latency_ms[0]), abs=150.0)

"""Clarify-once across replicas: the claim protocol in the policy and drive loop, and the shared states.

The in-process tests use plain call functions; the cross-process ones run two real Python processes,
each with a LangChain ``ConfidenceRouter`` on a ``FakeOpenAIServer``, against one SQLite file, one
PostgreSQL server and one Redis server started here (each skips with its reason when unavailable).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from support.postgres import PostgresUnavailable, postgres_server
from support.proxy import free_port

from langchain_confidence_router.core import Cascade, TierCall, TierResult, parse_config
from langchain_confidence_router.core.engine import clarify_state_for
from langchain_confidence_router.core.human import ClarifyState
from langchain_confidence_router.human.conversations import StoreClarifyState, redis_url_from_env
from langchain_confidence_router.human.store import open_store
from langchain_confidence_router.testing import FakeOpenAIServer, ModelBehaviour

ROOT = Path(__file__).resolve().parents[1]


def conf(c: float) -> dict:
    """Logprobs whose avg_logprob confidence is ``c``."""
    lp = 3 * c - 3
    return {"content": [{"token": f"w{i}", "logprob": lp, "top_logprobs": [{"token": f"w{i}", "logprob": lp}]}
                        for i in range(4)]}


class Counting(ClarifyState):
    """A state that grants up to its limit and remembers every claim (and the thread it ran in)."""

    name = "counting"

    def __init__(self, *, blocking: bool = False, delay_s: float = 0.0, fail: BaseException | None = None,
                 timeout_s: float | None = None) -> None:
        self.blocking, self.delay_s, self.fail, self.timeout_s = blocking, delay_s, fail, timeout_s
        self.claims: list[tuple[str, int, int]] = []  # key, limit, thread id
        self.counts: dict[str, int] = {}

    def claim(self, key: str, limit: int) -> bool:
        self.claims.append((key, limit, threading.get_ident()))
        time.sleep(self.delay_s)
        if self.fail is not None:
            raise self.fail
        if self.counts.get(key, 0) >= limit:
            return False
        self.counts[key] = self.counts.get(key, 0) + 1
        return True


def cascade(state: ClarifyState) -> Cascade:
    cfg = {"algorithm": {"confidence": {"escalation_order": "declared", "confidence_method": "avg_logprob",
                                        "threshold": 0.7}},
           "models": [{"name": "small"}, {"name": "large"}],
           "human": {"thresholds": {"automate": 0.8, "assist": 0.5},
                     "clarify": {"enabled": True, "band": [0.4, 0.6], "model": "large"}}}
    c = Cascade.from_config(parse_config(cfg))
    c.clarify_state = state
    return c


def answer(small: float) -> Callable[[TierCall], TierResult]:
    def call(tc: TierCall) -> TierResult:
        if tc.purpose == "clarify":
            return TierResult(text="Which account do you mean?")
        return TierResult(text=f"answer from {tc.tier.name}", logprobs=conf(small if tc.tier.name == "small" else 0.95))

    return call


async def aanswer_of(small: float) -> Callable[[TierCall], Awaitable[TierResult]]:
    sync = answer(small)

    async def call(tc: TierCall) -> TierResult:
        return sync(tc)

    return call


# ------------------------------------------------------------------------------------------ the claim protocol


def test_the_count_is_claimed_only_inside_the_band_and_once() -> None:
    state = Counting()
    c = cascade(state)
    for small in (0.2, 0.9):  # escalated below the band; accepted above the threshold: no claim either way
        done = c.run(answer(small), request_text="close it", conversation="conv-1")
        assert done.trace.route == "automated"
    assert state.claims == []
    first = c.run(answer(0.5), request_text="close it", conversation="conv-1")
    assert first.trace.route == "clarify" and [k for k, _, _ in state.claims] == ["conv-1"]
    second = c.run(answer(0.5), request_text="close it", conversation="conv-1")
    assert second.trace.route == "automated" and second.trace.final_model == "large"
    assert any("already had 1 clarifying question" in r for r in second.trace.reasons)
    assert c.run(answer(0.5), request_text="x", conversation="conv-2").trace.route == "clarify"


def test_an_explicit_count_needs_no_claim() -> None:
    state = Counting()
    c = cascade(state)
    assert c.run(answer(0.5), request_text="x", conversation="c", clarify_count=0).trace.route == "clarify"
    assert c.run(answer(0.5), request_text="x", conversation="c", clarify_count=1).trace.route == "automated"
    assert state.claims == []


def test_an_unreachable_state_escalates_and_says_so() -> None:
    state = Counting(fail=ConnectionError("connection refused"))
    done = cascade(state).run(answer(0.5), request_text="close it", conversation="conv-1")
    assert done.trace.route == "automated" and done.trace.final_model == "large"
    assert [a.purpose for a in done.trace.attempts] == ["answer", "answer"]  # no question was written
    assert any("clarify state (counting) unreachable" in r and "connection refused" in r for r in done.trace.reasons)


async def test_async_claims_run_in_a_thread_bounded_by_the_timeout() -> None:
    loop_thread = threading.get_ident()
    ticks = 0

    async def heartbeat() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    beat = asyncio.create_task(heartbeat())
    try:
        quick = Counting(blocking=True, delay_s=0.2, timeout_s=2.0)
        done = await cascade(quick).arun(await aanswer_of(0.5), request_text="x", conversation="a")
        assert done.trace.route == "clarify"
        assert quick.claims[0][2] != loop_thread  # the round trip ran off the event loop...
        assert ticks >= 5  # ...which kept serving other tasks meanwhile
        slow = Counting(blocking=True, delay_s=1.5, timeout_s=0.1)
        t0 = time.perf_counter()
        done = await cascade(slow).arun(await aanswer_of(0.5), request_text="x", conversation="b")
        assert time.perf_counter() - t0 < 1.0  # bounded by timeout_s, not by the slow state
        assert done.trace.route == "automated"
        assert any("within 0.1 s (human.clarify.timeout_s)" in r for r in done.trace.reasons)
    finally:
        beat.cancel()


# ------------------------------------------------------------------------------------------ the shared states


def test_store_claims_are_atomic_and_expire(tmp_path: Path) -> None:
    store = open_store(tmp_path / "state.db")
    state = StoreClarifyState(store, ttl_s=60, timeout_s=1)
    results: list[bool] = []

    def claimer() -> None:
        for _ in range(10):
            results.append(state.claim("conv", 3))

    threads = [threading.Thread(target=claimer) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results.count(True) == 3 and len(results) == 60
    assert state.claim("other", 3) is True
    assert store.claim_clarify("conv", 3, ttl_s=60, now=time.time() + 120) is True  # forgotten after ttl_s
    assert state.claim("x" * 400, 1) is True and state.claim("x" * 400, 1) is False  # long keys are digested


def test_configuration_errors_name_the_field(tmp_path: Path) -> None:
    base = {"models": [{"name": "small"}], "human": {"clarify": {"enabled": True, "state": "store"}}}
    with pytest.raises(ValueError, match=r"human.clarify.url or human.store"):
        clarify_state_for(parse_config(base))
    base["human"]["store"] = str(tmp_path / "s.db")
    assert isinstance(clarify_state_for(parse_config(base)), StoreClarifyState)
    assert redis_url_from_env({}) is None
    with pytest.raises(ValueError, match=r"human.clarify.url .*REDIS_URL"):
        if os.environ.get("REDIS_URL") or os.environ.get("REDIS_HOST"):
            pytest.skip("REDIS_URL/REDIS_HOST set in this environment")
        clarify_state_for(parse_config({"models": [{"name": "small"}],
                                        "human": {"clarify": {"enabled": True, "state": "redis"}}}))
    assert redis_url_from_env({"REDIS_HOST": "cache", "REDIS_PORT": "6380", "REDIS_PASSWORD": "p@ss"}) == \
        "redis://:p%40ss@cache:6380/0"
    assert redis_url_from_env({"REDIS_URL": "redis://r:1/2", "REDIS_HOST": "x"}) == "redis://r:1/2"


# ------------------------------------------------------------------------------------------ two processes

WORKER = """
import asyncio, json, sys
from concurrent.futures import ThreadPoolExecutor
from langchain_core.messages import HumanMessage
from langchain_openai import ChatOpenAI
from langchain_confidence_router import ConfidenceRouter

spec = json.loads(sys.argv[1])
tiers = {n: ChatOpenAI(model=n, base_url=spec["base_url"], api_key="test", max_retries=0) for n in ("small", "large")}
config = {"algorithm": {"confidence": {"escalation_order": "declared", "confidence_method": "avg_logprob",
                                       "threshold": 0.8}},
          "human": {"thresholds": {"automate": 0.8, "assist": 0.3},
                    "clarify": {"enabled": True, "band": [0.6, 0.8], "model": "large", **spec["clarify"]}}}
router = ConfidenceRouter(models=tiers, config=config)
print("ready", flush=True)
sys.stdin.readline()  # both processes start together
jobs = [c for c in spec["conversations"] for _ in range(spec["per_conversation"])]

def route(message):
    trace = message.response_metadata["confidence_router"]
    return trace["route"] + " | " + "; ".join(trace["reasons"])

if spec["mode"] == "async":
    async def main():
        return await asyncio.gather(*(router.ainvoke([HumanMessage("Close it. [hard]")],
                                                     config={"metadata": {"conversation_id": c}}) for c in jobs))
    answers = asyncio.run(main())
else:
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda c: router.invoke([HumanMessage("Close it. [hard]")],
                                                        config={"metadata": {"conversation_id": c}}), jobs))
print(json.dumps([[c, route(a)] for c, a in zip(jobs, answers)]), flush=True)
"""


@pytest.fixture(scope="module")
def upstream() -> Iterator[FakeOpenAIServer]:
    # small: avg_logprob ~0.77 on "[hard]" prompts, inside the band [0.6, 0.8); large: confident
    models = {"small": ModelBehaviour(confident_on_hard=False, low_logprob=-0.7), "large": ModelBehaviour()}
    with FakeOpenAIServer(models, record_requests=False) as server:
        yield server


@contextlib.contextmanager
def redis_server() -> Iterator[str]:
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server not installed (apt-get install -y redis-server); the Redis state is untested here")
    port, folder = free_port(), tempfile.mkdtemp(prefix="cr-redis-")
    process = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly",
                                "no", "--dir", folder], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        import redis

        client = redis.Redis(port=port, socket_connect_timeout=0.5)
        for _ in range(100):
            with contextlib.suppress(redis.ConnectionError):
                if client.ping():
                    break
            time.sleep(0.05)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        process.terminate()
        process.wait(10)
        shutil.rmtree(folder, ignore_errors=True)


@contextlib.contextmanager
def shared_state(kind: str, tmp_path: Path) -> Iterator[dict[str, str]]:
    if kind == "memory":
        yield {"state": "memory"}
    elif kind == "sqlite":
        yield {"state": "store", "url": str(tmp_path / "shared.db")}
    elif kind == "postgresql":
        try:
            with postgres_server() as url:
                yield {"state": "store", "url": url}
        except PostgresUnavailable as exc:
            pytest.skip(str(exc))
    else:
        with redis_server() as url:
            yield {"state": "redis", "url": url}


def run_two_replicas(upstream: FakeOpenAIServer, clarify: dict[str, str], conversations: list[str],
                     per_conversation: int) -> list[list[str]]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "LITELLM_LOCAL_MODEL_COST_MAP": "True"}
    workers = []
    for mode in ("async", "sync"):  # one replica on ainvoke (claims in a thread), one on invoke
        spec = json.dumps({"base_url": upstream.base_url, "clarify": clarify, "conversations": conversations,
                           "per_conversation": per_conversation, "mode": mode})
        workers.append(subprocess.Popen([sys.executable, "-c", WORKER, spec], stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT))
    try:
        for w in workers:
            assert w.stdout is not None and w.stdout.readline().strip() == "ready", w.communicate(timeout=30)[1]
        for w in workers:
            assert w.stdin is not None
            w.stdin.write("go\n")
            w.stdin.flush()
        rows: list[list[str]] = []
        for w in workers:
            out, err = w.communicate(timeout=120)
            assert w.returncode == 0, err[-3000:]
            rows += json.loads(out.strip().splitlines()[-1])
        return rows
    finally:
        for w in workers:
            if w.poll() is None:
                w.kill()


@pytest.mark.parametrize("kind", ["sqlite", "postgresql", "redis"])
def test_two_replicas_ask_each_conversation_at_most_once(kind: str, upstream: FakeOpenAIServer,
                                                         tmp_path: Path) -> None:
    conversations = ["conv-a", "conv-b"]
    with shared_state(kind, tmp_path) as clarify:
        rows = run_two_replicas(upstream, clarify, conversations, per_conversation=5)
    assert len(rows) == 20
    for c in conversations:
        routes = [r.split(" | ")[0] for conv, r in rows if conv == c]
        assert routes.count("clarify") == 1, rows  # one question across both replicas
        assert set(routes) == {"clarify", "automated"}  # the others escalated to the confident tier


def test_in_memory_counts_are_per_replica(upstream: FakeOpenAIServer, tmp_path: Path) -> None:
    """The control: with the default in-process count each replica asks once, which is why the shared
    states exist (and what the test above would see if the count were not shared)."""
    with shared_state("memory", tmp_path) as clarify:
        rows = run_two_replicas(upstream, clarify, ["conv-a"], per_conversation=3)
    assert [r.split(" | ")[0] for _, r in rows].count("clarify") == 2, rows


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_a_hedged_cascade_claims_the_count_before_asking_too(mode: str) -> None:
    """A tier with hedge_after_ms sends requests through the hedged drive loops, which must settle the claim
    as the plain loops do (without it the question is asked uncounted, and asked again)."""
    state = Counting()
    cfg = {"algorithm": {"confidence": {"escalation_order": "declared", "confidence_method": "avg_logprob",
                                        "threshold": 0.7}},
           "models": [{"name": "small", "hedge_after_ms": 60_000}, {"name": "large"}],
           "human": {"thresholds": {"automate": 0.8, "assist": 0.5},
                     "clarify": {"enabled": True, "band": [0.4, 0.6], "model": "large"}}}
    c = Cascade.from_config(parse_config(cfg))
    c.clarify_state = state
    assert c.policy().hedging

    def ask() -> Any:
        if mode == "sync":
            return c.run(answer(0.5), request_text="close it", conversation="conv-h")
        return asyncio.run(c.arun(asyncio.run(aanswer_of(0.5)), request_text="close it", conversation="conv-h"))

    first, second = ask(), ask()
    assert first.trace.route == "clarify"
    assert second.trace.route == "automated" and second.trace.final_model == "large"
    assert [k for k, _, _ in state.claims] == ["conv-h", "conv-h"]

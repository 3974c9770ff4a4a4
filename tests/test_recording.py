"""Recording off the request path: the background writer, its full-queue policy and the import direction."""

from __future__ import annotations

import ast
import asyncio
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from langchain_confidence_router.core import Cascade, ConfigError, TierCall, TierResult, parse_config
from langchain_confidence_router.core.trace import RequestTrace
from langchain_confidence_router.human.recording import Decision, RecordingWriter, recording_stats
from langchain_confidence_router.human.store import ReviewStore, open_store

HANG_S = 5.0


def entries(value: float) -> dict:
    import math

    lp = math.log(value)
    return {"content": [{"token": "a", "logprob": lp, "top_logprobs": [{"token": "a", "logprob": lp}]}]}


def cascade(tmp_path: Path, recording: dict) -> Cascade:
    cfg = {"algorithm": {"confidence": {"escalation_order": "declared", "confidence_method": "avg_logprob",
                                        "threshold": 0.5}},
           "models": [{"name": "small"}],
           "human": {"thresholds": {"automate": 0.5, "assist": 0.2}, "spot_check_rate": 0.0,
                     "store": str(tmp_path / "reviews.db"), "audit_log": str(tmp_path / "audit.jsonl"),
                     "recording": recording}}
    return Cascade.from_config(parse_config(cfg))


def answer(tc: TierCall) -> TierResult:
    return TierResult(text="four", logprobs=entries(0.9))


async def aanswer(tc: TierCall) -> TierResult:
    return answer(tc)


@pytest.fixture
def hanging_store(monkeypatch: pytest.MonkeyPatch) -> threading.Event:
    """The real store, except that its first batch write hangs for HANG_S seconds (a stalled database)."""
    original = ReviewStore.record_many
    first = threading.Event()

    def record_many(self: ReviewStore, *args: object, **kwargs: object) -> None:
        if not first.is_set():
            first.set()
            time.sleep(HANG_S)
        original(self, *args, **kwargs)

    monkeypatch.setattr(ReviewStore, "record_many", record_many)
    return first


def test_a_hanging_store_delays_no_answer_beyond_the_block_timeout(tmp_path: Path, hanging_store: threading.Event
                                                                   ) -> None:
    block_s = 0.25
    c = cascade(tmp_path, {"queue_size": 4, "batch_size": 1, "on_full": "block", "block_timeout_s": block_s})
    sync_ms, traces = [], []
    for i in range(12):
        t0 = time.perf_counter()
        traces.append(c.run(answer, request_text=f"q{i}").trace)
        sync_ms.append((time.perf_counter() - t0) * 1000)
    assert hanging_store.is_set()

    async def on_the_loop() -> list[float]:
        out = []
        for i in range(12):
            t0 = time.perf_counter()
            traces.append((await c.arun(aanswer, request_text=f"a{i}")).trace)
            out.append((time.perf_counter() - t0) * 1000)
        return out

    async_ms = asyncio.run(on_the_loop())
    # Sync callers wait at most block_timeout_s for room; the event loop never waits. Generous slack for
    # a loaded machine, still far below the 5 s the store hangs.
    assert max(sync_ms) < block_s * 1000 + 400, sync_ms
    assert max(async_ms) < 400 and sum(async_ms) < 6 * block_s * 1000, async_ms  # waiting would cost 12x
    stats = recording_stats(c)[0]
    # four queued, at most one more taken into the hanging write, every other one dropped
    assert stats["queued"] in (4, 5) and stats["dropped"] == 24 - stats["queued"], stats
    dropped = [t for t in traces if any(r.startswith("recording dropped: queue full") for r in t.reasons)]
    assert len(dropped) == stats["dropped"]  # each dropped request says so in its own trace

    writer = c.observers[0].writer  # type: ignore[attr-defined]
    assert writer.flush(HANG_S + 10)
    writer.close()
    with open_store(str(tmp_path / "reviews.db")) as store:
        assert store.count()["decisions"] == stats["queued"]
    lines = [json.loads(x) for x in (tmp_path / "audit.jsonl").read_text().splitlines()]
    assert len(lines) == stats["queued"]
    # the audit log says how many decisions are missing, and where
    assert sum((x.get("extra") or {}).get("recording_dropped", 0) for x in lines) == stats["dropped"]


def test_drop_policy_never_waits_and_counts(tmp_path: Path, hanging_store: threading.Event) -> None:
    c = cascade(tmp_path, {"queue_size": 2, "batch_size": 1, "on_full": "drop"})
    worst = 0.0
    for i in range(8):
        t0 = time.perf_counter()
        c.run(answer, request_text=f"q{i}")
        worst = max(worst, time.perf_counter() - t0)
    assert worst < 0.3
    stats = recording_stats(c)[0]
    assert stats["queued"] in (2, 3) and stats["dropped"] == 8 - stats["queued"], stats
    c.observers[0].writer.close(0.0)  # type: ignore[attr-defined]  # don't wait out the hang


def test_batches_reach_store_and_audit_log_and_close_flushes(tmp_path: Path) -> None:
    c = cascade(tmp_path, {"batch_size": 16})
    ids = [c.run(answer, request_text=f"q{i}").trace.request_id for i in range(60)]
    writer = c.observers[0].writer  # type: ignore[attr-defined]
    writer.close()  # no flush first: close itself must write everything queued
    stats = writer.stats()
    assert stats["written"] == 60 and stats["dropped"] == 0 and stats["failed"] == 0
    assert stats["batches"] < 60 or stats["batches"] == 60  # batching is opportunistic
    with open_store(str(tmp_path / "reviews.db")) as store:
        assert {d.request_id for d in store.decisions()} == set(ids)
    assert len((tmp_path / "audit.jsonl").read_text().splitlines()) == 60
    done = c.run(answer, request_text="after close")  # a closed writer drops, visibly, and never raises
    assert any("recording dropped: closed" in r for r in done.trace.reasons)


def test_a_failing_sink_is_counted_and_the_other_still_writes(tmp_path: Path) -> None:
    class Broken:
        name = "broken"

        def write_batch(self, batch: object, dropped_before: int) -> None:
            raise OSError("disk full")

        def close(self) -> None:
            pass

    c = cascade(tmp_path, {})
    trace = c.run(answer, request_text="q").trace
    writer = RecordingWriter([Broken()])
    assert writer.submit(Decision(trace, "q", "four", False))
    assert writer.flush(5)
    assert writer.stats()["failed"] == 1 and writer.stats()["written"] == 0
    writer.close()


def test_unknown_full_queue_policy_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="on_full"):
        cascade(tmp_path, {"on_full": "wait_forever"})


def test_stores_data_at_interpreter_exit(tmp_path: Path) -> None:
    """atexit (which the LiteLLM proxy's shutdown ends in) writes what is still queued."""
    code = f"""
import time
from langchain_confidence_router.core import Cascade, TierResult, parse_config
from langchain_confidence_router.human.store import ReviewStore
orig = ReviewStore.record_many
def slow(self, *a, **k):
    time.sleep(0.3)
    orig(self, *a, **k)
ReviewStore.record_many = slow
cfg = {{"models": [{{"name": "small"}}], "algorithm": {{"confidence": {{"escalation_order": "declared"}}}},
       "human": {{"store": {str(tmp_path / "exit.db")!r}, "spot_check_rate": 0.0}}}}
c = Cascade.from_config(parse_config(cfg))
for i in range(20):
    c.run(lambda tc: TierResult(text="x", logprobs={{"content": [{{"token": "x", "logprob": -0.1,
          "top_logprobs": [{{"token": "x", "logprob": -0.1}}]}}]}}), request_text=str(i))
"""
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
    with open_store(str(tmp_path / "exit.db")) as store:
        assert store.count()["decisions"] == 20


def test_the_litellm_proxy_writes_the_queue_when_stopped(tmp_path: Path) -> None:
    """SIGTERM: uvicorn drains, shuts the app down, then re-raises the signal (no atexit). Every answered
    request must still be in the store and the audit log, including the batch the writer was still waiting
    to fill (batch_wait_s 5 s: without the shutdown hook none of these would be written)."""
    from support.load import drive, proxy_config, start_proxy, start_upstream
    from support.proxy import stop

    human = {"thresholds": {"automate": 0.0, "assist": 0.0}, "spot_check_rate": 0.0,
             "store": str(tmp_path / "proxy.db"), "audit_log": str(tmp_path / "proxy.jsonl"),
             "recording": {"batch_wait_s": 5.0}}
    upstream = start_upstream({"small": {}}, tmp_path / "upstream.log")
    try:
        config = proxy_config(upstream.base_url, {"rec": {
            "algorithm": {"confidence": {"threshold": 0.0}}, "models": [{"name": "small"}], "human": human}},
            ("small",))
        root = Path(__file__).resolve().parents[1]  # this checkout's package in the proxy, not an installed one
        proxy = start_proxy(config, tmp_path, {"PYTHONPATH": os.pathsep.join([str(root), str(root / "tests")])})
        try:
            result = asyncio.run(drive(proxy.url, lambda i: {"model": "rec", "messages": [
                {"role": "user", "content": f"question {i}"}]}, 12, 4))
        finally:
            stop(proxy.process)
    finally:
        upstream.close()
    assert [o.status for o in result.outcomes] == [200] * 12, result.outcomes[0].error
    assert proxy.process.returncode == -15  # it ended by the re-raised signal, as in production
    with open_store(str(tmp_path / "proxy.db")) as store:
        assert store.count()["decisions"] == 12
    assert len((tmp_path / "proxy.jsonl").read_text().splitlines()) == 12


def test_imports_point_the_right_way() -> None:
    """The core knows only the observer interface; label export lives on the evaluation side."""
    root = Path(__file__).parents[1] / "langchain_confidence_router"
    for path in (root / "core").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                assert not (node.level >= 2 and (node.module or "").startswith("human")), (path, node.module)
    code = ("import sys, langchain_confidence_router.human.store\n"
            "assert 'langchain_confidence_router.evaluation.runs' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_writer_counts_are_exported_to_prometheus() -> None:
    from prometheus_client import CollectorRegistry, generate_latest
    from prometheus_client.parser import text_string_to_metric_families

    from langchain_confidence_router.metrics.recording import register_recording_collector

    registry = CollectorRegistry()
    register_recording_collector(registry)

    def samples() -> dict[str, float]:
        text = generate_latest(registry).decode()
        return {s.labels.get("state", s.name): s.value
                for family in text_string_to_metric_families(text) for s in family.samples}

    class Sink:
        name = "memory"

        def __init__(self) -> None:
            self.written: list[Decision] = []

        def write_batch(self, batch: list[Decision], dropped_before: int) -> None:
            self.written.extend(batch)

        def close(self) -> None:
            pass

    before = samples()
    writer = RecordingWriter([Sink()], batch_wait_s=0.0)
    for _ in range(3):
        writer.submit(Decision(RequestTrace(), "q", "a", False))
    assert writer.flush(5)
    writer.close()
    writer.submit(Decision(RequestTrace(), "q", "a", False))  # closed: dropped, and counted
    after = samples()
    assert after["queued"] - before["queued"] == 3 and after["written"] - before["written"] == 3
    assert after["dropped"] - before["dropped"] == 1 and after["failed"] == before["failed"]
    assert "confidence_router_recording_queue_depth" in after

"""Review queue and outcome store on SQLite and on a real PostgreSQL server started by the tests.

PostgreSQL: the binaries are looked up (``/usr/lib/postgresql/*/bin``, then ``initdb`` on PATH); when
they are absent the PostgreSQL cases skip. As root, the server runs as ``postgres`` (or ``nobody``)
through ``runuser``, because initdb refuses root. Install locally with
``apt-get update && apt-get install -y postgresql``.
"""

from __future__ import annotations

import json
import math
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.postgres import PostgresUnavailable, free_port, postgres_server

from langchain_confidence_router.cli import main as cli_main
from langchain_confidence_router.core.trace import AttemptTrace, RequestTrace
from langchain_confidence_router.evaluation.labels import export_labels
from langchain_confidence_router.evaluation.runs import read_runs
from langchain_confidence_router.human.abtest import _count_rows
from langchain_confidence_router.human.database import sqlalchemy_url as _sqlalchemy_url
from langchain_confidence_router.human.store import (
    METADATA,
    SCHEMA_VERSION,
    ReviewStore,
    StoreError,
    UnknownRequestError,
    open_store,
    scored_attempt,
)

T0 = 1_700_000_000.0


def make_trace(
    route: str = "automated",
    conf: float | None = 0.9,
    *,
    ts: float = T0,
    model: str | None = "small",
    arm: str | None = None,
    trigger: str | None = None,
    draft: str | None = None,
    signals: dict[str, float | None] | None = None,
    cost: float = 0.001,
) -> RequestTrace:
    """A finished trace as the policy leaves it (one scored answer attempt unless ``model`` is None)."""
    t = RequestTrace(route=route, confidence=conf, final_model=model, final_tier=0 if model else None, arm=arm,
                     trigger=trigger if trigger is not None else (None if route == "automated" else "confidence"),
                     draft=draft, started_at=ts, outcome="accepted" if model else "handoff",
                     thresholds={"small": 0.8, "human.automate": 0.85, "human.assist": 0.5},
                     calibrations={"small": "small:platt:0123456789"}, config_hash="cfg123")
    if model is not None:
        t.add_attempt(AttemptTrace(tier=0, model=model, decision="accept", confidence=conf, cost_usd=cost,
                                   raw_signals=signals if signals is not None else {"avg_logprob": -0.2}))
    t.reasons.append(f"route {route}")
    return t


# ------------------------------------------------------------------------------------------ PostgreSQL


@pytest.fixture(scope="module")
def pg_url() -> Iterator[str]:
    """A throwaway PostgreSQL server on 127.0.0.1 (trust auth, fsync off), stopped after the module."""
    try:
        with postgres_server() as url:
            yield url
    except PostgresUnavailable as exc:
        pytest.skip(str(exc))


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ReviewStore]:
    """The same store tests on both backends; PostgreSQL tables are dropped after each test."""
    if request.param == "sqlite":
        s = open_store(tmp_path / "reviews.db")
        yield s
        s.close()
        return
    s = open_store(request.getfixturevalue("pg_url"))
    assert s.dialect == "postgresql"
    try:
        yield s
    finally:
        METADATA.drop_all(s.engine)
        s.close()


# ------------------------------------------------------------------------------------------ round trip


def test_round_trip_record_pending_label_export_decisions(store: ReviewStore, tmp_path: Path) -> None:
    auto = make_trace("automated", 0.93, ts=T0 + 1, signals={"avg_logprob": -0.05, "margin": 3.2})
    assisted = make_trace("human_assisted", 0.62, ts=T0 + 2, draft="Your refund was sent on Monday.",
                          signals={"avg_logprob": -0.9, "min_logprob": -math.inf, "entropy": None})
    primary = make_trace("human_primary", 0.21, ts=T0 + 3, model="large", arm="treatment")
    before_any_call = make_trace("human_primary", None, ts=T0 + 4, model=None, trigger="human_request")
    for t in (primary, auto, before_any_call, assisted):  # out of order: the queue sorts by request time
        store.record(t, store_text=True)

    decisions = store.decisions()
    assert [d.request_id for d in decisions] == [auto.request_id, assisted.request_id, primary.request_id,
                                                 before_any_call.request_id]
    d_auto = decisions[0]
    assert d_auto.route == "automated" and d_auto.confidence == pytest.approx(0.93)
    assert d_auto.thresholds == {"small": 0.8, "human.automate": 0.85, "human.assist": 0.5}
    assert d_auto.calibrations == {"small": "small:platt:0123456789"}
    assert d_auto.signals == {"avg_logprob": -0.05, "margin": 3.2}
    assert d_auto.cost_usd == pytest.approx(0.001) and d_auto.config_hash == "cfg123" and not d_auto.labelled
    # -inf is clipped (JSON and the recorded-run format have no infinity); a missing signal is dropped
    assert decisions[1].signals == {"avg_logprob": -0.9, "min_logprob": -20.0}
    assert decisions[2].arm == "treatment" and decisions[2].final_model == "large"
    assert decisions[3].final_model is None and decisions[3].confidence is None

    pending = store.pending(10)
    assert [p.request_id for p in pending] == [assisted.request_id, primary.request_id, before_any_call.request_id]
    assert pending[0].draft == "Your refund was sent on Monday."
    assert pending[0].trigger == "confidence" and pending[0].status == "pending"
    assert pending[0].thresholds["human.assist"] == 0.5 and pending[0].calibrations
    assert pending[2].trigger == "human_request"
    assert [p.request_id for p in store.pending(10, route="human_primary")] == [primary.request_id,
                                                                                before_any_call.request_id]
    assert len(store.pending(1)) == 1

    store.label(assisted.request_id, True, decision="approved", reviewer="ann", note="fine")
    store.label(primary.request_id, False, decision="rejected", reviewer="bob")
    store.label(auto.request_id, True)  # a spot check of an automated answer
    store.label(before_any_call.request_id, True, decision="answered")
    assert store.pending(10) == []
    item = store.handoff(assisted.request_id)
    assert item is not None and item.status == "resolved" and item.resolved_at is not None
    got = store.get(assisted.request_id)
    assert got is not None and got.correct is True and got.label_decision == "approved" and got.reviewer == "ann"
    assert store.count() == {"decisions": 4, "pending": 0, "labels": 4}

    out = tmp_path / "labels.jsonl"
    assert export_labels(store, out) == 3  # the request no model answered has nothing to calibrate
    runs = read_runs(out)  # the recorded-run reader `tune` uses accepts the file
    by_id = {r.item_id: r for r in runs}
    assert set(by_id) == {auto.request_id, assisted.request_id, primary.request_id}
    rec = by_id[assisted.request_id]
    assert rec.model == "small" and rec.correct is True
    assert rec.signals == {"avg_logprob": -0.9, "min_logprob": -20.0}
    assert rec.cost_usd == pytest.approx(0.001)
    extra = rec.model_extra or {}
    assert extra["confidence"] == pytest.approx(0.62) and extra["route"] == "human_assisted"
    assert extra["review_decision"] == "approved" and extra["calibration"] == "small:platt:0123456789"
    assert by_id[primary.request_id].model == "large" and by_id[primary.request_id].correct is False


def test_draft_text_is_stored_only_when_enabled(store: ReviewStore) -> None:
    quiet = make_trace("human_assisted", 0.6, draft="secret customer answer")
    kept = make_trace("human_assisted", 0.6, ts=T0 + 1, draft="kept draft")
    store.record(quiet)
    store.record(kept, store_text=True)
    assert store.handoff(quiet.request_id).draft is None  # type: ignore[union-attr]
    assert store.handoff(kept.request_id).draft == "kept draft"  # type: ignore[union-attr]


def test_relabel_latest_wins_and_history_is_kept(store: ReviewStore) -> None:
    t = make_trace("human_assisted", 0.55)
    store.record(t)
    store.label(t.request_id, True, decision="approved", reviewer="ann")
    store.label(t.request_id, False, decision="edited", reviewer="lead")
    got = store.get(t.request_id)
    assert got is not None and got.correct is False and got.label_decision == "edited" and got.reviewer == "lead"
    assert [lb.correct for lb in store.labels(t.request_id)] == [True, False]
    assert [d.correct for d in store.decisions(labelled=True)] == [False]


def test_label_unknown_request_and_bad_value(store: ReviewStore) -> None:
    with pytest.raises(UnknownRequestError, match="no recorded decision"):
        store.label("nope", True)
    t = make_trace()
    store.record(t)
    with pytest.raises(TypeError):
        store.label(t.request_id, 1)  # type: ignore[arg-type]
    assert store.labels() == []


def test_decision_filters(store: ReviewStore) -> None:
    traces = [make_trace("automated" if i % 2 else "human_assisted", i / 10, ts=T0 + i,
                         arm="control" if i < 5 else "treatment") for i in range(10)]
    for t in traces:
        store.record(t)
    store.label(traces[3].request_id, True)
    ids = [t.request_id for t in traces]
    assert [d.request_id for d in store.decisions(T0 + 7)] == ids[7:]
    assert [d.request_id for d in store.decisions(until=T0 + 2)] == ids[:2]
    from datetime import UTC, datetime
    assert [d.request_id for d in store.decisions(datetime.fromtimestamp(T0 + 8, tz=UTC))] == ids[8:]
    assert [d.request_id for d in store.decisions(route="automated")] == ids[1::2]
    assert [d.request_id for d in store.decisions(arm="treatment")] == ids[5:]
    assert [d.request_id for d in store.decisions(labelled=True)] == [ids[3]]
    assert len(store.decisions(labelled=False)) == 9
    assert [d.request_id for d in store.decisions(first=3)] == ids[:3]
    assert [d.request_id for d in store.decisions(last=3)] == ids[7:]  # newest three, oldest first
    assert [d.request_id for d in store.decisions(route="automated", last=2)] == [ids[7], ids[9]]
    with pytest.raises(ValueError):
        store.decisions(first=1, last=1)


def test_long_values_fit_and_long_ids_are_refused(store: ReviewStore) -> None:
    t = make_trace("human_assisted", 0.5, trigger="topic:" + "x" * 1000)
    t.final_model = "m" * 400
    store.record(t)  # PostgreSQL enforces VARCHAR lengths: free text is cut to fit, never rejected
    store.label(t.request_id, True, decision="d" * 100, reviewer="r" * 300)
    [d] = store.decisions()
    assert d.trigger is not None and len(d.trigger) == 256 and d.trigger.endswith("…")
    assert d.label_decision is not None and len(d.label_decision) == 64
    with pytest.raises(ValueError, match="request id"):
        store.record(make_trace(ts=T0 + 1).model_copy(update={"request_id": "i" * 300}))


def test_re_recording_updates_and_keeps_resolution(store: ReviewStore) -> None:
    t = make_trace("human_assisted", 0.6)
    store.record(t)
    store.label(t.request_id, True)
    t.confidence = 0.65
    store.record(t)
    assert store.count()["decisions"] == 1
    assert store.get(t.request_id).confidence == pytest.approx(0.65)  # type: ignore[union-attr]
    assert store.handoff(t.request_id).status == "resolved"  # type: ignore[union-attr]
    other = make_trace("human_assisted", 0.6, ts=T0 + 1, draft="first draft")
    store.record(other, store_text=True)
    store.record(other)  # without text this time: the stored draft is kept, not erased
    assert store.handoff(other.request_id).draft == "first draft"  # type: ignore[union-attr]
    other.route = "automated"
    store.record(other)  # now automated: its pending item no longer needs anyone
    assert store.pending() == []
    spot = make_trace("automated", 0.9, ts=T0 + 2)
    store.record(spot, spot_check=True)
    store.record(spot)  # a re-record does not cancel a spot check
    assert [p.request_id for p in store.pending()] == [spot.request_id]


def test_record_many_writes_a_mixed_batch_in_one_go(store: ReviewStore) -> None:
    auto = [make_trace("automated", 0.9, ts=T0 + i) for i in range(5)]
    assisted = make_trace("human_assisted", 0.6, ts=T0 + 10)
    spot = make_trace("automated", 0.95, ts=T0 + 11)
    again = make_trace("human_assisted", 0.6, ts=T0 + 12)
    store.record(again)
    later = again.model_copy(deep=True)
    later.route, later.confidence = "automated", 0.99
    # the same id twice in one batch: the later trace wins (PostgreSQL refuses a row twice in one upsert)
    store.record_many([*((t, False) for t in auto), (assisted, False), (spot, True), (again, False), (later, False)])
    assert store.count()["decisions"] == 8
    assert {p.request_id for p in store.pending()} == {assisted.request_id, spot.request_id}
    assert store.get(again.request_id).confidence == pytest.approx(0.99)  # type: ignore[union-attr]


def test_a_postgres_batch_of_decisions_is_one_statement(store: ReviewStore) -> None:
    """The writer thread shares the interpreter lock with the requests: on PostgreSQL a batch's decisions go
    as one statement (one round trip), not row by row (executemany waits on the socket for every row)."""
    from sqlalchemy import event

    seen: list[tuple[str, bool]] = []
    event.listen(store.engine, "before_cursor_execute",
                 lambda conn, cur, sql, params, ctx, many: seen.append((sql, many)))
    traces = [make_trace("automated", 0.9, ts=T0 + i) for i in range(50)]
    store.record_many([(t, False) for t in traces])
    upserts = [(sql, many) for sql, many in seen if sql.lstrip().upper().startswith("INSERT INTO")]
    if store.dialect == "postgresql":
        assert upserts and len(upserts) == 1 and upserts[0][1] is False, upserts
    assert store.count()["decisions"] == 50
    assert {d.request_id for d in store.decisions()} == {t.request_id for t in traces}
    mixed = [make_trace("automated", 0.9, ts=T0 + 100), make_trace("automated", 0.9, ts=T0 + 101)]
    mixed[0].started_at = int(T0) + 100  # an int among floats (assignment is not validated): one column type
    store.record_many([(t, False) for t in mixed])
    assert store.get(mixed[0].request_id).ts == pytest.approx(T0 + 100)  # type: ignore[union-attr]


def test_spot_check_queues_an_automated_answer(store: ReviewStore) -> None:
    t = make_trace("automated", 0.97)
    store.record(t, spot_check=True)
    store.record(make_trace("automated", 0.97, ts=T0 + 1))
    [item] = store.pending()
    assert item.request_id == t.request_id and item.route == "automated" and item.trigger == "spot_check"


def test_concurrent_record_and_label(store: ReviewStore) -> None:
    errors: list[BaseException] = []

    def worker(w: int) -> None:
        try:
            for i in range(25):
                t = make_trace("human_assisted" if i % 3 else "automated", 0.5, ts=T0 + w * 100 + i)
                store.record(t)
                if i % 2:
                    store.label(t.request_id, bool(i % 4 == 1), reviewer=f"w{w}")
        except BaseException as exc:  # surfaced below: a thread's exception would otherwise vanish
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(w,)) for w in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert errors == []
    assert store.count()["decisions"] == 200 and store.count()["labels"] == 96
    assert len(store.decisions(labelled=True)) == 96


def test_arm_counts_in_sql_match_the_rows(store: ReviewStore) -> None:
    for i in range(30):
        t = make_trace("automated" if i % 3 else "human_primary", 0.5, ts=T0 + i,
                       arm=("control", "treatment", None)[i % 3], cost=0.001 * (i + 1))
        store.record(t)
        if i % 2:
            store.label(t.request_id, i % 4 == 1)
    sql = store.arm_counts()
    python = _count_rows(store.decisions())
    assert set(sql) == {"control", "treatment"}
    for arm, counts in python.items():
        assert sql[arm] == pytest.approx(counts)
    assert store.arm_counts(T0 + 15)["control"]["n"] == 5


def test_scored_attempt_skips_side_calls() -> None:
    t = make_trace("clarify", 0.5)
    t.attempts[0].decision = "escalate"
    t.add_attempt(AttemptTrace(tier=0, model="small", purpose="clarify", decision="accept"))
    a = scored_attempt(t)
    assert a is not None and a.purpose == "answer" and a.confidence == 0.5
    assert scored_attempt(RequestTrace()) is None


# ------------------------------------------------------------------------------------------ opening


def test_sqlite_persists_across_opens_and_refuses_newer_schema(tmp_path: Path) -> None:
    db = tmp_path / "sub" / "reviews.db"
    with open_store(db) as s:
        t = make_trace("human_assisted", 0.6)
        s.record(t)
    with open_store(f"sqlite:///{db}", create=False) as s:
        assert [p.request_id for p in s.pending()] == [t.request_id]
        with s.engine.begin() as conn:
            conn.exec_driver_sql("UPDATE cr_meta SET value = ? WHERE key = 'schema_version'",
                                 (str(SCHEMA_VERSION + 1),))
    with pytest.raises(StoreError, match="newer"):
        open_store(db)


def test_open_store_urls_and_errors(tmp_path: Path) -> None:
    assert _sqlalchemy_url("postgresql://u:p@h:5/db") == ("postgresql+psycopg://u:p@h:5/db", False)
    assert _sqlalchemy_url("postgres://h/db") == ("postgresql+psycopg://h/db", False)
    assert _sqlalchemy_url("postgresql+psycopg://h/db") == ("postgresql+psycopg://h/db", False)
    assert _sqlalchemy_url("sqlite:////x/y.db") == ("sqlite:////x/y.db", True)
    url, is_sqlite = _sqlalchemy_url(tmp_path / "a.db")
    assert is_sqlite and url == f"sqlite:///{(tmp_path / 'a.db').resolve()}"
    with pytest.raises(StoreError, match="no store at"):
        open_store(tmp_path / "missing.db", create=False)
    with pytest.raises(StoreError, match="cannot open store") as err:
        open_store(f"postgresql://someone:hunter2@127.0.0.1:{free_port()}/db?connect_timeout=2")
    assert "hunter2" not in str(err.value)
    with pytest.raises(StoreError, match=r"cannot open store nosuchdb://ops:\*\*\*@db/reviews") as err:
        open_store("nosuchdb://ops:hunter2@db/reviews")  # no such driver: the URL is quoted, its password is not
    assert "hunter2" not in str(err.value)
    with open_store(":memory:") as mem:  # in-memory: one shared database across threads
        mem.record(make_trace())
        th = threading.Thread(target=lambda: mem.record(make_trace(ts=T0 + 1)))
        th.start()
        th.join()
        assert mem.count()["decisions"] == 2


# ------------------------------------------------------------------------------------------ CLI


def test_review_cli_list_label_export(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "reviews.db"
    with open_store(db) as s:
        a = make_trace("human_assisted", 0.61, draft="A drafted answer", ts=T0)
        b = make_trace("human_primary", 0.2, ts=T0 + 1)
        s.record(a, store_text=True)
        s.record(b)
    assert cli_main(["review", "--store", str(db), "list", "--limit", "5"]) == 0
    out = capsys.readouterr().out
    assert a.request_id in out and b.request_id in out and "human_primary" in out and "A drafted answer" in out
    assert cli_main(["review", "--store", str(db), "list", "--json"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["request_id"] for r in rows] == [a.request_id, b.request_id]

    assert cli_main(["review", "--store", str(db), "label", a.request_id, "--correct", "--decision", "approved",
                     "--reviewer", "ann"]) == 0
    assert cli_main(["review", "--store", str(db), "label", b.request_id, "--wrong"]) == 0
    assert "labelled" in capsys.readouterr().out
    out_file = tmp_path / "labels.jsonl"
    assert cli_main(["review", "--store", str(db), "export", str(out_file)]) == 0
    assert "wrote 2" in capsys.readouterr().out
    assert {r.item_id: r.correct for r in read_runs(out_file)} == {a.request_id: True, b.request_id: False}
    assert cli_main(["review", "--store", str(db), "export", str(tmp_path / "late.jsonl"),
                     "--since", "2100-01-01"]) == 0

    assert cli_main(["review", "--store", str(db), "label", "unknown-id", "--correct"]) == 1
    assert cli_main(["review", "--store", str(tmp_path / "absent.db"), "list"]) == 1
    assert "no store at" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # --correct or --wrong is required
        cli_main(["review", "--store", str(db), "label", a.request_id])


# ------------------------------------------------------------------------------------------ with the policy


def test_records_what_the_policy_decided(tmp_path: Path) -> None:
    from langchain_confidence_router.core import Cascade, TierCall, TierResult, parse_config

    def conf(c: float) -> dict:  # avg_logprob score = (lp + 3) / 3
        lp = 3 * c - 3
        return {"content": [{"token": f"w{i}", "logprob": lp, "top_logprobs": [
            {"token": f"w{i}", "logprob": lp}, {"token": "z", "logprob": lp - 1}]} for i in range(4)]}

    cfg = {"algorithm": {"confidence": {"escalation_order": "declared", "confidence_method": "avg_logprob",
                                        "threshold": 0.7}},
           "models": [{"name": "small"}, {"name": "large"}],
           "human": {"thresholds": {"automate": 0.8, "assist": 0.5}, "store_text": True,
                     "triggers": {"no_confident_model": False}}}
    cascade = Cascade.from_config(parse_config(cfg))
    scores = {"small": 0.6, "large": 0.65}

    def call(tc: TierCall) -> TierResult:
        return TierResult(text=f"answer from {tc.tier.name}", logprobs=conf(scores[tc.tier.name]))

    done = cascade.run(call, request_text="what is my balance")
    with open_store(tmp_path / "r.db") as s:
        s.record(done.trace, store_text=True)
        [item] = s.pending()
        d = s.get(done.trace.request_id)
    assert item.route == done.trace.route == "human_assisted" and item.draft == done.trace.draft
    assert d is not None and d.thresholds["human.automate"] == 0.8
    assert d.scored_model == done.trace.final_model and "avg_logprob" in d.signals
    assert d.confidence == pytest.approx(done.trace.confidence)


def test_postgres_workers_opening_at_once_create_the_tables_once(pg_url: str) -> None:
    stores: list[ReviewStore] = []
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            stores.append(open_store(pg_url))
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(6)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    try:
        assert errors == [] and len(stores) == 6
        with stores[0].engine.connect() as conn:
            assert conn.exec_driver_sql("SELECT count(*) FROM cr_meta").scalar() == 1
    finally:
        if stores:
            METADATA.drop_all(stores[0].engine)
        for s in stores:
            s.close()


def test_postgres_fixture_cleans_up(pg_url: str) -> None:
    """The server answers, and a store opened twice sees the same tables (no per-connection state)."""
    with open_store(pg_url) as a, open_store(pg_url) as b:
        try:
            t = make_trace("human_assisted", 0.5, ts=time.time())
            a.record(t)
            assert [p.request_id for p in b.pending()] == [t.request_id]
            assert "postgresql+psycopg" in a.url
        finally:
            METADATA.drop_all(a.engine)

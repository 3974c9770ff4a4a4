"""The review queue and outcome store: every routing decision, every handoff, every reviewer label.

Why a database and not log files: reviewers work a queue (pending items, resolved once labelled),
monitoring needs "the last N labelled automated answers", and labels must flow back into
recalibration (``evaluation.labels.export_labels`` writes recorded-run JSONL for ``confidence-router tune``).

``open_store(url_or_path)``: a plain path or ``sqlite:///...`` is SQLite (the default, zero setup);
``postgresql://...`` (or ``postgres://``) is PostgreSQL through psycopg 3. Tables are created on open.

Tables (prefix ``cr_`` so they can share a database):

* ``cr_decisions``: one row per request: time, route, trigger, outcome, final model and tier,
  confidence, thresholds and calibration versions in force (JSON), A/B arm, cost, config hash, and
  the raw signals of the scored attempt (so exports can feed recalibration).
* ``cr_handoffs``: one row per request routed away from ``automated`` (and opt-in spot checks of
  automated answers): route, trigger, reason, draft (only when text storage is enabled), status.
* ``cr_labels``: reviewer verdicts; append-only (history kept), the latest label of a request wins.
  ``correct`` is the ground truth of the AI answer (the scored attempt), whoever finally answered.
* ``cr_conversations``: clarifying questions asked per conversation key, shared by every replica
  (``human.clarify.state: store``); :meth:`ReviewStore.claim_clarify` counts one atomically.

Thread-safe: one engine per store; on SQLite every statement is serialised by a lock (SQLite has a
single writer anyway), on PostgreSQL the database handles concurrency and upserts are atomic.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import random
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    Connection,
    Engine,
    Float,
    ForeignKey,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    and_,
    case,
    delete,
    func,
    select,
    text,
    update,
)
from sqlalchemy.dialects import postgresql as pg_dialect
from sqlalchemy.dialects import sqlite as sqlite_dialect
from sqlalchemy.exc import IntegrityError, OperationalError, SQLAlchemyError

from ..core.errors import ConfidenceRouterError
from ..core.trace import AttemptTrace, RequestTrace
from .audit import scrub
from .database import open_engine

__all__ = [
    "HANDOFF_ROUTES",
    "METADATA",
    "SCHEMA_VERSION",
    "DecisionRecord",
    "HandoffItem",
    "LabelRecord",
    "ReviewStore",
    "StoreError",
    "UnknownRequestError",
    "open_store",
    "scored_attempt",
]

logger = logging.getLogger(__name__)

SCHEMA_VERSION = 1
#: Routes that put an item in the review queue.
HANDOFF_ROUTES = ("human_assisted", "human_primary", "clarify")
#: Raw signals are clipped to +-this before storing: JSON (and PostgreSQL) have no infinity, and the
#: recorded-run format rejects it. Same floor as the converters use for log(0).
SIGNAL_CLIP = 20.0
#: Longest reason text kept per handoff item.
MAX_REASON_CHARS = 2000

#: PostgreSQL advisory lock taken while creating tables (any fixed 64-bit number; "crstore1").
_PG_LOCK_KEY = 0x6372_7374_6F72_6531
#: Longest request id accepted (ids are keys; they are never cut short).
MAX_ID = 255

METADATA = MetaData()

meta_table = Table(
    "cr_meta", METADATA,
    Column("key", String(64), primary_key=True),
    Column("value", String(256), nullable=False),
)

decisions_table = Table(
    "cr_decisions", METADATA,
    Column("request_id", String(MAX_ID), primary_key=True),
    Column("ts", Float, nullable=False, index=True),
    Column("route", String(32), nullable=False, index=True),
    Column("trigger", String(256)),
    Column("outcome", String(32)),
    Column("final_model", String(256)),
    Column("final_tier", Integer),
    Column("confidence", Float),
    Column("thresholds", JSON),
    Column("calibrations", JSON),
    Column("arm", String(64), index=True),
    Column("cost_usd", Float),
    Column("cost_complete", Boolean),
    Column("config_hash", String(128)),
    Column("scored_model", String(256)),
    Column("scored_cost_usd", Float),
    Column("signals", JSON),
    Column("recorded_at", Float, nullable=False),
)

handoffs_table = Table(
    "cr_handoffs", METADATA,
    Column("request_id", String(MAX_ID), ForeignKey("cr_decisions.request_id", ondelete="CASCADE"), primary_key=True),
    Column("ts", Float, nullable=False, index=True),
    Column("route", String(32), nullable=False),
    Column("trigger", String(256)),
    Column("reason", Text),
    Column("draft", Text),
    Column("confidence", Float),
    Column("final_model", String(256)),
    Column("thresholds", JSON),
    Column("calibrations", JSON),
    Column("status", String(16), nullable=False, index=True),
    Column("resolved_at", Float),
)

labels_table = Table(
    "cr_labels", METADATA,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("request_id", String(MAX_ID), ForeignKey("cr_decisions.request_id", ondelete="CASCADE"),
           nullable=False, index=True),
    Column("correct", Boolean, nullable=False),
    Column("decision", String(64)),
    Column("reviewer", String(256)),
    Column("note", Text),
    Column("labelled_at", Float, nullable=False),
)


def _to_python(column: Column[Any]) -> Any:
    """How the writer turns a decision value into what the column's DB-API parameter should be."""
    kind = column.type
    if isinstance(kind, JSON):
        return json.dumps
    return float if isinstance(kind, Float) else int if isinstance(kind, Integer) else (
        bool if isinstance(kind, Boolean) else str)


#: (name, converter) of each decision column, in the order of the batch upsert.
_DECISION_COLUMNS = tuple((c.name, _to_python(c)) for c in decisions_table.columns)

conversations_table = Table(
    "cr_conversations", METADATA,
    Column("key", String(MAX_ID), primary_key=True),
    Column("clarify_count", Integer, nullable=False),
    Column("updated_at", Float, nullable=False, index=True),
)


class StoreError(ConfidenceRouterError):
    """The store cannot be opened or used (bad URL, database down, missing file)."""


class UnknownRequestError(StoreError, KeyError):
    """A label for a request id the store never recorded."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


@dataclass(frozen=True)
class LabelRecord:
    request_id: str
    correct: bool
    decision: str | None
    reviewer: str | None
    note: str | None
    labelled_at: float


@dataclass(frozen=True)
class DecisionRecord:
    """One routing decision, with its latest label (``correct`` is None while unlabelled)."""

    request_id: str
    ts: float
    route: str
    trigger: str | None
    outcome: str | None
    final_model: str | None
    final_tier: int | None
    confidence: float | None
    thresholds: dict[str, float]
    calibrations: dict[str, str]
    arm: str | None
    cost_usd: float | None
    cost_complete: bool | None
    config_hash: str | None
    scored_model: str | None
    scored_cost_usd: float | None
    signals: dict[str, float]
    correct: bool | None = None
    label_decision: str | None = None
    reviewer: str | None = None
    labelled_at: float | None = None

    @property
    def labelled(self) -> bool:
        return self.correct is not None


@dataclass(frozen=True)
class HandoffItem:
    """One item of the review queue."""

    request_id: str
    ts: float
    route: str
    trigger: str | None
    reason: str | None
    draft: str | None
    confidence: float | None
    final_model: str | None
    thresholds: dict[str, float] = field(default_factory=dict)
    calibrations: dict[str, str] = field(default_factory=dict)
    status: str = "pending"
    resolved_at: float | None = None


# ------------------------------------------------------------------------------------------ helpers


def scored_attempt(trace: RequestTrace) -> AttemptTrace | None:
    """The answer attempt whose confidence decided the route (not a clarify or other side call)."""
    final = trace.final_attempt
    if final is not None and getattr(final, "purpose", "answer") == "answer":
        return final
    for attempt in reversed(trace.attempts):
        if getattr(attempt, "purpose", "answer") == "answer" and attempt.confidence is not None:
            return attempt
    return None


def _clean_signals(raw: Mapping[str, float | None]) -> dict[str, float]:
    out: dict[str, float] = {}
    for name, value in raw.items():
        if value is None or math.isnan(value):
            continue
        out[name] = max(-SIGNAL_CLIP, min(SIGNAL_CLIP, float(value)))
    return out


def _cut(value: str | None, n: int) -> str | None:
    """Fit a free-text value into its column (PostgreSQL enforces VARCHAR lengths, SQLite does not)."""
    return value if value is None or len(value) <= n else value[: n - 1] + "…"


def _check_id(request_id: str) -> str:
    if not request_id or len(request_id) > MAX_ID:
        raise ValueError(f"request id must be 1..{MAX_ID} characters (got {len(request_id)})")
    return request_id


def _finite_or_none(value: float | None) -> float | None:
    return None if value is None or not math.isfinite(value) else float(value)


def _epoch(value: float | datetime | None) -> float | None:
    if value is None or isinstance(value, int | float):
        return value
    return value.timestamp()  # naive datetimes are local time, as datetime.timestamp() reads them


# ------------------------------------------------------------------------------------------ the store


class ReviewStore:
    """Decisions, review queue and labels in one SQL database. Use :func:`open_store` to get one."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.dialect = engine.dialect.name
        self._upsert_sql: str | None = None
        # SQLite: one writer at a time and a pysqlite connection is not for concurrent use; serialise.
        self._lock: contextlib.AbstractContextManager[Any] = (
            threading.RLock() if self.dialect == "sqlite" else contextlib.nullcontext()
        )
        self._create()

    @property
    def url(self) -> str:
        """The database URL with any password hidden (safe to print)."""
        return self.engine.url.render_as_string(hide_password=True)

    def _create(self) -> None:
        for attempt in range(5):
            try:
                return self._create_tables()
            except (OperationalError, IntegrityError) as exc:
                # SQLite has no advisory lock: two processes opening a new file at once can both see no
                # tables; the loser finds them on the next try (after a short random pause, so two losers
                # do not collide again)
                racing = any(s in str(exc) for s in ("already exists", "UNIQUE constraint", "database is locked"))
                if self.dialect != "sqlite" or not racing or attempt == 4:
                    raise
                time.sleep(random.uniform(0.01, 0.1) * (attempt + 1))

    def _create_tables(self) -> None:
        with self._begin() as conn:
            if self.dialect == "postgresql":  # several workers starting at once: create the tables once
                conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_LOCK_KEY})
            METADATA.create_all(conn)
            found = conn.execute(select(meta_table.c.value).where(meta_table.c.key == "schema_version")).scalar()
            if found is None:  # another process may insert it between our read and write: not an error
                row = {"key": "schema_version", "value": str(SCHEMA_VERSION)}
                if self.dialect in ("sqlite", "postgresql"):
                    insert = (sqlite_dialect.insert if self.dialect == "sqlite" else pg_dialect.insert)(meta_table)
                    conn.execute(insert.values(row).on_conflict_do_nothing(index_elements=["key"]))
                else:
                    conn.execute(meta_table.insert().values(row))
            elif int(found) > SCHEMA_VERSION:
                raise StoreError(f"{self.url}: store schema version {found} is newer than this package supports "
                                 f"({SCHEMA_VERSION}); upgrade langchain-confidence-router")

    @contextlib.contextmanager
    def _begin(self) -> Iterator[Connection]:
        with self._lock, self.engine.begin() as conn:
            yield conn

    @contextlib.contextmanager
    def _connect(self) -> Iterator[Connection]:
        with self._lock, self.engine.connect() as conn:
            yield conn

    def _upsert(self, conn: Connection, table: Table, values: dict[str, Any], update_cols: Iterable[str]) -> None:
        """Insert or update by primary key, atomically where the dialect can."""
        key = next(iter(table.primary_key.columns)).name
        set_ = {c: values[c] for c in update_cols}
        if self.dialect in ("sqlite", "postgresql"):
            insert = (sqlite_dialect.insert if self.dialect == "sqlite" else pg_dialect.insert)(table).values(values)
            conn.execute(insert.on_conflict_do_update(index_elements=[key], set_=set_))
            return
        done = conn.execute(update(table).where(table.c[key] == values[key]).values(set_))
        if done.rowcount == 0:
            conn.execute(table.insert().values(values))

    # ---------------------------------------------------------------- writing

    def record(self, trace: RequestTrace, *, store_text: bool = False, spot_check: bool = False) -> None:
        """Store one finished request; queue it for review when a human is involved.

        ``store_text``: keep ``trace.draft`` (the AI answer) on the queue item; off by default so the
        database holds no customer text unless asked. ``spot_check``: also queue an *automated*
        answer for review (trigger ``spot_check``); a random few percent of these is what lets
        monitoring measure calibration of the answers nobody else looks at.
        Recording the same request id again updates it (a resolved item stays resolved).
        """
        self.record_many([(trace, spot_check)], store_text=store_text)

    def record_many(self, items: Iterable[tuple[RequestTrace, bool]], *, store_text: bool = False) -> None:
        """Store ``(trace, spot_check)`` pairs in one transaction (the background writer's batches)."""
        latest = {_check_id(trace.request_id): (trace, spot) for trace, spot in items}  # one row per id
        if not latest:
            return
        if self.dialect not in ("sqlite", "postgresql"):
            with self._begin() as conn:
                for trace, spot_check in latest.values():
                    self._record(conn, trace, store_text=store_text, spot_check=spot_check)
            return
        rows = [self._decision_values(trace) for trace, _ in latest.values()]
        queued = [(t, s) for t, s in latest.values() if t.route in HANDOFF_ROUTES or (s and t.route == "automated")]
        queued_ids = {t.request_id for t, _ in queued}
        others = [rid for rid in latest if rid not in queued_ids]
        with self._begin() as conn:
            # The writer shares the process (and its interpreter lock) with the requests it records, so the
            # decisions go as one upsert over plain values, not through SQLAlchemy's per-row parameter
            # processing; handoffs are a few per batch.
            self._write_decisions(conn, rows)
            for trace, _ in queued:
                self._upsert_handoff(conn, trace, self._decision_row(trace), store_text)
            if others:  # re-recorded as automated: a pending handoff no longer needs a reviewer
                h = handoffs_table
                conn.execute(delete(h).where(h.c.request_id.in_(others), h.c.status == "pending",
                                             h.c.route != "automated"))

    def _record(self, conn: Connection, trace: RequestTrace, *, store_text: bool, spot_check: bool) -> None:
        decision = self._decision_row(trace)
        self._upsert(conn, decisions_table, decision, [k for k in decision if k != "request_id"])
        if trace.route in HANDOFF_ROUTES or (spot_check and trace.route == "automated"):
            self._upsert_handoff(conn, trace, decision, store_text)
        else:  # re-recorded as automated: a pending handoff no longer needs a reviewer (spot checks stay)
            h = handoffs_table
            conn.execute(delete(h).where(h.c.request_id == trace.request_id, h.c.status == "pending",
                                         h.c.route != "automated"))

    def _write_decisions(self, conn: Connection, rows: list[tuple[Any, ...]]) -> None:
        """Upsert decision rows (tuples in column order) in one statement and one round trip.

        PostgreSQL: each column goes as one typed array, unnested into rows, so the statement text (parsed
        and planned once) does not depend on the batch size. Row by row, even pipelined as executemany does,
        costs socket waits for every row in the writer thread, and each wait hands the interpreter lock back
        and forth with the event loop serving the requests. SQLite (in-process): executemany of one row."""
        if self._upsert_sql is None:
            quote = self.engine.dialect.identifier_preparer.quote
            names = ", ".join(quote(c.name) for c in decisions_table.columns)
            if self.dialect == "postgresql":
                arrays = ", ".join(f"%s::{c.type.compile(dialect=self.engine.dialect)}[]"
                                   for c in decisions_table.columns)
                source = f"SELECT * FROM unnest({arrays})"
            else:
                source = f"VALUES ({', '.join('?' for _ in decisions_table.columns)})"
            self._upsert_sql = (
                f"INSERT INTO {quote(decisions_table.name)} ({names}) {source} "
                f"ON CONFLICT ({quote('request_id')}) DO UPDATE SET "
                + ", ".join(f"{quote(c.name)} = excluded.{quote(c.name)}" for c in decisions_table.columns
                            if c.name != "request_id"))
        if self.dialect == "postgresql":
            conn.exec_driver_sql(self._upsert_sql, tuple(list(column) for column in zip(*rows, strict=True)))
        else:
            conn.exec_driver_sql(self._upsert_sql, rows)

    @classmethod
    def _decision_values(cls, trace: RequestTrace) -> tuple[Any, ...]:
        """A decision row as a tuple in column order, for the DB-API directly: JSON columns serialised, and
        numbers and flags of the column's own type (a PostgreSQL array takes one type: an int among floats
        would fail the whole batch)."""
        row = cls._decision_row(trace)
        return tuple(None if (value := row[name]) is None else convert(value)
                     for name, convert in _DECISION_COLUMNS)

    def claim_clarify(self, key: str, limit: int, ttl_s: float, now: float | None = None) -> bool:
        """Count one clarifying question for conversation ``key`` if it has had fewer than ``limit``.

        One statement, atomic across processes: ``INSERT ... ON CONFLICT DO UPDATE ... WHERE count <
        limit``; the row comes back only when the count went up. A count older than ``ttl_s`` starts
        again at 1 (and such rows are pruned now and then, so the table stays bounded)."""
        if self.dialect not in ("sqlite", "postgresql"):
            raise StoreError(f"human.clarify.state 'store' needs SQLite or PostgreSQL, not {self.dialect}")
        c, now = conversations_table.c, time.time() if now is None else now
        cutoff = now - ttl_s
        insert = (sqlite_dialect.insert if self.dialect == "sqlite" else pg_dialect.insert)(conversations_table)
        expired = conversations_table.c.updated_at < cutoff
        stmt = insert.values(key=_check_id(key), clarify_count=1, updated_at=now).on_conflict_do_update(
            index_elements=["key"],
            set_={"clarify_count": case((expired, 1), else_=c.clarify_count + 1), "updated_at": now},
            where=(c.clarify_count < limit) | expired,
        ).returning(c.clarify_count)
        with self._begin() as conn:
            granted = conn.execute(stmt).first() is not None
            if granted and random.random() < 0.001:  # one claim in a thousand prunes expired counts
                conn.execute(delete(conversations_table).where(expired))
        return granted

    @staticmethod
    def _decision_row(trace: RequestTrace) -> dict[str, Any]:
        attempt = scored_attempt(trace)
        return {
            "request_id": _check_id(trace.request_id),
            "ts": trace.started_at,
            "route": trace.route,
            "trigger": _cut(trace.trigger, 256),
            "outcome": trace.outcome,
            "final_model": _cut(trace.final_model, 256),
            "final_tier": trace.final_tier,
            "confidence": _finite_or_none(trace.confidence),
            "thresholds": dict(trace.thresholds),
            "calibrations": dict(trace.calibrations),
            "arm": _cut(trace.arm, 64),
            "cost_usd": _finite_or_none(trace.total_cost_usd),
            "cost_complete": trace.cost_complete,
            "config_hash": _cut(trace.config_hash, 128),
            "scored_model": _cut(attempt.model, 256) if attempt is not None else None,
            "scored_cost_usd": attempt.cost_usd if attempt is not None else None,
            "signals": _clean_signals(attempt.raw_signals) if attempt is not None else {},
            "recorded_at": time.time(),
        }

    def _upsert_handoff(self, conn: Connection, trace: RequestTrace, decision: dict[str, Any], store_text: bool
                        ) -> None:
        reason = scrub("; ".join(trace.reasons))[-MAX_REASON_CHARS:]
        item = {
            "request_id": trace.request_id,
            "ts": trace.started_at,
            "route": trace.route,
            "trigger": decision["trigger"] if trace.route != "automated" else "spot_check",
            "reason": reason,
            "draft": trace.draft if store_text else None,
            "confidence": decision["confidence"],
            "final_model": decision["final_model"],
            "thresholds": decision["thresholds"],
            "calibrations": decision["calibrations"],
            "status": "pending",
            "resolved_at": None,
        }
        keep = {"request_id", "status", "resolved_at"} | ({"draft"} if item["draft"] is None else set())
        self._upsert(conn, handoffs_table, item, [k for k in item if k not in keep])

    def label(
        self,
        request_id: str,
        correct: bool,
        decision: str | None = None,
        reviewer: str | None = None,
        note: str | None = None,
    ) -> LabelRecord:
        """Record a reviewer's verdict and resolve the request's queue item (if any).

        ``correct``: was the AI answer right (ground truth for calibration). ``decision``: what the
        reviewer did with it, conventionally ``approved`` / ``edited`` / ``rejected``. Labelling a
        request again adds a row; the latest one counts.
        """
        if not isinstance(correct, bool):
            raise TypeError(f"correct must be a bool, not {type(correct).__name__}")
        now = time.time()
        rec = LabelRecord(request_id, correct, decision, reviewer, note, now)
        with self._begin() as conn:
            known = conn.execute(
                select(decisions_table.c.request_id).where(decisions_table.c.request_id == request_id)
            ).first()
            if known is None:
                raise UnknownRequestError(f"no recorded decision with request id {request_id!r}")
            conn.execute(labels_table.insert().values(
                request_id=request_id, correct=correct, decision=_cut(decision, 64), reviewer=_cut(reviewer, 256),
                note=scrub(note) if note is not None else None, labelled_at=now))
            conn.execute(update(handoffs_table).where(handoffs_table.c.request_id == request_id)
                         .values(status="resolved", resolved_at=now))
        return rec

    # ---------------------------------------------------------------- reading

    def pending(self, limit: int | None = 50, *, route: str | None = None) -> list[HandoffItem]:
        """Unresolved queue items, oldest first (optionally one route only)."""
        t = handoffs_table
        query = select(t).where(t.c.status == "pending").order_by(t.c.ts, t.c.request_id)
        if route is not None:
            query = query.where(t.c.route == route)
        if limit is not None:
            query = query.limit(limit)
        with self._connect() as conn:
            rows = conn.execute(query).mappings().all()
        return [_handoff(row) for row in rows]

    def handoff(self, request_id: str) -> HandoffItem | None:
        """One queue item, pending or resolved."""
        with self._connect() as conn:
            query = select(handoffs_table).where(handoffs_table.c.request_id == request_id)
            row = conn.execute(query).mappings().first()
        return None if row is None else _handoff(row)

    def labels(self, request_id: str | None = None) -> list[LabelRecord]:
        """Every label (history included), oldest first."""
        t = labels_table
        query = select(t).order_by(t.c.id)
        if request_id is not None:
            query = query.where(t.c.request_id == request_id)
        with self._connect() as conn:
            rows = conn.execute(query).mappings().all()
        return [LabelRecord(r["request_id"], bool(r["correct"]), r["decision"], r["reviewer"], r["note"],
                            r["labelled_at"]) for r in rows]

    def decisions(
        self,
        since: float | datetime | None = None,
        *,
        until: float | datetime | None = None,
        route: str | None = None,
        arm: str | None = None,
        labelled: bool | None = None,
        first: int | None = None,
        last: int | None = None,
    ) -> list[DecisionRecord]:
        """Decisions (oldest first) with their latest label, filtered by time, route, arm, label.

        ``since``/``until``: epoch seconds or datetimes (``since`` inclusive, ``until`` exclusive).
        ``first``/``last``: only the N oldest / newest matching decisions.
        """
        if first is not None and last is not None:
            raise ValueError("give first or last, not both")
        d, lb = decisions_table, labels_table
        latest = select(lb.c.request_id, func.max(lb.c.id).label("label_id")).group_by(lb.c.request_id).subquery()
        query = (
            select(d, lb.c.correct, lb.c.decision.label("label_decision"), lb.c.reviewer, lb.c.labelled_at)
            .select_from(d.outerjoin(latest, latest.c.request_id == d.c.request_id)
                         .outerjoin(lb, lb.c.id == latest.c.label_id))
        )
        if since is not None:
            query = query.where(d.c.ts >= _epoch(since))
        if until is not None:
            query = query.where(d.c.ts < _epoch(until))
        if route is not None:
            query = query.where(d.c.route == route)
        if arm is not None:
            query = query.where(d.c.arm == arm)
        if labelled is not None:
            query = query.where(lb.c.id.is_not(None) if labelled else lb.c.id.is_(None))
        if last is not None:
            query = query.order_by(d.c.ts.desc(), d.c.request_id.desc()).limit(last)
        else:
            query = query.order_by(d.c.ts, d.c.request_id)
            if first is not None:
                query = query.limit(first)
        with self._connect() as conn:
            rows = conn.execute(query).mappings().all()
        out = [self._decision(row) for row in rows]
        return out[::-1] if last is not None else out

    def get(self, request_id: str) -> DecisionRecord | None:
        """One decision with its latest label."""
        d, lb = decisions_table, labels_table
        query = (
            select(d, lb.c.correct, lb.c.decision.label("label_decision"), lb.c.reviewer, lb.c.labelled_at)
            .select_from(d.outerjoin(lb, lb.c.request_id == d.c.request_id))
            .where(d.c.request_id == request_id)
            .order_by(lb.c.id.desc())
            .limit(1)
        )
        with self._connect() as conn:
            row = conn.execute(query).mappings().first()
        return None if row is None else self._decision(row)

    @staticmethod
    def _decision(row: Mapping[str, Any]) -> DecisionRecord:
        data = dict(row)
        data.pop("recorded_at", None)
        for key in ("thresholds", "calibrations", "signals"):
            data[key] = data.get(key) or {}
        if data.get("correct") is not None:
            data["correct"] = bool(data["correct"])
        return DecisionRecord(**data)

    def arm_counts(self, since: float | datetime | None = None) -> dict[str, dict[str, float]]:
        """Per A/B arm: requests, labelled, correct, automated (+ labelled, correct) and cost sums, in SQL."""
        d, lb = decisions_table, labels_table
        latest = select(lb.c.request_id, func.max(lb.c.id).label("label_id")).group_by(lb.c.request_id).subquery()
        auto = d.c.route == "automated"
        labelled = lb.c.id.is_not(None)
        hit = lb.c.correct.is_(True)

        def n_if(cond: Any) -> Any:
            return func.coalesce(func.sum(case((cond, 1), else_=0)), 0)

        query = (
            select(d.c.arm, func.count().label("n"), n_if(labelled).label("n_labelled"),
                   n_if(hit).label("n_correct"), n_if(auto).label("n_automated"),
                   n_if(and_(auto, labelled)).label("n_automated_labelled"),
                   n_if(and_(auto, hit)).label("n_automated_correct"),
                   func.coalesce(func.sum(d.c.cost_usd), 0.0).label("cost_sum"),
                   func.count(d.c.cost_usd).label("cost_n"))
            .select_from(d.outerjoin(latest, latest.c.request_id == d.c.request_id)
                         .outerjoin(lb, lb.c.id == latest.c.label_id))
            .where(d.c.arm.is_not(None))
            .group_by(d.c.arm)
        )
        if since is not None:
            query = query.where(d.c.ts >= _epoch(since))
        with self._connect() as conn:
            rows = conn.execute(query).mappings().all()
        return {r["arm"]: {k: float(v) for k, v in r.items() if k != "arm"} for r in rows}

    def count(self) -> dict[str, int]:
        """How many decisions, pending items and labels the store holds."""
        with self._connect() as conn:
            n_dec = conn.execute(select(func.count()).select_from(decisions_table)).scalar_one()
            n_pending = conn.execute(
                select(func.count()).select_from(handoffs_table).where(handoffs_table.c.status == "pending")
            ).scalar_one()
            n_labels = conn.execute(select(func.count()).select_from(labels_table)).scalar_one()
        return {"decisions": int(n_dec), "pending": int(n_pending), "labels": int(n_labels)}

    # ---------------------------------------------------------------- lifecycle

    def close(self) -> None:
        self.engine.dispose()

    def __enter__(self) -> ReviewStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"ReviewStore({self.url!r})"


def open_store(url_or_path: str | os.PathLike[str], *, create: bool = True, echo: bool = False) -> ReviewStore:
    """Open (and create the tables of) a store: a file path / ``sqlite:///`` URL or a PostgreSQL URL.

    ``create=False`` refuses a SQLite path that does not exist yet (read-only commands use it, so a
    typo does not silently monitor an empty new database).
    """
    engine, _ = open_engine(url_or_path, what="store", error=StoreError, create=create, echo=echo)
    try:
        return ReviewStore(engine)
    except SQLAlchemyError as exc:
        engine.dispose()
        safe = engine.url.render_as_string(hide_password=True)
        raise StoreError(f"cannot open store {safe}: {exc.__class__.__name__}: {str(exc).splitlines()[0]}") from exc


def _handoff(row: Mapping[str, Any]) -> HandoffItem:
    data = dict(row)
    for key in ("thresholds", "calibrations"):
        data[key] = data.get(key) or {}
    return HandoffItem(**data)

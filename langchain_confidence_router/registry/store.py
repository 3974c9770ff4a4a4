"""The threshold registry's tables and queries: versioned tuned configurations, approvals, promotions.

It lives in the same database as the review queue (a SQLite file locally, PostgreSQL in production)
but in its own tables and its own :data:`METADATA`, so either can change without the other:

* ``cr_registry_versions``: one row per pushed version of a name: the payload (per-model thresholds,
  confidence methods and the calibration JSON contents, not paths), the ``tune`` evidence, who pushed
  it and when, who approved it and when.
* ``cr_registry_promotions``: append-only log of promotions and rollbacks. The version in force is
  the top of the stack this log builds (a promotion pushes, a rollback pops), so a rollback always
  returns to the version that was in force before the current one.

Versions are immutable once pushed; only their approval is added later.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import (
    JSON,
    Column,
    Connection,
    Engine,
    Float,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    func,
    select,
    text,
    update,
)
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from ..core.calibration import Calibration
from ..core.config import RouterConfig
from ..core.errors import ConfidenceRouterError, ConfigError
from ..core.tiers import build_tiers
from ..human.database import open_engine

__all__ = ["METADATA", "RegistryError", "RegistryStore", "VersionRecord", "open_registry", "payload_from_config"]

METADATA = MetaData()
#: PostgreSQL advisory lock taken while creating tables or numbering a version ("crregis1").
_PG_LOCK_KEY = 0x6372_7265_6769_7331

versions_table = Table(
    "cr_registry_versions", METADATA,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("name", String(128), nullable=False, index=True),
    Column("version", Integer, nullable=False),
    Column("payload", JSON, nullable=False),
    Column("evidence", JSON),
    Column("source", Text),
    Column("note", Text),
    Column("pushed_by", String(256), nullable=False),
    Column("pushed_at", Float, nullable=False),
    Column("approved_by", String(256)),
    Column("approved_at", Float),
    UniqueConstraint("name", "version", name="uq_cr_registry_name_version"),
)

promotions_table = Table(
    "cr_registry_promotions", METADATA,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("name", String(128), nullable=False, index=True),
    Column("version", Integer, nullable=False),
    Column("action", String(16), nullable=False),  # promote | rollback
    Column("by", String(256), nullable=False),
    Column("at", Float, nullable=False),
)


class RegistryError(ConfidenceRouterError):
    """The registry cannot be reached, or an operation does not fit its history (unknown name or version)."""


@dataclass(frozen=True)
class VersionRecord:
    """One pushed version and where it stands."""

    name: str
    version: int
    payload: dict[str, Any]
    evidence: dict[str, Any] | None
    source: str | None
    note: str | None
    pushed_by: str
    pushed_at: float
    approved_by: str | None
    approved_at: float | None
    #: pending | approved | promoted (in force) | previous (a rollback returns to it) | rolled_back
    status: str = "pending"
    promoted_at: float | None = None

    @property
    def approved(self) -> bool:
        return self.approved_at is not None


def payload_from_config(config: RouterConfig) -> dict[str, Any]:
    """What a version stores from a tuned configuration: its chain in escalation order, thresholds,
    methods and calibration contents.

    Calibration files are read now (relative to the configuration file), so replicas never need them.
    """
    conf = config.confidence
    models: dict[str, Any] = {}
    if not config.models:
        raise ConfigError("the tuned configuration lists no models: push what `confidence-router tune` wrote",
                          source=str(config.source) if config.source else None)
    order = [tier.name for tier in build_tiers(config)[0]]  # the escalation order this file resolves to
    for i, spec in enumerate(config.models):
        entry: dict[str, Any] = {}
        if spec.threshold is not None:
            entry["threshold"] = spec.threshold
        if spec.confidence_method is not None:
            entry["confidence_method"] = spec.confidence_method
        if spec.calibration:
            path = config.resolve_path(spec.calibration)
            try:
                data = json.loads(Path(path).read_text(encoding="utf-8"))
                Calibration.from_dict(data)
            except OSError as exc:
                raise ConfigError(f"models[{i}].calibration: cannot read {path} ({exc.strerror or exc})",
                                  source=str(config.source) if config.source else None) from None
            except (ValueError, KeyError, TypeError) as exc:
                raise ConfigError(f"models[{i}].calibration: {path} is not a valid calibration: {exc}",
                                  source=str(config.source) if config.source else None) from None
            entry["calibration"] = data
        models[spec.name] = entry
    return {"threshold": conf.threshold, "confidence_method": conf.confidence_method, "order": order,
            "models": models}


def _stack(rows: list[Mapping[str, Any]]) -> list[tuple[int, float]]:
    """(version, promoted_at) in force over time: promotions push, rollbacks pop."""
    stack: list[tuple[int, float]] = []
    for row in rows:
        if row["action"] == "rollback":
            if stack:
                stack.pop()
        else:
            stack.append((int(row["version"]), float(row["at"])))
    return stack


class RegistryStore:
    """Versions, approvals and promotions in one SQL database. Use :func:`open_registry` to get one."""

    def __init__(self, engine: Engine, display_url: str, *, create: bool = True,
                 sqlite_file: Path | None = None) -> None:
        self.engine = engine
        self._sqlite_file = sqlite_file
        self.url = display_url
        self.dialect = engine.dialect.name
        self._lock: contextlib.AbstractContextManager[Any] = (
            threading.RLock() if self.dialect == "sqlite" else contextlib.nullcontext())
        if create:
            with self._begin() as conn:
                METADATA.create_all(conn)

    @contextlib.contextmanager
    def _begin(self) -> Iterator[Connection]:
        try:
            with self._lock, self.engine.begin() as conn:
                if self.dialect == "postgresql":  # version numbers and table creation: one writer at a time
                    conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_LOCK_KEY})
                yield conn
        except SQLAlchemyError as exc:
            raise self._error(exc) from exc

    @contextlib.contextmanager
    def _connect(self) -> Iterator[Connection]:
        try:
            with self._lock, self.engine.connect() as conn:
                yield conn
        except SQLAlchemyError as exc:
            raise self._error(exc) from exc

    def _error(self, exc: SQLAlchemyError) -> RegistryError:
        first = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0] if str(exc).strip() else ""
        if "cr_registry_" in first and ("no such table" in first or "does not exist" in first):
            return RegistryError(f"registry {self.url}: no registry tables in this database yet (nothing was "
                                 "pushed here; check the URL)")
        return RegistryError(f"registry {self.url}: {exc.__class__.__name__}: {first}")

    # ---------------------------------------------------------------- operator actions

    def push(self, name: str, payload: Mapping[str, Any], *, evidence: Mapping[str, Any] | None = None,
             by: str, source: str | None = None, note: str | None = None) -> int:
        """Store a new version of ``name`` (pending approval); returns its number (1, 2, ...)."""
        for attempt in range(5):
            try:
                with self._begin() as conn:
                    last = conn.execute(select(func.max(versions_table.c.version))
                                        .where(versions_table.c.name == name)).scalar()
                    version = int(last or 0) + 1
                    conn.execute(versions_table.insert().values(
                        name=name, version=version, payload=dict(payload),
                        evidence=json.loads(json.dumps(evidence, default=str)) if evidence else None,
                        source=source, note=note, pushed_by=by, pushed_at=time.time()))
                return version
            except RegistryError as exc:  # SQLite: another process numbered the same version first
                if not isinstance(exc.__cause__, IntegrityError) or attempt == 4:
                    raise
        raise AssertionError("unreachable")

    def approve(self, name: str, version: int, *, by: str) -> VersionRecord:
        record = self.get(name, version)
        if record.approved:
            raise RegistryError(f"{name} v{version} was already approved by {record.approved_by}")
        if by == record.pushed_by:
            raise RegistryError(f"{name} v{version} was pushed by {by}; another person must approve it")
        with self._begin() as conn:
            conn.execute(update(versions_table).where(versions_table.c.name == name,
                                                      versions_table.c.version == version)
                         .values(approved_by=by, approved_at=time.time()))
        return self.get(name, version)

    def promote(self, name: str, version: int, *, by: str) -> VersionRecord:
        """Make an approved version the one every replica follows."""
        record = self.get(name, version)
        if not record.approved:
            raise RegistryError(f"{name} v{version} is not approved: run `confidence-router registry approve "
                                f"--name {name} --version {version} --by <approver>` first")
        with self._begin() as conn:
            current = _stack(self._promotion_rows(conn, name))
            if current and current[-1][0] == version:
                raise RegistryError(f"{name} v{version} is already the promoted version")
            conn.execute(promotions_table.insert().values(name=name, version=version, action="promote", by=by,
                                                          at=time.time()))
        return self.get(name, version)

    def rollback(self, name: str, *, by: str) -> tuple[int, int]:
        """Return to the version promoted before the current one; (from, to)."""
        self._known(name)
        with self._begin() as conn:
            stack = _stack(self._promotion_rows(conn, name))
            if len(stack) < 2:
                raise RegistryError(f"{name}: nothing to roll back to ("
                                    + (f"v{stack[0][0]} is in force and nothing was promoted before it)" if stack
                                       else "no version was ever promoted)"))
            conn.execute(promotions_table.insert().values(name=name, version=stack[-2][0], action="rollback",
                                                          by=by, at=time.time()))
        return stack[-1][0], stack[-2][0]

    # ---------------------------------------------------------------- reading

    def promoted_version(self, name: str) -> int | None:
        """The version in force (the cheap query replicas poll)."""
        if self._sqlite_file is not None and not self._sqlite_file.exists():
            # an open SQLite connection keeps reading a deleted or moved file: that is not the registry
            raise RegistryError(f"registry {self.url}: the database file is gone")
        with self._connect() as conn:
            stack = _stack(self._promotion_rows(conn, name))
        return stack[-1][0] if stack else None

    def get(self, name: str, version: int) -> VersionRecord:
        with self._connect() as conn:
            row = conn.execute(select(versions_table).where(versions_table.c.name == name,
                                                            versions_table.c.version == version)).mappings().first()
            promotions = self._promotion_rows(conn, name)
        if row is None:
            self._known(name)
            raise RegistryError(f"{name} has no version {version} in {self.url}")
        return self._record(row, promotions)

    def history(self, name: str) -> list[VersionRecord]:
        """Every version of ``name``, newest first, with its status."""
        with self._connect() as conn:
            rows = conn.execute(select(versions_table).where(versions_table.c.name == name)
                                .order_by(versions_table.c.version.desc())).mappings().all()
            promotions = self._promotion_rows(conn, name)
        if not rows:
            self._known(name)
        return [self._record(r, promotions) for r in rows]

    def names(self) -> list[str]:
        with self._connect() as conn:
            query = select(versions_table.c.name).distinct().order_by(versions_table.c.name)
            return [r[0] for r in conn.execute(query)]

    def _known(self, name: str) -> None:
        names = self.names()
        if name not in names:
            raise RegistryError(f"no versions named {name!r} in {self.url} (known: {', '.join(names) or 'none'})")

    @staticmethod
    def _promotion_rows(conn: Connection, name: str) -> list[Mapping[str, Any]]:
        p = promotions_table
        return list(conn.execute(select(p.c.version, p.c.action, p.c.at).where(p.c.name == name)
                                 .order_by(p.c.id)).mappings())

    @staticmethod
    def _record(row: Mapping[str, Any], promotions: list[Mapping[str, Any]]) -> VersionRecord:
        version = int(row["version"])
        stack = _stack(promotions)
        times = [float(p["at"]) for p in promotions if int(p["version"]) == version]
        if stack and stack[-1][0] == version:
            status = "promoted"
        elif any(v == version for v, _ in stack):
            status = "previous"  # promoted before the current one: where a rollback goes
        elif times:
            status = "rolled_back"
        else:
            status = "approved" if row["approved_at"] is not None else "pending"
        data = {k: row[k] for k in ("name", "payload", "evidence", "source", "note", "pushed_by", "pushed_at",
                                    "approved_by", "approved_at")}
        return VersionRecord(version=version, status=status, promoted_at=times[-1] if times else None, **data)

    def close(self) -> None:
        self.engine.dispose()

    def __enter__(self) -> RegistryStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_registry(url_or_path: str | os.PathLike[str], *, create: bool = True) -> RegistryStore:
    """Open a registry: a SQLite path / ``sqlite:///`` URL or a PostgreSQL URL.

    ``create=False`` (replicas, read commands) neither creates a SQLite file nor tables, so a typo in
    the URL is an error naming it instead of an empty registry.
    """
    engine, sqlite_file = open_engine(url_or_path, what="registry", error=RegistryError, create=create)
    display = engine.url.render_as_string(hide_password=True)
    try:
        return RegistryStore(engine, display, create=create, sqlite_file=sqlite_file)
    except RegistryError:
        engine.dispose()
        raise

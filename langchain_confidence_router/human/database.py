"""The SQLAlchemy engine behind the review store and the threshold registry, set up in one place.

A plain path or ``sqlite:///...`` URL is SQLite (zero setup); ``postgresql://`` (or ``postgres://``) is
PostgreSQL through psycopg 3. Both stores need the same things: the URL turned into a driver URL, a missing
SQLite file refused when nothing should be created, the SQLite pragmas, pool settings, and error messages
that never print a password (they end up in traces and logs).
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.pool import StaticPool

__all__ = ["CONNECT_TIMEOUT_S", "open_engine", "safe_url", "sqlalchemy_url"]

#: Longest wait for a PostgreSQL connection (a black-holed address fails instead of hanging for minutes).
CONNECT_TIMEOUT_S = 5


def sqlalchemy_url(url_or_path: str | os.PathLike[str]) -> tuple[str, bool]:
    """(SQLAlchemy URL, is_sqlite) for a path or URL; postgresql:// gets the psycopg 3 driver."""
    raw = os.fspath(url_or_path)
    if "://" not in raw:
        if raw == ":memory:":
            return "sqlite://", True
        path = Path(raw).expanduser().resolve()
        path.parent.mkdir(parents=True, exist_ok=True)
        return f"sqlite:///{path}", True
    scheme, rest = raw.split("://", 1)
    if scheme in ("postgresql", "postgres"):
        return f"postgresql+psycopg://{rest}", False
    return raw, scheme.split("+")[0] == "sqlite"


def safe_url(url: str) -> str:
    """The URL with any password hidden."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except (SQLAlchemyError, ValueError):
        return url.split("://", 1)[0] + "://<unparsable URL>"


def open_engine(url_or_path: str | os.PathLike[str], *, what: str, error: type[Exception], create: bool = True,
                echo: bool = False) -> tuple[Engine, Path | None]:
    """An engine for ``url_or_path`` and its SQLite file (None for PostgreSQL and in-memory SQLite).

    ``what`` names the store in errors (``store``, ``registry``), raised as ``error``. ``create=False``
    refuses a SQLite file that does not exist yet, so a typo is an error naming it, not a new empty database.
    """
    url, is_sqlite = sqlalchemy_url(url_or_path)
    db = url.split(":///", 1)[1] if is_sqlite and ":///" in url else ""
    sqlite_file = Path(db) if is_sqlite and db not in ("", ":memory:") else None
    if sqlite_file is not None and not create and not sqlite_file.exists():
        raise error(f"no {what} at {db}: no such database file")
    kwargs: dict[str, Any] = {"echo": echo}
    if is_sqlite:
        kwargs["connect_args"] = {"check_same_thread": False, "timeout": 30}
        if sqlite_file is None:
            kwargs["poolclass"] = StaticPool  # one shared in-memory database, not one per connection
    else:
        kwargs["pool_pre_ping"] = True
        kwargs["connect_args"] = {"connect_timeout": CONNECT_TIMEOUT_S}
    try:
        engine = create_engine(url, **kwargs)
    except (SQLAlchemyError, ImportError, ValueError) as exc:
        raise error(f"cannot open {what} {safe_url(url)}: {str(exc).replace(url, safe_url(url))}") from exc
    if is_sqlite:
        event.listen(engine, "connect", _sqlite_pragmas)
    return engine, sqlite_file


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    try:
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA busy_timeout=30000")  # other processes writing: wait instead of failing
        with contextlib.suppress(Exception):  # WAL: readers (monitor) never block the writer
            cur.execute("PRAGMA journal_mode=WAL")
            # In WAL mode NORMAL never corrupts; a power cut may lose the last commits, not the file.
            cur.execute("PRAGMA synchronous=NORMAL")
    finally:
        cur.close()

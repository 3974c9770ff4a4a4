"""Append-only JSONL audit log of routing decisions, safe to hand to an auditor.

One line per request: who handled it (route and support tier), why (trigger, reasons), on what
evidence (confidence, thresholds and calibration versions in force, A/B arm, config hash). Prompt and
answer text are left out unless ``include_text=True``, and secrets never reach the file: every value
under a key that names a credential (``api_key``, ``authorization``, ``x-api-key``, ``token``, ...) and
every string that looks like a key (``sk-...``, ``Bearer ...``) is replaced before the line is written,
wherever it sits in the record.

Each record is written with one ``os.write`` on a descriptor opened ``O_APPEND``, so lines from
several threads (serialised by a lock) or processes never interleave, and a crash loses at most the
line being written. ``fsync=True`` also forces each line to disk (slower; for regulated setups).
"""

from __future__ import annotations

import json
import math
import os
import threading
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ..core.redact import REDACTED, is_secret_key, redact_text
from ..core.trace import RequestTrace

__all__ = ["AUDIT_FORMAT", "REDACTED", "ROUTE_TIERS", "AuditLog", "audit_record", "is_secret_key", "scrub"]

AUDIT_FORMAT = "confidence-router/audit@1"
#: Support tier of each route: 1 automated, 2 human-assisted (AI draft), 3 human-primary.
ROUTE_TIERS: dict[str, int | None] = {"automated": 1, "human_assisted": 2, "human_primary": 3, "clarify": None}

def scrub(value: Any) -> Any:
    """A copy of ``value`` with credentials replaced by ``[REDACTED]``: by key name and by shape."""
    kind = type(value)  # exact-type fast paths first: the background writer scrubs every record
    if kind is str:
        return redact_text(value)
    if kind is float:
        return value if math.isfinite(value) else None
    if value is None or kind is int or kind is bool:
        return value
    if isinstance(value, Mapping):
        return {str(k): (REDACTED if is_secret_key(str(k)) and v not in (None, "") else scrub(v))
                for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [scrub(v) for v in value]
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, float) and not math.isfinite(value):
        return None  # JSON has no NaN/inf; an auditor's parser would choke on them
    if value is None or isinstance(value, bool | int | float):
        return value
    return scrub(str(value))


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, tz=UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def audit_record(
    trace: RequestTrace,
    *,
    include_text: bool = False,
    prompt: str | None = None,
    answer: str | None = None,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The (scrubbed) audit record of one trace; text fields only with ``include_text``."""
    record: dict[str, Any] = {
        "format": AUDIT_FORMAT,
        "request_id": trace.request_id,
        "time": _iso(trace.started_at),
        "logged_at": _iso(time.time()),
        "route": trace.route,
        "route_tier": ROUTE_TIERS.get(trace.route),
        "trigger": trace.trigger,
        "outcome": trace.outcome,
        "confidence": trace.confidence,
        "final_model": trace.final_model,
        "final_tier": trace.final_tier,
        "thresholds": dict(trace.thresholds),
        "calibrations": dict(trace.calibrations),
        "arm": trace.arm,
        "config_hash": trace.config_hash,
        "reasons": list(trace.reasons),
        "attempts": [
            {"tier": a.tier, "model": a.model, "purpose": getattr(a, "purpose", "answer"), "decision": a.decision,
             "confidence": a.confidence, "threshold": a.threshold, "calibration": a.calibration,
             "error_kind": a.error_kind}
            for a in trace.attempts
        ],
        "total_cost_usd": trace.total_cost_usd,
        "total_latency_ms": trace.total_latency_ms,
        "metadata": dict(trace.metadata),
    }
    if include_text:
        record["prompt"] = prompt
        record["answer"] = answer if answer is not None else trace.draft
    if extra:
        record["extra"] = dict(extra)
    return scrub(record)


class AuditLog:
    """Thread-safe append-only JSONL audit log: ``AuditLog(path).write(trace)`` per routing decision."""

    def __init__(self, path: str | os.PathLike[str], *, include_text: bool = False, fsync: bool = False) -> None:
        self.path = Path(path)
        self.include_text = include_text
        self.fsync = fsync
        self._lock = threading.Lock()
        self._fd: int | None = None
        self._open()

    def _open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # 0o600: the log names requests, models and (optionally) text; it is not for every local user.
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)

    def write(
        self,
        trace: RequestTrace,
        *,
        prompt: str | None = None,
        answer: str | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Append one line for ``trace`` and return the record written (already scrubbed)."""
        record = audit_record(trace, include_text=self.include_text, prompt=prompt, answer=answer, extra=extra)
        data = (json.dumps(record, ensure_ascii=False, separators=(",", ":"), allow_nan=False) + "\n").encode()
        self._append(data)
        return record

    def write_many(
        self,
        entries: Sequence[tuple[RequestTrace, str | None, str | None, Mapping[str, Any] | None]],
    ) -> None:
        """Append one line per ``(trace, prompt, answer, extra)`` in a single write (a batch)."""
        data = b"".join(
            (json.dumps(audit_record(t, include_text=self.include_text, prompt=p, answer=a, extra=x),
                        ensure_ascii=False, separators=(",", ":"), allow_nan=False) + "\n").encode()
            for t, p, a, x in entries)
        self._append(data)

    def _append(self, data: bytes) -> None:
        with self._lock:
            if self._fd is None:
                raise ValueError(f"audit log {self.path} is closed")
            view = memoryview(data)
            while view:  # os.write may write less than asked (rare on regular files); never drop the tail
                view = view[os.write(self._fd, view):]
            if self.fsync:
                os.fsync(self._fd)

    def reopen(self) -> None:
        """Reopen the path, e.g. after logrotate renamed the file (call it from a SIGHUP handler)."""
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
            self._open()

    def close(self) -> None:
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None

    def __enter__(self) -> AuditLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

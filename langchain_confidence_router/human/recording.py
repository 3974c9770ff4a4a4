"""Record finished requests to the review store and the audit log off the request path.

The policy calls an observer when a request ends; on the proxy and ``ainvoke`` that is on the event
loop. The observers built here only put the trace on a bounded in-memory queue; one daemon thread per
writer takes traces off in batches and writes each batch in one store transaction and one audit-log
append.

One thread serves sync and async callers alike: putting on a ``queue.Queue`` takes a lock held for
microseconds and never waits for I/O, so it does not block the event loop, and a thread (unlike an
asyncio task) keeps writing when the caller's loop is closed, as it is between ``asyncio.run`` calls.

Full queue (``human.recording.on_full``):

* ``block`` (default): a sync caller waits up to ``block_timeout_s`` for room, then drops. On an
  event-loop thread the observer never waits (that would stall every request on the loop): it drops.
* ``drop``: drop at once.

A dropped decision is never silent: it is counted (:meth:`RecordingWriter.stats`), logged (warning,
at most once per ``LOG_EVERY_S``), added to the dropped request's own trace reasons, and the next
audit line written says how many decisions were dropped before it (``extra.recording_dropped``).
``close()`` writes what is queued, bounded by ``flush_timeout_s``; :func:`close_all` closes every
writer and runs at interpreter exit and in the LiteLLM proxy's shutdown (``litellm_hooks.shutdown``:
the proxy ends by re-raising SIGTERM, which skips ``atexit``).
"""

from __future__ import annotations

import asyncio
import atexit
import logging
import queue
import random
import threading
import time
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from ..core.config import RouterConfig
from ..core.engine import register_observer_factory
from ..core.policy import Observer
from ..core.trace import RequestTrace

__all__ = ["RecordingWriter", "close_all", "flush_all", "observers_for", "process_stats", "recording_stats",
           "writers_for"]

logger = logging.getLogger(__name__)
LOG_EVERY_S = 10.0


@dataclass(frozen=True)
class Decision:
    """One finished request waiting to be written."""

    trace: RequestTrace
    request_text: str
    answer_text: str | None
    spot_check: bool


class Sink(Protocol):
    """Where a batch goes: the review store or the audit log (or a test double)."""

    name: str

    def write_batch(self, batch: Sequence[Decision], dropped_before: int) -> None: ...

    def close(self) -> None: ...


class StoreSink:
    name = "store"

    def __init__(self, store: Any, store_text: bool) -> None:
        self.store, self.store_text = store, store_text

    def write_batch(self, batch: Sequence[Decision], dropped_before: int) -> None:
        self.store.record_many([(d.trace, d.spot_check) for d in batch], store_text=self.store_text)

    def close(self) -> None:
        self.store.close()


class AuditSink:
    name = "audit"

    def __init__(self, audit: Any) -> None:
        self.audit = audit

    def write_batch(self, batch: Sequence[Decision], dropped_before: int) -> None:
        entries = []
        for i, d in enumerate(batch):
            extra = {"recording_dropped": dropped_before} if i == 0 and dropped_before else None
            entries.append((d.trace, d.request_text or None, d.answer_text, extra))
        self.audit.write_many(entries)

    def close(self) -> None:
        self.audit.close()


class RecordingWriter:
    """A bounded queue and one background thread writing batches to the given sinks."""

    def __init__(
        self,
        sinks: Sequence[Sink],
        *,
        queue_size: int = 10_000,
        batch_size: int = 200,
        batch_wait_s: float = 0.5,
        on_full: str = "block",
        block_timeout_s: float = 0.05,
        flush_timeout_s: float = 10.0,
    ) -> None:
        if on_full not in ("block", "drop"):
            raise ValueError(f"human.recording.on_full must be 'block' or 'drop', not {on_full!r}")
        self.sinks = list(sinks)
        self.batch_size = batch_size
        self.batch_wait_s = batch_wait_s
        self.on_full = on_full
        self.block_timeout_s = block_timeout_s
        self.flush_timeout_s = flush_timeout_s
        self._queue: queue.Queue[Decision | None] = queue.Queue(maxsize=queue_size)
        self._lock = threading.Lock()
        self._counts = {"queued": 0, "written": 0, "dropped": 0, "failed": 0, "batches": 0}
        self._dropped_unreported = 0
        self._wake = threading.Event()  # cuts the batch wait short: flush() and close() want it written now
        self._last_warn = 0.0
        self._closed = False
        self._retired = False  # closed and its counts moved into the process totals
        self._thread = threading.Thread(target=self._run, name="confidence-router-recorder", daemon=True)
        self._thread.start()
        _open_writers.add(self)

    # ------------------------------------------------------------ request path

    def submit(self, decision: Decision) -> bool:
        """Queue one decision; ``False`` (counted, logged, noted in its trace) when it was dropped."""
        if not self._closed:
            try:
                if self.on_full == "block" and self.block_timeout_s > 0 and not _on_event_loop():
                    self._queue.put(decision, timeout=self.block_timeout_s)
                else:
                    self._queue.put_nowait(decision)
                with self._lock:
                    self._counts["queued"] += 1
                return True
            except queue.Full:
                pass
        self._drop(decision)
        return False

    def _drop(self, decision: Decision) -> None:
        now = time.monotonic()
        with self._lock:
            self._counts["dropped"] += 1
            self._dropped_unreported += 1
            dropped = self._counts["dropped"]
            warn = now - self._last_warn >= LOG_EVERY_S
            if warn:
                self._last_warn = now
        if self._retired:
            with _closed_lock:
                _closed_totals["dropped"] = _closed_totals.get("dropped", 0) + 1
        reason = "closed" if self._closed else f"queue full ({self._queue.maxsize})"
        decision.trace.reasons.append(f"recording dropped: {reason}; not in the review store or audit log")
        if warn:
            logger.warning("recording: dropped request %s (%s); %d dropped so far",
                           decision.trace.request_id, reason, dropped)

    def stats(self) -> dict[str, int]:
        """Counts since start: queued, written, dropped, failed (sink errors), batches, and current depth."""
        with self._lock:
            return {**self._counts, "depth": self._queue.qsize()}

    # ------------------------------------------------------------ background

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            batch = [first]
            stop = False
            # Wait, then drain: waiting on the queue instead would wake this thread (and take the
            # interpreter lock from the request path) on every put, hundreds of times a second. A batch
            # costs about 0.5 ms of CPU in this process whatever its size (connection check, transaction,
            # statements) against about 0.04 ms per decision, so fuller batches are what keep recording cheap.
            if self.batch_wait_s > 0 and self._queue.qsize() < self.batch_size and not self._closed:
                self._wake.wait(self.batch_wait_s)
                self._wake.clear()
            while len(batch) < self.batch_size:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    stop = True
                    break
                batch.append(item)
            self._write(batch)
            if stop:
                return

    def _write(self, batch: list[Decision]) -> None:
        with self._lock:
            dropped_before, self._dropped_unreported = self._dropped_unreported, 0
        failed = False
        for sink in self.sinks:
            try:
                sink.write_batch(batch, dropped_before)
            except Exception:
                failed = True
                logger.exception("recording: %s failed to write %d decision(s)", sink.name, len(batch))
        with self._lock:
            self._counts["batches"] += 1
            self._counts["failed" if failed else "written"] += len(batch)

    # ------------------------------------------------------------ shutdown

    def flush(self, timeout_s: float | None = None) -> bool:
        """Wait until everything queued so far is written; ``False`` on timeout."""
        deadline = time.monotonic() + (self.flush_timeout_s if timeout_s is None else timeout_s)
        while time.monotonic() < deadline:
            self._wake.set()  # again each time: the writer clears it after every wait
            with self._lock:
                done = self._counts["written"] + self._counts["failed"]
                if done >= self._counts["queued"]:
                    return True
            time.sleep(0.005)
        return False

    def close(self, timeout_s: float | None = None) -> None:
        """Write what is queued (bounded by ``flush_timeout_s``), stop the thread, close the sinks."""
        if self._closed:
            return
        self._closed = True
        self._wake.set()
        self._queue.put(None)  # the queue may be full: this waits for the writer to make room
        self._thread.join(self.flush_timeout_s if timeout_s is None else timeout_s)
        _open_writers.discard(self)
        with _closed_lock:  # the process totals keep what a closed writer counted (counters never go down)
            for name, value in self.stats().items():
                if name != "depth":
                    _closed_totals[name] = _closed_totals.get(name, 0) + value
            self._retired = True
        if self._thread.is_alive():
            left = self._queue.qsize()
            logger.error("recording: %d decision(s) still queued after %.1fs at shutdown; not written",
                         left, self.flush_timeout_s)
            return
        for sink in self.sinks:
            try:
                sink.close()
            except Exception:
                logger.exception("recording: closing %s failed", sink.name)


def _on_event_loop() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


_open_writers: weakref.WeakSet[RecordingWriter] = weakref.WeakSet()
_closed_totals: dict[str, int] = {}
_closed_lock = threading.Lock()


def process_stats() -> dict[str, int]:
    """Counts of every writer this process opened (closed ones included) and the current queue depth:
    what the metrics package exports as ``confidence_router_recording_*``."""
    with _closed_lock:
        totals = {name: _closed_totals.get(name, 0) for name in ("queued", "written", "dropped", "failed", "batches")}
    totals["depth"] = 0
    for writer in list(_open_writers):
        for name, value in writer.stats().items():
            totals[name] += value
    return totals


def flush_all(timeout_s: float | None = None) -> bool:
    """Wait until every open writer has written what was queued so far (e.g. before reading the store)."""
    return all([w.flush(timeout_s) for w in list(_open_writers)])


def recording_stats(cascade: Any) -> list[dict[str, int]]:
    """``stats()`` of the writers behind a cascade's observers (queued, written, dropped, failed, depth)."""
    return [obs.writer.stats() for obs in cascade.observers if hasattr(obs, "writer")]


@atexit.register
def close_all() -> None:
    """Write what every open writer holds (each bounded by its ``flush_timeout_s``) and close them."""
    for writer in list(_open_writers):
        writer.close()


# ---------------------------------------------------------------- wiring from a configuration


def writers_for(config: RouterConfig) -> list[RecordingWriter]:
    """The background writer for the review store and audit log a ``human:`` section asks for."""
    human = config.human
    if human is None or not human.enabled or not (human.store or human.audit_log):
        return []
    sinks: list[Sink] = []
    if human.store:
        from .store import open_store  # optional extra: SQLAlchemy

        target = human.store if "://" in human.store else str(config.resolve_path(human.store))
        sinks.append(StoreSink(open_store(target), human.store_text))
    if human.audit_log:
        from .audit import AuditLog

        sinks.append(AuditSink(AuditLog(config.resolve_path(human.audit_log), include_text=human.store_text)))
    rec = human.recording
    return [RecordingWriter(sinks, queue_size=rec.queue_size, batch_size=rec.batch_size,
                            batch_wait_s=rec.batch_wait_s, on_full=rec.on_full,
                            block_timeout_s=rec.block_timeout_s, flush_timeout_s=rec.flush_timeout_s)]


def observer_for(writer: RecordingWriter, spot_check_rate: float) -> Observer:
    def record(trace: RequestTrace, request_text: str, answer_text: str | None) -> None:
        spot = trace.route == "automated" and spot_check_rate > 0 and random.random() < spot_check_rate
        writer.submit(Decision(trace, request_text, answer_text, spot))

    record.writer = writer  # type: ignore[attr-defined]  # so adapters and tests can reach stats()
    return record


def observers_for(config: RouterConfig) -> list[Observer]:
    """Observers that queue each finished request for the background writer (one per cascade)."""
    rate = config.human.spot_check_rate if config.human is not None else 0.0
    return [observer_for(w, rate) for w in writers_for(config)]


register_observer_factory(observers_for)

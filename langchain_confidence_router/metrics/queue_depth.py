"""Human queue depth, read from the review store by a background thread (never on the request path).

One poller per store per process: it counts pending review items by route every
``interval_s`` seconds and sets ``confidence_router_human_queue_depth{route}``. A scrape only
reads that in-memory gauge. Every replica reads the same shared store, so dashboards and alerts
take ``max`` over replicas, not ``sum``.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from .instruments import RouterMetrics

__all__ = ["QueueDepthPoller", "queue_depth_poller"]

logger = logging.getLogger(__name__)

#: Routes always exported (0 when empty), so an alert on an empty queue has a series to read.
ROUTES = ("automated", "human_assisted", "human_primary")
#: Failures are logged at most this often.
_LOG_EVERY_S = 60.0


class QueueDepthPoller:
    """A daemon thread that sets the queue-depth gauge from ``store`` every ``interval_s`` seconds."""

    def __init__(self, store: Any, metrics: RouterMetrics, interval_s: float = 15.0) -> None:
        self.store = store
        self.metrics = metrics
        self.interval_s = interval_s
        self._stop = threading.Event()
        self._last_log = 0.0
        self._thread = threading.Thread(target=self._run, name="confidence-router-queue-depth", daemon=True)

    def start(self) -> QueueDepthPoller:
        self._thread.start()
        return self

    def stop(self, timeout_s: float = 5.0) -> None:
        self._stop.set()
        self._thread.join(timeout_s)

    def poll_once(self) -> dict[str, int]:
        """Read the pending counts by route and set the gauge; returns them."""
        from sqlalchemy import func, select

        from ..human.store import handoffs_table as t

        query = select(t.c.route, func.count()).where(t.c.status == "pending").group_by(t.c.route)
        with self.store._connect() as conn:  # the store's own lock and connection handling
            counts = {str(route): int(n) for route, n in conn.execute(query).all()}
        for route in {*ROUTES, *counts}:
            self.metrics.queue_depth.labels(route).set(counts.get(route, 0))
        return counts

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.poll_once()
            except Exception:  # a store outage must not end the thread; the error is counted and logged
                self.metrics.queue_poll_errors.inc()
                now = time.monotonic()
                if now - self._last_log >= _LOG_EVERY_S:
                    self._last_log = now
                    logger.exception("metrics: reading the human queue depth failed")
            self._stop.wait(self.interval_s)


_pollers: dict[str, QueueDepthPoller] = {}
_lock = threading.Lock()


def queue_depth_poller(target: str, metrics: RouterMetrics, interval_s: float) -> QueueDepthPoller:
    """The process's poller for the store at ``target`` (a path or URL), started on first request."""
    with _lock:
        poller = _pollers.get(target)
        if poller is None:
            from ..human.store import open_store  # optional extra: SQLAlchemy

            poller = _pollers[target] = QueueDepthPoller(open_store(target), metrics, interval_s).start()
        return poller

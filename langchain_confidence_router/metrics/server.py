"""A ``/metrics`` port for processes that have none (LangChain apps, the scheduled monitor).

``prometheus_client.start_http_server`` serves the default registry from a daemon thread; it is
started once per address and port per process, however many routers ask for it.
"""

from __future__ import annotations

import threading

from prometheus_client import start_http_server

from ..core.errors import ConfigError

__all__ = ["serve_metrics"]

_served: set[tuple[str, int]] = set()
_lock = threading.Lock()


def serve_metrics(port: int, addr: str = "0.0.0.0") -> None:
    """Serve the default registry on ``addr:port`` (once per process); a clear error if it cannot listen."""
    with _lock:
        if (addr, port) in _served:
            return
        try:
            start_http_server(port, addr=addr)
        except OSError as exc:
            raise ConfigError(f"metrics.port: cannot serve metrics on {addr}:{port} ({exc.strerror or exc})",
                              fields=["metrics.port"]) from None
        _served.add((addr, port))

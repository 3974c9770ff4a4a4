"""Live Prometheus metrics for both adapters (the ``metrics`` extra: ``prometheus_client``).

A configuration with a ``metrics:`` section gets a :class:`~.observer.MetricsObserver` on its
cascade (wired here through the core's observer factory, like the human package's recording), so
the LangChain router and the LiteLLM handler export the same series. This module imports only the
core; ``prometheus_client`` is imported when a configuration asks for metrics.

```yaml
metrics:
  name: support-bot          # the `router` label (default: the LiteLLM model group, else "default")
  port: 9464                 # LangChain apps: serve /metrics here; the proxy uses its own /metrics
  human_daily_capacity: 200  # exported for the queue-depth alert
```

Or explicitly, without the section: ``cascade.add_observer(metrics_observer(config, name=...))``
and ``serve_metrics(9464)``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..core.config import RouterConfig
from ..core.engine import register_observer_factory
from ..core.errors import ConfigError
from ..core.policy import Observer

if TYPE_CHECKING:
    from .instruments import RouterMetrics
    from .observer import MetricsObserver

__all__ = ["metrics_observer", "observers_for", "serve_metrics"]

_INSTALL = "pip install 'langchain-confidence-router[metrics]'"


def _require_prometheus() -> None:
    try:
        import prometheus_client  # noqa: F401
    except ImportError:
        raise ConfigError(f"metrics: needs prometheus_client ({_INSTALL})", fields=["metrics"]) from None


def metrics_observer(config: RouterConfig, *, name: str | None = None, metrics: RouterMetrics | None = None
                     ) -> MetricsObserver:
    """An observer exporting ``config``'s requests (priced for the always-largest estimate) to ``metrics``
    (default: prometheus_client's default registry)."""
    _require_prometheus()
    import logging

    from .instruments import default_metrics
    from .observer import MetricsObserver, largest_tier_price

    largest = largest_tier_price(config)
    if largest is None and config.models:
        logging.getLogger(__name__).warning(
            "metrics: no price for the largest tier %r (set input_cost_per_token / output_cost_per_token on it);"
            " cost saved against always-largest is not exported", config.models[-1].name)
    return MetricsObserver(metrics or default_metrics(), name=name, largest=largest)


def serve_metrics(port: int, addr: str = "0.0.0.0") -> None:
    """Serve prometheus_client's default registry on ``addr:port`` from a daemon thread (once per process)."""
    _require_prometheus()
    from .server import serve_metrics as serve

    serve(port, addr)


def observers_for(config: RouterConfig) -> list[Observer]:
    """The metrics observer a ``metrics:`` section asks for; starts its port and queue-depth reader."""
    settings = config.metrics
    if settings is None or not settings.enabled:
        return []
    observer = metrics_observer(config, name=settings.name)
    if settings.port is not None:
        serve_metrics(settings.port, settings.addr)
    if settings.human_daily_capacity is not None:
        observer.metrics.set_human_daily_capacity(settings.human_daily_capacity)
    human = config.human
    if human is not None and human.enabled and (human.store or human.audit_log):
        from .recording import register_recording_collector

        register_recording_collector()  # the background writer's queued/written/dropped/failed counts
    if human is not None and human.enabled and human.store:
        from .queue_depth import queue_depth_poller

        target = human.store if "://" in human.store else str(config.resolve_path(human.store))
        queue_depth_poller(target, observer.metrics, settings.queue_depth_interval_s)
    return [observer]


def __getattr__(name: str) -> Any:
    if name in ("RouterMetrics", "default_metrics"):
        from . import instruments

        return getattr(instruments, name)
    if name in ("MetricsObserver", "Price", "largest_tier_price"):
        from . import observer

        return getattr(observer, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


register_observer_factory(observers_for)

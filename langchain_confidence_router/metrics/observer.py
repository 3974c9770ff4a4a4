"""The metrics observer: one finished trace in, a few in-memory Prometheus updates out.

The policy calls observers once per request when it finishes, on the request's thread or event
loop, so this does no I/O: it only increments counters and histograms held in memory (a few
microseconds). Scrapes, pushes and the queue-depth reads happen elsewhere.

What each request adds:

* ``requests_total{router, route, outcome, model}``: the answering model (``none`` when no model
  answered, e.g. a person answers without a draft or the request failed);
* ``escalations_total{router, model}``: each answer judged not confident enough, by its model
  (an attempt cut by early abort included);
* ``early_aborts_total{router, model}`` and ``aborted_tokens_total{router, model}``: attempts cut by
  the early-abort rule and the output tokens they received (and were billed for); the tokens they
  would have written had they finished are not knowable;
* ``confidence{router, model}``: the confidence of each scored answer;
* ``cost_usd_total{router, model}``: each tier call's cost;
* ``always_largest_cost_usd_total{router}`` and ``compared_cost_usd_total{router}``: for a request
  whose cost is complete and that a model answered, the estimated cost had the largest tier
  answered it alone (the request's prompt tokens and answer tokens at the largest tier's price),
  and what it actually cost; cost saved is their difference;
* ``decision_seconds{router}``: total time minus the time inside tier calls (a cut attempt's call lasts
  from opening its stream to closing it, the abort rule's checks between chunks included);
* ``registry_version{router, name}`` and ``registry_stale{router, name}``: the threshold-registry
  version in force (0 while none is loaded) and whether it is a stale last-known-good one. The
  cascade pushes each change from the registry poller (:meth:`MetricsObserver.on_registry_status`),
  so an idle replica's gauges move too: for ``metrics.name`` from start-up, for a LiteLLM model group
  (the label without a name) from its first request on.
"""

from __future__ import annotations

import logging
import sys
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..core.config import RouterConfig
from ..core.tiers import order_models
from ..core.trace import AttemptTrace, RequestTrace
from .instruments import RouterMetrics

__all__ = ["MAX_ROUTER_NAMES", "MetricsObserver", "Price", "largest_tier_price"]

logger = logging.getLogger(__name__)

#: Distinct ``router`` label values one observer creates; beyond that they are exported as ``other``.
MAX_ROUTER_NAMES = 64


@dataclass(frozen=True)
class Price:
    """USD per token of one model, and where the figures came from."""

    model: str
    input_per_token: float
    output_per_token: float
    source: str

    def cost(self, tokens_in: int, tokens_out: float) -> float:
        return tokens_in * self.input_per_token + tokens_out * self.output_per_token


def largest_tier_price(config: RouterConfig) -> Price | None:
    """The price of the configuration's last tier in escalation order.

    From the model's ``input_cost_per_token``/``output_cost_per_token`` in the configuration, else
    from LiteLLM's model cost map under the tier's name when LiteLLM is already loaded (the proxy),
    else ``None`` (no always-largest estimate).
    """
    if not config.models:
        return None
    spec = order_models(list(config.models), config)[0][-1]
    if spec.input_cost_per_token is not None or spec.output_cost_per_token is not None:
        return Price(spec.name, spec.input_cost_per_token or 0.0, spec.output_cost_per_token or 0.0, "configuration")
    litellm = sys.modules.get("litellm")
    entry = getattr(litellm, "model_cost", {}).get(spec.name) if litellm is not None else None
    if isinstance(entry, Mapping) and entry.get("input_cost_per_token") is not None:
        return Price(spec.name, float(entry["input_cost_per_token"]), float(entry.get("output_cost_per_token") or 0.0),
                     "litellm model cost map")
    return None


class MetricsObserver:
    """An observer (``cascade.add_observer``) that records each finished request in :class:`RouterMetrics`.

    ``name`` is the ``router`` label; without one, a LiteLLM request is labelled with its model
    group (operator-defined) and anything else with ``default``. ``largest`` prices the
    always-largest estimate; ``None`` leaves those two counters alone.
    """

    def __init__(self, metrics: RouterMetrics, *, name: str | None = None, largest: Price | None = None) -> None:
        self.metrics = metrics
        self.name = name
        self.largest = largest
        self._names: set[str] = set()
        self._lock = threading.Lock()
        self._registry: dict[str, Mapping[str, Any]] = {}  # registry name -> the status in force
        self._registry_routers: dict[str, set[str]] = {}  # registry name -> router labels exported for it

    def __call__(self, trace: RequestTrace, request_text: str, answer_text: str | None) -> None:
        m = self.metrics
        router = self._router(trace)
        m.requests.labels(router, trace.route, trace.outcome, trace.final_model or "none").inc()
        upstream_ms = 0.0
        for attempt in trace.attempts:
            upstream_ms += attempt.latency_ms or 0.0
            if attempt.cost_usd:
                m.cost.labels(router, attempt.model).inc(attempt.cost_usd)
            if attempt.purpose != "answer":
                continue
            if attempt.confidence is not None:
                m.confidence.labels(router, attempt.model).observe(attempt.confidence)
            if attempt.decision == "escalate":
                m.escalations.labels(router, attempt.model).inc()
            if attempt.aborted_at_token is not None:
                m.early_aborts.labels(router, attempt.model).inc()
                m.aborted_tokens.labels(router, attempt.model).inc(attempt.tokens_out or 0)
        if trace.total_latency_ms is not None:
            # tier calls run one after another today; with overlapping calls this would undercount, hence max(0)
            m.decision_seconds.labels(router).observe(max(0.0, trace.total_latency_ms - upstream_ms) / 1000.0)
        registry = trace.registry
        if registry is not None and registry.get("name"):
            self._registry_seen(router, registry)
        estimate = self.always_largest_cost(trace)
        if estimate is not None:
            m.always_largest_cost.labels(router).inc(estimate)
            m.compared_cost.labels(router).inc(trace.total_cost_usd)

    def on_registry_status(self, status: Mapping[str, Any]) -> None:
        """The cascade's registry status changed (the poller's thread): set the gauges of every router label
        exported for that name, so a replica that serves no request still shows a promotion or staleness."""
        name = status.get("name")
        if not name:
            return
        with self._lock:  # gauges set under the lock: a request's older status cannot land after this one
            self._registry[name] = status
            routers = self._registry_routers.setdefault(name, set())
            if self.name:
                routers.add(self.name)
            for router in routers:
                self._set_registry(router, status)

    def _registry_seen(self, router: str, status: Mapping[str, Any]) -> None:
        """A request ran on ``status``: export its router label from now on, with the newest status known
        (a request that started before a promotion must not set the gauge back)."""
        name = status["name"]
        with self._lock:
            self._registry_routers.setdefault(name, set()).add(router)  # router labels are bounded (_router)
            self._set_registry(router, self._registry.get(name, status))

    def _set_registry(self, router: str, status: Mapping[str, Any]) -> None:
        self.metrics.registry_version.labels(router, status["name"]).set(status.get("version") or 0)
        self.metrics.registry_stale.labels(router, status["name"]).set(1 if status.get("stale") else 0)

    def always_largest_cost(self, trace: RequestTrace) -> float | None:
        """Estimated cost of ``trace``'s request had the largest tier answered it alone, or ``None``.

        Prompt tokens: the first answer call's (every tier gets the same prompt; tokenizers differ a
        little). Answer tokens: the answer that went out (per sample for a consistency vote), else the
        last answer. Only for requests with a complete cost that some model answered.
        """
        if self.largest is None or not trace.cost_complete:
            return None
        answers = [a for a in trace.attempts if a.purpose == "answer"]
        tokens_in = next((a.tokens_in for a in answers if a.tokens_in is not None), None)
        final = _answering(answers, trace)
        if tokens_in is None or final is None or final.tokens_out is None:
            return None
        tokens_out = final.tokens_out / final.n_samples if final.n_samples else float(final.tokens_out)
        return self.largest.cost(tokens_in, tokens_out)

    def _router(self, trace: RequestTrace) -> str:
        if self.name:
            return self.name
        group: Any = trace.metadata.get("model_group")
        if not isinstance(group, str) or not group:
            return "default"
        if group in self._names:
            return group
        with self._lock:  # bounded: a label value is a time series kept forever
            if len(self._names) >= MAX_ROUTER_NAMES:
                return "other"
            self._names.add(group)
        return group


def _answering(answers: list[AttemptTrace], trace: RequestTrace) -> AttemptTrace | None:
    for attempt in reversed(answers):
        if attempt.decision in ("accept", "fallback") and attempt.model == trace.final_model:
            return attempt
    return answers[-1] if answers else None

"""``Cascade``: a configuration resolved into tiers, and the two plain entry points that drive it.

``run_policy`` / ``arun_policy`` drive a policy with a plain call function through the one drive
loop in :mod:`.drive`. The async one bounds each attempt by its timeout; a sync call function is given
the timeout in :class:`TierCall` and must pass it to its HTTP client (a sync call cannot be
interrupted safely from outside).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from .config import RouterConfig, parse_config
from .drive import AsyncCallFn, CallFn, acalls, arun, calls, finished, run
from .errors import ConfidenceRouterError, ConfigError
from .human import CLARIFY_LEDGER, ClarifyState
from .policy import CascadePolicy, Finish, Observer
from .tiers import Tier, build_tiers
from .tuning import SourceState, tuned_tiers

logger = logging.getLogger("langchain_confidence_router")


def run_policy(policy: CascadePolicy, call_fn: CallFn) -> Finish:
    """Drive ``policy`` to the end with a blocking call function; raise its error on failure."""
    return finished(run(policy, calls(call_fn)))


async def arun_policy(policy: CascadePolicy, call_fn: AsyncCallFn) -> Finish:
    """Drive ``policy`` with an async call function, bounding each attempt by its timeout."""
    return finished(await arun(policy, acalls(call_fn)))


@dataclass(frozen=True)
class LiveTiers:
    """What a request reads, replaced as a whole when a threshold source publishes (one reference swap)."""

    tiers: list[Tier]
    config_hash: str
    registry: Mapping[str, Any] | None = None
    arm_tiers: Mapping[str, tuple[int, Sequence[Tier]]] = field(default_factory=dict)
    hold: str | None = None


@dataclass
class Cascade:
    """A configuration resolved into tiers: the object adapters hold, one per router.

    ``Cascade.from_config(config, names)`` resolves once; ``policy()`` makes the per-request state
    machine; ``run``/``arun`` drive it with a call function. With a ``registry:`` section the tiers
    follow the registry's promoted version: :meth:`use_source_state` swaps them in from the source's
    background thread, and each request reads whichever whole version is in force when it starts.
    """

    config: RouterConfig
    tiers: list[Tier]
    order_note: str
    config_hash: str
    observers: list[Observer] = field(default_factory=list)
    names: Sequence[str] | None = None
    clarify_state: ClarifyState = CLARIFY_LEDGER

    def __post_init__(self) -> None:
        self._live = LiveTiers(self.tiers, self.config_hash)

    @classmethod
    def from_config(cls, config: RouterConfig | Mapping[str, Any] | str, names: Sequence[str] | None = None
                    ) -> Cascade:
        if isinstance(config, str):
            from .config import load_config

            config = load_config(config)
        cfg = parse_config(config) if not isinstance(config, RouterConfig) else config
        tiers, note = build_tiers(cfg, names)
        cascade = cls(cfg, tiers, note, cfg.config_hash(), observers_from_config(cfg),
                      names=list(names) if names is not None else None, clarify_state=clarify_state_for(cfg))
        if cfg.registry is not None:
            cascade._follow_registry()
        return cascade

    def _follow_registry(self) -> None:
        settings = self.config.registry
        assert settings is not None
        if _threshold_source_factory is None:
            raise ConfigError("registry: needs langchain_confidence_router.registry and the 'store' extra "
                              "(pip install 'langchain-confidence-router[store]')", fields=["registry"])
        _threshold_source_factory(self.config).subscribe(self)  # publishes its current state here at once
        live = self._live
        human = self.config.human is not None and self.config.human.enabled
        if live.hold is not None and not human:
            raise ConfigError(f"registry: cannot start without thresholds: {live.hold} (with a human: section "
                              "the router would route every request to human_assisted instead)",
                              source=str(self.config.source) if self.config.source else None, fields=["registry"])

    def use_source_state(self, state: SourceState) -> None:
        """Build tiers for ``state`` and swap them in. A version that cannot be applied keeps the tiers in
        force (last known good) and marks them stale; called from the threshold source's thread."""
        current = self._live
        try:
            if state.tuned is None:
                raise ConfidenceRouterError(state.error or f"no version of {state.name!r} is promoted")
            tiers, config_hash = tuned_tiers(self.config, self.names, state.tuned)
            arm_tiers: dict[str, tuple[int, Sequence[Tier]]] = {}
            ab = self.config.human.ab_test if self.config.human is not None else None
            for arm in ("control", "treatment") if ab is not None else ():
                version = getattr(ab, arm).registry_version
                pinned = state.pinned.get(version) if version is not None else None
                if pinned is not None:
                    arm_tiers[arm] = (version, tuned_tiers(self.config, self.names, pinned)[0])
            live = LiveTiers(tiers, config_hash, state.status(), arm_tiers)
        except (ConfidenceRouterError, ValueError) as exc:
            error = str(exc) if state.tuned is None else f"{state.error + '; ' if state.error else ''}{exc}"
            if current.registry is None or current.hold is not None:  # nothing loaded yet: hold
                status = {"name": state.name, "version": None, "stale": True, "error": error}
                live = LiveTiers(current.tiers, current.config_hash, status, current.arm_tiers, hold=error)
            else:
                status = {**current.registry, "stale": True, "error": error}
                live = LiveTiers(current.tiers, current.config_hash, status, current.arm_tiers)
            if state.tuned is not None:
                logger.error("threshold registry %s: %s", state.name, exc)
        self.tiers, self.config_hash = live.tiers, live.config_hash
        self._live = live
        for observer in self.observers:
            self._tell_registry_status(observer)

    def _tell_registry_status(self, observer: Observer) -> None:
        """An observer with ``on_registry_status(status)`` (the metrics gauges) hears each change of the version
        in force as it happens, not only when a request ends: an idle replica's staleness shows too."""
        hook = getattr(observer, "on_registry_status", None)
        status = self._live.registry
        if hook is None or status is None:
            return
        try:
            hook(status)
        except Exception:
            logger.exception("observer %r failed on a threshold-registry status", observer)

    @property
    def registry_status(self) -> Mapping[str, Any] | None:
        """The threshold-registry version in force (name, version, stale, error), if this cascade follows one."""
        return self._live.registry

    def add_observer(self, observer: Observer) -> None:
        """Call ``observer(trace, request_text, answer_text)`` when each request ends."""
        self.observers.append(observer)
        self._tell_registry_status(observer)

    def policy(
        self,
        *,
        request_id: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        thresholds: Mapping[str, float] | None = None,
        request_text: str | None = None,
        conversation: str | None = None,
        user: str | None = None,
        clarify_count: int | None = None,
    ) -> CascadePolicy:
        """A fresh state machine for one request. ``request_text`` (the last user message) feeds the
        human triggers; ``conversation`` and ``user`` key the clarify count and the A/B arm."""
        live = self._live  # one read: the whole request uses one version
        return CascadePolicy(
            live.tiers,
            self.config.confidence,
            request_id=request_id,
            config_hash=live.config_hash,
            metadata=metadata,
            thresholds=thresholds,
            human=self.config.human,
            request_text=request_text,
            conversation=conversation,
            user=user,
            clarify_count=clarify_count,
            clarify_ledger=self.clarify_state,
            observers=self.observers,
            registry=live.registry,
            arm_tiers=live.arm_tiers,
            hold=live.hold,
        )

    def run(self, call_fn: CallFn, **policy_kwargs: Any) -> Finish:
        return run_policy(self.policy(**policy_kwargs), call_fn)

    async def arun(self, call_fn: AsyncCallFn, **policy_kwargs: Any) -> Finish:
        return await arun_policy(self.policy(**policy_kwargs), call_fn)


ObserverFactory = Callable[[RouterConfig], list[Observer]]
_observer_factories: list[ObserverFactory] = []


def register_observer_factory(factory: ObserverFactory) -> None:
    """Let another package (the human-operations one) attach observers to every cascade it configures.

    The core knows only the observer interface; what a ``human:`` section records where is wired by
    whoever registers here.
    """
    if factory not in _observer_factories:
        _observer_factories.append(factory)


def observers_from_config(config: RouterConfig) -> list[Observer]:
    """The observers the registered factories build for ``config`` (opened once per cascade)."""
    return [obs for factory in _observer_factories for obs in factory(config)]


class ThresholdSource(Protocol):
    """Publishes :class:`SourceState` snapshots to the cascades that follow it (the threshold registry)."""

    def subscribe(self, cascade: Cascade) -> None:
        """Call ``cascade.use_source_state`` now and on every change, from a background thread."""


ThresholdSourceFactory = Callable[[RouterConfig], ThresholdSource]
_threshold_source_factory: ThresholdSourceFactory | None = None


def register_threshold_source(factory: ThresholdSourceFactory) -> None:
    """Let the registry package serve ``registry:`` sections; the core never imports storage code."""
    global _threshold_source_factory
    _threshold_source_factory = factory


ClarifyStateFactory = Callable[[RouterConfig], ClarifyState]
_clarify_state_factories: dict[str, ClarifyStateFactory] = {}


def register_clarify_state(kind: str, factory: ClarifyStateFactory) -> None:
    """Let another package provide a shared clarify-once count for ``human.clarify.state: <kind>``.

    The core keeps only the in-process ledger (``memory``); the human-operations package registers
    ``store`` (SQL) and ``redis``, so the core imports neither SQLAlchemy nor redis.
    """
    _clarify_state_factories[kind] = factory


def clarify_state_for(config: RouterConfig) -> ClarifyState:
    """The clarify count a configuration asks for (the process-wide ledger unless it names a shared one)."""
    human = config.human
    kind = human.clarify.state if human is not None else "memory"
    if kind == "memory" or human is None or not human.enabled or not human.clarify.enabled:
        return CLARIFY_LEDGER
    factory = _clarify_state_factories.get(kind)
    if factory is None:
        raise ValueError(f"human.clarify.state {kind!r} needs langchain_confidence_router.human.conversations "
                         "imported (the package does it on import)")
    return factory(config)

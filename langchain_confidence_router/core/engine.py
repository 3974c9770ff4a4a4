"""``Cascade``: a configuration resolved into tiers, and the two plain entry points that drive it.

``run_policy`` / ``arun_policy`` drive a policy with a plain call function through the one drive
loop in :mod:`.drive`. The async one bounds each attempt by its timeout; a sync call function is given
the timeout in :class:`TierCall` and must pass it to its HTTP client (a sync call cannot be
interrupted safely from outside).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .config import RouterConfig, parse_config
from .drive import AsyncCallFn, CallFn, acalls, arun, calls, finished, run
from .human import CLARIFY_LEDGER, ClarifyState
from .policy import CascadePolicy, Finish, Observer
from .tiers import Tier, build_tiers


def run_policy(policy: CascadePolicy, call_fn: CallFn) -> Finish:
    """Drive ``policy`` to the end with a blocking call function; raise its error on failure."""
    return finished(run(policy, calls(call_fn)))


async def arun_policy(policy: CascadePolicy, call_fn: AsyncCallFn) -> Finish:
    """Drive ``policy`` with an async call function, bounding each attempt by its timeout."""
    return finished(await arun(policy, acalls(call_fn)))


@dataclass
class Cascade:
    """A configuration resolved into tiers: the object adapters hold, one per router.

    ``Cascade.from_config(config, names)`` resolves once; ``policy()`` makes the per-request state
    machine; ``run``/``arun`` drive it with a call function.
    """

    config: RouterConfig
    tiers: list[Tier]
    order_note: str
    config_hash: str
    observers: list[Observer] = field(default_factory=list)
    clarify_state: ClarifyState = CLARIFY_LEDGER

    @classmethod
    def from_config(cls, config: RouterConfig | Mapping[str, Any] | str, names: Sequence[str] | None = None
                    ) -> Cascade:
        if isinstance(config, str):
            from .config import load_config

            config = load_config(config)
        cfg = parse_config(config) if not isinstance(config, RouterConfig) else config
        tiers, note = build_tiers(cfg, names)
        return cls(cfg, tiers, note, cfg.config_hash(), observers_from_config(cfg), clarify_state_for(cfg))

    def add_observer(self, observer: Observer) -> None:
        """Call ``observer(trace, request_text, answer_text)`` when each request ends."""
        self.observers.append(observer)

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
        return CascadePolicy(
            self.tiers,
            self.config.confidence,
            request_id=request_id,
            config_hash=self.config_hash,
            metadata=metadata,
            thresholds=thresholds,
            human=self.config.human,
            request_text=request_text,
            conversation=conversation,
            user=user,
            clarify_count=clarify_count,
            clarify_ledger=self.clarify_state,
            observers=self.observers,
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

"""Hedging: when a tier has not answered within its ``hedge_after_ms``, start the next tier's call as well.

The policy decides (:meth:`~.policy.CascadePolicy.speculate`, ``preview``, ``on_cancelled``); this module
runs the two calls at once for :func:`.drive.run` and :func:`.drive.arun` (whole answers; streamed requests
are not hedged). The rules, in escalation order:

* the earlier attempt is reported to the policy first, as without hedging. Accepted: it wins and the hedge
  is cancelled. Rejected (or failed and skipped): the policy asks for the next tier, which is the hedge
  already running, so the driver waits for it instead of calling again;
* a hedge that answers while the earlier attempt still runs wins at once only if the policy would accept
  it (``preview``); the earlier attempt is then cancelled. Otherwise its answer is held and reported in
  order once the earlier attempt is judged;
* a cancelled or unneeded attempt is traced as ``cancelled`` (billed from its usage if it had answered,
  else of unknown cost); the trace closes only after it, so observers see both attempts.

Async attempts are tasks (a tier call never runs in the request's own task: LiteLLM's per-call context
variables would pile up there); cancelling one closes its HTTP request. Blocking attempts run on a small
shared thread pool; a blocking call cannot be interrupted, so a cancelled one runs on in its thread and
its answer is dropped when it comes. When the pool is busy the request runs without hedging.
"""

from __future__ import annotations

import asyncio
import contextvars
import threading
import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor
from concurrent.futures import wait as wait_futures
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from .policy import Action, CallTier, CascadePolicy, Fail, Finish, TierCall, TierResult

if TYPE_CHECKING:
    from .drive import AsyncAttemptIO, AttemptIO, Step

#: Threads for blocking hedged requests (each needs two: the attempt and its hedge). Beyond that, requests
#: run sequentially rather than wait for a thread.
HEDGE_THREADS = 32


@dataclass
class Flight:
    """One attempt running concurrently with the request."""

    call: TierCall
    t0: float
    handle: Any = None  # asyncio.Task or concurrent.futures.Future
    result: TierResult | None = None
    error: BaseException | None = None
    latency_ms: float | None = None
    hedge_checked: bool = False  # whether its hedge_after_ms has passed (and a hedge was asked for)

    @property
    def done(self) -> bool:
        return self.latency_ms is not None

    def wait_s(self) -> float | None:
        """Seconds until this attempt should be hedged; None when it never is (or already was)."""
        ms = self.call.tier.spec.hedge_after_ms
        if ms is None or self.hedge_checked:
            return None
        return max(0.0, self.t0 + ms / 1000.0 - time.perf_counter())


def _report(policy: CascadePolicy, io: Any, flight: Flight) -> Step:
    from .drive import Step

    if flight.error is not None:
        return Step(flight.call, policy.on_error(flight.call, flight.error, flight.latency_ms), flight.error)
    assert flight.result is not None
    return Step(flight.call, policy.on_result(flight.call, flight.result, flight.latency_ms,
                                              committed=io.committed(flight.call)))


def _cancelled(policy: CascadePolicy, flight: Flight, final: Action | None) -> Step:
    """Report a stopped attempt; the step for the adapter's ``end`` hook."""
    from .drive import Step

    latency = flight.latency_ms if flight.done else _ms(flight.t0)
    action = policy.on_cancelled(flight.call, latency, flight.result, flight.error)
    if action is None:  # the hedge after the request ended: the request's own action, settling the hedge
        assert final is not None
        action = _settled(final, flight.call.attempt)
    return Step(flight.call, action)


def _settled(action: Action, number: int) -> Action:
    return replace(action, settled=(number,))


def _speculate(policy: CascadePolicy, io: Any, head: Flight) -> TierCall | None:
    head.hedge_checked = True
    call = policy.speculate(head.call)
    if call is None or io.committed(call):  # an answer that reaches the user as it is written is never a hedge
        return None
    policy.on_hedge(call)
    return call


# ---------------------------------------------------------------------------- async


async def arun(policy: CascadePolicy, io: AsyncAttemptIO) -> Finish | Fail:
    """:func:`.drive.arun` with hedging: every call whole, the next tier started after ``hedge_after_ms``."""
    action: Action = policy.start()
    head: Flight | None = None
    hedge: Flight | None = None
    try:
        while True:
            if head is None:
                if not isinstance(action, CallTier):
                    return action
                await io.begin(action.call)
                head = _astart(io, action.call)
            if not head.done:
                wait_s = head.wait_s() if hedge is None else None
                pending = {f.handle for f in (head, hedge) if f is not None and not f.done}
                await asyncio.wait(pending, timeout=wait_s, return_when=asyncio.FIRST_COMPLETED)
            if head.done:
                step = _report(policy, io, head)
                await io.end(step)
                action, head = step.action, None
                if hedge is not None:
                    if isinstance(action, CallTier) and action.call is hedge.call:
                        head, hedge = hedge, None  # rejected: the hedge is the next attempt, already running
                    else:
                        await _acancel(hedge)
                        await io.end(_cancelled(policy, hedge, action))
                        hedge = None
            elif hedge is not None and hedge.done:
                if hedge.error is None and hedge.result is not None and policy.preview(hedge.call, hedge.result):
                    await _acancel(head)  # the hedge answered first and is acceptable: it wins
                    step = _cancelled(policy, head, None)
                    await io.end(step)
                    action, head = step.action, None
                    if isinstance(action, CallTier) and action.call is hedge.call:
                        head, hedge = hedge, None
                    # else (never with the policy's rules): the hedge is not wanted after all
                    else:
                        await io.end(_cancelled(policy, hedge, action))
                        hedge = None
                # else: held, reported in order once the earlier attempt is judged
            elif hedge is None and not head.hedge_checked:
                call = _speculate(policy, io, head)
                if call is not None:
                    await io.begin(call)
                    hedge = _astart(io, call)
    finally:
        for flight in (head, hedge):
            if flight is not None and not flight.done:
                flight.handle.cancel()


def _astart(io: AsyncAttemptIO, call: TierCall) -> Flight:
    flight = Flight(call, time.perf_counter())
    flight.handle = asyncio.ensure_future(_afly(io, flight))
    return flight


async def _afly(io: AsyncAttemptIO, flight: Flight) -> None:
    from .drive import timeout_error

    timeout = io.timeout(flight.call)
    try:
        # wait_for: the call gets a task of its own, as in drive.aattempt
        flight.result = await asyncio.wait_for(io.call(flight.call), timeout)
    except Exception as exc:
        flight.error = timeout_error(exc, timeout, "no answer")
    flight.latency_ms = _ms(flight.t0)


async def _acancel(flight: Flight) -> None:
    """Cancel a running attempt's task (closing its HTTP request) and let it unwind."""
    if flight.done:
        return
    flight.latency_ms = _ms(flight.t0)
    task: asyncio.Task[None] = flight.handle
    task.cancel()
    await asyncio.wait({task}, timeout=1.0)


# ---------------------------------------------------------------------------- blocking

_pool: ThreadPoolExecutor | None = None
_slots = threading.BoundedSemaphore(HEDGE_THREADS)
_pool_lock = threading.Lock()


def _executor() -> ThreadPoolExecutor:
    global _pool
    if _pool is None:
        with _pool_lock:
            if _pool is None:
                _pool = ThreadPoolExecutor(HEDGE_THREADS, thread_name_prefix="confidence-hedge")
    return _pool


def run(policy: CascadePolicy, io: AttemptIO) -> Finish | Fail:
    """:func:`.drive.run` with hedging. An attempt that may be hedged runs on a pool thread, so the request
    thread can start the hedge on time and return the first acceptable answer."""
    from .drive import attempt

    action: Action = policy.start()
    head: Flight | None = None
    hedge: Flight | None = None
    while True:
        if head is None:
            if not isinstance(action, CallTier):
                return action
            call = action.call
            io.begin(call)
            head = _start(io, call) if call.tier.spec.hedge_after_ms is not None else None
            if head is None:  # not hedged here (or no thread free): the plain blocking attempt
                step = attempt(policy, call, io)
                io.end(step)
                action = step.action
                continue
        if not head.done:
            wait_s = head.wait_s() if hedge is None else None
            pending = [f.handle for f in (head, hedge) if f is not None and not f.done]
            wait_futures(pending, timeout=wait_s, return_when=FIRST_COMPLETED)
        if head.done:
            step = _report(policy, io, head)
            io.end(step)
            action, head = step.action, None
            if hedge is not None:
                if isinstance(action, CallTier) and action.call is hedge.call:
                    head, hedge = hedge, None
                else:
                    _cancel(hedge)
                    io.end(_cancelled(policy, hedge, action))
                    hedge = None
        elif hedge is not None and hedge.done:
            if hedge.error is None and hedge.result is not None and policy.preview(hedge.call, hedge.result):
                _cancel(head)
                step = _cancelled(policy, head, None)
                io.end(step)
                action, head = step.action, None
                if isinstance(action, CallTier) and action.call is hedge.call:
                    head, hedge = hedge, None
                else:
                    io.end(_cancelled(policy, hedge, action))
                    hedge = None
        elif hedge is None and not head.hedge_checked:
            if not _slots.acquire(blocking=False):
                head.hedge_checked = True  # no thread free: this attempt goes unhedged
                continue
            call = _speculate(policy, io, head)
            if call is None:
                _slots.release()
                continue
            try:
                io.begin(call)
            except BaseException:
                _slots.release()
                raise
            hedge = _start(io, call, slot_held=True)


def _start(io: AttemptIO, call: TierCall, slot_held: bool = False) -> Flight | None:
    """Run ``call`` on a pool thread (in a copy of this context); None when no thread is free."""
    if not slot_held and not _slots.acquire(blocking=False):
        return None
    flight = Flight(call, time.perf_counter())
    future: Future[None] = _executor().submit(contextvars.copy_context().run, _fly, io, flight)
    flight.handle = future
    return flight


def _fly(io: AttemptIO, flight: Flight) -> None:
    try:
        flight.result = io.call(flight.call)
    except Exception as exc:
        flight.error = exc
    finally:
        _slots.release()
        if flight.latency_ms is None:
            flight.latency_ms = _ms(flight.t0)


def _cancel(flight: Flight) -> None:
    """Stop waiting for a blocking attempt: it cannot be interrupted; whatever it returns is dropped."""
    if not flight.done:
        flight.latency_ms = _ms(flight.t0)
        flight.result, flight.error = None, None
        flight.handle.cancel()


def _ms(t0: float) -> float:
    return (time.perf_counter() - t0) * 1000.0

"""Hedging: when a tier has not answered within its ``hedge_after_ms``, start the next tier's call as well.

The policy decides (:meth:`~.policy.CascadePolicy.speculate`, ``preview``, ``on_cancelled``); this module
runs the two calls at once for the four drive loops of :mod:`.drive`, which come here when a tier has
``hedge_after_ms``. The rules, in escalation order:

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

A gated attempt (a tier with ``early_abort``) runs as its hidden stream here too, watched by its abort
tracker: when the rule fires the stream is closed and the attempt is reported as aborted, in the same
order as any answer. So a cut attempt is a rejected answer under the rules above: a running hedge becomes
the next attempt; with none running yet the request escalates at once, as without hedging. An aborted
hedge never wins.

A hedge into a call the adapter streams live (the final tier of a streamed request) reads its stream into
a buffer without passing anything on; once adopted its chunks go through ``live.add`` (which is what shows
them) and the rest streams live. It never wins before the earlier attempt is judged.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import threading
import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor
from concurrent.futures import wait as wait_futures
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from .policy import Action, CallTier, CascadePolicy, Fail, Finish, TierCall, TierResult

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Generator

    from .abort import AbortTracker
    from .drive import AsyncAttemptIO, AsyncLiveStream, AttemptIO, Ending, Step, SyncLiveStream

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
    live: Any = None  # a hedge the adapter streams live (a Sync/AsyncLiveStream): its chunks wait in `chunks`
    chunks: list[Any] | None = None
    more: asyncio.Event | None = None  # async: set when a chunk arrives
    ready: threading.Condition | None = None  # blocking: notified when a chunk arrives
    cancelled: bool = False  # blocking: stop reading (a thread cannot be interrupted)
    gated: Any = None  # a gated attempt's hidden stream (a Sync/AsyncGatedStream), read by its tracker
    tracker: AbortTracker | None = None

    @property
    def done(self) -> bool:
        return self.latency_ms is not None

    @property
    def aborted(self) -> bool:
        """Whether the early-abort rule cut this attempt."""
        return self.tracker is not None and self.tracker.fired_at is not None

    def wait_s(self) -> float | None:
        """Seconds until this attempt should be hedged; None when it never is (or already was)."""
        ms = self.call.tier.spec.hedge_after_ms
        if ms is None or self.hedge_checked:
            return None
        return max(0.0, self.t0 + ms / 1000.0 - time.perf_counter())


def _report(policy: CascadePolicy, io: Any, flight: Flight) -> Step:
    from .drive import Step, _gated_step

    call = flight.call
    # a live hedge is committed once its chunks reached the user; a whole call as its adapter says
    committed = flight.live.visible if flight.live is not None else io.committed(call)
    if flight.error is not None:
        visible = flight.live is not None and flight.live.visible
        return Step(call, policy.on_error(call, flight.error, flight.latency_ms, committed=visible), flight.error)
    assert flight.result is not None
    if flight.tracker is not None:  # a hidden stream: cut by the rule, or whole (never shown, so never committed)
        assert flight.latency_ms is not None
        return _gated_step(policy, call, flight.result, flight.latency_ms, flight.tracker)
    return Step(call, policy.on_result(call, flight.result, flight.latency_ms, committed=committed))


def _cancelled(policy: CascadePolicy, flight: Flight, final: Action | None) -> Step:
    """Report a stopped attempt; the step for the adapter's ``end`` hook."""
    from .drive import Step

    latency = flight.latency_ms if flight.done else _ms(flight.t0)
    result = flight.result if flight.result is not None or flight.error is not None else _received(flight)
    action = policy.on_cancelled(flight.call, latency, result, flight.error)
    if action is None:  # the hedge after the request ended: the request's own action, settling the hedge
        assert final is not None
        action = _settled(final, flight.call.attempt)
    return Step(flight.call, action)


def _received(flight: Flight) -> TierResult | None:
    """What a cancelled gated attempt had received (its tokens so far, its prompt counted by the adapter), so
    it is billed like a cut one; None for a whole call, which reports nothing before it ends."""
    if flight.gated is None:
        return None
    try:
        return flight.gated.result()
    except Exception:  # nothing usable arrived: the cost stays unknown
        return None


def _acceptable(policy: CascadePolicy, hedge: Flight) -> bool:
    """Whether a hedge that answered first wins at once: a whole answer the policy would accept."""
    return hedge.error is None and hedge.result is not None and not hedge.aborted and policy.preview(
        hedge.call, hedge.result)


def _gate_of(policy: CascadePolicy, io: Any, call: TierCall) -> tuple[Any, AbortTracker] | None:
    """The hidden stream and tracker of a gated call (as the sequential drive asks for them), or None."""
    from .drive import _gate

    return _gate(policy, call, io) if policy.gates else None


def _settled(action: Action, number: int) -> Action:
    return replace(action, settled=(number,))


def _abandoned(policy: CascadePolicy, hedge: Flight | None) -> None:
    """The drive stopped early (an adapter hook raised, the caller stopped reading) with a hedge the policy
    still waits for: record it, so a request that had ended still closes its trace."""
    if hedge is not None and policy.hedge_in_flight is hedge.call and policy.done:
        with contextlib.suppress(Exception):
            policy.on_cancelled(hedge.call, hedge.latency_ms if hedge.done else _ms(hedge.t0))


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
    from .drive import Ending

    ending = Ending()
    async for _ in adrive(policy, io, ending, streaming=False):
        pass
    return ending.final()


async def adrive(policy: CascadePolicy, io: AsyncAttemptIO, ending: Ending, *, streaming: bool = True
                 ) -> AsyncIterator[Any]:
    """:func:`.drive.adrive` with hedging. A hedge into a call the adapter streams live (the final tier)
    opens its stream at once but shows nothing: its chunks are buffered until the earlier attempt is
    rejected, then passed on, and the rest streams live. Such a hedge never wins before the earlier
    attempt is judged (judging it needs the whole answer, and then it would already be shown)."""
    from .drive import aclaim, astream_attempt

    action: Action = policy.start()
    head: Flight | None = None
    hedge: Flight | None = None
    try:
        while True:
            if head is None:
                if not isinstance(action, CallTier):
                    ending.action = action
                    return
                if policy.pending_claim is not None:  # a clarifying question waits for its shared count
                    action = await aclaim(policy)
                    continue
                call = action.call
                await io.begin(call)
                gate = _gate_of(policy, io, call)
                live = io.live(call) if streaming and gate is None else None
                if live is not None:  # streamed to the user as it is written, as without hedging
                    done: list[Step] = []
                    async for out in astream_attempt(policy, call, live, io.timeout(call), done):
                        yield out
                    await io.end(done[0])
                    action = done[0].action
                    continue
                head = _astart(io, call, gate)
            if head.live is not None:  # an adopted live hedge: pass on what it buffered, then stream on
                async for out in _release(head):
                    yield out
            elif not head.done:
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
            elif hedge is not None and hedge.done and hedge.live is None:
                if _acceptable(policy, hedge):
                    await _acancel(head)  # the hedge answered first and is acceptable: it wins
                    step = _cancelled(policy, head, None)
                    await io.end(step)
                    action, head = step.action, None
                    if isinstance(action, CallTier) and action.call is hedge.call:
                        head, hedge = hedge, None
                    else:  # never with the policy's rules: the hedge is not wanted after all
                        await io.end(_cancelled(policy, hedge, action))
                        hedge = None
                # else: held, reported in order once the earlier attempt is judged
            elif hedge is None and not head.hedge_checked:
                call = _speculate(policy, io, head)
                if call is not None:
                    await io.begin(call)
                    gate = _gate_of(policy, io, call)
                    live = io.live(call) if streaming and gate is None else None
                    hedge = _astart(io, call, gate) if live is None else _astart_live(io, call, live)
    finally:
        for flight in (head, hedge):
            if flight is not None and not flight.done:
                flight.handle.cancel()
        _abandoned(policy, hedge)


def _astart(io: AsyncAttemptIO, call: TierCall, gate: tuple[Any, AbortTracker] | None = None) -> Flight:
    flight = Flight(call, time.perf_counter())
    if gate is not None:
        flight.gated, flight.tracker = gate
    flight.handle = asyncio.ensure_future(_afly(io, flight))
    return flight


async def _afly(io: AsyncAttemptIO, flight: Flight) -> None:
    from .drive import aread_gated, timeout_error

    timeout = io.timeout(flight.call)
    try:
        if flight.tracker is not None:  # a hidden stream, closed when the rule fires or the task is cancelled
            flight.result = await aread_gated(flight.gated, flight.tracker, timeout)
        else:  # wait_for: the call gets a task of its own, as in drive.aattempt
            flight.result = await asyncio.wait_for(io.call(flight.call), timeout)
    except Exception as exc:
        flight.error = timeout_error(exc, timeout, "no answer" if flight.tracker is None else "no chunk")
    flight.latency_ms = _ms(flight.t0)


def _astart_live(io: AsyncAttemptIO, call: TierCall, live: AsyncLiveStream) -> Flight:
    flight = Flight(call, time.perf_counter(), live=live, chunks=[], more=asyncio.Event())
    flight.handle = asyncio.ensure_future(_afly_live(flight, live, io.timeout(call)))
    return flight


async def _afly_live(flight: Flight, live: AsyncLiveStream, timeout: float | None) -> None:
    """Read a live hedge's stream into its buffer (the same bounds as drive.astream_attempt); cancelling
    the task closes the stream."""
    from .drive import timeout_error, within

    assert flight.chunks is not None and flight.more is not None
    try:
        async with asyncio.timeout(timeout):
            chunks = await live.open()
        async for chunk in within(chunks, timeout):
            flight.chunks.append(chunk)
            flight.more.set()
    except Exception as exc:
        flight.error = timeout_error(exc, timeout, "no chunk")
    flight.latency_ms = _ms(flight.t0)
    flight.more.set()


async def _release(flight: Flight) -> AsyncIterator[Any]:
    """An adopted live hedge: each buffered and then arriving chunk through ``live.add``, to the user."""
    live, chunks, more = flight.live, flight.chunks, flight.more
    assert live is not None and chunks is not None and more is not None
    sent = 0
    while True:
        while sent < len(chunks):
            out = live.add(chunks[sent])
            sent += 1
            if out is not None:
                yield out
        if flight.done:
            break
        more.clear()
        if sent == len(chunks) and not flight.done:
            await more.wait()
    if flight.error is None:
        try:
            flight.result = live.result()
        except Exception as exc:
            flight.error = exc


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
    chunks = drive(policy, io, streaming=False)
    while True:
        try:
            next(chunks)
        except StopIteration as stop:
            return stop.value  # type: ignore[no-any-return]


def drive(policy: CascadePolicy, io: AttemptIO, *, streaming: bool = True) -> Generator[Any, None, Finish | Fail]:
    """:func:`.drive.drive` with hedging; a live hedge is buffered unseen as in :func:`adrive`. A blocking
    stream cannot be interrupted either: a cancelled one is closed when its next chunk arrives."""
    from .drive import attempt, claim, gated_attempt, stream_attempt

    action: Action = policy.start()
    head: Flight | None = None
    hedge: Flight | None = None
    try:
        while True:
            if head is None:
                if not isinstance(action, CallTier):
                    return action
                if policy.pending_claim is not None:  # a clarifying question waits for its shared count
                    action = claim(policy)
                    continue
                call = action.call
                io.begin(call)
                gate = _gate_of(policy, io, call)
                live = io.live(call) if streaming and gate is None else None
                head = _start(io, call, gate=gate) if live is None and call.tier.spec.hedge_after_ms is not None \
                    else None
                if head is None:  # not hedged here (or no thread free, or streamed live): as without hedging
                    if gate is not None:
                        step = gated_attempt(policy, call, *gate)
                    elif live is None:
                        step = attempt(policy, call, io)
                    else:
                        step = yield from stream_attempt(policy, call, live)
                    io.end(step)
                    action = step.action
                    continue
            if head.live is not None:  # an adopted live hedge: pass on what it buffered, then stream on
                yield from _release_sync(head)
            elif not head.done:
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
            elif hedge is not None and hedge.done and hedge.live is None:
                if _acceptable(policy, hedge):
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
                    gate = _gate_of(policy, io, call)
                    live = io.live(call) if streaming and gate is None else None
                except BaseException:
                    _slots.release()
                    raise
                hedge = _start(io, call, slot_held=True, live=live, gate=gate)
    finally:
        for flight in (head, hedge):
            if flight is not None:
                _cancel(flight)
        _abandoned(policy, hedge)


def _start(io: AttemptIO, call: TierCall, slot_held: bool = False, live: SyncLiveStream | None = None,
           gate: tuple[Any, AbortTracker] | None = None) -> Flight | None:
    """Run ``call`` on a pool thread (in a copy of this context); None when no thread is free."""
    if not slot_held and not _slots.acquire(blocking=False):
        return None
    flight = Flight(call, time.perf_counter())
    if gate is not None:
        flight.gated, flight.tracker = gate
    if live is not None:
        flight.live, flight.chunks, flight.ready = live, [], threading.Condition()
    target = _fly if live is None else _fly_live
    future: Future[None] = _executor().submit(contextvars.copy_context().run, target, io, flight)
    flight.handle = future
    return flight


def _fly(io: AttemptIO, flight: Flight) -> None:
    from .drive import read_gated

    try:
        if flight.tracker is not None:  # a hidden stream: closed when the rule fires, or at the first chunk
            # after a cancel
            flight.result = read_gated(flight.gated, flight.tracker, stop=lambda: flight.cancelled)
        else:
            flight.result = io.call(flight.call)
    except Exception as exc:
        flight.error = exc
    finally:
        _slots.release()
        if flight.latency_ms is None:
            flight.latency_ms = _ms(flight.t0)


def _fly_live(io: AttemptIO, flight: Flight) -> None:
    """Read a live hedge's blocking stream into its buffer; stop (closing it) at the first chunk after a cancel."""
    live, ready, chunks = flight.live, flight.ready, flight.chunks
    assert live is not None and ready is not None and chunks is not None
    stream: Any = None
    try:
        stream = live.open()  # type: ignore[union-attr]
        for chunk in stream:
            if flight.cancelled:
                break
            with ready:
                chunks.append(chunk)
                ready.notify_all()
    except Exception as exc:
        flight.error = exc
    finally:
        close = getattr(stream, "close", None)
        if flight.cancelled and close is not None:
            with contextlib.suppress(Exception):
                close()
        _slots.release()
        with ready:
            if flight.latency_ms is None:
                flight.latency_ms = _ms(flight.t0)
            ready.notify_all()


def _release_sync(flight: Flight) -> Generator[Any, None, None]:
    """An adopted live hedge (blocking): each buffered and then arriving chunk through ``live.add``."""
    live, ready, chunks = flight.live, flight.ready, flight.chunks
    assert live is not None and ready is not None and chunks is not None
    sent = 0
    while True:
        with ready:
            while sent == len(chunks) and not flight.done:
                ready.wait()
            batch, finished = chunks[sent:], flight.done
        for chunk in batch:
            sent += 1
            out = live.add(chunk)
            if out is not None:
                yield out
        if finished and sent == len(chunks):
            break
    if flight.error is None:
        try:
            flight.result = live.result()
        except Exception as exc:
            flight.error = exc


def _cancel(flight: Flight) -> None:
    """Stop waiting for a blocking attempt: it cannot be interrupted; whatever it returns is dropped (a live
    stream is closed at its next chunk)."""
    flight.cancelled = True
    if not flight.done:
        flight.latency_ms = _ms(flight.t0)
        flight.result, flight.error = None, None
        flight.handle.cancel()


def _ms(t0: float) -> float:
    return (time.perf_counter() - t0) * 1000.0

"""The one drive loop of the policy, per mode (sync, async), that every adapter and replay use.

The policy decides; this module runs it: it asks the policy what to do, runs one attempt (timing it,
bounding it by the attempt timeout where it can, reporting the answer or the error), and repeats.
An adapter supplies only its I/O, as an :class:`AttemptIO` (sync) or :class:`AsyncAttemptIO`:

* ``call(call)``: one whole (non-streamed) tier call, returning a :class:`TierResult`;
* ``live(call)``: for a call whose answer streams to the user as it is written, a :class:`LiveStream`
  that opens the upstream stream and turns its chunks into what the user sees; ``None`` to call it whole;
* ``gated(call)``: for a call the policy may abandon mid-answer (a tier with ``early_abort``), a
  :class:`GatedStream`: a hidden stream whose logprobs feed the policy's abort tracker and whose tokens
  never reach the user; ``None`` to call it whole. Only asked when the policy ``gates`` at all;
* ``begin(call)`` / ``end(step)``: hooks around each attempt (LangChain opens and closes its runs there).

* before a clarifying question, the policy may ask for a claim on the conversation's count
  (:class:`~.policy.ClarifyClaim`): :func:`claim` / :func:`aclaim` settle it, the async one in a worker
  thread when the count is shared (a database or Redis round trip must not block the event loop).

Because the loop, the timing, the timeout wording and the ``committed`` rule live here once, the
LangChain router, the LiteLLM handler and offline replay cannot drift apart.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Generator, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from . import hedge
from .abort import AbortTracker
from .policy import Action, CallTier, CascadePolicy, Fail, Finish, TierCall, TierResult

CallFn = Callable[[TierCall], TierResult]
AsyncCallFn = Callable[[TierCall], Awaitable[TierResult]]


@dataclass(frozen=True, slots=True)
class Step:
    """One finished attempt: the call, what the policy said next, and the upstream error, if any."""

    call: TierCall
    action: Action
    error: BaseException | None = None


class LiveStream(Protocol):
    """An attempt whose answer goes to the user while it is written (the final tier only)."""

    @property
    def visible(self) -> bool:
        """Whether any of its answer has reached the user (then it is committed)."""
        ...

    def add(self, chunk: Any) -> Any | None:
        """Record one upstream chunk; return what to send the user now, if anything."""
        ...

    def result(self) -> TierResult:
        """The whole streamed answer, once the upstream stream ended."""
        ...


class SyncLiveStream(LiveStream, Protocol):
    def open(self) -> Iterable[Any]:
        """Start the upstream stream; its chunks."""
        ...


class AsyncLiveStream(LiveStream, Protocol):
    async def open(self) -> AsyncIterator[Any]:
        """Start the upstream stream; its chunks."""
        ...


class GatedStream(Protocol):
    """A gated attempt streamed internally (hidden from the user) so the early-abort rule can watch it."""

    def add(self, chunk: Any) -> Sequence[Any] | None:
        """Record one upstream chunk; return the logprob entries (one per token) it carried."""
        ...

    @property
    def tool_call(self) -> bool:
        """Whether the answer turned into a tool call (the rule then stands down)."""
        ...

    def result(self) -> TierResult:
        """What was received: the whole answer, or the part before an abort (``tokens_out``: tokens received)."""
        ...


class SyncGatedStream(GatedStream, Protocol):
    def open(self) -> Iterable[Any]:
        """Start the upstream stream; its chunks. Closing the iterator must close the connection."""
        ...


class AsyncGatedStream(GatedStream, Protocol):
    async def open(self) -> AsyncIterator[Any]:
        """Start the upstream stream; its chunks. ``aclose()`` must close the connection."""
        ...


class AttemptIO:
    """An adapter's blocking I/O for one request. Subclass and override what you need."""

    def call(self, call: TierCall) -> TierResult:
        raise NotImplementedError

    def live(self, call: TierCall) -> SyncLiveStream | None:
        return None

    def gated(self, call: TierCall) -> SyncGatedStream | None:
        return None

    def committed(self, call: TierCall) -> bool:
        """Whether a whole call's answer reached the user anyway (e.g. through streaming callbacks)."""
        return False

    def begin(self, call: TierCall) -> None:
        return None

    def end(self, step: Step) -> None:
        return None


class AsyncAttemptIO:
    """An adapter's async I/O for one request. Subclass and override what you need."""

    async def call(self, call: TierCall) -> TierResult:
        raise NotImplementedError

    def live(self, call: TierCall) -> AsyncLiveStream | None:
        return None

    def gated(self, call: TierCall) -> AsyncGatedStream | None:
        return None

    def committed(self, call: TierCall) -> bool:
        return False

    async def begin(self, call: TierCall) -> None:
        return None

    async def end(self, step: Step) -> None:
        return None

    def timeout(self, call: TierCall) -> float | None:
        """The bound on this attempt (async only: a blocking call cannot be interrupted safely)."""
        return call.timeout_s


# ---------------------------------------------------------------------------- one attempt


def attempt(policy: CascadePolicy, call: TierCall, io: AttemptIO) -> Step:
    """Run one whole call and report it to the policy."""
    t0 = time.perf_counter()
    try:
        result = io.call(call)
    except Exception as exc:
        return Step(call, policy.on_error(call, exc, _ms(t0)), exc)
    return Step(call, policy.on_result(call, result, _ms(t0), committed=io.committed(call)))


async def aattempt(policy: CascadePolicy, call: TierCall, io: AsyncAttemptIO) -> Step:
    """Run one whole call within its attempt timeout and report it to the policy."""
    timeout = io.timeout(call)
    t0 = time.perf_counter()
    try:
        # a task of its own (wait_for), as before: a tier call's context changes (LiteLLM keeps per-call
        # state in context variables) stay in that task instead of piling up in the request's
        result = await asyncio.wait_for(io.call(call), timeout)
    except Exception as exc:
        exc = timeout_error(exc, timeout, "no answer")
        return Step(call, policy.on_error(call, exc, _ms(t0)), exc)
    return Step(call, policy.on_result(call, result, _ms(t0), committed=io.committed(call)))


def stream_attempt(policy: CascadePolicy, call: TierCall, live: SyncLiveStream) -> Generator[Any, None, Step]:
    """Stream one call to the user (yielding what ``live`` passes on) and report it; returns the step.

    A blocking stream is bounded by the timeout the adapter gave its HTTP client."""
    t0 = time.perf_counter()
    try:
        for chunk in live.open():
            out = live.add(chunk)
            if out is not None:
                yield out
        result = live.result()
    except Exception as exc:
        return Step(call, policy.on_error(call, exc, _ms(t0), committed=live.visible), exc)
    return Step(call, policy.on_result(call, result, _ms(t0), committed=live.visible))


async def astream_attempt(policy: CascadePolicy, call: TierCall, live: AsyncLiveStream, timeout: float | None,
                          done: list[Step]) -> AsyncIterator[Any]:
    """Stream one call to the user and report it; the step is appended to ``done``.

    The attempt timeout bounds the wait for the stream to open and for each chunk (the first one
    included), not a long answer that keeps coming."""
    t0 = time.perf_counter()
    try:
        async with asyncio.timeout(timeout):
            chunks = await live.open()
        async for chunk in within(chunks, timeout):
            out = live.add(chunk)
            if out is not None:
                yield out
        result = live.result()
    except Exception as exc:
        exc = timeout_error(exc, timeout, "no chunk")
        done.append(Step(call, policy.on_error(call, exc, _ms(t0), committed=live.visible), exc))
        return
    done.append(Step(call, policy.on_result(call, result, _ms(t0), committed=live.visible)))


def gated_attempt(policy: CascadePolicy, call: TierCall, gated: SyncGatedStream, tracker: AbortTracker) -> Step:
    """Run a gated call as a hidden stream, abandoning it (and closing the upstream stream) as soon as the
    tracker fires; report the whole answer, the abort, or the error to the policy."""
    t0 = time.perf_counter()
    try:
        result = read_gated(gated, tracker)
    except Exception as exc:
        return Step(call, policy.on_error(call, exc, _ms(t0)), exc)
    return _gated_step(policy, call, result, _ms(t0), tracker)


async def agated_attempt(policy: CascadePolicy, call: TierCall, gated: AsyncGatedStream, tracker: AbortTracker,
                         timeout: float | None) -> Step:
    """:func:`gated_attempt` for async I/O, each chunk within the attempt timeout (as a live stream)."""
    t0 = time.perf_counter()
    try:
        result = await aread_gated(gated, tracker, timeout)
    except Exception as exc:
        exc = timeout_error(exc, timeout, "no chunk")
        return Step(call, policy.on_error(call, exc, _ms(t0)), exc)
    return _gated_step(policy, call, result, _ms(t0), tracker)


def read_gated(gated: SyncGatedStream, tracker: AbortTracker, stop: Callable[[], bool] | None = None) -> TierResult:
    """Read a hidden stream until it ends, the tracker fires or ``stop()`` is true (a cancelled hedge: a
    blocking read cannot be interrupted otherwise); the stream is closed either way. What was received."""
    chunks: Iterable[Any] | None = None
    try:
        chunks = gated.open()
        for chunk in chunks:
            if _fires(gated, tracker, chunk) or (stop is not None and stop()):
                break
    finally:
        close = getattr(chunks, "close", None)
        if close is not None:
            close()
    return gated.result()


async def aread_gated(gated: AsyncGatedStream, tracker: AbortTracker, timeout: float | None) -> TierResult:
    """:func:`read_gated` for async I/O, each chunk within ``timeout``; cancelling the task closes the stream."""
    async with asyncio.timeout(timeout):
        upstream = await gated.open()
    chunks = within(upstream, timeout)
    try:
        async for chunk in chunks:
            if _fires(gated, tracker, chunk):
                break
    finally:
        await chunks.aclose()  # closes the upstream stream now, not when garbage is collected
    return gated.result()


def _fires(gated: GatedStream, tracker: AbortTracker, chunk: Any) -> bool:
    """Record one hidden chunk and feed its tokens to the tracker; whether the rule fired (a tool call
    stands the rule down)."""
    entries = gated.add(chunk)
    if gated.tool_call:
        tracker.disable()
    return tracker.feed(entries)


def _gated_step(policy: CascadePolicy, call: TierCall, result: TierResult, latency_ms: float,
                tracker: AbortTracker) -> Step:
    """Report a gated attempt that ended without an error: cut by the rule, or whole."""
    if tracker.fired_at is not None:
        return Step(call, policy.on_aborted(call, result, latency_ms, tracker))
    return Step(call, policy.on_result(call, result, latency_ms))


def _gate(policy: CascadePolicy, call: TierCall, io: AttemptIO | AsyncAttemptIO
          ) -> tuple[Any, AbortTracker] | None:
    """The hidden stream and tracker of a gated call, or None to call it whole."""
    tracker = policy.abort_tracker(call)
    if tracker is None:
        return None
    gated = io.gated(call)
    return None if gated is None else (gated, tracker)


# ---------------------------------------------------------------------------- clarify claims


def claim(policy: CascadePolicy) -> Action:
    """Settle the policy's pending clarify claim in this thread (a sync caller may wait for it)."""
    pending = policy.pending_claim
    assert pending is not None
    try:
        granted: bool | BaseException = pending.state.claim(pending.key, pending.limit)
    except Exception as exc:
        granted = exc
    return policy.on_claim(granted)


async def aclaim(policy: CascadePolicy) -> Action:
    """Settle the policy's pending clarify claim without blocking the event loop.

    A state that does I/O runs in a worker thread, bounded by its ``timeout_s``: past it the request
    escalates (the thread may still count the question later: one question fewer, never one more)."""
    pending = policy.pending_claim
    assert pending is not None
    state = pending.state
    try:
        if state.blocking:
            granted: bool | BaseException = await asyncio.wait_for(
                asyncio.to_thread(state.claim, pending.key, pending.limit), state.timeout_s)
        else:
            granted = state.claim(pending.key, pending.limit)
    except TimeoutError as exc:
        granted = exc if str(exc) else TimeoutError(f"no answer within {state.timeout_s:g} s (human.clarify.timeout_s)")
    except Exception as exc:
        granted = exc
    return policy.on_claim(granted)


# ---------------------------------------------------------------------------- one request


def drive(policy: CascadePolicy, io: AttemptIO) -> Generator[Any, None, Finish | Fail]:
    """Drive ``policy`` to its end; yields the chunks of a live attempt, returns the final action.
    A tier with ``hedge_after_ms`` takes the concurrent path in :mod:`.hedge`."""
    if policy.hedging:
        return (yield from hedge.drive(policy, io))
    action: Action = policy.start()
    gates = policy.gates
    while isinstance(action, CallTier):
        if policy.pending_claim is not None:
            action = claim(policy)
            continue
        call = action.call
        io.begin(call)
        if gates and (gate := _gate(policy, call, io)) is not None:
            step = gated_attempt(policy, call, *gate)
        elif (live := io.live(call)) is None:
            step = attempt(policy, call, io)
        else:
            step = yield from stream_attempt(policy, call, live)
        io.end(step)
        action = step.action
    return action


def run(policy: CascadePolicy, io: AttemptIO) -> Finish | Fail:
    """Drive ``policy`` to its end with every call whole (``io.live`` is not asked): :func:`drive` without a
    live attempt, and without a generator's overhead on this hot path. A tier with ``hedge_after_ms`` takes
    the concurrent path in :mod:`.hedge`."""
    if policy.hedging:
        return hedge.run(policy, io)
    action: Action = policy.start()
    gates = policy.gates
    while isinstance(action, CallTier):
        if policy.pending_claim is not None:
            action = claim(policy)
            continue
        call = action.call
        io.begin(call)
        if gates and (gate := _gate(policy, call, io)) is not None:  # a hidden stream (early_abort)
            step = gated_attempt(policy, call, *gate)
        else:
            t0 = time.perf_counter()  # attempt(), inlined: this loop is every blocking request's hot path
            try:
                result = io.call(call)
            except Exception as exc:
                step = Step(call, policy.on_error(call, exc, _ms(t0)), exc)
            else:
                step = Step(call, policy.on_result(call, result, _ms(t0), committed=io.committed(call)))
        io.end(step)
        action = step.action
    return action


@dataclass
class Ending:
    """Where :func:`adrive` leaves the final action (an async generator cannot return one)."""

    action: Finish | Fail | None = None

    def final(self) -> Finish | Fail:
        assert self.action is not None, "the drive has not ended"
        return self.action


async def adrive(policy: CascadePolicy, io: AsyncAttemptIO, ending: Ending) -> AsyncIterator[Any]:
    """Drive ``policy`` to its end; yields the chunks of a live attempt; the final action goes to ``ending``.
    A tier with ``hedge_after_ms`` takes the concurrent path in :mod:`.hedge`."""
    if policy.hedging:
        async for out in hedge.adrive(policy, io, ending):
            yield out
        return
    action: Action = policy.start()
    gates = policy.gates
    while isinstance(action, CallTier):
        if policy.pending_claim is not None:
            action = await aclaim(policy)
            continue
        call = action.call
        await io.begin(call)
        if gates and (gate := _gate(policy, call, io)) is not None:
            step = await agated_attempt(policy, call, *gate, io.timeout(call))
        elif (live := io.live(call)) is None:
            step = await aattempt(policy, call, io)
        else:
            done: list[Step] = []
            async for out in astream_attempt(policy, call, live, io.timeout(call), done):
                yield out
            step = done[0]
        await io.end(step)
        action = step.action
    ending.action = action


async def arun(policy: CascadePolicy, io: AsyncAttemptIO) -> Finish | Fail:
    """Drive ``policy`` to its end with async I/O, every call whole (hedged by :mod:`.hedge` where a tier
    has ``hedge_after_ms``)."""
    if policy.hedging:
        return await hedge.arun(policy, io)
    ending = Ending()
    async for _ in adrive(policy, io, ending):
        pass
    return ending.final()


# ---------------------------------------------------------------------------- plain call functions


class _Calls(AttemptIO):
    def __init__(self, call_fn: CallFn) -> None:
        self.call = call_fn  # type: ignore[method-assign]


class _AsyncCalls(AsyncAttemptIO):
    def __init__(self, call_fn: AsyncCallFn) -> None:
        self.call = call_fn  # type: ignore[method-assign]


def calls(call_fn: CallFn) -> AttemptIO:
    """An :class:`AttemptIO` from a plain blocking call function."""
    return _Calls(call_fn)


def acalls(call_fn: AsyncCallFn) -> AsyncAttemptIO:
    """An :class:`AsyncAttemptIO` from a plain async call function."""
    return _AsyncCalls(call_fn)


def finished(action: Finish | Fail) -> Finish:
    """The Finish, or raise the Fail's error (a CascadeError carrying the trace)."""
    if isinstance(action, Fail):
        raise action.error
    return action


# ---------------------------------------------------------------------------- helpers


async def within(chunks: AsyncIterator[Any], timeout: float | None) -> AsyncIterator[Any]:
    """The chunks of a stream, each (the first included) within ``timeout`` seconds of the last.

    The bound runs in the consumer's task (no task per chunk); the upstream stream is closed when the
    consumer stops, so a cancelled attempt releases its connection."""
    iterator = aiter(chunks)
    try:
        while True:
            try:
                async with asyncio.timeout(timeout):
                    chunk = await anext(iterator)
            except StopAsyncIteration:
                return
            yield chunk
    finally:
        aclose = getattr(iterator, "aclose", None)
        if aclose is not None:
            await aclose()


def timeout_error(exc: Exception, timeout: float | None, what: str) -> Exception:
    """asyncio's bare TimeoutError, worded with the bound that raised it (one wording everywhere)."""
    if isinstance(exc, TimeoutError) and not str(exc) and timeout is not None:
        return TimeoutError(f"{what} within {timeout:g} s (attempt timeout: limits.attempt_timeout_s)")
    return exc


def _ms(t0: float) -> float:
    return (time.perf_counter() - t0) * 1000.0

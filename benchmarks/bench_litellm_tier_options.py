"""What skipping LiteLLM's per-call work would save on a cascade's tier call (and why the adapter does not).

    python benchmarks/bench_litellm_tier_options.py [--calls 1000] [--rounds 5] [--clients 20]

A tier call is ``router.acompletion(model=<tier>, logprobs=True, top_logprobs=5, metadata={...stamped...})``
(see litellm_hooks/calls.py). This times that call as the adapter makes it, and the same call with
LiteLLM's two ways of skipping work, in rotating blocks; CPU is this process's, per call (the upstream
``FakeOpenAIServer`` runs in its own process with no latency):

* ``no-log``: ``no-log: true`` in the kwargs. LiteLLM still computes cost and the standard logging
  payload, but skips every callback except the proxy's own ``_PROXY_*`` ones, including the Router's
  ``deployment_callback_on_success`` (success counts, TPM/RPM) and every logger.
* ``internal``: the call runs with ``litellm._internal_context.is_internal_call`` set, as LiteLLM's own
  nested calls do. It skips the async success and failure handling altogether, including the Router's
  failure callback that puts a failing deployment in cooldown.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import os
import time
import uuid
from collections.abc import Callable
from typing import Any

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

from bench_litellm_router import PRICE, _serve

MESSAGES = [{"role": "user", "content": "What is 6 times 7?"}]


def tier_kwargs() -> dict[str, Any]:
    """The kwargs of a tier call as litellm_hooks builds them (fresh per call)."""
    return {"model": "small", "messages": [dict(m) for m in MESSAGES], "logprobs": True, "top_logprobs": 5,
            "timeout": 60.0, "metadata": {"internal_call_origin": "confidence_cascade", "confidence_router": {
                "request_id": uuid.uuid4().hex, "cascade": "smart", "tier": "small", "attempt": 0, "role": "tier"}}}


async def as_adapter(router: Any) -> None:
    await router.acompletion(**tier_kwargs())


async def no_log(router: Any) -> None:
    await router.acompletion(**tier_kwargs(), **{"no-log": True})


async def internal(router: Any) -> None:
    from litellm._internal_context import is_internal_call

    token = is_internal_call.set(True)
    try:
        await router.acompletion(**tier_kwargs())
    finally:
        is_internal_call.reset(token)


ARMS: dict[str, Callable[[Any], Any]] = {"as the adapter calls": as_adapter, "no-log": no_log,
                                         "is_internal_call": internal}


async def block(router: Any, call: Callable[[Any], Any], calls: int, clients: int) -> float:
    """CPU seconds for ``calls`` calls made by ``clients`` concurrent callers."""
    remaining = calls

    async def client() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            await call(router)

    c0 = time.process_time()
    await asyncio.gather(*(client() for _ in range(clients)))
    return time.process_time() - c0


async def measure(router: Any, calls: int, rounds: int, clients: int) -> dict[str, list[float]]:
    names = list(ARMS)
    for name in names:
        await block(router, ARMS[name], min(200, calls), clients)
    cpu: dict[str, list[float]] = {name: [] for name in names}
    for i in range(rounds):
        for name in names[i % len(names):] + names[:i % len(names)]:
            cpu[name].append(await block(router, ARMS[name], calls, clients) * 1000 / calls)
    return cpu


def main(argv: list[str] | None = None) -> dict[str, list[float]]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=1000, help="calls per block")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--clients", type=int, default=20)
    args = parser.parse_args(argv)
    import litellm

    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    upstream = ctx.Process(target=_serve, args=(queue, 0.0), daemon=True)
    upstream.start()
    try:
        router = litellm.Router(model_list=[{"model_name": "small", "litellm_params": {
            "model": "openai/small", "api_base": queue.get(timeout=60), "api_key": "test", **PRICE}}])
        cpu = asyncio.run(measure(router, args.calls, args.rounds, args.clients))
    finally:
        upstream.kill()
        upstream.join(5)
    base = sorted(cpu["as the adapter calls"])[len(cpu["as the adapter calls"]) // 2]
    print(f"tier call CPU per call (ms), {args.rounds} blocks of {args.calls} calls, {args.clients} clients")
    for name, values in cpu.items():
        median = sorted(values)[len(values) // 2]
        print(f"  {name:<22} median {median:5.2f}  min {min(values):5.2f}  saves {base - median:+5.2f} "
              f"({(base - median) / base * 100:+.0f}%)")
    return cpu


if __name__ == "__main__":
    main()

"""Load-test helpers shared by tests and benchmarks: a fake upstream and a LiteLLM proxy, each in its own
process, and an aiohttp client pool that drives chat completions at a fixed concurrency."""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import yaml

from .proxy import free_port, stop, wait_ready

TESTS = Path(__file__).resolve().parents[1]
MASTER_KEY = "sk-load-master-1234"

# ---------------------------------------------------------------------------- the upstream, in its own process

_UPSTREAM = """
import json, sys
from langchain_confidence_router.testing import FakeOpenAIServer, ModelBehaviour
spec = json.loads(sys.argv[1])
models = {name: ModelBehaviour(**kw) for name, kw in spec.pop("models").items()}
server = FakeOpenAIServer(models=models, record_requests=False, **spec)
server.start()
print(server.base_url, flush=True)
sys.stdin.read()  # until the parent closes our stdin (or dies)
server.stop()
"""


@dataclass
class Upstream:
    """A FakeOpenAIServer in a child process (it must not share a GIL with the proxy or the clients)."""

    process: subprocess.Popen[str]
    base_url: str

    def close(self) -> None:
        if self.process.poll() is None:
            assert self.process.stdin is not None
            self.process.stdin.close()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)


def start_upstream(models: dict[str, dict[str, Any]], log: Path, **server: Any) -> Upstream:
    """``FakeOpenAIServer(models, **server)`` in ``python -c``; returns once it listens."""
    spec = json.dumps({"models": models, **server})
    env = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True"}
    with log.open("w") as err:
        process = subprocess.Popen([sys.executable, "-c", _UPSTREAM, spec], stdin=subprocess.PIPE,
                                   stdout=subprocess.PIPE, stderr=err, text=True, env=env)
    assert process.stdout is not None
    line = process.stdout.readline().strip()  # bounded: the child prints or exits
    if not line.startswith("http://"):
        process.kill()
        raise RuntimeError(f"the fake upstream did not start:\n{log.read_text(errors='replace')[-2000:]}")
    return Upstream(process, line)


# ---------------------------------------------------------------------------- the proxy, in its own process


@dataclass
class ProxyProcess:
    process: subprocess.Popen[bytes]
    url: str  # http://127.0.0.1:PORT (no /v1)
    log: Path

    @property
    def pid(self) -> int:
        return self.process.pid


def start_proxy(config: dict[str, Any], folder: Path, env: dict[str, str] | None = None) -> ProxyProcess:
    """``litellm --config`` as tests/test_litellm_proxy.py starts it, with tests/ on PYTHONPATH for loggers."""
    config_path = folder / "config.yaml"
    config_path.write_text(yaml.safe_dump(config), encoding="utf-8")
    port = free_port()
    full_env = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True", "LITELLM_LOG": "ERROR",
                # the checkout under test first (a proxy started elsewhere would import the installed copy)
                "PYTHONPATH": os.pathsep.join([str(TESTS.parent), str(TESTS), os.environ.get("PYTHONPATH", "")]),
                **(env or {})}
    full_env.pop("DATABASE_URL", None)
    log = folder / "proxy.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [str(Path(sys.executable).with_name("litellm")), "--config", str(config_path), "--host", "127.0.0.1",
             "--port", str(port)], cwd=folder, env=full_env, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True)
    proxy = ProxyProcess(process, f"http://127.0.0.1:{port}", log)
    try:
        wait_ready(proxy.url, process, log)
    except BaseException:
        stop(process)
        raise
    return proxy


def proxy_config(upstream: str, cascades: dict[str, dict[str, Any]], tiers: tuple[str, ...],
                 callbacks: tuple[str, ...] = ()) -> dict[str, Any]:
    """Tier model groups on ``upstream`` (no retries: every fault reaches the cascade) and cascade groups."""
    model_list: list[dict[str, Any]] = [
        {"model_name": name, "litellm_params": {"model": f"openai/{name}", "api_base": upstream, "api_key": "up",
                                                "num_retries": 0}} for name in tiers]
    model_list += [{"model_name": name, "litellm_params": {
        "model": f"confidence/{name}", "num_retries": 0, "input_cost_per_token": 0, "output_cost_per_token": 0,
        "cascade": block}} for name, block in cascades.items()]
    return {
        "model_list": model_list,
        "litellm_settings": {
            "custom_provider_map": [{"provider": "confidence",
                                     "custom_handler": "litellm_hooks.handler.confidence_handler"}],
            "callbacks": ["litellm_hooks.callback.confidence_callback", *callbacks],
        },
        "general_settings": {"master_key": MASTER_KEY},
    }


# ---------------------------------------------------------------------------- the load driver


@dataclass
class Outcome:
    status: int
    latency_ms: float
    error: str = ""
    stream: bool = False


@dataclass
class LoadResult:
    outcomes: list[Outcome] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def throughput(self) -> float:
        return len(self.outcomes) / self.seconds if self.seconds else 0.0

    def latencies(self) -> list[float]:
        return [o.latency_ms for o in self.outcomes if o.status == 200]

    def percentile(self, q: float) -> float:
        values = sorted(self.latencies())
        if not values:
            return float("nan")
        return values[min(len(values) - 1, round(q / 100 * (len(values) - 1)))]

    @property
    def p50(self) -> float:
        return statistics.median(self.latencies()) if self.latencies() else float("nan")


async def one_request(session: aiohttp.ClientSession, url: str, body: dict[str, Any], timeout_s: float) -> Outcome:
    """POST one chat completion; a stream counts as 200 only if it ends with [DONE] and no error event."""
    t0 = time.perf_counter()
    try:
        async with session.post(f"{url}/v1/chat/completions", json=body,
                                timeout=aiohttp.ClientTimeout(total=timeout_s)) as resp:
            if not body.get("stream") or resp.status != 200:
                text = await resp.text()
                return Outcome(resp.status, (time.perf_counter() - t0) * 1000, "" if resp.status == 200 else text,
                               bool(body.get("stream")))
            done, error = False, ""
            async for raw in resp.content:
                line = raw.decode(errors="replace").strip()
                if line == "data: [DONE]":
                    done = True
                elif line.startswith("data: ") and '"error"' in line[:40]:
                    error = line
            status = 200 if done and not error else 599
            return Outcome(status, (time.perf_counter() - t0) * 1000, error or ("" if done else "no [DONE]"), True)
    except (aiohttp.ClientError, TimeoutError) as exc:
        return Outcome(0, (time.perf_counter() - t0) * 1000, f"{type(exc).__name__}: {exc}", bool(body.get("stream")))


async def drive(url: str, bodies: Iterator[dict[str, Any]] | Callable[[int], dict[str, Any]], n: int,
                concurrency: int, *, timeout_s: float = 60.0, key: str = MASTER_KEY,
                result: LoadResult | None = None) -> LoadResult:
    """``n`` requests from ``concurrency`` clients over one pooled session (pool size = concurrency)."""
    result = result if result is not None else LoadResult()
    make = bodies if callable(bodies) else (lambda i: next(bodies))  # type: ignore[arg-type]
    counter = iter(range(n))
    connector = aiohttp.TCPConnector(limit=concurrency, limit_per_host=concurrency, force_close=False)
    async with aiohttp.ClientSession(connector=connector, headers={"Authorization": f"Bearer {key}"}) as session:

        async def client() -> None:
            for i in counter:
                result.outcomes.append(await one_request(session, url, make(i), timeout_s))

        t0 = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(concurrency)))
        result.seconds = time.perf_counter() - t0
    return result

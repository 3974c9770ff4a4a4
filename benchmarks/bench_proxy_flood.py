"""Proxy memory under a flood of client-sent cascade blocks: ``python benchmarks/bench_proxy_flood.py``.

Starts the example proxy (examples/litellm_proxy/config.yaml, fake upstream), sends 300 warm-up and
then ``--requests`` requests to ``smart``, each with a distinct inline ``cascade`` block in the body,
and prints the response statuses and the proxy's resident memory before and after. With this
checkout every one is refused (400) before anything is parsed or cached. ``--code DIR`` runs another
checkout's package instead (for a before/after comparison; operator keys it does not know are
removed from the example configuration).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import yaml

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from support.proxy import EXAMPLE, MASTER_KEY, free_port, stop, wait_ready

from langchain_confidence_router.testing import FakeOpenAIServer, ModelBehaviour

REPO = Path(__file__).resolve().parents[1]


def rss_mb(pid: int) -> float:
    """Resident memory of the proxy process and its direct children, in MB."""
    children = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()
    total_kb = 0
    for p in [pid, *map(int, children)]:
        with open(f"/proc/{p}/status") as status:
            total_kb += next(int(line.split()[1]) for line in status if line.startswith("VmRSS"))
    return total_kb / 1024


async def flood(url: str, first: int, count: int, clients: int = 20) -> dict[int, int]:
    statuses: dict[int, int] = {}
    gate = asyncio.Semaphore(clients)
    async with httpx.AsyncClient(timeout=60, headers={"Authorization": f"Bearer {MASTER_KEY}"}) as client:
        async def one(i: int) -> None:
            body = {"model": "smart", "messages": [{"role": "user", "content": "hi"}],
                    "cascade": {"algorithm": {"confidence": {"threshold": i / 100_000}},
                                "models": [{"name": "gpt-4o-mini"}]}}
            async with gate:
                response = await client.post(f"{url}/v1/chat/completions", json=body)
            statuses[response.status_code] = statuses.get(response.status_code, 0) + 1

        await asyncio.gather(*(one(i) for i in range(first, first + count)))
    return statuses


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--code", type=Path, default=REPO, help="checkout whose litellm_hooks the proxy runs")
    args = parser.parse_args(argv)
    config = yaml.safe_load(EXAMPLE.read_text())
    if args.code.resolve() != REPO:
        for deployment in config["model_list"]:
            for key in ("max_n", "max_input_chars"):
                (deployment["litellm_params"].get("cascade_options") or {}).pop(key, None)
    models = {"gpt-4o-mini": ModelBehaviour(), "gpt-4o": ModelBehaviour()}
    with tempfile.TemporaryDirectory() as tmp, FakeOpenAIServer(models=models, record_requests=False) as server:
        folder = Path(tmp)
        (folder / "config.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
        port = free_port()
        env = {**os.environ, "UPSTREAM_API_BASE": server.base_url, "UPSTREAM_API_KEY": "test",
               "LITELLM_MASTER_KEY": MASTER_KEY, "PYTHONPATH": str(args.code.resolve())}
        env.pop("DATABASE_URL", None)
        with (folder / "proxy.log").open("wb") as log:
            process = subprocess.Popen(
                [str(Path(sys.executable).with_name("litellm")), "--config", str(folder / "config.yaml"),
                 "--host", "127.0.0.1", "--port", str(port)],
                cwd=folder, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
            try:
                url = f"http://127.0.0.1:{port}"
                wait_ready(url, process, folder / "proxy.log")
                asyncio.run(flood(url, 0, 300))
                before = rss_mb(process.pid)
                statuses = asyncio.run(flood(url, 300, args.requests))
                time.sleep(1.0)
                after = rss_mb(process.pid)
            finally:
                stop(process)
    print(f"code: {args.code}  requests: {args.requests}  statuses: {statuses}")
    print(f"proxy RSS: {before:.0f} MB -> {after:.0f} MB ({after - before:+.0f} MB)")


if __name__ == "__main__":
    main()

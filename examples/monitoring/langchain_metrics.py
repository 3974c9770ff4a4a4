"""A LangChain router exporting Prometheus metrics on its own port, scraped once.

Run it as is (it starts a local fake OpenAI-compatible server whose small model is unsure on
``[hard]`` prompts), or point it at any OpenAI-compatible server that serves ``small`` and ``large``
with logprobs::

    python examples/monitoring/langchain_metrics.py [BASE_URL] [PORT]

Prometheus would scrape ``http://HOST:PORT/metrics``; here the script reads it once and prints the
router's series.
"""

from __future__ import annotations

import sys
import urllib.request
from typing import Any

from langchain_openai import ChatOpenAI
from prometheus_client.parser import text_string_to_metric_families

from langchain_confidence_router.langchain import ConfidenceRouter


def config(port: int) -> dict[str, Any]:
    return {  # the same schema as a confidence.yaml file
        "algorithm": {"confidence": {"confidence_method": "avg_logprob", "threshold": 0.8,
                                     "escalation_order": "declared"}},
        "models": [
            {"name": "small", "input_cost_per_token": 1e-7, "output_cost_per_token": 4e-7},
            {"name": "large", "input_cost_per_token": 2.5e-6, "output_cost_per_token": 1e-5},
        ],
        "metrics": {"name": "example", "port": port, "addr": "127.0.0.1"},
    }


def run(base_url: str, port: int) -> dict[str, float]:
    """Two questions through the router, then the router's series from its /metrics port."""
    models = {name: ChatOpenAI(model=name, base_url=base_url, api_key="test") for name in ("small", "large")}
    router = ConfidenceRouter(models=models, config=config(port))
    for question in ("What is 6 times 7?", "[hard] Why is the sky blue?"):
        router.invoke(question)
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    series = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name.startswith("confidence_router") and not sample.name.endswith(("_bucket", "_created")):
                labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
                series[f"{sample.name}{{{labels}}}"] = sample.value
    return series


def main(base_url: str | None = None, port: int = 9464) -> dict[str, float]:
    if base_url is None:
        from langchain_confidence_router.testing import FakeOpenAIServer

        with FakeOpenAIServer() as server:
            return main(server.base_url, port)
    series = run(base_url, port)
    for name, value in series.items():
        print(f"{name} {value:g}")
    return series


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 and sys.argv[1] else None, int(sys.argv[2]) if len(sys.argv) > 2 else 9464)

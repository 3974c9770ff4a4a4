"""A confidence cascade behind a plain ``litellm.Router``: callers ask for ``smart`` and never know.

Run it as is (it starts a local fake OpenAI-compatible server whose small model is unsure on
``[hard]`` prompts), or point it at any OpenAI-compatible server that serves models named ``small``
and ``large`` with logprobs::

    python examples/litellm_router.py
    python examples/litellm_router.py http://127.0.0.1:8000/v1
"""

from __future__ import annotations

import asyncio
import os
import sys
from typing import Any

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # offline: no cost-map download

import litellm

import litellm_hooks

CASCADE = {  # the same schema as a confidence-router YAML file; `models` are model groups of the Router
    "algorithm": {"confidence": {"confidence_method": "hybrid", "threshold": 0.72, "top_logprobs": 5}},
    "models": [
        {"name": "small", "input_cost_per_token": 1e-7, "output_cost_per_token": 2e-7},
        {"name": "large", "input_cost_per_token": 2e-6, "output_cost_per_token": 8e-6},
    ],
}


def build_router(base_url: str, api_key: str = "test") -> litellm.Router:
    """Tiers are ordinary deployments; the cascade is one more deployment with model ``confidence/<name>``."""
    litellm_hooks.register()  # before building the Router: it must know the `confidence` provider
    router = litellm.Router(model_list=[
        {"model_name": "small", "litellm_params": {"model": "openai/small", "api_base": base_url, "api_key": api_key}},
        {"model_name": "large", "litellm_params": {"model": "openai/large", "api_base": base_url, "api_key": api_key}},
        {"model_name": "smart", "litellm_params": {"model": "confidence/smart", "cascade": CASCADE}},
    ])
    litellm_hooks.register(router)  # its model groups are the tiers; `smart` gets num_retries: 0
    return router


async def ask(router: litellm.Router, question: str) -> dict[str, Any]:
    """One plain and one streamed call; what answered, how confident, at what cost."""
    response = await router.acompletion(model="smart", messages=[{"role": "user", "content": question}])
    trace = response._hidden_params[litellm_hooks.TRACE_KEY]
    stream = await router.acompletion(model="smart", messages=[{"role": "user", "content": question}], stream=True)
    streamed = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
    return {
        "question": question,
        "answer": response.choices[0].message.content,
        "streamed": streamed,
        "model": trace["final_model"],
        "models_tried": [a["model"] for a in trace["attempts"]],
        "confidence": trace["confidence"],
        "cost_usd": response._hidden_params["response_cost"],
    }


async def run(base_url: str) -> list[dict[str, Any]]:
    router = build_router(base_url)
    return [await ask(router, q) for q in ("What is 6 times 7?", "[hard] Why is the sky blue?")]


def main(base_url: str | None = None) -> list[dict[str, Any]]:
    """Run the example against ``base_url``, or against a local fake server started here."""
    if base_url is not None:
        results = asyncio.run(run(base_url))
    else:
        from langchain_confidence_router.testing import FakeOpenAIServer

        with FakeOpenAIServer() as server:
            results = asyncio.run(run(server.base_url))
    for r in results:
        print(f"{r['question']!r}: {r['answer']!r} from {r['model']} (tried {', '.join(r['models_tried'])}; "
              f"confidence {r['confidence']:.2f}; cost ${r['cost_usd']:.2e})")
    return results


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else None)

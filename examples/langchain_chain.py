"""ConfidenceRouter as a drop-in chat model: ``prompt | router | StrOutputParser()``.

Run it as is (it starts a local fake OpenAI-compatible server whose small model is unsure on
``[hard]`` prompts), or point it at any OpenAI-compatible server that serves models named ``small``
and ``large`` with logprobs::

    python examples/langchain_chain.py
    python examples/langchain_chain.py http://127.0.0.1:8000/v1
"""

from __future__ import annotations

import sys
from typing import Any

from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from langchain_openai import ChatOpenAI

from langchain_confidence_router.langchain import ConfidenceRouter, TraceCollector

CONFIG = {  # the same schema as a confidence.yaml file (ConfidenceRouter.from_config("confidence.yaml", ...))
    "algorithm": {"confidence": {"confidence_method": "hybrid", "threshold": 0.72}},
    "models": [
        {"name": "small", "size": "1b", "input_cost_per_token": 1e-7, "output_cost_per_token": 2e-7},
        {"name": "large", "size": "70b", "input_cost_per_token": 2e-6, "output_cost_per_token": 8e-6},
    ],
}
QUESTIONS = ["What is 6 times 7?", "[hard] Why is the sky blue?"]


def build_chain(base_url: str, api_key: str = "test") -> tuple[Any, TraceCollector]:
    """The router stands where a chat model stands; a TraceCollector keeps each request's trace."""
    router = ConfidenceRouter(
        models={name: ChatOpenAI(model=name, base_url=base_url, api_key=api_key) for name in ("small", "large")},
        config=CONFIG,
    )
    prompt = ChatPromptTemplate.from_messages([("system", "Answer in one sentence."), ("human", "{question}")])
    collector = TraceCollector()
    return (prompt | router | StrOutputParser()).with_config(callbacks=[collector]), collector


def run(base_url: str) -> list[dict[str, Any]]:
    chain, collector = build_chain(base_url)
    results = []
    for question in QUESTIONS:
        answer = chain.invoke({"question": question})
        trace = collector.last
        assert trace is not None
        streamed = "".join(chain.stream({"question": question}))  # the final tier streams token by token
        stream_trace = collector.last
        results.append({
            "question": question,
            "answer": answer,
            "streamed": streamed,
            "model": trace.final_model,
            "models_tried": [a.model for a in trace.attempts],
            "confidence": trace.confidence,
            "cost_usd": trace.total_cost_usd,
            "ttft_ms": stream_trace.ttft_ms if stream_trace else None,  # time to the first streamed token
        })
    return results


def main(base_url: str | None = None) -> list[dict[str, Any]]:
    """Run the example against ``base_url``, or against a local fake server started here."""
    if base_url is not None:
        results = run(base_url)
    else:
        from langchain_confidence_router.testing import FakeOpenAIServer

        with FakeOpenAIServer() as server:
            results = run(server.base_url)
    for r in results:
        print(f"{r['question']!r}: {r['answer']!r} from {r['model']} (tried {', '.join(r['models_tried'])}; "
              f"confidence {r['confidence']:.2f}; cost ${r['cost_usd']:.2e})")
    return results


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else None)

"""Structured output through the router: every tier answers in JSON-schema mode, so the tokens scored
for confidence are the JSON itself, and an answer that does not parse moves the cascade on.

Run it as is (a local fake server with a fixed JSON answer per model; ``[hard]`` makes the small model
unsure, so the large model answers the second request), or point it at an OpenAI-compatible server
with models ``small`` and ``large``::

    python examples/langchain_structured.py
    python examples/langchain_structured.py http://127.0.0.1:8000/v1
"""

from __future__ import annotations

import json
import sys
from typing import Any

from langchain_openai import ChatOpenAI
from pydantic import BaseModel, Field

from langchain_confidence_router.langchain import ConfidenceRouter


class Invoice(BaseModel):
    """An invoice read from a message."""

    customer: str = Field(description="who is billed")
    total_eur: float = Field(description="amount due in euros")


REQUESTS = ["Bill ACME 120 euros for the repairs.", "[hard] Globex owes 99.5 euros, minus nothing, plus nothing."]


def run(base_url: str, api_key: str = "test") -> list[dict[str, Any]]:
    router = ConfidenceRouter(
        models={name: ChatOpenAI(model=name, base_url=base_url, api_key=api_key) for name in ("small", "large")},
    )
    extract = router.with_structured_output(Invoice, include_raw=True)  # raw carries the trace
    results = []
    for text in REQUESTS:
        out = extract.invoke(text)
        trace = out["raw"].response_metadata["confidence_router"]
        results.append({
            "request": text,
            "invoice": out["parsed"],
            "model": trace["final_model"],
            "attempts": [(a["model"], a["decision"], a["error_kind"]) for a in trace["attempts"]],
            "confidence": trace["confidence"],
        })
    return results


def main(base_url: str | None = None) -> list[dict[str, Any]]:
    """Run the example against ``base_url``, or against a local fake server started here."""
    if base_url is not None:
        results = run(base_url)
    else:
        from langchain_confidence_router.testing import FakeOpenAIServer, ModelBehaviour

        small = json.dumps({"customer": "ACME", "total_eur": 120.0})
        large = json.dumps({"customer": "Globex", "total_eur": 99.5})
        behaviours = {  # the fake server answers a fixed text per model; `[hard]` makes small unsure
            "small": ModelBehaviour(confident_on_hard=False, answer=small),
            "large": ModelBehaviour(answer=large),
        }
        with FakeOpenAIServer(behaviours) as server:
            results = run(server.base_url)
    for r in results:
        print(f"{r['request']!r} -> {r['invoice']!r} from {r['model']} (attempts: {r['attempts']}; "
              f"confidence {r['confidence']:.2f})")
    return results


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else None)

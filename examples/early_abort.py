"""Early abort: stop reading a long answer from the small model once it is clearly going to be rejected.

The small tier's answer is watched as a hidden stream (none of its tokens reach the caller); once
``after_tokens`` tokens arrived and the running ``min_logprob`` confidence is below ``below``, the stream
is closed and the large tier starts at once. With ``min_logprob`` and the ``stop`` filter the rule only cuts
answers the threshold would reject anyway (docs/signals.md, "Early abort").

Run it as is (a local fake server whose small model writes a long, slow answer and is unsure on ``[hard]``
prompts), or point it at an OpenAI-compatible server serving ``small`` and ``large`` with logprobs::

    python examples/early_abort.py
    python examples/early_abort.py http://127.0.0.1:8000/v1
"""

from __future__ import annotations

import sys
import time
from typing import Any

from langchain_openai import ChatOpenAI

from langchain_confidence_router.langchain import ConfidenceRouter

RULE = {"after_tokens": 4, "below": 0.3}
CONFIG = {  # the same schema as a confidence.yaml file
    "algorithm": {"confidence": {"confidence_method": "min_logprob", "token_filter": "stop", "threshold": 0.3}},
    "models": [
        {"name": "small", "size": "1b", "input_cost_per_token": 1e-7, "output_cost_per_token": 2e-7,
         "early_abort": RULE},
        {"name": "large", "size": "70b", "input_cost_per_token": 2e-6, "output_cost_per_token": 8e-6},
    ],
}
QUESTION = "[hard] Explain why the sky is blue."


def router(base_url: str, *, early_abort: bool) -> ConfidenceRouter:
    config = {**CONFIG, "models": [dict(m) for m in CONFIG["models"]]}
    if not early_abort:
        config["models"][0].pop("early_abort")
    models = {name: ChatOpenAI(model=name, base_url=base_url, api_key="test") for name in ("small", "large")}
    return ConfidenceRouter(models=models, config=config)


def run(base_url: str) -> dict[str, Any]:
    """The same hard question with and without the rule: who answered, what was paid for, how long it took."""
    out: dict[str, Any] = {}
    for label, on in (("without", False), ("with", True)):
        t0 = time.perf_counter()
        answer = router(base_url, early_abort=on).invoke(QUESTION)
        seconds = time.perf_counter() - t0
        trace = answer.response_metadata["confidence_router"]
        first = trace["attempts"][0]
        out[label] = {"answer": answer.content, "model": trace["final_model"], "seconds": seconds,
                      "small_tokens_out": first["tokens_out"], "aborted_at_token": first["aborted_at_token"],
                      "reason": first["reason"]}
    return out


def main(base_url: str | None = None) -> dict[str, Any]:
    if base_url is not None:
        result = run(base_url)
    else:
        from langchain_confidence_router.testing import FakeOpenAIServer, ModelBehaviour

        long_answer = " ".join(["Light scatters off the molecules of the air, blue more than red."] * 8)
        models = {"small": ModelBehaviour(confident_on_hard=False, answer=long_answer, token_delay_s=0.01),
                  "large": ModelBehaviour()}
        with FakeOpenAIServer(models) as server:
            result = run(server.base_url)
    for label, r in result.items():
        print(f"{label} early abort: {r['model']} answered in {r['seconds']:.2f} s; small produced "
              f"{r['small_tokens_out']} tokens ({r['reason']})")
    return result


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else None)

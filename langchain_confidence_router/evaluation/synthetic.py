"""Synthetic recorded runs with real-looking token logprobs, for tests, docs and demos.

Each item has a difficulty; each model a skill. A model answers correctly with probability
sigmoid(1.5 * (skill - difficulty)); its token logprobs are drawn around a per-answer certainty
that is higher for right answers than wrong ones, so signals separate right from wrong as they do
in practice: informatively but imperfectly. Costs are per-token prices times token counts.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .runs import RecordedRuns, RunRecord

__all__ = ["SyntheticModel", "make_runs"]


@dataclass(frozen=True)
class SyntheticModel:
    """A model of the synthetic ladder: name, skill (higher is better) and USD per token."""

    name: str
    skill: float
    price_per_token: float


DEFAULT_LADDER = (
    SyntheticModel("tiny", -0.6, 1e-7),
    SyntheticModel("medium", 0.3, 4e-7),
    SyntheticModel("large", 1.2, 2e-6),
)


def make_runs(
    n_items: int = 300,
    models: Sequence[SyntheticModel] = DEFAULT_LADDER,
    *,
    seed: int = 0,
    separation: float = 0.35,
    missing_rate: float = 0.0,
    top_k: int = 3,
) -> RecordedRuns:
    """Recorded runs for ``n_items`` items answered by every model; ``missing_rate`` drops logprobs."""
    rng = np.random.default_rng(seed)
    difficulty = rng.normal(0.0, 1.0, n_items)
    records = []
    for model in models:
        p = 1.0 / (1.0 + np.exp(-1.5 * (model.skill - difficulty)))
        correct = rng.random(n_items) < p
        for i in range(n_items):
            n_tok = int(rng.integers(3, 13))
            certainty = float(np.clip(0.5 + separation * correct[i] + rng.normal(0.0, 0.2), 0.05, 0.999))
            entries = []
            for t in range(n_tok):
                prob = float(np.clip(certainty + rng.normal(0.0, 0.1), 0.01, 1.0))
                lp = math.log(prob)
                alts = [{"token": f"w{t}", "logprob": lp}]
                rest = max(1.0 - prob, 1e-9)
                for j in range(1, top_k):
                    share = rest * float(rng.uniform(0.2, 0.9)) / j
                    alts.append({"token": f"a{j}", "logprob": math.log(max(share, 1e-12))})
                token = "." if t == n_tok - 1 else f" w{t}"
                entries.append({"token": token, "logprob": lp, "top_logprobs": alts})
            tokens_in = 40
            record = {
                "item_id": f"item-{i}",
                "model": model.name,
                "correct": bool(correct[i]),
                "cost_usd": (tokens_in + n_tok) * model.price_per_token,
                "tokens_in": tokens_in,
                "tokens_out": n_tok,
                "latency_ms": float(50 + 10 * n_tok),
            }
            if rng.random() >= missing_rate:
                record["logprobs"] = entries
            records.append(RunRecord.model_validate(record))
    return RecordedRuns(records)

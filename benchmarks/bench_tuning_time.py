"""Wall time of ``tune`` on 20,000 items x 5 models: ``python benchmarks/bench_tuning_time.py``.

The runs are synthetic (difficulty-driven correctness, two logprob signals whose raw values track it),
built as arrays so that only the tuner is timed. Prints seconds per call for the default relative
target (quantile paths) and for split mode, side by side.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from langchain_confidence_router.evaluation.matrix import RunMatrix
from langchain_confidence_router.evaluation.tune import tune

SKILL = np.array([-0.6, 0.0, 0.5, 0.9, 1.2])
PRICE = np.array([0.1, 0.2, 0.9, 3.0, 10.0])


def synthetic_matrix(n: int, seed: int = 0) -> RunMatrix:
    rng = np.random.default_rng(seed)
    m = SKILL.size
    difficulty = rng.normal(0.0, 1.0, (n, 1))
    correct = rng.random((n, m)) < 1.0 / (1.0 + np.exp(-2.0 * (SKILL - difficulty)))
    certainty = 1.2 * (SKILL - difficulty) + 0.8 * correct
    avg = -np.log1p(np.exp(-(certainty + rng.normal(0.0, 0.7, (n, m)))))  # log of a sigmoid: <= 0
    margin = np.maximum(certainty + 2.0 + rng.normal(0.0, 0.9, (n, m)), 0.0)
    models = [f"model-{i}" for i in range(m)]
    return RunMatrix(models, [str(i) for i in range(n)], correct, np.broadcast_to(PRICE, (n, m)).copy(),
                     {"avg_logprob": avg, "margin": margin})


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", type=int, default=20_000)
    args = parser.parse_args()
    matrix = synthetic_matrix(args.items)
    print(f"{args.items} items x {len(matrix.models)} models, signals {', '.join(matrix.signals)}")
    for mode in ("auto", "split"):
        t0 = time.perf_counter()
        res = tune(matrix, max_accuracy_drop=0.01, delta=0.05, mode=mode, progress=False)
        secs = time.perf_counter() - t0
        ev = res.evidence
        print(f"mode {mode} ({ev['mode']}): {secs:.1f} s; chain {' -> '.join(res.models)}; savings "
              f"{ev['expected']['savings'] * 100:.1f}%; {ev['path_length']} configurations on "
              f"{ev['families_tested']} paths")
    return 0


if __name__ == "__main__":
    sys.exit(main())

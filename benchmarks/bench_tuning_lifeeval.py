"""Tuning benchmark, SciQ and BoolQ (LifeEval): Llama-3.1 8B -> 70B, answer-option probabilities (margin available).

One command: ``python benchmarks/bench_tuning_lifeeval.py [--splits 20] [--markdown FILE] [--verbose]``.
Protocol and baselines: see bench_tuning_common.py. Skips with a message when ../shared/data is absent.
"""

from __future__ import annotations

import sys

from bench_tuning_common import main

if __name__ == "__main__":
    sys.exit(main(keys=["sciq_llama3.1", "boolq_llama3.1"]))

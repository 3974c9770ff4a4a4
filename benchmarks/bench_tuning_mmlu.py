"""Tuning benchmark, MMLU (Plaut et al.): Llama-3 8B -> 70B, answer-letter max softmax probability.

One command: ``python benchmarks/bench_tuning_mmlu.py [--splits 20] [--markdown FILE] [--verbose]``.
Protocol and baselines: see bench_tuning_common.py. Skips with a message when ../shared/data is absent.
"""

from __future__ import annotations

import sys

from bench_tuning_common import main

if __name__ == "__main__":
    sys.exit(main(keys=["mmlu_llama3"]))

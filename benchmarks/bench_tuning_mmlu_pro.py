"""Tuning benchmark, MMLU-Pro (Tao et al.): the Qwen2.5-Instruct 3B/7B/14B/32B and Llama 3.x 1B..405B ladders.

One command: ``python benchmarks/bench_tuning_mmlu_pro.py [--splits 20] [--markdown FILE] [--verbose]``.
Protocol and baselines: see bench_tuning_common.py. Skips with a message when ../shared/data is absent.
"""

from __future__ import annotations

import sys

from bench_tuning_common import main

if __name__ == "__main__":
    sys.exit(main(keys=["mmlu_pro_qwen2.5", "mmlu_pro_llama3"]))

"""All tuning benchmarks on the shared real data, one table: ``python benchmarks/bench_tuning.py``.

Datasets: MMLU-Pro Qwen2.5 and Llama 3.x ladders (Tao et al.), MMLU Llama-3 8B -> 70B (Plaut et al.),
SciQ and BoolQ Llama-3.1 8B -> 70B (LifeEval). Options: ``--datasets a,b --splits 20 --markdown FILE``.
Skips with a message when ../shared/data is absent.
"""

from __future__ import annotations

import sys

from bench_tuning_common import main

if __name__ == "__main__":
    sys.exit(main())

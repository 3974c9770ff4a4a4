"""Turn public recorded LLM results into :class:`RunRecord` rows, so cascades replay on real data.

Each converter reads one folder of the shared data collection (``data_dir`` may be that folder or
the collection root holding it) and returns :class:`RecordedRuns`. The data files stay outside
the repository; only the reading code lives here. What each source can and cannot support:

==============  ==================================================  ===============================
converter       signals (raw, core units)                           cost
==============  ==================================================  ===============================
tao_mmlu_pro    geometric_mean = mean_token_prob (trace level),      350 assumed prompt tokens +
                avg_logprob = log of it, verbal                      recorded response tokens
plaut           avg_logprob = min_logprob = log(msp) (floored at     per-dataset assumed prompt +
                -20), geometric_mean = msp (answer-letter token)     1 output token
lifeeval        avg_logprob, margin, entropy, geometric_mean over    chars/4 of question + 200
                the answer options at the answer position; verbal   instruction tokens; chars/4 out
routellm        none (correctness only)                              chars/4 of prompt (+ response
                                                                     for gsm8k; 1 token for mmlu)
==============  ==================================================  ===============================

Prices (``PRICES``): public list prices as of 2025, USD per 1M tokens (input / output). They
turn token counts into comparable costs; the ratios between tiers matter more than the cents.

Closed models, provider list prices (OpenAI, Anthropic, Google AI Studio paid tier <=128k
context, DeepSeek standard hours, xAI):

==================================  ========  ========
model                               input     output
==================================  ========  ========
gpt-4o-2024-08-06 (gpt-4o)          2.50      10.00
gpt-4o-mini-2024-07-18              0.15      0.60
gpt-4.1                             2.00      8.00
gpt-4.1-mini                        0.40      1.60
gpt-4.1-nano                        0.10      0.40
gpt-4-turbo, gpt-4-1106-preview     10.00     30.00
gpt-3.5-turbo (0125)                0.50      1.50
o1-mini, o3-mini, o4-mini           1.10      4.40
claude-3-haiku-20240307             0.25      1.25
claude-3-5-haiku-20241022           0.80      4.00
claude-3-7-sonnet-20250219          3.00      15.00
gemini-1.5-flash-8b                 0.0375    0.15
gemini-1.5-flash                    0.075     0.30
gemini-1.5-pro                      1.25      5.00
gemini-2.0-flash-lite               0.075     0.30
gemini-2.0-flash                    0.10      0.40
deepseek-chat (V3)                  0.27      1.10
deepseek-reasoner (R1)              0.55      2.19
grok-2-1212                         2.00      10.00
grok-3-beta                         3.00      15.00
grok-3-mini-beta                    0.30      0.50
==================================  ========  ========

Open-weight models, typical hosted serverless prices (same price in and out):

* Together AI list prices for the models Tao et al. ran on Together (the ``-Turbo`` names):
  Llama-3.2-3B-Instruct-Turbo 0.06, Meta-Llama-3.1-8B-Instruct-Turbo 0.18,
  Meta-Llama-3.1-70B-Instruct-Turbo 0.88, Meta-Llama-3.1-405B-Instruct-Turbo 3.50.
* Every other open-weight model uses Fireworks' size-tier list prices: dense < 4B params 0.10,
  4B-16B 0.20, > 16B 0.90; MoE up to 56B total params (Mixtral 8x7B) 0.50. Consequence worth
  knowing: 7B and 14B cost the same per token, so e.g. Qwen2.5 7B -> 14B escalation only pays
  for the extra call, not a pricier model.

Assumptions are module constants (``TAO_PROMPT_TOKENS``, ``PLAUT_PROMPT_TOKENS``,
``LIFEEVAL_INSTRUCTION_TOKENS``, ``CHARS_PER_TOKEN``) and appear in each converter's docstring.
Any converter takes ``prices=`` to override or extend the table.
"""

from __future__ import annotations

import argparse
import csv
import gzip
import json
import math
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from .runs import RecordedRuns, RunRecord, write_runs

__all__ = [
    "CHARS_PER_TOKEN",
    "CONVERTERS",
    "DATASET_DIRS",
    "LIFEEVAL_INSTRUCTION_TOKENS",
    "LIFEEVAL_QSETS",
    "LOGPROB_FLOOR",
    "PLAUT_PROMPT_TOKENS",
    "PRICES",
    "TAO_LLAMA3_LADDER",
    "TAO_PROMPT_TOKENS",
    "TAO_QWEN25_LADDER",
    "Price",
    "convert",
    "convert_lifeeval",
    "convert_plaut",
    "convert_routellm",
    "convert_tao_mmlu_pro",
    "cost_usd",
]


@dataclass(frozen=True, slots=True)
class Price:
    """USD per 1M input and output tokens, and where the number comes from."""

    input_per_m: float
    output_per_m: float
    source: str


_OPENAI = "OpenAI list price 2025"
_ANTHROPIC = "Anthropic list price 2025"
_GOOGLE = "Google AI Studio paid tier (<=128k ctx) 2025"
_TOGETHER = "Together AI serverless list price 2025"
_FW_SMALL = "Fireworks serverless tier <4B, 2025"
_FW_MID = "Fireworks serverless tier 4B-16B, 2025"
_FW_BIG = "Fireworks serverless tier >16B, 2025"
_FW_MOE = "Fireworks serverless tier MoE <=56B, 2025"


def _flat(price: float, source: str) -> Price:
    return Price(price, price, source)


#: Public list prices as of 2025, USD per 1M tokens; see the module docstring for the sources.
PRICES: dict[str, Price] = {
    # OpenAI
    "gpt-4o": Price(2.50, 10.00, _OPENAI),
    "gpt-4o-2024-08-06": Price(2.50, 10.00, _OPENAI),
    "gpt-4o-mini-2024-07-18": Price(0.15, 0.60, _OPENAI),
    "gpt-4.1": Price(2.00, 8.00, _OPENAI),
    "gpt-4.1-mini": Price(0.40, 1.60, _OPENAI),
    "gpt-4.1-nano": Price(0.10, 0.40, _OPENAI),
    "gpt-4-turbo": Price(10.00, 30.00, _OPENAI),
    "gpt-4-1106-preview": Price(10.00, 30.00, _OPENAI),
    "gpt-3.5-turbo": Price(0.50, 1.50, _OPENAI),
    "o1-mini-2024-09-12": Price(1.10, 4.40, _OPENAI),
    "o3-mini-2025-01-31": Price(1.10, 4.40, _OPENAI),
    "o4-mini-2025-04-16": Price(1.10, 4.40, _OPENAI),
    # Anthropic
    "claude-3-haiku-20240307": Price(0.25, 1.25, _ANTHROPIC),
    "claude-3-5-haiku-20241022": Price(0.80, 4.00, _ANTHROPIC),
    "claude-3-7-sonnet-20250219": Price(3.00, 15.00, _ANTHROPIC),
    # Google
    "gemini-1.5-flash-8b": Price(0.0375, 0.15, _GOOGLE),
    "gemini-1.5-flash": Price(0.075, 0.30, _GOOGLE),
    "gemini-1.5-pro": Price(1.25, 5.00, _GOOGLE),
    "gemini-2.0-flash-lite": Price(0.075, 0.30, _GOOGLE),
    "gemini-2.0-flash": Price(0.10, 0.40, _GOOGLE),
    # DeepSeek, xAI
    "deepseek-chat": Price(0.27, 1.10, "DeepSeek list price 2025 (standard hours)"),
    "deepseek-reasoner": Price(0.55, 2.19, "DeepSeek list price 2025 (standard hours)"),
    "grok-2-1212": Price(2.00, 10.00, "xAI list price 2025"),
    "grok-3-beta": Price(3.00, 15.00, "xAI list price 2025"),
    "grok-3-mini-beta": Price(0.30, 0.50, "xAI list price 2025"),
    # Open weights served by Together (names as in Tao et al.)
    "Llama-3.2-3B-Instruct-Turbo": _flat(0.06, _TOGETHER),
    "Meta-Llama-3.1-8B-Instruct-Turbo": _flat(0.18, _TOGETHER),
    "Meta-Llama-3.1-70B-Instruct-Turbo": _flat(0.88, _TOGETHER),
    "Meta-Llama-3.1-405B-Instruct-Turbo": _flat(3.50, _TOGETHER),
    # Open weights, Fireworks size tiers
    "Llama-3.2-1B-Instruct": _flat(0.10, _FW_SMALL),
    "Llama-3.2-3B-Instruct": _flat(0.10, _FW_SMALL),
    "Meta-Llama-3.1-8B-Instruct": _flat(0.20, _FW_MID),
    "Meta-Llama-3.1-70B-Instruct": _flat(0.90, _FW_BIG),
    "Qwen2.5-3B-Instruct": _flat(0.10, _FW_SMALL),
    "Qwen2.5-7B-Instruct": _flat(0.20, _FW_MID),
    "Qwen2.5-14B-Instruct": _flat(0.20, _FW_MID),
    "Qwen2.5-32B-Instruct": _flat(0.90, _FW_BIG),
    "Qwen3-0.6B": _flat(0.10, _FW_SMALL),
    "Qwen3-1.7B": _flat(0.10, _FW_SMALL),
    "Qwen3-4B": _flat(0.20, _FW_MID),
    "Qwen3-8B": _flat(0.20, _FW_MID),
    "Qwen3-14B": _flat(0.20, _FW_MID),
    "Qwen3-32B": _flat(0.90, _FW_BIG),
    "gemma-2b-it": _flat(0.10, _FW_SMALL),
    "gemma-2-9b-it": _flat(0.20, _FW_MID),
    "gemma-2-27b-it": _flat(0.90, _FW_BIG),
    "gemma-3-1b-it": _flat(0.10, _FW_SMALL),
    "gemma-3-4b-it": _flat(0.20, _FW_MID),
    "gemma-3-12b-it": _flat(0.20, _FW_MID),
    "gemma-3-27b-it": _flat(0.90, _FW_BIG),
    "Phi-3-mini-128k-instruct": _flat(0.10, _FW_SMALL),
    "Phi-3.5-mini-instruct": _flat(0.10, _FW_SMALL),
    "Phi-3-medium-128k-instruct": _flat(0.20, _FW_MID),
    "Mistral-7B-Instruct-v0.1": _flat(0.20, _FW_MID),
    "Mistral-Nemo-Instruct-2407": _flat(0.20, _FW_MID),
    "Mistral-Small-24B-Instruct-2501": _flat(0.90, _FW_BIG),
    # Plaut et al. model names
    "Llama-7b": _flat(0.20, _FW_MID),
    "Llama-13b": _flat(0.20, _FW_MID),
    "Llama-70b": _flat(0.90, _FW_BIG),
    "Llama3-8b": _flat(0.20, _FW_MID),
    "Llama3-70b": _flat(0.90, _FW_BIG),
    "Falcon-7b": _flat(0.20, _FW_MID),
    "Falcon-40b": _flat(0.90, _FW_BIG),
    "Yi-6b": _flat(0.20, _FW_MID),
    "Yi-34b": _flat(0.90, _FW_BIG),
    "Mistral": _flat(0.20, _FW_MID),
    "Mixtral": _flat(0.50, _FW_MOE),
    "Solar": _flat(0.20, _FW_MID),
    # RouteLLM
    "mistralai/Mixtral-8x7B-Instruct-v0.1": _flat(0.50, _FW_MOE),
}

#: Clip for log(probability) so a reported probability of 0 stays finite (the format rejects inf).
LOGPROB_FLOOR = -20.0
#: Rough English average used wherever only text is available.
CHARS_PER_TOKEN = 4.0
#: MMLU-Pro prompt (question, 10 options, instructions asking for reasoning + stated confidence).
TAO_PROMPT_TOKENS = 350
#: Zero-shot prompt length per Plaut dataset: ~50 instruction tokens plus a typical question with
#: its options. A one-shot prompt adds one more question-with-options (the total minus 50).
PLAUT_PROMPT_TOKENS: dict[str, int] = {
    "arc": 120,
    "hellaswag": 200,
    "mmlu": 150,
    "truthfulqa": 200,
    "winogrande": 90,
}
#: LifeEval prompts ask for JSON with reasoning and per-option confidence; this is the fixed part.
LIFEEVAL_INSTRUCTION_TOKENS = 200

#: Sub-folder of the shared data collection for each converter.
DATASET_DIRS: dict[str, str] = {
    "tao_mmlu_pro": "tao_mmlu_pro_80models",
    "plaut": "plaut_msp_mcq_14models",
    "lifeeval": "lifeeval_calibration_llama8b70b_gpt4o",
    "routellm": "routellm_gsm8k_mmlu",
}

TAO_QWEN25_LADDER: tuple[str, ...] = (
    "Qwen2.5-3B-Instruct",
    "Qwen2.5-7B-Instruct",
    "Qwen2.5-14B-Instruct",
    "Qwen2.5-32B-Instruct",
)
#: Llama 3.x by size. 3B is the Together "-Turbo" run so that 3B..405B share one provider.
TAO_LLAMA3_LADDER: tuple[str, ...] = (
    "Llama-3.2-1B-Instruct",
    "Llama-3.2-3B-Instruct-Turbo",
    "Meta-Llama-3.1-8B-Instruct-Turbo",
    "Meta-Llama-3.1-70B-Instruct-Turbo",
    "Meta-Llama-3.1-405B-Instruct-Turbo",
)
_TAO_LADDERS = {"qwen2.5": TAO_QWEN25_LADDER, "llama3": TAO_LLAMA3_LADDER}

#: LifeEval question sets with (file prefix, answer options, ground-truth column).
LIFEEVAL_QSETS: dict[str, tuple[str, tuple[str, ...], str]] = {
    "sciq": ("sciq_test", ("A", "B", "C", "D"), "Correct Answer Letter"),
    "boolq": ("boolq_valid", ("True", "False"), "Correct Answer"),
    "saten": ("sat_en", ("A", "B", "C", "D"), "Correct Answer Letter"),
    "lsatar": ("lsat_ar_test", ("A", "B", "C", "D", "E"), "Correct Answer Letter"),
}

ROUTELLM_MODELS: tuple[str, str] = ("mistralai/Mixtral-8x7B-Instruct-v0.1", "gpt-4-1106-preview")


# ------------------------------------------------------------------------------------ helpers


def cost_usd(model: str, tokens_in: float, tokens_out: float, prices: dict[str, Price] | None = None) -> float:
    """List-price cost of one call; unknown models raise with a hint to pass ``prices=``."""
    table = PRICES if prices is None else {**PRICES, **prices}
    try:
        price = table[model]
    except KeyError:
        raise KeyError(
            f"no price for model {model!r}; pass prices={{{model!r}: Price(input_per_m, output_per_m, "
            "source)}} to the converter"
        ) from None
    return (tokens_in * price.input_per_m + tokens_out * price.output_per_m) / 1e6


def _dataset_dir(data_dir: str | Path, name: str, marker: str) -> Path:
    """Accept the dataset folder itself or the collection root that holds it."""
    base = Path(data_dir)
    for candidate in (base, base / DATASET_DIRS[name]):
        if (candidate / marker).exists() or (candidate / f"{marker}.gz").exists():
            return candidate
    raise FileNotFoundError(
        f"{name}: no {marker!r} under {base} or {base / DATASET_DIRS[name]} (expected the "
        f"{DATASET_DIRS[name]} folder of the shared data collection)"
    )


def _find(path: Path) -> Path:
    """``path`` or ``path.gz``: the shared data gzips some files and not others."""
    if path.exists():
        return path
    gz = path.with_name(path.name + ".gz")
    if gz.exists():
        return gz
    raise FileNotFoundError(f"neither {path} nor {gz} exists")


def _open_csv(path: Path) -> IO[str]:
    if path.name.endswith(".gz"):
        return gzip.open(path, "rt", encoding="utf-8", newline="")  # type: ignore[return-value]
    return open(path, encoding="utf-8", newline="")


def _read_csv(path: Path) -> Iterator[dict[str, str]]:
    with _open_csv(_find(path)) as fh:
        yield from csv.DictReader(fh)


def _float(text: str | None) -> float | None:
    """Parse a CSV number; empty, 'NA' and NaN all mean missing."""
    if text is None:
        return None
    try:
        value = float(text)
    except ValueError:
        return None
    return None if math.isnan(value) else value


def _log(p: float) -> float:
    return max(math.log(p), LOGPROB_FLOOR) if p > 0 else LOGPROB_FLOOR


def _unit(value: float | None) -> float | None:
    """A stated confidence on 0..1; 1..100 is read as a percentage, anything else is dropped."""
    if value is None or value < 0:
        return None
    if value <= 1:
        return value
    return value / 100 if value <= 100 else None


def _tokens(text: str) -> int:
    return math.ceil(len(text) / CHARS_PER_TOKEN)


def _key(text: str) -> str:
    return re.sub(r"[^a-z0-9.]", "", text.lower())


# ------------------------------------------------------------------------------ Tao et al.


def convert_tao_mmlu_pro(
    data_dir: str | Path,
    models: Sequence[str] | str = TAO_QWEN25_LADDER,
    *,
    prompt_tokens: int = TAO_PROMPT_TOKENS,
    limit: int | None = None,
    prices: dict[str, Price] | None = None,
) -> RecordedRuns:
    """MMLU-Pro (12,032 items, identical row order in every file) from Tao et al. 2025.

    ``models`` are file names' model parts (``results/mmlu_pro_<model>_eval_all_None.csv.gz``), one
    such name, or a ladder name: ``"qwen2.5"`` (3B/7B/14B/32B) or ``"llama3"`` (3.2 1B/3B, 3.1 8B/70B/405B).
    item_id is ``mmlu_pro-<row index>``. correct = extracted_answer == correct_answer (no extracted
    answer counts as wrong). Signals: ``mean_token_prob`` and ``geometric_mean`` both hold
    logit_perplexity_confidence, the mean of exp(token logprob) over the whole response (an
    arithmetic mean of probabilities, so >= the true geometric mean); ``avg_logprob`` is its log
    (floored at -20), i.e. an approximation; ``verbal`` the stated 0..1 confidence. Models whose
    API gave no logprobs have no logprob signals. Cost = ``prompt_tokens`` (assumed: the prompt
    text is not in the data) x input price + recorded response tokens x output price.
    Extra fields kept: dataset, category, answer, reference.
    """
    root = _dataset_dir(data_dir, "tao_mmlu_pro", "results")
    # A string is a ladder name or one model.
    names = _TAO_LADDERS.get(models.lower(), (models,)) if isinstance(models, str) else tuple(models)
    records: list[RunRecord] = []
    for model in names:
        path = root / "results" / f"mmlu_pro_{model}_eval_all_None.csv"
        for n, row in enumerate(_read_csv(path)):
            if limit is not None and n >= limit:
                break
            answer = row["extracted_answer"].strip() or None
            reference = row["correct_answer"].strip()
            signals: dict[str, float] = {}
            mtp = _float(row["logit_perplexity_confidence"])
            if mtp is not None:
                mtp = min(max(mtp, 0.0), 1.0)
                signals.update(mean_token_prob=mtp, geometric_mean=mtp, avg_logprob=_log(mtp))
            verbal = _unit(_float(row["verbal_numerical_confidence"]))
            if verbal is not None:
                signals["verbal"] = verbal
            tokens_out = _float(row["token_length"])
            tout = int(tokens_out) if tokens_out is not None else None
            records.append(
                RunRecord(
                    item_id=f"mmlu_pro-{row['']}",
                    model=model,
                    correct=answer is not None and answer == reference,
                    cost_usd=cost_usd(model, prompt_tokens, tout or 0, prices),
                    signals=signals or None,
                    tokens_in=prompt_tokens,
                    tokens_out=tout,
                    dataset="mmlu_pro",
                    category=row["category"],
                    answer=answer,
                    reference=reference,
                )
            )
    return RecordedRuns(records)


# ------------------------------------------------------------------------------ Plaut et al.


def convert_plaut(
    data_dir: str | Path,
    dataset: str = "MMLU",
    models: Sequence[str] = ("Llama3-8b", "Llama3-70b"),
    prompt_phrasing: str = "first",
    few_shot: int = 0,
    *,
    limit: int | None = None,
    prices: dict[str, Price] | None = None,
) -> RecordedRuns:
    """Per-question max softmax probability (MSP) of the answer letter, Plaut et al. 2024.

    ``dataset`` is one of ARC, HellaSwag, MMLU, TruthfulQA, WinoGrande (any case). item_id is
    ``<dataset>-<question_idx>``, aligned across models. Signals: ``geometric_mean`` = msp,
    ``avg_logprob`` = ``min_logprob`` = log(msp) (one answer token, so all three agree). msp == 0
    (with max_logit 0: no answer letter found; 97% of such rows are graded Unparseable) is kept as
    a recorded zero, log floored at -20, so such answers look least confident and escalate; this
    also reproduces the authors' AUROC figures (dropping them lowers Llama-2-7B's .603 to .595).
    Cost assumes ``PLAUT_PROMPT_TOKENS[dataset]`` input tokens (one-shot adds the question part
    again) and 1 output token. Extra fields kept: dataset, grade, max_logit (absent for GPT).
    ``limit`` keeps question_idx < limit.
    """
    root = _dataset_dir(data_dir, "plaut", "msp_correctness_all.csv")
    ds = _key(dataset)
    if ds not in PLAUT_PROMPT_TOKENS:
        raise ValueError(f"unknown Plaut dataset {dataset!r}; choose from {sorted(PLAUT_PROMPT_TOKENS)}")
    base = PLAUT_PROMPT_TOKENS[ds]
    tokens_in = base + (base - 50) * few_shot
    wanted = set(models)
    prefixes = tuple(f"{ds},{m},{prompt_phrasing},{few_shot}," for m in models)
    by_model: dict[str, list[RunRecord]] = {m: [] for m in models}
    with _open_csv(_find(root / "msp_correctness_all.csv")) as fh:
        header = next(csv.reader([fh.readline()]))
        # Filter on the raw line first: the file has a million rows and we want a few thousand.
        lines = (line for line in fh if line.startswith(prefixes))
        for row in csv.DictReader(lines, fieldnames=header):
            if row["model"] not in wanted:
                continue
            idx = int(row["question_idx"])
            if limit is not None and idx >= limit:
                continue
            msp = _float(row["msp"])
            max_logit = _float(row["max_logit"])
            signals = None
            if msp is not None:
                msp = min(max(msp, 0.0), 1.0)
                lp = _log(msp)
                signals = {"avg_logprob": lp, "geometric_mean": msp, "min_logprob": lp}
            extra: dict[str, Any] = {"dataset": ds, "grade": row["grade"]}
            if max_logit is not None and not (max_logit == 0 and msp == 0):  # 0/0 is "no answer letter"
                extra["max_logit"] = max_logit
            model = row["model"]
            by_model[model].append(
                RunRecord(
                    item_id=f"{ds}-{idx}",
                    model=model,
                    correct=row["correct"] == "1",
                    cost_usd=cost_usd(model, tokens_in, 1, prices),
                    signals=signals,
                    tokens_in=tokens_in,
                    tokens_out=1,
                    **extra,
                )
            )
    missing = [m for m, rows in by_model.items() if not rows]
    if missing:
        raise ValueError(
            f"no Plaut rows for model(s) {missing} on {ds}/{prompt_phrasing}/few_shot={few_shot} "
            "(Llama3-* exist zero-shot only; some one-shot runs cover only 500-1000 questions)"
        )
    return RecordedRuns(r for m in models for r in by_model[m])


# ------------------------------------------------------------------------------ LifeEval


def _option_signals(probs: dict[str, float], chosen: str) -> dict[str, float] | None:
    """Signals from the answer-option distribution at the answer position (renormalised)."""
    total = sum(probs.values())
    if total <= 0 or chosen not in probs:
        return None
    p = sorted((v / total for v in probs.values()), reverse=True)
    p_chosen = probs[chosen] / total
    k = len(p)
    entropy = -sum(x * math.log(x) for x in p if x > 0) / math.log(k)
    return {
        "avg_logprob": _log(p_chosen),
        "geometric_mean": p_chosen,
        "margin": _log(p[0]) - _log(p[1]),
        "entropy": min(max(entropy, 0.0), 1.0),
    }


def convert_lifeeval(
    data_dir: str | Path,
    qset: str = "SciQ",
    models: Sequence[str] = ("Meta-Llama-3.1-8B-Instruct", "Meta-Llama-3.1-70B-Instruct"),
    *,
    include_unparsed: bool = True,
    limit: int | None = None,
    prices: dict[str, Price] | None = None,
) -> RecordedRuns:
    """Answer-option token probabilities from NoamMichael/Comparing-Confidence-in-LLMs.

    ``qset``: SciQ, BoolQ, SAT-EN or LSAT-AR. The chosen option is the Answer column; correctness
    compares it with the formatted benchmark's ground truth (joined on Question ID; this agrees
    row for row with llm-confidence-correct.csv, which simply omits unparseable answers). With
    ``include_unparsed`` (default) answers that are not an option (empty, "Unknown", ...) stay in
    as wrong with no logprob signals, which is what a router would see; ``False`` reproduces the
    authors' accuracy figures exactly. Signals over the renormalised option distribution:
    ``avg_logprob`` = log p(chosen), ``geometric_mean`` = p(chosen), ``margin`` = log p1 - log p2,
    ``entropy`` = H / log(k); ``verbal`` = the stated confidence for the chosen option. Cost:
    input = chars/4 of question and options + ``LIFEEVAL_INSTRUCTION_TOKENS``; output = chars/4 of
    the raw reply. Extra fields kept: dataset, answer, reference, option_probs.
    """
    key = _key(qset).replace(".", "")
    if key not in LIFEEVAL_QSETS:
        raise ValueError(f"unknown LifeEval question set {qset!r}; choose from SciQ, BoolQ, SAT-EN, LSAT-AR")
    prefix, options, gt_col = LIFEEVAL_QSETS[key]
    root = _dataset_dir(data_dir, "lifeeval", "formatted_benchmarks")
    bench: dict[str, dict[str, str]] = {
        row["Question ID"]: row for row in _read_csv(root / "formatted_benchmarks" / f"{prefix}_formatted.csv")
    }
    records: list[RunRecord] = []
    for model in models:
        path = root / "parsed_results" / model / f"{prefix}_{model}.csv"
        for n, row in enumerate(_read_csv(path)):
            if limit is not None and n >= limit:
                break
            qid = row["Question ID"]
            truth = bench[qid]
            answer = row["Answer"].strip()
            parsed = answer in options
            if not parsed and not include_unparsed:
                continue
            raw_probs = {o: _float(row.get(f"{o}_prob")) for o in options}
            probs = {o: v for o, v in raw_probs.items() if v is not None}
            signals: dict[str, float] = {}
            if parsed and len(probs) == len(options):
                signals.update(_option_signals(probs, answer) or {})
            if parsed:
                stated = _unit(_float(row.get("Confidence") if key == "boolq" else row.get(answer)))
                if stated is not None:
                    signals["verbal"] = stated
            question = " ".join(v for k, v in truth.items() if k in ("Question", "query") or k.startswith("Option "))
            tokens_in = _tokens(question) + LIFEEVAL_INSTRUCTION_TOKENS
            tokens_out = _tokens(row.get("content") or "")
            records.append(
                RunRecord(
                    item_id=f"{key}-{qid}",
                    model=model,
                    correct=parsed and answer == truth[gt_col].strip(),
                    cost_usd=cost_usd(model, tokens_in, tokens_out, prices),
                    signals=signals or None,
                    tokens_in=tokens_in,
                    tokens_out=tokens_out,
                    dataset=key,
                    answer=answer or None,
                    reference=truth[gt_col].strip(),
                    option_probs=probs or None,
                )
            )
    return RecordedRuns(records)


# ------------------------------------------------------------------------------ RouteLLM


def _contaminated(path: Path) -> set[str]:
    with open(path, encoding="utf-8") as fh:
        return {json.loads(line)["eval_prompt"] for line in fh if line.strip()}


def convert_routellm(
    data_dir: str | Path,
    task: str = "gsm8k",
    *,
    drop_contaminated: bool = False,
    limit: int | None = None,
    prices: dict[str, Price] | None = None,
) -> RecordedRuns:
    """RouteLLM's recorded correctness for Mixtral-8x7B-Instruct vs GPT-4-1106 (no signals).

    ``task``: ``gsm8k`` (1,319 items, item_id ``gsm8k-<row>``) or ``mmlu`` (14,042 items over 57
    subject files, item_id ``mmlu-<subject>-<row>``). Tokens are chars/4 (``CHARS_PER_TOKEN``):
    input = the recorded prompt (no system prompt or few-shot text is in the data), output = the
    recorded response for gsm8k and 1 token (the answer letter, no text recorded) for mmlu.
    ``contaminated`` marks prompts RouteLLM flags as overlapping its router-training data (matched
    on prompt text: the mmlu eval_idx values do not index the subject files); irrelevant for this
    package's own tuning, ``drop_contaminated`` removes them.
    """
    root = _dataset_dir(data_dir, "routellm", "gsm8k_responses.csv")
    t = _key(task)
    if t not in ("gsm8k", "mmlu"):
        raise ValueError(f"unknown RouteLLM task {task!r}; choose gsm8k or mmlu")
    flagged = _contaminated(root / f"{t}_contaminated_prompts.jsonl")
    rows: list[tuple[str, dict[str, str], str]] = []  # (item_id, row, subject)
    if t == "gsm8k":
        rows = [(f"gsm8k-{i}", row, "") for i, row in enumerate(_read_csv(root / "gsm8k_responses.csv"))]
    else:
        files = sorted((root / "mmlu_responses").glob("mmlu_*.csv*"))
        for f in files:
            subject = f.name.removeprefix("mmlu_").removesuffix(".gz").removesuffix(".csv")
            rows.extend((f"mmlu-{subject}-{i}", row, subject) for i, row in enumerate(_read_csv(f)))
    if limit is not None:
        rows = rows[:limit]
    records: list[RunRecord] = []
    for model in ROUTELLM_MODELS:
        for item_id, row, subject in rows:
            contaminated = row["prompt"] in flagged
            if contaminated and drop_contaminated:
                continue
            tokens_in = _tokens(row["prompt"])
            tokens_out = _tokens(row.get(f"{model}_response") or "") if t == "gsm8k" else 1
            extra: dict[str, Any] = {"dataset": t, "contaminated": contaminated}
            if subject:
                extra["subject"] = subject
            records.append(
                RunRecord(
                    item_id=item_id,
                    model=model,
                    correct=row[model].strip().lower() == "true",
                    cost_usd=cost_usd(model, tokens_in, tokens_out, prices),
                    tokens_in=tokens_in,
                    tokens_out=tokens_out,
                    **extra,
                )
            )
    return RecordedRuns(records)


# ------------------------------------------------------------------------------ registry

CONVERTERS: dict[str, Callable[..., RecordedRuns]] = {
    "tao_mmlu_pro": convert_tao_mmlu_pro,
    "plaut": convert_plaut,
    "lifeeval": convert_lifeeval,
    "routellm": convert_routellm,
}


def convert(name: str, data_dir: str | Path, out_path: str | Path, **kw: Any) -> RecordedRuns:
    """Run converter ``name`` and write its records to ``out_path`` (JSONL, gzip if ``.gz``)."""
    try:
        converter = CONVERTERS[name]
    except KeyError:
        raise KeyError(f"unknown converter {name!r}; choose from {sorted(CONVERTERS)}") from None
    runs = converter(data_dir, **kw)
    write_runs(runs, out_path)
    return runs


def _print_summary(runs: RecordedRuns) -> None:
    for model, s in runs.summary().items():
        cov = ", ".join(f"{k} {v:.3f}" for k, v in s["signal_coverage"].items()) or "none"
        cost = "n/a" if s["mean_cost_usd"] is None else f"${s['mean_cost_usd']:.3g}"
        print(f"{model:40s} n={s['n']:6d} acc={s['accuracy']:.3f} mean_cost={cost}  signals: {cov}")
    print(f"aligned items: {len(runs.item_ids())} (dropped {runs.n_dropped()})")


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m langchain_confidence_router.evaluation.converters NAME DATA_DIR OUT [k=v ...]``."""
    parser = argparse.ArgumentParser(description="Convert public recorded results into recorded runs.")
    parser.add_argument("name", choices=sorted(CONVERTERS))
    parser.add_argument("data_dir")
    parser.add_argument("out_path")
    parser.add_argument("options", nargs="*", help="converter keywords, e.g. qset=BoolQ models=a,b limit=500")
    args = parser.parse_args(argv)
    kw: dict[str, Any] = {}
    for opt in args.options:
        k, _, v = opt.partition("=")
        if k == "models":
            kw[k] = v if v.lower() in _TAO_LADDERS else v.split(",")
        elif v.lstrip("-").isdigit():
            kw[k] = int(v)
        else:
            kw[k] = {"true": True, "false": False}.get(v.lower(), v)
    _print_summary(convert(args.name, args.data_dir, args.out_path, **kw))


if __name__ == "__main__":
    main()

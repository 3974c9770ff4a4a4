"""Accumulate a streamed answer (text, logprob entries, usage, time to first token) into a TierResult.

``litellm.stream_chunk_builder`` drops logprobs and LangChain chunk merging is framework-specific,
so adapters feed each chunk's parts here and get one :class:`TierResult` at the end.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from .policy import TierResult


@dataclass
class StreamAccumulator:
    started: float = field(default_factory=time.perf_counter)
    text_parts: list[str] = field(default_factory=list)
    logprob_entries: list[Any] = field(default_factory=list)
    saw_logprobs: bool = False
    tokens_in: int | None = None
    tokens_out: int | None = None
    cost_usd: float | None = None
    ttft_ms: float | None = None
    tool_calls: list[Any] = field(default_factory=list)
    raw_chunks: int = 0

    def add(
        self,
        text: str | None = None,
        logprob_entries: list[Any] | None = None,
        *,
        tokens_in: int | None = None,
        tokens_out: int | None = None,
        tool_call: Any = None,
    ) -> None:
        """Record one chunk's parts. The first non-empty text or tool call sets time to first token."""
        self.raw_chunks += 1
        if (text or tool_call is not None) and self.ttft_ms is None:
            self.ttft_ms = (time.perf_counter() - self.started) * 1000.0
        if text:
            self.text_parts.append(text)
        if logprob_entries is not None:
            self.saw_logprobs = True
            self.logprob_entries.extend(logprob_entries)
        if tokens_in is not None:
            self.tokens_in = tokens_in
        if tokens_out is not None:
            self.tokens_out = tokens_out
        if tool_call is not None:
            self.tool_calls.append(tool_call)

    @property
    def text(self) -> str:
        return "".join(self.text_parts)

    def result(self, raw: Any = None, cost_usd: float | None = None) -> TierResult:
        """The streamed answer. Without usage (llama.cpp streams none) output tokens are counted from
        the logprob entries, one per token, so the attempt can still be priced."""
        tokens_out = self.tokens_out
        if tokens_out is None and self.saw_logprobs:
            tokens_out = len(self.logprob_entries)
        return TierResult(
            text=self.text,
            logprobs={"content": self.logprob_entries} if self.saw_logprobs else None,
            tokens_in=self.tokens_in,
            tokens_out=tokens_out,
            cost_usd=cost_usd if cost_usd is not None else self.cost_usd,
            raw=raw,
            tool_calls=self.tool_calls or None,
            ttft_ms=self.ttft_ms,
            streamed=True,
        )

"""Between LangChain messages and the core: tier outputs -> TierResult, router answers -> messages/chunks."""

from __future__ import annotations

import json
from typing import Any

from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage, message_chunk_to_message
from langchain_core.messages.ai import add_ai_message_chunks
from langchain_core.messages.tool import tool_call_chunk

from ..core import TierResult

#: Key of the whole request trace in ``AIMessage.response_metadata``.
TRACE_KEY = "confidence_router"


def tier_result(output: Any) -> TierResult:
    """Read one tier answer: a message, or ``{"raw", "parsed", "parsing_error"}`` from structured output.

    A structured answer that did not parse raises its parsing error, which the policy classifies as a
    bad response (skipped under ``on_error: skip``, so the next tier gets a chance).
    """
    parsed: Any = None
    if isinstance(output, dict) and "raw" in output:
        error = output.get("parsing_error")
        if error is not None:
            raise error if isinstance(error, BaseException) else ValueError(f"structured output: {error}")
        message, parsed = output["raw"], output.get("parsed")
    else:
        message = output
    if not isinstance(message, BaseMessage):
        raise TypeError(f"a tier returned {type(message).__name__}, expected a chat message")
    return result_from_message(message, parsed=parsed)


def result_from_message(message: BaseMessage, *, parsed: Any = None) -> TierResult:
    usage = getattr(message, "usage_metadata", None) or {}
    tool_calls = getattr(message, "tool_calls", None) or None
    return TierResult(
        text=message.text,
        logprobs=message.response_metadata.get("logprobs"),
        tokens_in=usage.get("input_tokens"),
        tokens_out=usage.get("output_tokens"),
        raw=message,
        tool_calls=list(tool_calls) if tool_calls else None,
        extra={"parsed": parsed} if parsed is not None else {},
    )


def combine_samples(outputs: list[Any]) -> TierResult:
    """Several sampled answers (consistency) as one result: the samples for the vote, usage summed.

    Failed samples are left out; if every sample failed, the first error is raised.
    """
    samples = [tier_result(o) for o in outputs if not isinstance(o, BaseException)]
    if not samples:
        raise next(o for o in outputs if isinstance(o, BaseException))
    first = samples[0]
    combined = TierResult(text=first.text, logprobs=first.logprobs, raw=first.raw, tool_calls=first.tool_calls,
                          tokens_in=_sum(s.tokens_in for s in samples), tokens_out=_sum(s.tokens_out for s in samples),
                          extra=first.extra)
    combined.samples = samples
    return combined


def _sum(values: Any) -> int | None:
    present = [v for v in values if v is not None]
    return sum(present) if present else None


def chunk_logprobs(chunk: BaseMessage) -> list[Any] | None:
    """The logprob entries one stream chunk carries (OpenAI shape: one entry per token)."""
    logprobs = chunk.response_metadata.get("logprobs")
    if isinstance(logprobs, dict):
        content = logprobs.get("content")
        return content if isinstance(content, list) else None
    return None


def merge_chunks(chunks: list[AIMessageChunk]) -> AIMessageChunk:
    return chunks[0] if len(chunks) == 1 else add_ai_message_chunks(chunks[0], *chunks[1:])


def answer_message(result: TierResult, trace: dict[str, Any]) -> AIMessage:
    """The router's answer: the chosen tier's message, with the request trace in its metadata."""
    message = result.raw
    if not isinstance(message, BaseMessage):
        raise TypeError(f"unexpected tier answer {type(message).__name__}")
    if isinstance(message, AIMessageChunk):
        message = message_chunk_to_message(message)
    update: dict[str, Any] = {"response_metadata": {**message.response_metadata, TRACE_KEY: trace}}
    if "parsed" in result.extra:
        # Same place ChatOpenAI puts a json-schema answer; read back by with_structured_output().
        update["additional_kwargs"] = {**message.additional_kwargs, "parsed": result.extra["parsed"]}
    return message.model_copy(update=update)  # type: ignore[return-value]


def message_to_chunk(message: AIMessage) -> AIMessageChunk:
    """A whole answer as one final stream chunk (used when the answer was not streamed live)."""
    chunks = [
        tool_call_chunk(name=tc["name"], args=json.dumps(tc["args"]), id=tc.get("id"), index=i)
        for i, tc in enumerate(message.tool_calls)
    ]
    chunks += [
        tool_call_chunk(name=tc.get("name"), args=tc.get("args"), id=tc.get("id"), index=len(chunks) + i)
        for i, tc in enumerate(message.invalid_tool_calls)
    ]
    return AIMessageChunk(
        content=message.content,
        additional_kwargs=message.additional_kwargs,
        response_metadata=message.response_metadata,
        usage_metadata=message.usage_metadata,
        tool_call_chunks=chunks,
        id=message.id,
        name=message.name,
        chunk_position="last",
    )


def closing_chunk(held: AIMessageChunk | None, trace: dict[str, Any], list_content: bool) -> AIMessageChunk:
    """The last chunk of a live stream: the tier's own last chunk (if any) plus the request trace."""
    if held is None:
        return AIMessageChunk(content=[] if list_content else "", response_metadata={TRACE_KEY: trace},
                              chunk_position="last")
    return held.model_copy(update={"response_metadata": {**held.response_metadata, TRACE_KEY: trace},
                                   "chunk_position": "last"})

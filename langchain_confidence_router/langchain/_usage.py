"""Estimate a prompt's tokens when the provider reports none (an early-aborted stream is cut before its usage).

The count runs between the cut attempt and the next tier's call, so only a local tokenizer is used: the
tier's ``get_num_tokens_from_messages`` when the model has a tokenizer of its own (it overrides
``get_token_ids``, as ChatOpenAI does with tiktoken, or was given ``custom_get_token_ids``). Counters that
only override ``get_num_tokens_from_messages`` often ask the provider's API (ChatAnthropic does), a round
trip that would delay the escalation; LangChain's generic counter loads a GPT-2 tokenizer from the network.
Otherwise, or when the counter fails, the prompt is sized by the usual rule of thumb for English text: one
token per :data:`CHARS_PER_TOKEN` characters, plus :data:`TOKENS_PER_MESSAGE` per message for the role and
separators. Either way the trace marks ``tokens_in_estimated``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import MutableSet, Sequence
from typing import Any

from langchain_core.language_models import BaseChatModel, BaseLanguageModel
from langchain_core.messages import BaseMessage
from langchain_core.runnables import RunnableBinding

logger = logging.getLogger(__name__)

CHARS_PER_TOKEN = 4
TOKENS_PER_MESSAGE = 4


def estimate_prompt_tokens(model: Any, messages: Sequence[BaseMessage], name: str,
                           failed: MutableSet[str]) -> int:
    """The prompt's tokens by ``model``'s own counter, else by characters.

    ``failed`` holds the tier names whose counter raised once (tiktoken offline, say): they are not asked
    again, so a counter that needs the network delays at most one request of that tier.
    """
    chat = _chat_model(model)
    if chat is not None and name not in failed and has_local_tokenizer(chat):
        try:
            return int(chat.get_num_tokens_from_messages(list(messages)))
        except Exception as exc:  # the fallback below still prices the attempt
            failed.add(name)
            logger.warning("confidence router: %s cannot count prompt tokens (%s); sizing prompts by characters",
                           name, exc)
    return by_characters(messages)


def by_characters(messages: Sequence[BaseMessage]) -> int:
    """``ceil(characters / CHARS_PER_TOKEN) + TOKENS_PER_MESSAGE`` summed over the messages."""
    return sum(math.ceil(len(m.text) / CHARS_PER_TOKEN) + TOKENS_PER_MESSAGE for m in messages)


def has_local_tokenizer(chat: BaseChatModel) -> bool:
    """Whether the model tokenizes text itself (not with LangChain's downloaded GPT-2 tokenizer, nor an API)."""
    return (getattr(chat, "custom_get_token_ids", None) is not None
            or type(chat).get_token_ids is not BaseLanguageModel.get_token_ids)


def _chat_model(model: Any) -> BaseChatModel | None:
    while isinstance(model, RunnableBinding):
        model = model.bound
    return model if isinstance(model, BaseChatModel) else None

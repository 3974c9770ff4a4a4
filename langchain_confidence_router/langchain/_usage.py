"""Estimate a prompt's tokens when the provider reports none (an early-aborted stream is cut before its usage).

The count runs between the cut attempt and the next tier's call, so only a local tokenizer is used: the
tier's ``get_num_tokens_from_messages`` when the model has a tokenizer of its own (it overrides
``get_token_ids``, as ChatOpenAI does with tiktoken, or was given ``custom_get_token_ids``). Counters that
only override ``get_num_tokens_from_messages`` often ask the provider's API (ChatAnthropic does), a round
trip that would delay the escalation; LangChain's generic counter loads a GPT-2 tokenizer from the network.
Nothing is downloaded to count: tiktoken (ChatOpenAI's tokenizer) fetches an encoding file from the network
the first time it is used unless it is cached (``TIKTOKEN_CACHE_DIR``), so the count runs with tiktoken's
remote fetch refused (:func:`no_downloads`) and with image fetching off; a tokenizer that would download
counts as failing. Otherwise, or when the counter fails, the prompt is sized by the usual rule of thumb
for English text: one token per :data:`CHARS_PER_TOKEN` characters, plus :data:`TOKENS_PER_MESSAGE` per
message for the role and separators. Either way the trace marks ``tokens_in_estimated``.
"""

from __future__ import annotations

import contextlib
import contextvars
import inspect
import logging
import math
import threading
from collections.abc import Iterator, MutableSet, Sequence
from typing import Any

from langchain_core.language_models import BaseChatModel, BaseLanguageModel
from langchain_core.messages import BaseMessage
from langchain_core.runnables import RunnableBinding

logger = logging.getLogger(__name__)

CHARS_PER_TOKEN = 4
TOKENS_PER_MESSAGE = 4

_offline: contextvars.ContextVar[bool] = contextvars.ContextVar("confidence_router_no_downloads", default=False)
_guard_lock = threading.Lock()


class DownloadRefused(RuntimeError):
    """A tokenizer tried to fetch a file from the network while a cut prompt was being counted."""


def estimate_prompt_tokens(model: Any, messages: Sequence[BaseMessage], name: str,
                           failed: MutableSet[str]) -> int:
    """The prompt's tokens by ``model``'s own counter, else by characters.

    ``failed`` holds the tier names whose counter raised once (tiktoken offline, say): they are not asked
    again, so a counter that needs the network delays at most one request of that tier.
    """
    chat = _chat_model(model)
    if chat is not None and name not in failed and has_local_tokenizer(chat):
        count = chat.get_num_tokens_from_messages
        # ChatOpenAI fetches image URLs to size them; never here
        offline = {"allow_fetching_images": False} if _accepts(count, "allow_fetching_images") else {}
        try:
            with no_downloads():
                return int(count(list(messages), **offline))
        except Exception as exc:  # the fallback below still prices the attempt
            failed.add(name)
            logger.warning("confidence router: %s cannot count prompt tokens (%s); sizing prompts by characters",
                           name, exc)
    return by_characters(messages)


@contextlib.contextmanager
def no_downloads() -> Iterator[None]:
    """Within this block (this thread or task only), tiktoken may read its cached encodings but refuses to
    download one: it raises :class:`DownloadRefused` instead. Elsewhere tiktoken works as usual."""
    _guard_tiktoken()
    token = _offline.set(True)
    try:
        yield
    finally:
        _offline.reset(token)


def _guard_tiktoken() -> None:
    """Wrap tiktoken's file reader, once, so that a remote read inside :func:`no_downloads` is refused."""
    try:
        import tiktoken.load as load
    except ImportError:  # no tiktoken: nothing of it can download
        return
    with _guard_lock:
        original = load.read_file
        if getattr(original, "_refuses_downloads", False):
            return

        def read_file(blobpath: str) -> bytes:
            if _offline.get() and "://" in blobpath:
                raise DownloadRefused(f"tiktoken would download {blobpath} (not in its cache; set "
                                      "TIKTOKEN_CACHE_DIR to a directory holding it)")
            return original(blobpath)

        read_file._refuses_downloads = True  # type: ignore[attr-defined]
        load.read_file = read_file


def _accepts(fn: Any, name: str) -> bool:
    try:
        return name in inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False


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

"""Prepare the tier chat models: logprobs on as fields, a non-streaming twin, router-wide parameters.

``.bind(logprobs=True)`` does not survive ``bind_tools()`` / ``with_structured_output()`` (langchain-core 1.7),
so logprobs are set as fields with ``model_copy``. Each tier gets a *quiet* copy
(``disable_streaming=True``) for calls whose answer may still be rejected, so no rejected token ever
reaches a stream or a streaming callback, a *live* copy for the final call, and a *plain* quiet copy
without tools or schema for a judge's yes/no.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.runnables import Runnable, RunnableBinding

#: Router parameters handed to every tier that has a field of one of these names (first match wins).
#: They are read by the chat models at call time, so ``model_copy`` is enough to apply them.
PASSTHROUGH_FIELDS: dict[str, tuple[str, ...]] = {
    "temperature": ("temperature",),
    "max_tokens": ("max_tokens", "max_completion_tokens", "max_output_tokens"),
    "stop": ("stop", "stop_sequences"),
    "output_version": ("output_version",),
    "streaming": ("streaming",),  # live copies only
}

#: One step of ``bind_tools`` / ``with_structured_output`` mapped over the tiers: (method, args, kwargs).
Binding = tuple[str, tuple[Any, ...], dict[str, Any]]


@dataclass(frozen=True, slots=True)
class TierModels:
    """The prepared copies of one tier."""

    quiet: Runnable[Any, Any]  # bindings applied, never streams: calls whose answer may be rejected
    live: Runnable[Any, Any]  # bindings applied, may stream: the final call
    plain: Runnable[Any, Any]  # no bindings, never streams: a judge's yes/no (self_verify)


def prepare_tiers(
    models: Mapping[str, Any],
    *,
    top_logprobs: int,
    overrides: Mapping[str, Any],
    bindings: Sequence[Binding],
) -> dict[str, TierModels]:
    """All copies of every tier, with ``bindings`` (tools, structured output) applied where they belong."""
    prepared = {}
    for name, model in models.items():
        plain = _prepare(model, top_logprobs, overrides, quiet=True)
        live = _prepare(model, top_logprobs, overrides, quiet=False)
        prepared[name] = TierModels(bind_all(plain, name, bindings), bind_all(live, name, bindings), plain)
    return prepared


def prepare_variant(model: Any, name: str, *, top_logprobs: int, overrides: Mapping[str, Any],
                    bindings: Sequence[Binding]) -> Any:
    """A non-streaming copy with per-call settings (a sample's temperature, a judge's max_tokens) as fields."""
    variant = _prepare(model, top_logprobs, overrides, quiet=True)
    return bind_all(variant, name, bindings)


def bind_all(model: Any, name: str, bindings: Sequence[Binding]) -> Any:
    for method, args, kwargs in bindings:
        model = apply_binding(model, name, method, args, kwargs)
    return model


def _prepare(model: Any, k: int, overrides: Mapping[str, Any], *, quiet: bool) -> Any:
    """A copy with logprobs on (where the model has the fields) and the router's parameters applied.

    Models without a ``logprobs`` field are used as they are: their answers follow ``missing_logprobs``.
    """
    if isinstance(model, BaseChatModel):
        fields = type(model).model_fields
        update: dict[str, Any] = {}
        if "logprobs" in fields:
            update["logprobs"] = True
            if "top_logprobs" in fields and k > 0:
                update["top_logprobs"] = k
        # langchain-openai turns streamed usage off for a custom base_url unless asked for.
        if "stream_usage" in fields and getattr(model, "stream_usage", None) is None:
            update["stream_usage"] = True
        for param, value in overrides.items():
            if value is None or (quiet and param == "streaming"):
                continue
            for field_name in PASSTHROUGH_FIELDS.get(param, ()):
                if field_name in fields:
                    update[field_name] = value
                    break
        if quiet:
            update["disable_streaming"] = True
        return model.model_copy(update=update) if update else model
    if isinstance(model, RunnableBinding) and isinstance(model.bound, BaseChatModel | RunnableBinding):
        return model.model_copy(update={"bound": _prepare(model.bound, k, overrides, quiet=quiet)})
    return model


def apply_binding(model: Any, name: str, method: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """Call ``bind_tools`` / ``with_structured_output`` on one tier, naming the tier if it refuses."""
    fn = getattr(model, method, None)
    if fn is None:
        raise TypeError(f"tier {name!r} ({type(model).__name__}) has no {method}()")
    try:
        return fn(*args, **kwargs)
    except (TypeError, ValueError, NotImplementedError) as exc:
        if method == "with_structured_output" and "method" in kwargs:
            # Models without native json-schema mode (BaseChatModel's default) reject `method`.
            fallback = {k: v for k, v in kwargs.items() if k not in ("method", "strict")}
            try:
                return fn(*args, **fallback)
            except (TypeError, ValueError, NotImplementedError):
                pass
        try:
            named = type(exc)(f"tier {name!r} ({type(model).__name__}).{method}() failed: {exc}")
        except Exception:  # an exception class with another constructor: keep the original
            raise exc from None
        raise named from exc


def takes_request_timeout(model: Any) -> bool:
    """Whether a per-call ``timeout`` keyword reaches the HTTP request of this tier (and nowhere else).

    langchain-openai's chat models (and their subclasses, e.g. DeepSeek, xAI) put call keywords into
    the payload, and the openai client takes ``timeout`` out of it as a per-request limit. Other chat
    models may send unknown keywords to their API, so they keep the timeout they were built with.
    A tier with its own ``timeout`` keeps it too: its owner chose it.
    """
    chat = _chat_model_of(model)
    if chat is None or getattr(chat, "request_timeout", None) is not None:
        return False
    try:
        from langchain_openai.chat_models.base import BaseChatOpenAI
    except ImportError:  # langchain-openai is an extra
        return False
    return isinstance(chat, BaseChatOpenAI)


def _chat_model_of(model: Any) -> BaseChatModel | None:
    """The chat model that receives a runnable's call keywords (through bindings and a sequence's first step)."""
    for _ in range(8):  # bindings nest a few deep at most
        if isinstance(model, BaseChatModel):
            return model
        model = getattr(model, "bound", None) or getattr(model, "first", None)
        if model is None:
            return None
    return None

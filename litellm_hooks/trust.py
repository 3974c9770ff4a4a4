"""Who decides what on a cascade request: the operator's deployment, never a proxy client.

A LiteLLM Router merges the request's kwargs over the deployment's ``litellm_params``, so a body
field named ``cascade`` or ``cascade_options`` would replace the operator's cascade. Trust is
therefore decided by where the request came from, not by key name:

* **Proxy client** (untrusted): the request carries ``proxy_server_request`` (the proxy sets it
  after stripping any client-sent copy), or its deployment belongs to the proxy's Router. The
  cascade, its file path and the operator switches are read from the Router's deployment only; a
  request that carries any of them, or an unknown ``cascade_*`` key, is refused with a 400 naming the
  field, before any tier is called. Request fields the cascade reads are type- and size-checked, and
  ids a client chooses are scoped to its API key (see docs/security.md).
* **Python code** (trusted): ``litellm.completion(model="confidence/x", cascade=...)`` or a Router
  the program built itself. Inline blocks and options are accepted as given.

:func:`check_body` runs in the proxy's pre-call hook (before any call) and again in the handler, so
a proxy without the callback configured is still protected.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import litellm

from langchain_confidence_router.core.human import conversation_key

from . import registry
from .options import CascadeOptions, parse_options

if TYPE_CHECKING:
    from litellm import Router

#: Body fields only the operator may set (on the deployment).
OPERATOR_FIELDS = ("cascade", "cascade_options", "config_path")
#: Any other body field with this prefix is an unknown (probably misspelt) operator field.
RESERVED_PREFIX = "cascade_"
#: OpenAI's own ceiling for ``top_logprobs``.
MAX_TOP_LOGPROBS = 20
#: Longest client-chosen id (user, conversation, session) the cascade keys anything by.
MAX_ID_CHARS = 256
#: Metadata ids the adapter reads.
METADATA_IDS = ("conversation_id", "user_id", "session_id")
#: The key identity the proxy puts in metadata after authenticating the request, most specific first.
KEY_IDENTITY = ("user_api_key_user_id", "user_api_key_hash", "user_api_key_team_id")


class RequestRejected(litellm.BadRequestError):
    """A proxy client's request the cascade refuses before calling anything; ``field`` names the culprit."""

    def __init__(self, field: str, message: str, model: str = "") -> None:
        self.field = field
        super().__init__(message=f"{field}: {message}", model=model, llm_provider="confidence")


@dataclass(frozen=True)
class Settings:
    """What one request runs with, and whether a proxy client sent it."""

    block: Any
    options: CascadeOptions
    untrusted: bool
    conversation: str | None
    user: str | None


def from_proxy_client(litellm_params: Mapping[str, Any], router: Router | None) -> bool:
    """True for a request a proxy client sent (or one the proxy's Router serves)."""
    if isinstance(litellm_params.get("proxy_server_request"), Mapping):
        return True
    proxy = registry.proxy_router()
    return proxy is not None and router is proxy


def settings(model: str, messages: list[Any], optional_params: Mapping[str, Any], litellm_params: Mapping[str, Any],
             router: Router, deployment_id: str | None, defaults: CascadeOptions, details_user: Any = None
             ) -> Settings:
    """The cascade block, options and the conversation/user keys of one request, from trusted sources only."""
    md = litellm_params.get("metadata")
    md = md if isinstance(md, Mapping) else {}
    client_user = optional_params.get("user") or details_user
    if not from_proxy_client(litellm_params, router):
        block = optional_params.get("cascade")
        return Settings(
            block=block if block is not None else registry.named_block(model),
            options=parse_options(optional_params.get("cascade_options"), defaults),
            untrusted=False,
            conversation=_text(md.get("conversation_id") or litellm_params.get("litellm_session_id")
                               or md.get("session_id")),
            user=_text(client_user or md.get("user_id") or md.get("user_api_key_end_user_id")),
        )
    deployment = registry.deployment_of(router, deployment_id)
    if deployment is None:
        raise RequestRejected("model", "a proxy request can only call a cascade deployment of the proxy's "
                              "model_list", model)
    configured = deployment.get("litellm_params") or {}
    overridden = _overridden(optional_params, configured)
    if overridden:
        raise RequestRejected(overridden[0], _refusal(overridden[0]), model)
    body = (litellm_params.get("proxy_server_request") or {}).get("body")
    if isinstance(body, Mapping):
        check_fields(body, model)
    options = parse_options(configured.get("cascade_options"), defaults)
    check_request(messages, {**optional_params, "user": client_user, "metadata": md}, options, model)
    block = configured.get("cascade")
    key = next((str(md[k]) for k in KEY_IDENTITY if md.get(k)), "anonymous")
    user, conversation = key, conversation_key(first_user_text(messages), key)
    if options.trust_client_ids:
        if client_user or md.get("user_id"):
            user = f"{key}:{client_user or md.get('user_id')}"
        client_conversation = md.get("conversation_id") or litellm_params.get("litellm_session_id") or md.get(
            "session_id")
        if client_conversation:
            conversation = f"{key}:{client_conversation}"
    return Settings(block=block if block is not None else registry.named_block(model), options=options,
                    untrusted=True, conversation=conversation, user=user)


# ---------------------------------------------------------------------------- checks


def check_fields(body: Mapping[str, Any], model: str = "") -> None:
    """Refuse operator fields and unknown ``cascade_*`` keys in a client's body (400 naming the field)."""
    for name in body:
        if isinstance(name, str) and (name in OPERATOR_FIELDS or name.startswith(RESERVED_PREFIX)):
            raise RequestRejected(name, _refusal(name), model)


def check_request(messages: Any, body: Mapping[str, Any], options: CascadeOptions, model: str = "") -> None:
    """Types and sizes of the request fields the cascade reads, with the operator's limits (400 naming the field)."""
    if not isinstance(messages, list) or not messages:
        raise RequestRejected("messages", "expected a non-empty list of messages", model)
    chars = 0
    for i, message in enumerate(messages):
        if not isinstance(message, Mapping) or not isinstance(message.get("role"), str):
            raise RequestRejected(f"messages[{i}]", "expected an object with a string 'role'", model)
        chars += _chars(message.get("content"))
    if chars > options.max_input_chars:
        raise RequestRejected("messages", f"{chars} characters of content, over this deployment's limit of "
                              f"{options.max_input_chars} (cascade_options.max_input_chars)", model)
    n = body.get("n")
    if n is not None and (not _is_int(n) or not 1 <= n <= options.max_n):
        raise RequestRejected("n", f"must be an integer from 1 to {options.max_n} on this deployment "
                              f"(cascade_options.max_n), got {n!r}", model)
    top = body.get("top_logprobs")
    if top is not None and (not _is_int(top) or not 0 <= top <= MAX_TOP_LOGPROBS):
        raise RequestRejected("top_logprobs", f"must be an integer from 0 to {MAX_TOP_LOGPROBS}, got {top!r}", model)
    for name in ("logprobs", "stream"):
        if body.get(name) is not None and not isinstance(body[name], bool):
            raise RequestRejected(name, f"must be true or false, got {body[name]!r}", model)
    if body.get("stream_options") is not None and not isinstance(body["stream_options"], Mapping):
        raise RequestRejected("stream_options", "must be an object", model)
    _check_id("user", body.get("user"), model)
    metadata = body.get("metadata")
    if metadata is not None:
        if not isinstance(metadata, Mapping):
            raise RequestRejected("metadata", f"must be an object, got {type(metadata).__name__}", model)
        for name in METADATA_IDS:
            _check_id(f"metadata.{name}", metadata.get(name), model)


def options_for_group(router: Router | None, group: Any) -> CascadeOptions | None:
    """The operator switches of a model group's cascade deployment, or None if the group is no cascade."""
    if router is None or not isinstance(group, str):
        return None
    for index in router.model_name_to_deployment_indices.get(group) or ():
        params = router.model_list[index].get("litellm_params") or {}
        if str(params.get("model", "")).startswith("confidence/"):
            try:
                return parse_options(params.get("cascade_options"))
            except ValueError:
                return None  # the operator's own error: the handler reports it (as a 500 naming the field)
    return None


def first_user_text(messages: list[Any]) -> str:
    """Text of the first user message: it stays the same for every turn of one conversation."""
    for message in messages:
        if isinstance(message, Mapping) and message.get("role") == "user":
            return str(message.get("content") or "")[:10_000]
    return ""


def _overridden(optional_params: Mapping[str, Any], configured: Mapping[str, Any]) -> list[str]:
    """Operator fields whose value in the merged params is not the deployment's own (a client sent them)."""
    names = [k for k in optional_params if isinstance(k, str)
             and (k in OPERATOR_FIELDS or k.startswith(RESERVED_PREFIX))]
    return [k for k in names if k not in configured or optional_params[k] != configured[k]]


def _refusal(name: str) -> str:
    if name in OPERATOR_FIELDS:
        return ("set by the operator on the deployment (litellm_params), never by a request; remove it from the "
                "request body")
    return f"unknown field (the cascade reads no request field starting with {RESERVED_PREFIX!r}); remove it"


def _check_id(name: str, value: Any, model: str) -> None:
    if value is None:
        return
    if not isinstance(value, str | int) or isinstance(value, bool):
        raise RequestRejected(name, f"must be a string, got {type(value).__name__}", model)
    if len(str(value)) > MAX_ID_CHARS:
        raise RequestRejected(name, f"longer than {MAX_ID_CHARS} characters", model)


def _chars(content: Any) -> int:
    if isinstance(content, str):
        return len(content)
    if isinstance(content, list):
        return sum(len(str(part.get("text") or "")) if isinstance(part, Mapping) else len(str(part))
                   for part in content)
    return 0


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _text(value: Any) -> str | None:
    return str(value) if value else None

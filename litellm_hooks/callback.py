"""The proxy callback: refuses requests that try to set the operator's cascade, and adds the headers.

Before any call (``async_pre_call_hook``), a request body that carries ``cascade``,
``cascade_options``, ``config_path`` or an unknown ``cascade_*`` key is refused with a 400 naming the
field, and a request to a cascade model group is type- and size-checked against the deployment's
``cascade_options`` (see :mod:`litellm_hooks.trust`). Nothing is called, so nothing is billed.

After the cascade, it turns the trace into clean ``x-confidence-*`` response headers.

The handler already computed the headers (honouring ``cascade_options``); this hook, which the
proxy calls after every non-streamed response, only copies them out. Streaming responses send their
headers before the cascade has run, so they carry none: their trace is in the logs
(``metadata.spend_logs_metadata``).

Enable it in the proxy's config.yaml::

    litellm_settings:
      callbacks: ["litellm_hooks.callback.confidence_callback"]
"""

from __future__ import annotations

from typing import Any

from litellm.integrations.custom_logger import CustomLogger

from . import registry, trust
from .output import HEADERS_KEY

#: Call types whose body is a chat request the cascade reads (other endpoints only get the field check).
CHAT_CALLS = frozenset({"completion", "acompletion"})


class ConfidenceCallback(CustomLogger):
    """Refuses requests that set operator fields; adds the cascade's ``x-confidence-*`` headers to responses."""

    async def async_pre_call_hook(self, user_api_key_dict: Any, cache: Any, data: dict, call_type: Any
                                  ) -> dict | None:
        if not isinstance(data, dict):
            return None
        model = data.get("model")
        trust.check_fields(data, str(model or ""))
        options = trust.options_for_group(registry.proxy_router(), model) if call_type in CHAT_CALLS else None
        if options is not None:
            trust.check_request(data.get("messages"), data, options, str(model))
        return None

    async def async_post_call_response_headers_hook(
        self,
        data: dict,
        user_api_key_dict: Any,
        response: object,
        request_headers: dict[str, str] | None = None,
        litellm_call_info: dict[str, object] | None = None,
    ) -> dict[str, str] | None:
        hidden = getattr(response, "_hidden_params", None)
        if not isinstance(hidden, dict):
            return None
        headers = hidden.get(HEADERS_KEY)
        return dict(headers) if headers else None


#: The instance the proxy's ``litellm_settings.callbacks`` names.
confidence_callback = ConfidenceCallback()

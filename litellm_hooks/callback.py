"""The proxy callback that turns a cascade's trace into clean ``x-confidence-*`` response headers.

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

from .output import HEADERS_KEY


class ConfidenceCallback(CustomLogger):
    """Adds the cascade's ``x-confidence-*`` headers to proxy responses."""

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

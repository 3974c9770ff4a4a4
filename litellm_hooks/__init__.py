"""LiteLLM adapter: a ``confidence/<name>`` custom provider that runs the shared cascade engine.

Python::

    from litellm_hooks import register
    register()                                   # before building the Router
    router = litellm.Router(model_list=[...])    # tiers + a `confidence/smart` deployment
    register(router)                             # bind it: its model groups are the tiers

Proxy (config.yaml)::

    litellm_settings:
      custom_provider_map:
        - {provider: confidence, custom_handler: litellm_hooks.handler.confidence_handler}
      callbacks: ["litellm_hooks.callback.confidence_callback"]

See docs/litellm.md.
"""

from .callback import ConfidenceCallback, confidence_callback
from .handler import ConfidenceLLM, LowConfidenceError, confidence_handler
from .options import CascadeOptions
from .output import BODY_FIELD, HEADERS_KEY, TRACE_KEY
from .registration import default_retries, register
from .registry import bind_router, clear_caches, unbind_router
from .trust import RequestRejected

__all__ = [
    "BODY_FIELD",
    "HEADERS_KEY",
    "TRACE_KEY",
    "CascadeOptions",
    "ConfidenceCallback",
    "ConfidenceLLM",
    "LowConfidenceError",
    "RequestRejected",
    "bind_router",
    "clear_caches",
    "confidence_callback",
    "confidence_handler",
    "default_retries",
    "register",
    "unbind_router",
]

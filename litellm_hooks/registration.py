"""Python registration of the ``confidence`` provider (the proxy uses its config.yaml instead)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import litellm

from . import registry
from .handler import ConfidenceLLM, confidence_handler
from .options import CascadeOptions, parse_options

if TYPE_CHECKING:
    from litellm import Router

PROVIDER = "confidence"


def register(
    router: Router | None = None,
    cascades: Mapping[str, Any] | None = None,
    *,
    options: CascadeOptions | Mapping[str, Any] | None = None,
    handler: ConfidenceLLM | None = None,
) -> ConfidenceLLM:
    """Install the ``confidence`` provider; call it before building a Router, and again with the Router.

    * Without ``router``: sets ``litellm.custom_provider_map`` and runs
      ``litellm.utils.custom_llm_setup()``, which a Router needs before it accepts ``confidence/...``.
    * With ``router``: also binds it (its model groups are the tiers) and gives its cascade
      deployments ``num_retries: 0`` unless they set their own, so an outer retry never re-runs a
      whole cascade by surprise (tiers retry themselves).
    * ``cascades`` names cascade blocks (a configuration mapping, ``{config_path: ...}`` or a path)
      for ``confidence/<name>`` calls that carry no ``cascade`` block of their own.
    * ``options`` are the default ``cascade_options`` (operator switches) of every cascade.
    """
    handler = handler or confidence_handler
    if options is not None:
        handler.default_options = parse_options(options)
    entries = [e for e in (litellm.custom_provider_map or []) if e.get("provider") != PROVIDER]
    litellm.custom_provider_map = [*entries, {"provider": PROVIDER, "custom_handler": handler}]
    litellm.utils.custom_llm_setup()
    if cascades:
        registry.name_cascades(cascades)
    if router is not None:
        registry.bind_router(router)
        default_retries(router)
    return handler


def default_retries(router: Router) -> int:
    """Set ``num_retries: 0`` on the Router's cascade deployments that do not set it; return how many."""
    changed = 0
    for deployment in router.model_list:
        params = deployment.get("litellm_params")
        if not isinstance(params, dict) or not str(params.get("model", "")).startswith(f"{PROVIDER}/"):
            continue
        if params.get("num_retries") is None:
            params["num_retries"] = 0
            changed += 1
    return changed

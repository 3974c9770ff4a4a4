"""Shared state of the adapter: resolved cascades and the Routers that serve tier calls.

It lives in the installed package (not next to a proxy's config.yaml) so the handler instance the
proxy imports and the one Python code registers see the same caches. A cascade is resolved once per
configuration (keyed by a hash of the deployment's ``cascade`` block, or by file path and mtime), not
once per request. Every cache here is bounded (least recently used entries are evicted), since
trusted Python callers may pass a new inline block on every call.
"""

from __future__ import annotations

import hashlib
import json
import sys
import threading
import weakref
from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from langchain_confidence_router.core import Cascade, ConfigError, load_config, parse_config

if TYPE_CHECKING:
    from litellm import Router

BLOCK_SOURCE = "litellm_params.cascade"

#: Most resolved cascades kept (a deployment's block is one entry; more only for Python inline blocks).
MAX_CASCADES = 256
#: Most (cascade, Router) tier checks and block-identity shortcuts kept.
MAX_CHECKS = 1024


class BoundedCache(OrderedDict):  # type: ignore[type-arg]
    """A dict that keeps its ``limit`` most recently used entries (callers hold ``_lock`` when writing)."""

    def __init__(self, limit: int) -> None:
        super().__init__()
        self.limit = limit

    def get(self, key: Any, default: Any = None) -> Any:
        try:
            self.move_to_end(key)
        except KeyError:
            return default
        return self[key]

    def put(self, key: Any, value: Any) -> None:
        self[key] = value
        self.move_to_end(key)
        while len(self) > self.limit:
            self.popitem(last=False)


_lock = threading.Lock()
_cascades = BoundedCache(MAX_CASCADES)  # key -> Cascade
_by_identity = BoundedCache(MAX_CHECKS)  # id(block) -> (block, key, Cascade)
_checked = BoundedCache(MAX_CHECKS)  # (key, id(router)) -> True
_routers: list[weakref.ref[Router]] = []
_named: dict[str, Any] = {}


# ---------------------------------------------------------------------------- routers


def bind_router(router: Router) -> None:
    """Make ``router`` serve the tier calls of cascades it (or a direct ``litellm`` call) runs."""
    with _lock:
        _routers[:] = [ref for ref in _routers if ref() is not None and ref() is not router]
        _routers.append(weakref.ref(router))


def unbind_router(router: Router) -> None:
    with _lock:
        _routers[:] = [ref for ref in _routers if ref() is not None and ref() is not router]


def bound_routers() -> list[Router]:
    return [r for r in (ref() for ref in _routers) if r is not None]


def proxy_router() -> Router | None:
    """The LiteLLM proxy's Router, looked up at call time (the proxy may rebuild it), if this is a proxy."""
    module = sys.modules.get("litellm.proxy.proxy_server")
    return getattr(module, "llm_router", None) if module is not None else None


def find_router(deployment_id: str | None) -> Router:
    """The Router whose model groups are the cascade's tiers.

    A bound Router that holds the calling deployment wins; then the only bound Router; then the
    proxy's Router. Python users bind theirs with :func:`litellm_hooks.register`.
    """
    routers = bound_routers()
    if deployment_id:
        for router in reversed(routers):
            if deployment_id in router.model_id_to_deployment_index_map:
                return router
    proxy = proxy_router()
    if proxy is not None and (not routers or (deployment_id and deployment_id in
                                              proxy.model_id_to_deployment_index_map)):
        return proxy
    if routers:
        return routers[-1]
    raise ConfigError(
        "no litellm.Router to call the tiers with: call litellm_hooks.register(router=my_router) "
        "after building the Router (in the LiteLLM proxy the proxy's Router is used)",
        source=BLOCK_SOURCE,
    )


def deployment_of(router: Router, deployment_id: str | None) -> Mapping[str, Any] | None:
    """The calling deployment's entry in ``router.model_list``, if the Router knows it."""
    if not deployment_id:
        return None
    index = router.model_id_to_deployment_index_map.get(deployment_id)
    if index is None or index >= len(router.model_list):
        return None
    return router.model_list[index]


# ---------------------------------------------------------------------------- cascades


def name_cascades(cascades: Mapping[str, Any]) -> None:
    """Register cascade blocks by name, for ``confidence/<name>`` calls that carry no ``cascade`` block."""
    with _lock:
        _named.update(cascades)


def named_block(name: str) -> Any:
    return _named.get(name)


def resolve_cascade(block: Any) -> tuple[Cascade, str]:
    """The resolved :class:`Cascade` of a deployment's ``cascade`` block, and its cache key.

    The block is either the configuration itself (a mapping with ``algorithm`` and ``models``), a
    mapping ``{config_path: file.yaml}``, or a path string. Relative paths are tried next to the
    proxy's config file first, then from the working directory.
    """
    with _lock:
        hit = _by_identity.get(id(block))
    if hit is not None and hit[0] is block:
        return hit[2], hit[1]
    if block is None:
        raise ConfigError(
            "the deployment has no cascade block: set litellm_params.cascade to the configuration "
            "(algorithm, models) or to {config_path: file.yaml}", source=BLOCK_SOURCE
        )
    path = _config_path(block)
    if path is not None:
        resolved = _resolve_path(path)
        try:
            mtime = resolved.stat().st_mtime_ns
        except OSError as exc:
            raise ConfigError(f"config_path {path!r}: cannot read the file ({exc.strerror or exc})",
                              source=BLOCK_SOURCE, fields=["config_path"]) from None
        key = f"file:{resolved}:{mtime}"
        with _lock:
            cascade = _cascades.get(key)
        if cascade is None:
            cascade = Cascade.from_config(load_config(resolved))
            with _lock:
                _cascades.put(key, cascade)
        return cascade, key  # files are not identity-cached: an edited file is picked up by its mtime
    if not isinstance(block, Mapping):
        raise ConfigError(f"expected a mapping or a path, got {type(block).__name__}", source=BLOCK_SOURCE)
    canonical = json.dumps(block, sort_keys=True, default=str)
    key = "inline:" + hashlib.sha256(canonical.encode()).hexdigest()[:16]
    with _lock:
        cascade = _cascades.get(key)
    if cascade is None:
        cascade = Cascade.from_config(parse_config(dict(block), source=f"<{BLOCK_SOURCE}>"))
        with _lock:
            _cascades.put(key, cascade)
    with _lock:
        _by_identity.put(id(block), (block, key, cascade))
    return cascade, key


def check_tiers(cascade: Cascade, key: str, router: Router, own_group: str | None) -> None:
    """Fail with a ConfigError naming the field when a tier is not a model group of ``router``."""
    token = (key, id(router))
    with _lock:
        if _checked.get(token):
            return
    known = set(router.model_names) | set(getattr(router, "model_group_alias", None) or {})
    wildcard = any("*" in name for name in known)
    # every listed model, not only the current tiers: a threshold-registry version may pick any of them
    for i, name in enumerate(spec.name for spec in cascade.config.models):
        if own_group is not None and name == own_group:
            raise ConfigError(f"models[{i}].name: {name!r} is the cascade's own model group (it would call "
                              "itself)", source=BLOCK_SOURCE, fields=[f"models.{i}.name"])
        if name not in known and not wildcard:
            raise ConfigError(
                f"models[{i}].name: {name!r} is not a model group of the Router "
                f"(known: {', '.join(sorted(known)) or 'none'})", source=BLOCK_SOURCE, fields=[f"models.{i}.name"],
            )
    with _lock:
        _checked.put(token, True)


def clear_caches() -> None:
    """Forget resolved cascades and checks (tests, or after editing inline blocks at run time)."""
    with _lock:
        _cascades.clear()
        _by_identity.clear()
        _checked.clear()


def _config_path(block: Any) -> str | None:
    if isinstance(block, str | Path):
        return str(block)
    if isinstance(block, Mapping) and "config_path" in block:
        extra = sorted(set(block) - {"config_path"})
        if extra:
            raise ConfigError(f"config_path cannot be combined with other keys ({', '.join(extra)}): put them "
                              "in the file", source=BLOCK_SOURCE, fields=extra)
        return str(block["config_path"])
    return None


def _resolve_path(path: str) -> Path:
    p = Path(path).expanduser()
    if p.is_absolute():
        return p
    module = sys.modules.get("litellm.proxy.proxy_server")
    proxy_config = getattr(module, "user_config_file_path", None) if module is not None else None
    if proxy_config:
        candidate = Path(proxy_config).resolve().parent / p
        if candidate.exists():
            return candidate
    return p.resolve()

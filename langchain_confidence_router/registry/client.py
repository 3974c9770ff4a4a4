"""The replica side: a background thread that follows the promoted version of one name.

Why polling and not PostgreSQL LISTEN/NOTIFY: it works the same on SQLite and PostgreSQL, it needs no
connection held open per replica (nor reconnect logic that would have to poll anyway to catch what it
missed while disconnected), and promotions are rare: one indexed query every ``poll_s`` per replica
costs the database nothing. A promotion reaches every replica within ``poll_s`` (plus the query time).

Requests never wait for the registry: they read the tiers the cascade holds in memory. When a poll
fails, the last version read stays in force and every trace says ``stale: true`` with the error.
With ``registry.cache`` set, the version in force is also kept in a local JSON file, which a replica
starting while the registry cannot be read uses (stale) instead of holding every request.
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import threading
import time
import weakref
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..core.config import RouterConfig
from ..core.errors import ConfidenceRouterError
from ..core.tuning import SourceState, TunedVersion
from .store import RegistryStore, open_registry

if TYPE_CHECKING:
    from ..core.engine import Cascade

__all__ = ["RegistryClient", "client_for", "stop_all"]

logger = logging.getLogger(__name__)

CACHE_FORMAT = "confidence-router/registry-cache"


class RegistryClient:
    """Follows ``name`` in the registry at ``url``; shared by every cascade of this process that names both."""

    def __init__(self, url: str, name: str, poll_s: float, cache: Path | None = None) -> None:
        self.url, self.name, self.poll_s, self.cache = url, name, poll_s, cache
        self._payloads: dict[int, dict[str, Any]] = {}  # raw payloads read, for the cache file
        self._cache_note: str | None = None  # set while the version in force came from the cache file
        self._store: RegistryStore | None = None
        self._pinned_wanted: set[int] = set()
        self._state = SourceState(name, None, {}, True, "not read yet", source=url)
        self._subscribers: list[weakref.ref[Cascade]] = []
        self._lock = threading.Lock()  # the pinned set
        # one poll at a time, and a state reaches cascades in order: a cascade subscribing while a new
        # state is published must not end up with the older one (nothing would publish it again)
        self._refresh_lock = threading.Lock()
        self._publish_lock = threading.RLock()
        self._pinned_failed: dict[int, str] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.polls = 0

    @property
    def state(self) -> SourceState:
        return self._state

    def want_pinned(self, versions: set[int]) -> None:
        with self._lock:
            new = versions - self._pinned_wanted
            self._pinned_wanted |= versions
        if new and self._thread is not None:
            self.refresh()

    def subscribe(self, cascade: Cascade) -> None:
        with self._publish_lock:
            self._subscribers.append(weakref.ref(cascade))
            cascade.use_source_state(self._state)

    def start(self) -> None:
        """Read once now (start-up), then poll every ``poll_s`` in a daemon thread."""
        if self._thread is not None:
            return
        state = self.refresh()
        if state.tuned is None and self.cache is not None:
            cached = self._from_cache(state.error)
            if cached is not None:
                with self._publish_lock:
                    self._state = cached
                    self._publish(cached)
        self._thread = threading.Thread(target=self._run, name=f"cr-registry-{self.name}", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=timeout)
        if self._store is not None:
            self._store.close()

    def _run(self) -> None:
        while not self._stop.wait(self.poll_s):
            self.refresh()

    def refresh(self) -> SourceState:
        """Poll once; publish a new state to the cascades when anything changed."""
        with self._refresh_lock:
            return self._refresh()

    def _refresh(self) -> SourceState:
        old = self._state
        self.polls += 1
        try:
            state = self._read(old)
            self._cache_note = None
        except ConfidenceRouterError as exc:
            error = str(exc) if self._cache_note is None else f"{exc}; {self._cache_note}"
            state = SourceState(self.name, old.tuned, old.pinned, True, error, source=self.url)
        except Exception as exc:  # a bug or driver surprise must not kill the thread: stale, and say why
            logger.exception("threshold registry %s: poll failed", self.name)
            state = SourceState(self.name, old.tuned, old.pinned, True, f"{type(exc).__name__}: {exc}",
                                source=self.url)
        if state != old:
            if state.stale and not old.stale:
                logger.warning("threshold registry %s (%s): %s; keeping v%s", self.name, self.url, state.error,
                               state.tuned.version if state.tuned else None)
            with self._publish_lock:
                self._state = state
                self._publish(state)
        return state

    def _read(self, old: SourceState) -> SourceState:
        if self._store is None:
            self._store = open_registry(self.url, create=False)
        store = self._store
        version = store.promoted_version(self.name)
        if version is None:
            store.history(self.name)  # raises naming the problem when the name is unknown
            raise ConfidenceRouterError(f"no version of {self.name!r} is promoted in {store.url}")
        tuned = old.tuned
        if tuned is None or tuned.version != version:
            tuned = TunedVersion.from_payload(self.name, version, self._payload(store, version))
        pinned = dict(old.pinned)
        with self._lock:
            wanted = sorted(self._pinned_wanted - set(pinned))
        for v in wanted:  # an arm's version that cannot be read must not stop the promoted one
            try:
                pinned[v] = TunedVersion.from_payload(self.name, v, self._payload(store, v))
            except ConfidenceRouterError as exc:
                if self._pinned_failed.get(v) != str(exc):
                    logger.error("threshold registry %s: A/B arm version %s: %s", self.name, v, exc)
                    self._pinned_failed[v] = str(exc)
        if self.cache is not None and (tuned != old.tuned or pinned != old.pinned):
            self._write_cache(tuned.version, sorted(pinned))
        return SourceState(self.name, tuned, pinned, False, None, source=self.url)

    def _payload(self, store: RegistryStore, version: int) -> dict[str, Any]:
        payload = store.get(self.name, version).payload
        self._payloads[version] = payload
        return payload

    # ---------------------------------------------------------------- last-known-good cache file

    def _write_cache(self, version: int, pinned: list[int]) -> None:
        """Keep the version in force (and arms' versions) on local disk, for a start-up without the registry."""
        assert self.cache is not None
        data = {"format": CACHE_FORMAT, "name": self.name, "version": version, "written_at": time.time(),
                "payloads": {str(v): self._payloads[v] for v in [version, *pinned]}}
        tmp = self.cache.with_name(self.cache.name + ".tmp")
        try:
            self.cache.parent.mkdir(parents=True, exist_ok=True)
            tmp.write_text(json.dumps(data), encoding="utf-8")
            os.replace(tmp, self.cache)  # atomic: a crash leaves the old file or the new one
        except OSError as exc:
            logger.error("threshold registry %s: cannot write the cache file %s: %s", self.name, self.cache, exc)

    def _from_cache(self, error: str | None) -> SourceState | None:
        """The cached version, marked stale, when the registry cannot be read at start-up."""
        assert self.cache is not None
        try:
            data = json.loads(self.cache.read_text(encoding="utf-8"))
            if data.get("format") != CACHE_FORMAT or data.get("name") != self.name:
                raise ValueError(f"not a cache file of {self.name!r}")
            payloads = {int(v): p for v, p in data["payloads"].items()}
            version = int(data["version"])
            tuned = TunedVersion.from_payload(self.name, version, payloads[version])
            pinned = {v: TunedVersion.from_payload(self.name, v, p) for v, p in payloads.items() if v != version}
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError, ConfidenceRouterError) as exc:
            logger.error("threshold registry %s: cache file %s is unusable: %s", self.name, self.cache, exc)
            return None
        self._payloads.update(payloads)
        written = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(float(data.get("written_at") or 0)))
        self._cache_note = f"using v{version} from the cache file {self.cache} (written {written})"
        logger.warning("threshold registry %s: %s; %s", self.name, error, self._cache_note)
        return SourceState(self.name, tuned, pinned, True, f"{error}; {self._cache_note}", source=self.url)

    def _publish(self, state: SourceState) -> None:
        self._subscribers = [ref for ref in self._subscribers if ref() is not None]
        cascades = [c for c in (ref() for ref in self._subscribers) if c is not None]
        for cascade in cascades:
            try:
                cascade.use_source_state(state)
            except Exception:
                logger.exception("threshold registry %s: applying v%s failed", self.name,
                                 state.tuned.version if state.tuned else None)


_clients: dict[tuple[str, str], RegistryClient] = {}
_clients_lock = threading.Lock()


def client_for(config: RouterConfig) -> RegistryClient:
    """The process's client for the configuration's registry and name (started on first use)."""
    settings = config.registry
    assert settings is not None
    url = settings.url
    if "://" not in url:  # a relative SQLite path is relative to the configuration file, like calibrations
        url = str(config.resolve_path(url))
    pinned = set()
    ab = config.human.ab_test if config.human is not None else None
    if ab is not None:
        pinned = {v for v in (ab.control.registry_version, ab.treatment.registry_version) if v is not None}
    cache = config.resolve_path(settings.cache) if settings.cache else None
    with _clients_lock:
        client = _clients.get((url, settings.name))
        if client is None:
            client = _clients[(url, settings.name)] = RegistryClient(url, settings.name, settings.poll_s, cache)
        elif client.cache is None and cache is not None:
            client.cache = cache
        client.poll_s = min(client.poll_s, settings.poll_s)
        client.want_pinned(pinned)
        client.start()
    return client


def stop_all(timeout: float = 10.0) -> None:
    """Stop every client's thread and close its connections (tests, and at interpreter exit)."""
    with _clients_lock:
        clients = list(_clients.values())
        _clients.clear()
    for client in clients:
        client.stop(timeout)


# a poll in flight at exit finishes (bounded) instead of being frozen mid-query with the daemon thread
atexit.register(stop_all, 1.0)


def wait_for_version(client: RegistryClient, version: int, timeout: float) -> bool:
    """True once ``client`` follows ``version`` (tests and scripts; never on a request path)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        tuned = client.state.tuned
        if tuned is not None and tuned.version == version:
            return True
        time.sleep(0.01)
    return False

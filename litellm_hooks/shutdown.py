"""Write the queued decisions (review store, audit log) when the LiteLLM proxy shuts down.

``atexit`` is not enough in the proxy: on SIGTERM, uvicorn drains the requests, runs the app's
shutdown, then restores the default signal handler and raises the signal again, so the process ends
without running ``atexit`` handlers, and whatever the background writer still held (up to
``human.recording.batch_wait_s`` of decisions) was lost. The proxy's lifespan calls
``litellm.proxy.proxy_server.proxy_shutdown_event`` (looked up by name at shutdown, after the last
request was answered); :func:`install` wraps it once so the writers are closed first.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from typing import Any

from langchain_confidence_router.human.recording import close_all

__all__ = ["install"]

logger = logging.getLogger(__name__)
_MARK = "_confidence_router_flushes"


def install() -> bool:
    """Make the running proxy's shutdown close every recording writer; ``False`` outside the proxy.

    Only a proxy that is already imported is touched (a plain ``litellm.Router`` never imports the proxy
    server, and there ``atexit`` does the job). Idempotent."""
    server = sys.modules.get("litellm.proxy.proxy_server")
    original = getattr(server, "proxy_shutdown_event", None)
    if server is None or original is None:
        return False
    if getattr(original, _MARK, False):
        return True

    async def proxy_shutdown_event(*args: Any, **kwargs: Any) -> Any:
        try:
            await asyncio.to_thread(close_all)  # each writer bounded by its flush_timeout_s
        except Exception:  # the proxy's own shutdown must still run
            logger.exception("recording: closing the writers at proxy shutdown failed")
        return await original(*args, **kwargs)

    setattr(proxy_shutdown_event, _MARK, True)
    server.proxy_shutdown_event = proxy_shutdown_event
    return True

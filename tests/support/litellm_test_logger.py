"""A LiteLLM CustomLogger for the tests: one record per logged call, in memory and in a JSON-lines file.

The proxy tests reference ``support.litellm_test_logger.recording_logger`` from the proxy's
``litellm_settings.callbacks`` (with tests/ on PYTHONPATH) and read the file named by the
``CONFIDENCE_TEST_LOG`` environment variable; Python tests read ``records`` directly. It stands for
any real logger (Langfuse, LangSmith, spend logs): what it sees, they see.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import litellm
from litellm.integrations.custom_logger import CustomLogger

LOG_ENV = "CONFIDENCE_TEST_LOG"


class RecordingLogger(CustomLogger):
    """Records model, billed cost, caller identity, internal stamp and trace of every logged call."""

    def __init__(self) -> None:
        super().__init__()
        self.records: list[dict[str, Any]] = []
        self._lock = threading.Lock()

    def _record(self, event: str, kwargs: dict[str, Any], response_obj: Any) -> None:
        params = kwargs.get("litellm_params") or {}
        metadata = params.get("metadata") or {}
        slo = kwargs.get("standard_logging_object") or {}
        slo_md = slo.get("metadata") or {}
        record = {
            "event": event,
            "model": kwargs.get("model"),
            "model_group": metadata.get("model_group"),
            "stream": bool(kwargs.get("stream")),
            "user": kwargs.get("user"),
            "prompt": str((kwargs.get("messages") or [{}])[-1].get("content", "")),
            "response_id": getattr(response_obj, "id", None),
            "has_logprobs": bool(getattr((getattr(response_obj, "choices", None) or [None])[0], "logprobs", None)),
            "response_cost": kwargs.get("response_cost"),
            "standard_response_cost": slo.get("response_cost"),
            "user_api_key": metadata.get("user_api_key"),
            "user_api_key_hash": slo_md.get("user_api_key_hash"),
            "internal_call_origin": metadata.get("internal_call_origin"),
            "confidence_router": metadata.get("confidence_router"),
            "tags": metadata.get("tags"),
            "has_budget_reservation": any("budget_reservation" in str(k) for k in metadata),
            "spend_logs_metadata": slo_md.get("spend_logs_metadata") or metadata.get("spend_logs_metadata"),
        }
        with self._lock:
            self.records.append(record)
            path = os.environ.get(LOG_ENV)
            if path:
                with open(path, "a", encoding="utf-8") as f:
                    f.write(json.dumps(record, default=str) + "\n")

    async def async_log_success_event(self, kwargs: Any, response_obj: Any, start_time: Any, end_time: Any) -> None:
        self._record("success", kwargs, response_obj)

    async def async_log_failure_event(self, kwargs: Any, response_obj: Any, start_time: Any, end_time: Any) -> None:
        self._record("failure", kwargs, response_obj)

    def log_success_event(self, kwargs: Any, response_obj: Any, start_time: Any, end_time: Any) -> None:
        self._record("success", kwargs, response_obj)


@contextmanager
def installed_logger() -> Iterator[RecordingLogger]:
    """A fresh RecordingLogger in ``litellm.callbacks``, taken out of every list LiteLLM copied it into.

    LiteLLM promotes ``litellm.callbacks`` into its success/failure/input lists and refuses a second
    logger of the same class while one is there; restoring ``litellm.callbacks`` alone leaves the old
    instance behind, and the next module's logger then records nothing.
    """
    recording = RecordingLogger()
    litellm.callbacks = [*litellm.callbacks, recording]
    try:
        yield recording
    finally:
        manager = litellm.logging_callback_manager
        manager.remove_callback_from_all_lists(recording)  # callbacks, success and failure, sync and async
        for rest in (litellm.input_callback, litellm.service_callback):
            manager.remove_callback_from_list_by_object(rest, recording, require_self=False)


def read_log(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """The records a logger in another process wrote to ``path``: complete lines only (the last one may be
    read while it is still being appended; it counts once its newline is written)."""
    try:
        with open(path, encoding="utf-8") as f:
            return [json.loads(line) for line in f if line.endswith("\n") and line.strip()]
    except FileNotFoundError:
        return []


#: The instance a proxy config names: ``litellm_settings.callbacks: [support.litellm_test_logger.recording_logger]``.
recording_logger = RecordingLogger()

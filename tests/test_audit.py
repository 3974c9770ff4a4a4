"""Audit log: one scrubbed JSON line per decision, no text unless enabled, never a key."""

from __future__ import annotations

import json
import math
import os
import stat
import threading
from datetime import datetime
from pathlib import Path

import pytest

from langchain_confidence_router.core.trace import AttemptTrace, RequestTrace
from langchain_confidence_router.human.audit import REDACTED, AuditLog, audit_record, is_secret_key, scrub

FAKE_KEY = "sk-test-123456"


def make_trace(**kw: object) -> RequestTrace:
    t = RequestTrace(route="human_assisted", trigger="confidence", confidence=0.61, final_model="large",
                     final_tier=1, arm="treatment", config_hash="abc123", outcome="accepted",
                     thresholds={"large": 0.8, "human.automate": 0.85}, calibrations={"large": "large:platt:0a1b2c"},
                     draft="The refund goes out Monday.", **kw)
    t.add_attempt(AttemptTrace(tier=0, model="small", decision="escalate", confidence=0.3, cost_usd=0.001))
    t.add_attempt(AttemptTrace(tier=1, model="large", decision="accept", confidence=0.61, cost_usd=0.01))
    return t


def lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_a_fake_key_in_metadata_never_reaches_the_file(tmp_path: Path) -> None:
    metadata = {
        "api_key": FAKE_KEY,
        "Authorization": f"Bearer {FAKE_KEY}",
        "x-api-key": FAKE_KEY,
        "token": FAKE_KEY,
        "openai_api_key": FAKE_KEY,
        "headers": {"X-Api-Key": FAKE_KEY, "accept": "json"},
        "note": f"user pasted {FAKE_KEY} in chat",
        "list": [FAKE_KEY, {"access_token": "abc"}],
        "max_tokens": 256,
        "tokens_in": 12,
        "token_filter": "answer",
        "tenant": "acme",
    }
    t = make_trace(metadata=metadata, request_id="req-1")
    t.reasons.append(f"large: provider said 'Incorrect API key provided: {FAKE_KEY}'")
    path = tmp_path / "audit.jsonl"
    with AuditLog(path) as log:
        log.write(t)
    raw = path.read_text()
    assert FAKE_KEY not in raw and "123456" not in raw
    [rec] = lines(path)
    md = rec["metadata"]
    for key in ("api_key", "Authorization", "x-api-key", "token", "openai_api_key"):
        assert md[key] == REDACTED
    assert md["headers"] == {"X-Api-Key": REDACTED, "accept": "json"}
    assert md["note"] == f"user pasted {REDACTED} in chat"
    assert md["list"] == [REDACTED, {"access_token": REDACTED}]
    assert (md["max_tokens"], md["tokens_in"], md["token_filter"], md["tenant"]) == (256, 12, "answer", "acme")
    assert REDACTED in rec["reasons"][-1]


def test_the_record_says_who_why_and_on_what_evidence(tmp_path: Path) -> None:
    t = make_trace()
    path = tmp_path / "audit.jsonl"
    with AuditLog(path) as log:
        written = log.write(t)
    [rec] = lines(path)
    assert rec == written
    assert rec["request_id"] == t.request_id
    assert datetime.fromisoformat(rec["time"].replace("Z", "+00:00")).timestamp() == pytest.approx(t.started_at,
                                                                                                   abs=1e-3)
    assert rec["time"].endswith("Z") and "T" in rec["time"]
    assert rec["route"] == "human_assisted" and rec["route_tier"] == 2 and rec["trigger"] == "confidence"
    assert rec["confidence"] == 0.61 and rec["final_model"] == "large" and rec["final_tier"] == 1
    assert rec["thresholds"] == {"large": 0.8, "human.automate": 0.85}
    assert rec["calibrations"] == {"large": "large:platt:0a1b2c"}
    assert rec["arm"] == "treatment" and rec["config_hash"] == "abc123"
    assert [a["model"] for a in rec["attempts"]] == ["small", "large"]
    assert rec["total_cost_usd"] == pytest.approx(0.011)


def test_no_text_unless_enabled(tmp_path: Path) -> None:
    t = make_trace()
    quiet, loud = tmp_path / "quiet.jsonl", tmp_path / "loud.jsonl"
    with AuditLog(quiet) as log:
        log.write(t, prompt="Where is my refund?", answer="ignored")
    assert "refund" not in quiet.read_text().lower()
    [rec] = lines(quiet)
    assert "prompt" not in rec and "answer" not in rec
    with AuditLog(loud, include_text=True) as log:
        log.write(t, prompt=f"Where is my refund? my key is {FAKE_KEY}")
        log.write(make_trace(), answer="explicit answer")
    first, second = lines(loud)
    assert first["prompt"] == f"Where is my refund? my key is {REDACTED}"
    assert first["answer"] == "The refund goes out Monday."  # the trace's draft by default
    assert second["answer"] == "explicit answer"


def test_concurrent_writers_never_interleave(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    log = AuditLog(path)
    big = {"blob": "x" * 20_000}  # longer than any buffer: still one line

    def worker(w: int) -> None:
        for i in range(100):
            log.write(make_trace(request_id=f"w{w}-{i}", metadata=big if i % 10 == 0 else {}))

    threads = [threading.Thread(target=worker, args=(w,)) for w in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    log.close()
    recs = lines(path)
    assert len(recs) == 800 and len({r["request_id"] for r in recs}) == 800


def test_fsync_append_permissions_reopen_and_close(tmp_path: Path) -> None:
    path = tmp_path / "logs" / "audit.jsonl"
    with AuditLog(path, fsync=True) as log:
        log.write(make_trace(request_id="a"))
    with AuditLog(path) as log:  # appends, never truncates
        log.write(make_trace(request_id="b"))
        os.rename(path, tmp_path / "rotated.jsonl")
        log.reopen()
        log.write(make_trace(request_id="c"))
    assert [r["request_id"] for r in lines(tmp_path / "rotated.jsonl")] == ["a", "b"]
    assert [r["request_id"] for r in lines(path)] == ["c"]
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    with pytest.raises(ValueError, match="closed"):
        log.write(make_trace())


def test_scrub_helpers() -> None:
    assert is_secret_key("X-API-Key") and is_secret_key("proxy-authorization") and is_secret_key("aws_secret")
    assert not is_secret_key("max_tokens") and not is_secret_key("token_filter") and not is_secret_key("tokens")
    assert scrub({"confidence": math.nan, "n": 3, "ok": True, "none": None}) == {
        "confidence": None, "n": 3, "ok": True, "none": None}
    assert scrub("see sk-learn docs and sk-proj-AbC123xyz") == f"see sk-learn docs and {REDACTED}"
    assert scrub("ghp_" + "a" * 36) == REDACTED
    assert scrub({"password": ""}) == {"password": ""}  # nothing to hide
    t = make_trace()
    t.confidence = math.nan
    assert audit_record(t)["confidence"] is None

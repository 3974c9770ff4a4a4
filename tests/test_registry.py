"""Threshold registry: the operator workflow through the real CLI, and replicas that follow promotions.

Backends: a SQLite file, and a real PostgreSQL server the tests start (skipped, with the reason, when
the binaries are absent). Only the upstream LLM is fake (``FakeOpenAIServer``: real HTTP, real
OpenAI-shaped logprobs). Its ``small`` model is unconfident on ``[hard]`` prompts (avg_logprob score
about 0.2), so which model answered says which version is in force: version 1 accepts small at a
threshold of 0.1, version 2 asks 0.95 of it and escalates to ``large``.
"""

from __future__ import annotations

import json
import os
import queue
import shutil
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from langchain_core.messages import AIMessage
from langchain_openai import ChatOpenAI
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from support.postgres import PostgresServer, PostgresUnavailable, free_port, postgres_instance

from langchain_confidence_router import Cascade, ConfidenceRouter, ConfigError, load_config, parse_config
from langchain_confidence_router.cli import main as cli_main
from langchain_confidence_router.core import Calibration, RequestTrace
from langchain_confidence_router.metrics.instruments import RouterMetrics
from langchain_confidence_router.metrics.observer import MetricsObserver
from langchain_confidence_router.registry.client import stop_all
from langchain_confidence_router.registry.store import open_registry
from langchain_confidence_router.testing import FakeOpenAIServer, ModelBehaviour

ROOT = Path(__file__).resolve().parents[1]
POLL_S = 0.2
HARD = "What is the airspeed of an unladen swallow? [hard]"
EVIDENCE = {"method": "learn-then-test, fixed-sequence testing", "n": 400, "signal": "avg_logprob",
            "calibration": "platt", "guarantee": "with probability >= 0.95: accuracy >= 0.90",
            "expected": {"accuracy": 0.913, "largest_accuracy": 0.925, "cost_usd": 0.0004, "savings": 0.61}}


# ------------------------------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def pg() -> Iterator[PostgresServer]:
    try:
        with postgres_instance() as server:
            yield server
    except PostgresUnavailable as exc:
        pytest.skip(str(exc))


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return str(tmp_path / "registry.db")
    return request.getfixturevalue("pg").url


@pytest.fixture
def name() -> str:
    return f"support-{uuid.uuid4().hex[:8]}"  # one PostgreSQL database serves every test: own names


@pytest.fixture(autouse=True)
def _stop_pollers() -> Iterator[None]:
    yield
    stop_all()


@pytest.fixture(scope="module")
def server() -> Iterator[FakeOpenAIServer]:
    models = {"small": ModelBehaviour(confident_on_hard=False), "large": ModelBehaviour(confident_on_hard=True)}
    with FakeOpenAIServer(models) as s:
        yield s


def cli(*args: str) -> tuple[int, str, str]:
    """Run ``confidence-router`` in this process; (exit code, stdout, stderr)."""
    import contextlib
    import io

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli_main(list(args))
    return code, out.getvalue(), err.getvalue()


def write_tuned(folder: Path, small: float, *, large: float = 0.0, calibrate: bool = False,
                stem: str = "tuned") -> Path:
    """A tuned configuration shaped like `confidence-router tune` writes it (models, evidence, calibration)."""
    folder.mkdir(parents=True, exist_ok=True)
    small_entry: dict[str, Any] = {"name": "small", "threshold": small, "confidence_method": "avg_logprob"}
    if calibrate:  # identity-ish platt map on avg_logprob: sigmoid(4x + 4)
        Calibration("platt", {"a": 4.0, "b": 4.0}, signal="avg_logprob", model="small").save(
            folder / f"{stem}.small.calibration.json")
        small_entry["calibration"] = f"{stem}.small.calibration.json"
    data = {"algorithm": {"confidence": {"escalation_order": "declared", "confidence_method": "avg_logprob"}},
            "models": [small_entry, {"name": "large", "threshold": large, "confidence_method": "avg_logprob"}],
            "evidence": EVIDENCE}
    path = folder / f"{stem}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def publish(url: str, name: str, folder: Path, *smalls: float) -> None:
    """Push, approve (by another person) and promote one version per threshold, in order."""
    for i, small in enumerate(smalls):
        tuned = write_tuned(folder, small, stem=f"v{i}")
        assert cli("registry", "push", str(tuned), "--name", name, "--url", url, "--by", "ann")[0] == 0
    with open_registry(url) as store:
        versions = [r.version for r in store.history(name)]
    for v in sorted(versions)[-len(smalls):]:
        assert cli("registry", "approve", "--name", name, "--version", str(v), "--url", url, "--by", "bob")[0] == 0
    promote(url, name, max(versions) - len(smalls) + 1)


def promote(url: str, name: str, version: int) -> None:
    code, _, err = cli("registry", "promote", "--name", name, "--version", str(version), "--url", url, "--by", "bob")
    assert code == 0, err


def replica_config(url: str, name: str, **extra: Any) -> dict[str, Any]:
    return {"registry": {"url": url, "name": name, "poll_s": POLL_S},
            "algorithm": {"confidence": {"escalation_order": "declared", "confidence_method": "avg_logprob"}},
            "models": [{"name": "small"}, {"name": "large"}], **extra}


def langchain_router(server: FakeOpenAIServer, config: dict[str, Any]) -> ConfidenceRouter:
    tiers = {n: ChatOpenAI(model=n, base_url=server.base_url, api_key="test", max_retries=0)
             for n in ("small", "large")}
    return ConfidenceRouter(models=tiers, config=config)


def trace_of(message: AIMessage) -> RequestTrace:
    return RequestTrace.model_validate(message.response_metadata["confidence_router"])


def wait_until(check: Callable[[], Any], timeout: float) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.01)


# ------------------------------------------------------------------------------------------ the workflow


def test_push_approve_promote_rollback_history_through_the_cli(url: str, name: str, tmp_path: Path) -> None:
    v1 = write_tuned(tmp_path, 0.1, calibrate=True, stem="first")
    v2 = write_tuned(tmp_path, 0.95, stem="second")
    base = ["--name", name, "--url", url]
    code, out, _ = cli("registry", "push", str(v1), *base, "--by", "ann")
    assert code == 0 and f"pushed {name} v1 by ann (pending approval)" in out
    assert cli("registry", "push", str(v2), *base, "--by", "ann", "--note", "stricter small")[0] == 0

    code, _, err = cli("registry", "promote", *base, "--version", "2", "--by", "bob")
    assert code == 1 and "v2 is not approved" in err and "registry approve" in err
    code, _, err = cli("registry", "approve", *base, "--version", "2", "--by", "ann")
    assert code == 1 and "pushed by ann; another person must approve it" in err
    for v in ("1", "2"):
        assert cli("registry", "approve", *base, "--version", v, "--by", "bob")[0] == 0
    code, _, err = cli("registry", "approve", *base, "--version", "2", "--by", "carol")
    assert code == 1 and "already approved by bob" in err
    assert cli("registry", "promote", *base, "--version", "1", "--by", "bob")[0] == 0
    assert cli("registry", "promote", *base, "--version", "2", "--by", "carol")[0] == 0

    code, out, _ = cli("registry", "history", *base)
    assert code == 0
    lines = out.splitlines()
    v2_line = next(line for line in lines if line.strip().startswith("v2"))
    v1_line = next(line for line in lines if line.strip().startswith("v1"))
    assert "promoted" in v2_line and "by ann" in v2_line and "approved" in v2_line and "by bob" in v2_line
    assert "previous" in v1_line
    assert "accuracy 0.913" in out and "savings 0.61" in out and "n 400" in out and "note: stricter small" in out
    assert "small >= 0.95" in out and "small >= 0.1" in out

    rows = [json.loads(line) for line in cli("registry", "history", *base, "--json")[1].splitlines()]
    assert [(r["version"], r["status"], r["approved_by"]) for r in rows] == [(2, "promoted", "bob"),
                                                                              (1, "previous", "bob")]
    assert rows[0]["figures"]["accuracy"] == 0.913 and rows[0]["promoted_at"] >= rows[0]["approved_at"]

    code, out, _ = cli("registry", "rollback", *base, "--by", "bob")
    assert code == 0 and "from v2 to v1" in out
    rows = [json.loads(line) for line in cli("registry", "history", *base, "--json")[1].splitlines()]
    assert [(r["version"], r["status"]) for r in rows] == [(2, "rolled_back"), (1, "promoted")]
    code, _, err = cli("registry", "rollback", *base)
    assert code == 1 and "nothing to roll back to" in err

    with open_registry(url) as store:  # calibration contents, not a path, so replicas never need the file
        payload = store.get(name, 1).payload
        assert payload["models"]["small"]["calibration"]["format"] == "confidence-router/calibration"
        assert payload["order"] == ["small", "large"] and store.get(name, 2).evidence == EVIDENCE

    code, _, err = cli("registry", "history", "--name", "nosuch", "--url", url)
    assert code == 1 and "no versions named 'nosuch'" in err and name in err
    code, _, err = cli("registry", "promote", *base, "--version", "9")
    assert code == 1 and f"{name} has no version 9" in err


def test_unreachable_or_missing_registry_is_a_clear_error(tmp_path: Path) -> None:
    code, _, err = cli("registry", "history", "--name", "x", "--url", str(tmp_path / "typo.db"))
    assert code == 1 and "typo.db: no such database file" in err and not (tmp_path / "typo.db").exists()
    port = free_port()
    code, _, err = cli("registry", "approve", "--name", "x", "--version", "1", "--by", "bob",
                       "--url", f"postgresql://ops:hunter2@127.0.0.1:{port}/reg")
    assert code == 1 and f"127.0.0.1:{port}" in err and "refused" in err.lower() and "hunter2" not in err
    code, _, err = cli("registry", "history", "--name", "x", "--url", "nosuchdb://ops:hunter2@db/reg")
    assert code == 1 and "cannot open registry nosuchdb://ops:***@db/reg" in err and "hunter2" not in err
    code, _, err = cli("registry", "history", "--name", "x")
    assert code == 1 and "--url" in err and "CONFIDENCE_ROUTER_REGISTRY" in err


def test_the_installed_command_pushes_what_tune_wrote(tmp_path: Path) -> None:
    """The real entry point in a subprocess, on a file the real `tune` wrote (its calibration file deleted
    afterwards: a replica needs only the registry)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "CONFIDENCE_ROUTER_REGISTRY": str(tmp_path / "reg.db")}

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "langchain_confidence_router.cli", *args], cwd=ROOT, env=env,
                              capture_output=True, text=True, timeout=120)

    tuned = tmp_path / "tuned.yaml"
    done = run("tune", "--runs", str(ROOT / "examples/runs/local_quiz.jsonl"), "--out", str(tuned),
               "--max-accuracy-drop", "0.05")
    assert done.returncode == 0, done.stderr
    assert run("registry", "push", str(tuned), "--name", "quiz", "--by", "ann").returncode == 0
    assert run("registry", "approve", "--name", "quiz", "--version", "1", "--by", "bob").returncode == 0
    assert run("registry", "promote", "--name", "quiz", "--version", "1").returncode == 0
    history = run("registry", "history", "--name", "quiz")
    assert history.returncode == 0 and "promoted" in history.stdout and "guarantee" in history.stdout
    tuned_cfg = load_config(tuned)
    for f in tmp_path.glob("*.calibration.json"):
        f.unlink()
    replica = {"registry": {"url": str(tmp_path / "reg.db"), "name": "quiz"},
               "models": [{"name": "smollm2-135m", "size": "135m"}, {"name": "gemma3-270m", "size": "270m"}]}
    policy = Cascade.from_config(replica).policy()
    assert [t.name for t in policy.tiers] == [s.name for s in tuned_cfg.models]  # tune's chain, in its order
    assert [t.threshold for t in policy.tiers] == [s.threshold for s in tuned_cfg.models]
    assert all(t.calibration is not None for t in policy.tiers)
    assert policy.trace.registry == {"name": "quiz", "version": 1, "stale": False, "error": None}


# ------------------------------------------------------------------------------------------ replicas

REPLICA_SCRIPT = """
import json, sys, time
from langchain_confidence_router import Cascade, load_config
cascade = Cascade.from_config(load_config(sys.argv[1]))
last = None
print(json.dumps({"ready": True}), flush=True)
while True:
    policy = cascade.policy()
    version = policy.trace.registry["version"]
    if version != last:
        last = version
        print(json.dumps({"version": version, "t": time.time(),
                          "small": next(t.threshold for t in policy.tiers if t.name == "small")}), flush=True)
    time.sleep(0.005)
"""


def test_two_replicas_follow_a_promotion_within_poll_s(url: str, name: str, tmp_path: Path,
                                                       server: FakeOpenAIServer) -> None:
    publish(url, name, tmp_path, 0.1, 0.95)  # v1 and v2 pushed and approved; v1 promoted
    config_file = tmp_path / "replica.yaml"
    config_file.write_text(yaml.safe_dump(replica_config(url, name)))

    child = subprocess.Popen([sys.executable, "-c", REPLICA_SCRIPT, str(config_file)], cwd=ROOT,
                             env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    lines: queue.Queue[dict[str, Any]] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(json.loads(x)) for x in child.stdout or []], daemon=True).start()
    try:
        assert lines.get(timeout=60) == {"ready": True}, child.stderr
        first = lines.get(timeout=10)
        assert first["version"] == 1 and first["small"] == 0.1

        router = langchain_router(server, replica_config(url, name))
        before = trace_of(router.invoke(HARD))
        assert before.registry == {"name": name, "version": 1, "stale": False, "error": None}
        assert before.final_model == "small" and before.thresholds["small"] == 0.1

        promote(url, name, 2)
        promoted_at = time.time()
        seen = lines.get(timeout=POLL_S + 5)
        assert seen["version"] == 2 and seen["small"] == 0.95
        child_delay = seen["t"] - promoted_at
        in_process = wait_until(lambda: router.cascade.registry_status["version"] == 2, POLL_S + 5)
        own_delay = time.time() - promoted_at
        assert in_process
        after = trace_of(router.invoke(HARD))
        assert after.registry["version"] == 2 and after.final_model == "large" and after.thresholds["small"] == 0.95
        assert after.config_hash != before.config_hash
        # within poll_s plus the query and scheduling time, in both processes
        assert child_delay < POLL_S + 1.0 and own_delay < POLL_S + 1.0
        print(f"pickup delay: other process {child_delay * 1000:.0f} ms, this process <= {own_delay * 1000:.0f} ms "
              f"(poll_s {POLL_S * 1000:.0f} ms, {'postgresql' if '://' in url else 'sqlite'})")
    finally:
        child.kill()
        child.wait(10)


def test_the_litellm_provider_follows_a_promotion(tmp_path: Path, name: str, server: FakeOpenAIServer) -> None:
    import litellm

    import litellm_hooks
    from litellm_hooks import TRACE_KEY, register

    url = str(tmp_path / "registry.db")
    publish(url, name, tmp_path, 0.1, 0.95)
    register()
    deployments = [{"model_name": n, "litellm_params": {"model": f"openai/{n}", "api_base": server.base_url,
                                                         "api_key": "test", "num_retries": 0}}
                   for n in ("small", "large")]
    deployments.append({"model_name": "support", "litellm_params": {"model": "confidence/support",
                                                                     "cascade": replica_config(url, name)}})
    unknown = replica_config(url, name)
    unknown["models"].append({"name": "nosuch"})  # not in the version's chain, but a later version may use it
    deployments.append({"model_name": "typo", "litellm_params": {"model": "confidence/typo", "cascade": unknown}})
    router = litellm.Router(model_list=deployments)
    register(router)
    try:
        def ask() -> dict[str, Any]:
            response = router.completion(model="support", messages=[{"role": "user", "content": HARD}])
            return response._hidden_params[TRACE_KEY]

        first = ask()
        assert first["registry"]["version"] == 1 and first["final_model"] == "small"
        promote(url, name, 2)
        assert wait_until(lambda: ask()["registry"]["version"] == 2, POLL_S + 5)
        second = ask()
        assert second["final_model"] == "large" and second["thresholds"]["small"] == 0.95
        with pytest.raises(Exception, match=r"models\[2\]\.name: 'nosuch' is not a model group"):
            router.completion(model="typo", messages=[{"role": "user", "content": HARD}])
    finally:
        litellm_hooks.unbind_router(router)


@pytest.fixture(params=["sqlite", "postgresql"])
def failing_registry(request: pytest.FixtureRequest, tmp_path: Path
                     ) -> Iterator[tuple[str, Callable[[], None], Callable[[], None]]]:
    """(url, take it down, bring it back). SQLite: the file goes away; PostgreSQL: a server of its own stops."""
    if request.param == "sqlite":
        url, moved = str(tmp_path / "registry.db"), tmp_path / "elsewhere.db"
        yield url, lambda: shutil.move(url, moved), lambda: shutil.move(moved, url)
        return
    try:
        with postgres_instance() as pg:
            yield pg.url, pg.stop, pg.start
    except PostgresUnavailable as exc:
        pytest.skip(str(exc))


def test_registry_down_keeps_the_last_known_good_version_and_traces_say_stale(
        failing_registry: tuple[str, Callable[[], None], Callable[[], None]], name: str, tmp_path: Path,
        server: FakeOpenAIServer) -> None:
    url, down, up = failing_registry
    publish(url, name, tmp_path, 0.95)
    router = langchain_router(server, replica_config(url, name))
    assert trace_of(router.invoke(HARD)).registry["stale"] is False
    down()
    assert wait_until(lambda: router.cascade.registry_status["stale"], POLL_S + 10)
    trace = trace_of(router.invoke(HARD))
    assert trace.registry["stale"] is True and trace.registry["version"] == 1 and trace.registry["error"]
    assert trace.final_model == "large" and trace.thresholds["small"] == 0.95  # v1's 0.95 still in force
    up()
    assert wait_until(lambda: not router.cascade.registry_status["stale"], POLL_S + 10)
    assert trace_of(router.invoke(HARD)).registry == {"name": name, "version": 1, "stale": False, "error": None}


def test_unreachable_at_start_routes_to_humans_with_a_human_section_and_fails_without(
        tmp_path: Path, name: str, server: FakeOpenAIServer) -> None:
    url = str(tmp_path / "not-yet.db")
    with pytest.raises(ConfigError) as err:
        langchain_router(server, replica_config(url, name))
    assert "registry" in str(err.value) and "not-yet.db" in str(err.value) and "no such database file" in str(err.value)

    human = {"human": {"thresholds": {"automate": 0.0, "assist": 0.0}}}  # would automate everything
    router = langchain_router(server, replica_config(url, name, **human))
    metrics = CollectorRegistry()
    router.cascade.add_observer(MetricsObserver(RouterMetrics(metrics), name="support"))

    def gauges() -> dict[str, float]:
        return {s.name: s.value for family in text_string_to_metric_families(generate_latest(metrics).decode())
                for s in family.samples if s.name.startswith("confidence_router_registry")}

    for text in ("What is 2+2?", HARD):
        trace = trace_of(router.invoke(text))
        assert trace.route == "human_assisted" and trace.trigger == "registry_unavailable"
        assert trace.registry["stale"] is True and trace.registry["version"] is None
        assert "no such database file" in trace.registry["error"]
    assert gauges() == {"confidence_router_registry_version": 0.0, "confidence_router_registry_stale": 1.0}
    publish(url, name, tmp_path, 0.1)  # the registry comes up: the replica leaves the hold by itself
    assert wait_until(lambda: router.cascade.registry_status["version"] == 1, POLL_S + 5)
    trace = trace_of(router.invoke(HARD))
    assert trace.route == "automated" and trace.final_model == "small" and trace.registry["stale"] is False
    assert gauges() == {"confidence_router_registry_version": 1.0, "confidence_router_registry_stale": 0.0}


def test_an_idle_replicas_gauges_follow_the_poller(tmp_path: Path, name: str, server: FakeOpenAIServer) -> None:
    """No request at all: a promotion and a registry outage still show on the replica's gauges."""
    url, moved = str(tmp_path / "registry.db"), tmp_path / "elsewhere.db"
    publish(url, name, tmp_path, 0.1, 0.95)  # v1 promoted, v2 approved
    router = langchain_router(server, replica_config(url, name))
    metrics = CollectorRegistry()
    router.cascade.add_observer(MetricsObserver(RouterMetrics(metrics), name="idle"))

    def gauges() -> dict[tuple[str, str], float]:
        return {(s.name, s.labels["router"]): s.value
                for family in text_string_to_metric_families(generate_latest(metrics).decode())
                for s in family.samples if s.name.startswith("confidence_router_registry")}

    assert gauges() == {("confidence_router_registry_version", "idle"): 1.0,
                        ("confidence_router_registry_stale", "idle"): 0.0}
    promote(url, name, 2)
    assert wait_until(lambda: gauges()[("confidence_router_registry_version", "idle")] == 2.0, POLL_S + 5)
    shutil.move(url, moved)
    assert wait_until(lambda: gauges()[("confidence_router_registry_stale", "idle")] == 1.0, POLL_S + 5)
    assert gauges()[("confidence_router_registry_version", "idle")] == 2.0  # the last known good one
    shutil.move(moved, url)
    assert wait_until(lambda: gauges()[("confidence_router_registry_stale", "idle")] == 0.0, POLL_S + 5)


def test_a_version_this_configuration_cannot_use_keeps_the_last_good_one(tmp_path: Path, name: str) -> None:
    url = str(tmp_path / "registry.db")
    publish(url, name, tmp_path, 0.1)
    cascade = Cascade.from_config(replica_config(url, name))
    other = tmp_path / "other.yaml"
    other.write_text(yaml.safe_dump({"models": [{"name": "small", "threshold": 0.3}, {"name": "giant",
                                                                                      "threshold": 0.0}]}))
    assert cli("registry", "push", str(other), "--name", name, "--url", url, "--by", "ann")[0] == 0
    assert cli("registry", "approve", "--name", name, "--version", "2", "--url", url, "--by", "bob")[0] == 0
    promote(url, name, 2)
    assert wait_until(lambda: cascade.registry_status["stale"], POLL_S + 5)
    status = cascade.policy().trace.registry
    assert status["version"] == 1 and "giant" in status["error"] and "cannot call" in status["error"]
    assert [t.threshold for t in cascade.policy().tiers] == [0.1, 0.0]


def test_an_ab_arm_can_run_a_registry_version(tmp_path: Path, name: str, server: FakeOpenAIServer) -> None:
    url = str(tmp_path / "registry.db")
    publish(url, name, tmp_path, 0.1, 0.95)  # v1 and v2 pushed; v1 promoted
    promote(url, name, 2)
    human = {"human": {"thresholds": {"automate": 0.0, "assist": 0.0},
                       "ab_test": {"key": "user", "treatment_share": 0.5, "salt": "reg",
                                   "treatment": {"registry_version": 1}}}}
    router = langchain_router(server, replica_config(url, name, **human))
    arms: dict[str, set[tuple[int, str | None]]] = {"control": set(), "treatment": set()}
    for i in range(12):
        trace = trace_of(router.invoke(HARD, config={"metadata": {"user_id": f"user-{i}"}}))
        assert trace.arm is not None
        arms[trace.arm].add((trace.registry["version"], trace.final_model))
    assert arms["treatment"] == {(1, "small")}  # the pinned version's 0.1 accepts small
    assert arms["control"] == {(2, "large")}  # the promoted version's 0.95 escalates

    # an arm naming a version that does not exist does not stop the promoted one; its requests say so
    human["human"]["ab_test"]["treatment"] = {"registry_version": 99}
    cascade = Cascade.from_config(replica_config(url, name, **human))
    assert cascade.registry_status == {"name": name, "version": 2, "stale": False, "error": None}
    policies = [cascade.policy(user=f"user-{i}") for i in range(12)]
    treated = [p for p in policies if p.trace.arm == "treatment"]
    assert treated and all(p.trace.registry["version"] == 2 for p in policies)
    assert all("version 99 is not loaded" in p.trace.registry["arm_error"] for p in treated)
    assert [t.threshold for t in treated[0].tiers] == [0.95, 0.0]


def test_configuration_checks() -> None:
    reg = {"url": "r.db", "name": "x"}
    with pytest.raises(ConfigError, match=r"models\[0\]\.threshold: comes from the registry"):
        parse_config({"registry": reg, "models": [{"name": "a", "threshold": 0.5}]})
    with pytest.raises(ConfigError, match=r"models\[0\]\.calibration: comes from the registry"):
        parse_config({"registry": reg, "models": [{"name": "a", "calibration": "a.json"}]})
    with pytest.raises(ConfigError, match="registry_version needs a registry: section"):
        parse_config({"models": [{"name": "a"}], "human": {"ab_test": {"treatment": {"registry_version": 2}}}})
    with pytest.raises(ConfigError, match="registry_version or model_thresholds, not both"):
        parse_config({"registry": reg, "human": {"ab_test": {"treatment": {
            "registry_version": 2, "model_thresholds": {"a": 0.5}}}}})
    with pytest.raises(ConfigError, match="poll_s"):
        parse_config({"registry": {**reg, "poll_s": 0}})
    assert parse_config({"registry": reg}).registry.poll_s == 5.0


def test_the_example_runs_as_a_script() -> None:
    done = subprocess.run([sys.executable, str(ROOT / "examples/registry/follow_registry.py")], cwd=ROOT,
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "before: v1 answered by small" in out
    assert "after promote: v2 answered by large" in out
    assert "after rollback: v1 answered by small" in out
    assert "v2   rolled_back" in out and "v1   promoted" in out and "savings 0.55" in out


def test_validate_shows_the_version_in_force_and_tune_accepts_a_registry_base(tmp_path: Path, name: str) -> None:
    url = str(tmp_path / "registry.db")
    publish(url, name, tmp_path, 0.1)
    replica = tmp_path / "replica.yaml"
    replica.write_text(yaml.safe_dump(replica_config(url, name)))
    code, out, err = cli("validate", str(replica))
    assert code == 0, err
    assert f"thresholds from the registry: name {name}" in out and "version 1 in force" in out
    assert "0. small: avg_logprob >= 0.1" in out and "1. large: avg_logprob >= 0" in out

    # the production file (with registry:) as tune's base: the tuned file drops the section and can be pushed
    base = tmp_path / "base.yaml"
    base.write_text(yaml.safe_dump({"registry": {"url": url, "name": name},
                                    "models": [{"name": "smollm2-135m", "size": "135m"},
                                               {"name": "gemma3-270m", "size": "270m"}]}))
    tuned = tmp_path / "retuned.yaml"
    code, _, err = cli("tune", "--runs", str(ROOT / "examples/runs/local_quiz.jsonl"), "--config", str(base),
                       "--out", str(tuned), "--max-accuracy-drop", "0.05")
    assert code == 0, err
    assert load_config(tuned).registry is None
    assert cli("registry", "push", str(tuned), "--name", name, "--url", url, "--by", "ann")[0] == 0


def test_concurrent_pushes_get_distinct_version_numbers(url: str, name: str) -> None:
    """Several operators (separate connections, as separate processes would have) pushing at once."""
    from concurrent.futures import ThreadPoolExecutor

    stores = [open_registry(url) for _ in range(6)]
    try:
        with ThreadPoolExecutor(6) as pool:
            versions = list(pool.map(lambda s: s.push(name, {"models": {"small": {}}}, by="ann"), stores * 3))
        assert sorted(versions) == list(range(1, 19))
        assert [r.version for r in stores[0].history(name)] == list(range(18, 0, -1))
    finally:
        for s in stores:
            s.close()


def test_a_cache_file_lets_a_replica_start_while_the_registry_is_down(tmp_path: Path, name: str,
                                                                      server: FakeOpenAIServer) -> None:
    url = str(tmp_path / "registry.db")
    publish(url, name, tmp_path, 0.1, 0.95)
    config = replica_config(url, name)
    config["registry"]["cache"] = str(tmp_path / "cache" / "registry-cache.json")
    first = langchain_router(server, config)
    assert trace_of(first.invoke(HARD)).registry["version"] == 1
    promote(url, name, 2)
    assert wait_until(lambda: first.cascade.registry_status["version"] == 2, POLL_S + 5)
    cached = json.loads((tmp_path / "cache" / "registry-cache.json").read_text())
    assert cached["version"] == 2 and cached["payloads"]["2"]["models"]["small"]["threshold"] == 0.95
    stop_all()

    shutil.move(url, tmp_path / "gone.db")  # the database is down when the next replica starts
    second = langchain_router(server, config)  # no human: section, and still it starts
    time.sleep(POLL_S * 2)  # polls that fail again keep saying where the version came from
    trace = trace_of(second.invoke(HARD))
    assert trace.registry["version"] == 2 and trace.registry["stale"] is True
    assert "using v2 from the cache file" in trace.registry["error"]
    assert "no such database file" in trace.registry["error"]
    assert trace.final_model == "large" and trace.thresholds["small"] == 0.95 and trace.route == "automated"

    (tmp_path / "cache" / "registry-cache.json").write_text("{not json")
    stop_all()
    with pytest.raises(ConfigError, match="no such database file"):  # an unusable cache is no cache
        langchain_router(server, config)

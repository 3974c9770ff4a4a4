"""Live Prometheus metrics: real requests through the adapters against the local fake OpenAI server,
the exposition read back with prometheus_client's own parser, and every series the shipped alert
rules and dashboard query checked against it."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from langchain_openai import ChatOpenAI
from prometheus_client import REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from support.proxy import free_port, wait_for

from langchain_confidence_router import ConfidenceRouter, RequestTrace, parse_config
from langchain_confidence_router.cli import main as cli_main
from langchain_confidence_router.core import ConfigError
from langchain_confidence_router.human.monitor import Monitor
from langchain_confidence_router.human.recording import flush_all
from langchain_confidence_router.human.store import open_store
from langchain_confidence_router.metrics import metrics_observer
from langchain_confidence_router.metrics.instruments import RouterMetrics
from langchain_confidence_router.metrics.monitor_export import MonitorGauges
from langchain_confidence_router.metrics.observer import MAX_ROUTER_NAMES, MetricsObserver
from langchain_confidence_router.testing import FakeOpenAIServer, ModelBehaviour

REPO = Path(__file__).resolve().parents[1]
MONITORING = REPO / "examples" / "monitoring"
PRICES = {"small": (1e-7, 4e-7), "large": (2.5e-6, 1e-5)}

LONG = " ".join(f"word{i}" for i in range(60))  # "doomed" writes it slowly, every token unlikely
AFTER = 4

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def parse(text: str) -> Samples:
    """Every sample of an exposition, keyed by (sample name, sorted labels), via prometheus_client's parser."""
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def scrape(port: int) -> Samples:
    return parse(httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text)




@pytest.fixture(scope="module")
def server() -> Iterator[FakeOpenAIServer]:
    models = {"small": ModelBehaviour(confident_on_hard=False),
              "large": ModelBehaviour(confident_on_hard=True),
              "unsure": ModelBehaviour(confident_on_hard=False, low_logprob=-1.0),
              "doomed": ModelBehaviour(answer=LONG, token_logprobs=[-3.0], token_delay_s=0.005)}
    with FakeOpenAIServer(models) as s:
        yield s


def config(name: str, *, tiers: tuple[str, str] = ("small", "large"), **extra: Any) -> dict[str, Any]:
    return {"algorithm": {"confidence": {"escalation_order": "declared", "confidence_method": "avg_logprob",
                                         "threshold": 0.8}},
            "models": [{"name": n, "input_cost_per_token": PRICES.get(n, PRICES["large"])[0],
                        "output_cost_per_token": PRICES.get(n, PRICES["large"])[1]} for n in tiers],
            "metrics": {"name": name, **extra.pop("metrics", {})}, **extra}


def router(server: FakeOpenAIServer, cfg: dict[str, Any], traces: list[RequestTrace] | None = None
           ) -> ConfidenceRouter:
    names = [m["name"] for m in cfg["models"]]
    tiers = {n: ChatOpenAI(model=n, base_url=server.base_url, api_key="test", max_retries=0) for n in names}
    r = ConfidenceRouter(models=tiers, config=cfg)
    if traces is not None:  # the real traces, to compute what the series must say
        r.cascade.add_observer(lambda trace, *_: traces.append(trace))
    return r


def router_with_own_registry(server: FakeOpenAIServer, cfg: dict[str, Any], name: str
                             ) -> tuple[ConfidenceRouter, CollectorRegistry, list[RequestTrace]]:
    """Explicit API (no metrics: section): the router's metrics go to a registry of its own; its traces."""
    del cfg["metrics"]
    registry = CollectorRegistry()
    traces: list[RequestTrace] = []
    r = router(server, cfg, traces)
    r.cascade.add_observer(metrics_observer(r.config, name=name, metrics=RouterMetrics(registry)))
    return r, registry, traces


def abort_config(name: str, **extra: Any) -> dict[str, Any]:
    """"doomed" first, cut by early abort at token AFTER, then "large"."""
    cfg = config(name, tiers=("doomed", "large"), **extra)
    cfg["models"][0]["early_abort"] = {"after_tokens": AFTER, "below": 0.5}
    return cfg


def expected_always_largest(trace: RequestTrace) -> float:
    """The documented estimate, computed plainly: first prompt tokens and the answer's tokens at large's price."""
    answers = [a for a in trace.attempts if a.purpose == "answer"]
    final = next(a for a in reversed(answers) if a.model == trace.final_model)
    return answers[0].tokens_in * PRICES["large"][0] + final.tokens_out * PRICES["large"][1]


# ---------------------------------------------------------------------------- the LangChain adapter


def test_langchain_requests_are_exported_on_the_configured_port(server: FakeOpenAIServer) -> None:
    port = free_port()
    traces: list[RequestTrace] = []
    r = router(server, config("lc-export", metrics={"port": port, "addr": "127.0.0.1"}), traces)
    r.invoke("What is 2+2?")
    r.invoke("[hard] What is the airspeed of a swallow?")
    asyncio.run(r.ainvoke("What is 3+3?"))
    assert "".join(str(c.content) for c in r.stream("Name a colour.")).startswith("small says")
    assert len(traces) == 4

    got = scrape(port)
    lc = {"router": "lc-export"}
    automated = {**lc, "route": "automated", "outcome": "accepted"}
    assert value(got, "confidence_router_requests_total", **automated, model="small") == 3
    assert value(got, "confidence_router_requests_total", **automated, model="large") == 1
    assert value(got, "confidence_router_escalations_total", **lc, model="small") == 1
    assert value(got, "confidence_router_escalations_total", **lc, model="large") == 0
    for model in ("small", "large"):
        scored = [a.confidence for t in traces for a in t.attempts if a.model == model and a.confidence is not None]
        assert value(got, "confidence_router_confidence_count", **lc, model=model) == len(scored)
        assert value(got, "confidence_router_confidence_sum", **lc, model=model) == pytest.approx(sum(scored))
        spent = sum(a.cost_usd or 0.0 for t in traces for a in t.attempts if a.model == model)
        assert spent > 0
        assert value(got, "confidence_router_cost_usd_total", **lc, model=model) == pytest.approx(spent)
    # the confidence histogram has its 0.05-wide buckets: every small answer here is above 0.5 or below it
    assert value(got, "confidence_router_confidence_bucket", **lc, model="small", le="1.0") == 4
    assert value(got, "confidence_router_always_largest_cost_usd_total", **lc) == pytest.approx(
        sum(expected_always_largest(t) for t in traces))
    assert value(got, "confidence_router_compared_cost_usd_total", **lc) == pytest.approx(
        sum(t.total_cost_usd for t in traces))
    # three of four answered by the cheap tier: cheaper than always-largest
    assert value(got, "confidence_router_compared_cost_usd_total", **lc) < value(
        got, "confidence_router_always_largest_cost_usd_total", **lc)
    assert value(got, "confidence_router_decision_seconds_count", **lc) == 4


def test_decision_time_leaves_out_the_upstream_calls() -> None:
    """Explicit API (no metrics: section), own registry: 300 ms upstream calls are not router time."""
    slow = {"small": ModelBehaviour(confident_on_hard=False, latency_s=0.3), "large": ModelBehaviour(latency_s=0.3)}
    with FakeOpenAIServer(slow) as s:
        r, registry, traces = router_with_own_registry(s, config("lc-latency"), "lc-latency")
        r.invoke("easy")
        r.invoke("[hard] escalates")
    got = parse(generate_latest(registry).decode())
    total_s = sum(t.total_latency_ms or 0.0 for t in traces) / 1000
    upstream_s = sum(a.latency_ms or 0.0 for t in traces for a in t.attempts) / 1000
    assert upstream_s >= 0.9 and total_s >= upstream_s  # three calls of 300 ms
    decided = value(got, "confidence_router_decision_seconds_sum", router="lc-latency")
    assert value(got, "confidence_router_decision_seconds_count", router="lc-latency") == 2
    assert decided == pytest.approx(total_s - upstream_s, abs=1e-9)
    assert decided < 0.3  # had the upstream time counted, this would be above 0.9 s


def test_early_aborts_and_the_tokens_paid_for_them_are_counted(server: FakeOpenAIServer) -> None:
    r, registry, traces = router_with_own_registry(server, abort_config("lc-abort"), "lc-abort")
    r.invoke("Explain.")
    r.invoke("Explain again.")
    got = parse(generate_latest(registry).decode())
    lc = {"router": "lc-abort"}
    cut = [a for t in traces for a in t.attempts if a.aborted_at_token is not None]
    assert [(a.model, a.tokens_out) for a in cut] == [("doomed", AFTER)] * 2
    assert value(got, "confidence_router_early_aborts_total", **lc, model="doomed") == 2
    assert value(got, "confidence_router_early_aborts_total", **lc, model="large") == 0
    assert value(got, "confidence_router_aborted_tokens_total", **lc, model="doomed") == 2 * AFTER
    assert value(got, "confidence_router_escalations_total", **lc, model="doomed") == 2
    # the cut attempts are priced (prompt counted, tokens received) and their spend is exported
    assert all(a.cost_usd and a.tokens_in_estimated for a in cut)
    assert value(got, "confidence_router_cost_usd_total", **lc, model="doomed") == pytest.approx(
        sum(a.cost_usd for a in cut))
    # decision time leaves the cut attempts' streaming time out, as any tier call's
    total_s = sum(t.total_latency_ms or 0.0 for t in traces) / 1000
    upstream_s = sum(a.latency_ms or 0.0 for t in traces for a in t.attempts) / 1000
    cut_s = sum(a.latency_ms for a in cut) / 1000
    assert cut_s >= 2 * AFTER * 0.005  # each cut stream took at least its 4 slow tokens
    assert value(got, "confidence_router_decision_seconds_sum", **lc) == pytest.approx(total_s - upstream_s,
                                                                                        abs=1e-9)


def test_human_queue_depth_is_read_from_the_store_in_the_background(
    server: FakeOpenAIServer, tmp_path: Path
) -> None:
    db = tmp_path / "reviews.db"
    cfg = config("lc-human", tiers=("small", "unsure"),
                 metrics={"queue_depth_interval_s": 0.05, "human_daily_capacity": 7},
                 human={"thresholds": {"automate": 0.8, "assist": 0.5}, "store": str(db), "spot_check_rate": 0})
    traces: list[RequestTrace] = []
    r = router(server, cfg, traces)
    for i in range(3):
        r.invoke(f"[hard] question {i}")
    r.invoke("an easy one")
    assert [t.route for t in traces] == ["human_assisted"] * 3 + ["automated"]
    assert flush_all(10)

    def depth(route: str) -> float:
        return value(parse(generate_latest(REGISTRY).decode()), "confidence_router_human_queue_depth", route=route)

    assert wait_for(lambda: depth("human_assisted") == 3), depth("human_assisted")
    assert depth("human_primary") == 0  # exported at 0, so the queue alert always has a series
    store = open_store(db)
    store.label(traces[0].request_id, True, decision="approved")
    assert wait_for(lambda: depth("human_assisted") == 2), depth("human_assisted")
    store.close()
    got = parse(generate_latest(REGISTRY).decode())
    assert value(got, "confidence_router_human_daily_capacity") == 7
    assert value(got, "confidence_router_requests_total", router="lc-human", route="human_assisted",
                 outcome="fallback", model="unsure") == 3


def test_metrics_configuration_errors_are_clear(server: FakeOpenAIServer) -> None:
    with pytest.raises(ConfigError, match=r"metrics\.port"):
        parse_config(config("x", metrics={"port": 0}))
    with pytest.raises(ConfigError, match="metrics"):
        parse_config(config("x", metrics={"prot": 9464}))
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(ConfigError, match=rf"metrics\.port: cannot serve metrics on 127\.0\.0\.1:{port}"):
            router(server, config("busy", metrics={"port": port, "addr": "127.0.0.1"}))
    # switching metrics on changes what is exported, never the decision's configuration hash
    without = config("x")
    del without["metrics"]
    assert parse_config(config("x")).config_hash() == parse_config(without).config_hash()


def test_the_router_label_is_bounded() -> None:
    observer = MetricsObserver(RouterMetrics(CollectorRegistry()))
    for i in range(MAX_ROUTER_NAMES + 5):
        observer(RequestTrace(outcome="accepted", metadata={"model_group": f"group-{i}"}), "", None)
    got = parse(generate_latest(observer.metrics.registry).decode())
    routers = {dict(labels)["router"] for (name, labels) in got if name == "confidence_router_requests_total"}
    assert len(routers) == MAX_ROUTER_NAMES + 1 and "other" in routers
    assert value(got, "confidence_router_requests_total", router="other", route="automated", outcome="accepted",
                 model="none") == 5


# ---------------------------------------------------------------------------- the LiteLLM proxy


def litellm_config(upstream: str) -> dict[str, Any]:
    tier = {"api_base": upstream, "api_key": "test", "num_retries": 0}
    return {
        "model_list": [
            {"model_name": "gpt-4o-mini", "litellm_params": {"model": "openai/gpt-4o-mini", **tier}},
            {"model_name": "gpt-4o", "litellm_params": {"model": "openai/gpt-4o", **tier}},
            {"model_name": "smart", "litellm_params": {
                "model": "confidence/smart", "num_retries": 0, "input_cost_per_token": 0, "output_cost_per_token": 0,
                "cascade": {"algorithm": {"confidence": {"confidence_method": "avg_logprob", "threshold": 0.8,
                                                         "escalation_order": "declared"}},
                            "models": [{"name": "gpt-4o-mini"}, {"name": "gpt-4o"}],
                            "metrics": {}}}},  # router label: the model group
        ],
        "litellm_settings": {
            "custom_provider_map": [{"provider": "confidence",
                                     "custom_handler": "litellm_hooks.handler.confidence_handler"}],
            "callbacks": ["litellm_hooks.callback.confidence_callback", "prometheus"],
        },
        "general_settings": {"master_key": "sk-test-metrics"},
    }


@pytest.fixture
def openai_named_server() -> Iterator[FakeOpenAIServer]:
    """Tiers named like models in LiteLLM's cost map, so the largest tier's price comes from there."""
    models = {"gpt-4o-mini": ModelBehaviour(confident_on_hard=False), "gpt-4o": ModelBehaviour(confident_on_hard=True)}
    with FakeOpenAIServer(models) as s:
        yield s


@pytest.mark.proxy
def test_the_litellm_proxy_serves_the_series_on_its_own_metrics_endpoint(
    openai_named_server: FakeOpenAIServer, tmp_path: Path
) -> None:
    import litellm
    import openai

    (tmp_path / "config.yaml").write_text(yaml.safe_dump(litellm_config(openai_named_server.base_url)),
                                          encoding="utf-8")
    port = free_port()
    log = (tmp_path / "proxy.log").open("wb")
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "PROMETHEUS_MULTIPROC_DIR")}
    env |= {"LITELLM_LOCAL_MODEL_COST_MAP": "True", "PYTHONPATH": str(REPO)}
    proxy = subprocess.Popen([str(Path(sys.executable).with_name("litellm")), "--config", str(tmp_path / "config.yaml"),
                              "--host", "127.0.0.1", "--port", str(port)], cwd=tmp_path, env=env, stdout=log,
                             stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        def ready() -> bool:
            assert proxy.poll() is None, (tmp_path / "proxy.log").read_text(errors="replace")[-3000:]
            try:
                return httpx.get(f"{base}/health/liveliness", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        assert wait_for(ready, 90), (tmp_path / "proxy.log").read_text(errors="replace")[-3000:]
        client = openai.OpenAI(base_url=f"{base}/v1", api_key="sk-test-metrics", max_retries=0, timeout=30)
        costs = []
        for text in ("easy one", "[hard] escalate me"):
            raw = client.chat.completions.with_raw_response.create(
                model="smart", messages=[{"role": "user", "content": text}])
            costs.append(float(raw.headers["x-confidence-cost"]))
        stream = client.chat.completions.create(model="smart", stream=True,
                                                messages=[{"role": "user", "content": "stream it"}])
        assert "gpt-4o-mini says" in "".join(c.choices[0].delta.content or "" for c in stream if c.choices)

        def smart_requests() -> Samples | None:
            # /metrics takes the proxy's key (Prometheus: `authorization: {credentials: ...}` in the scrape job)
            got = parse(httpx.get(f"{base}/metrics", headers={"Authorization": "Bearer sk-test-metrics"},
                                  follow_redirects=True, timeout=5).text)
            done = sum(v for (n, lb), v in got.items()
                       if n == "confidence_router_requests_total" and ("router", "smart") in lb)
            return got if done == 3 else None

        got = wait_for(smart_requests, 10)
        assert got, "the proxy's /metrics never showed the three requests"
        assert httpx.get(f"{base}/metrics/", timeout=5).status_code == 401  # not without the key
    finally:
        if proxy.poll() is None:
            os.killpg(proxy.pid, 15)
            proxy.wait(15)
        log.close()
    smart = {"router": "smart"}
    assert value(got, "confidence_router_requests_total", **smart, route="automated", outcome="accepted",
                 model="gpt-4o-mini") == 2
    assert value(got, "confidence_router_requests_total", **smart, route="automated", outcome="accepted",
                 model="gpt-4o") == 1
    assert value(got, "confidence_router_escalations_total", **smart, model="gpt-4o-mini") == 1
    assert value(got, "confidence_router_confidence_count", **smart, model="gpt-4o-mini") == 3
    assert value(got, "confidence_router_decision_seconds_count", **smart) == 3
    # spend matches what the proxy billed (the two non-streamed responses' cost headers, plus the stream)
    spent = sum(v for (n, lb), v in got.items()
                if n == "confidence_router_cost_usd_total" and ("router", "smart") in lb)
    assert spent >= sum(costs) > 0
    # the largest tier is priced from LiteLLM's cost map (the configuration names no price)
    price = litellm.model_cost["gpt-4o"]
    assert price["input_cost_per_token"] > 0
    assert value(got, "confidence_router_always_largest_cost_usd_total", **smart) > value(
        got, "confidence_router_compared_cost_usd_total", **smart) > 0
    # LiteLLM's own series are on the same endpoint: one scrape for both
    assert any(name.startswith("litellm_") for name, _ in got)


# ---------------------------------------------------------------------------- the scheduled monitor


def monitor_store(path: Path) -> Path:
    """A store with 40 labelled automated answers (0.9 claimed, 30 right) and 40 more recent decisions."""
    from langchain_confidence_router.core.trace import AttemptTrace

    store = open_store(path)
    for i in range(80):
        conf = 0.9 if i < 40 else 0.6
        t = RequestTrace(route="automated", confidence=conf, final_model="small", started_at=1_700_000_000.0 + i,
                         outcome="accepted")
        t.add_attempt(AttemptTrace(tier=0, model="small", decision="accept", confidence=conf, cost_usd=0.001))
        store.record(t)
        if i < 40:
            store.label(t.request_id, i % 4 != 0)
    store.close()
    return path


def test_monitor_every_serves_ece_and_psi_as_gauges(tmp_path: Path) -> None:
    db = monitor_store(tmp_path / "m.db")
    expected = Monitor(open_store(db), window=40).report()
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "langchain_confidence_router.cli", "monitor", "--store", str(db),
                             "--window", "40", "--every", "200ms", "--metrics-port", str(port),
                             "--metrics-addr", "127.0.0.1"], cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        def runs() -> Samples | None:
            try:
                got = scrape(port)
            except httpx.HTTPError:
                return None
            return got if value(got, "confidence_router_monitor_last_run_timestamp_seconds") > 0 else None

        got = wait_for(runs, 30)
        assert got, proc.stderr.read() if proc.poll() is not None else "no run exported within 30 s"
        first = value(got, "confidence_router_monitor_last_run_timestamp_seconds")
        assert wait_for(lambda: value(scrape(port), "confidence_router_monitor_last_run_timestamp_seconds") > first)
    finally:
        proc.terminate()
        out, _ = proc.communicate(10)
    assert expected.ece is not None and expected.psi is not None
    assert value(got, "confidence_router_monitor_ece", binning="equal_width", bins="10") == pytest.approx(expected.ece)
    assert value(got, "confidence_router_monitor_ece_samples") == 40
    assert value(got, "confidence_router_monitor_psi") == pytest.approx(expected.psi)
    assert value(got, "confidence_router_monitor_warnings", kind="psi", level="alert") == 1
    assert "ECE 0.150 (equal-width, 10 bins, n=40)" in out.splitlines()[0]


def test_monitor_pushes_one_run_to_a_pushgateway(tmp_path: Path) -> None:
    db = monitor_store(tmp_path / "m.db")
    received: list[tuple[str, str, str]] = []

    class Gateway(BaseHTTPRequestHandler):  # the Pushgateway protocol: PUT the exposition to /metrics/job/<job>
        def do_PUT(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"])).decode()
            received.append((self.command, self.path, body))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    gateway = HTTPServer(("127.0.0.1", 0), Gateway)
    threading.Thread(target=gateway.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{gateway.server_address[1]}"
        assert cli_main(["monitor", "--store", str(db), "--window", "40", "--json", "--pushgateway", url,
                         "--job", "router-monitor"]) == 0
    finally:
        gateway.shutdown()
    [(method, path, body)] = received
    assert (method, path) == ("PUT", "/metrics/job/router-monitor")
    got = parse(body)
    assert value(got, "confidence_router_monitor_ece", binning="equal_width", bins="10") == pytest.approx(0.15)
    assert value(got, "confidence_router_monitor_route_share", route="automated") == 1.0
    with pytest.raises(SystemExit):  # --every takes a duration
        cli_main(["monitor", "--store", str(db), "--every"])
    assert cli_main(["monitor", "--store", str(db), "--every", "soon"]) == 1
    assert cli_main(["monitor", "--store", str(db), "--metrics-port", "9"]) == 1  # needs --every


# ---------------------------------------------------------------------------- rules and dashboard


def rule_exprs() -> tuple[dict[str, str], list[str]]:
    """(recording rule name -> expression, alert expressions) of examples/monitoring/alerts.yml."""
    groups = yaml.safe_load((MONITORING / "alerts.yml").read_text())["groups"]
    rules = [r for g in groups for r in g["rules"]]
    return {r["record"]: r["expr"] for r in rules if "record" in r}, [r["expr"] for r in rules if "alert" in r]


def dashboard_exprs() -> list[str]:
    board = json.loads((MONITORING / "grafana-dashboard.json").read_text())
    exprs = [t["expr"] for p in board["panels"] for t in p["targets"]]
    exprs += [v["definition"] for v in board["templating"]["list"] if "definition" in v]
    return exprs


_SELECTOR = re.compile(r"\b(confidence_router[a-zA-Z0-9_:]*)\s*(\{[^}]*\})?")
_MATCHER = re.compile(r"(\w+)\s*(?:=~|!~|!=|=)")
_LABEL_FN = re.compile(r"label_values\((confidence_router_\w+),\s*(\w+)\)")


def used_series(exprs: list[str], recorded: dict[str, str]) -> dict[str, set[str]]:
    """Metric names the expressions read (through recording rules) -> label names they match on."""
    used: dict[str, set[str]] = {}
    todo = list(exprs)
    while todo:
        expr = todo.pop()
        for name, matchers in _SELECTOR.findall(expr):
            if ":" in name:
                assert name in recorded, f"{name} is used but no recording rule defines it"
                todo.append(recorded[name])
                continue
            used.setdefault(name, set()).update(_MATCHER.findall(matchers or ""))
        for name, label in _LABEL_FN.findall(expr):
            used.setdefault(name, set()).add(label)
    return used


def test_every_series_in_the_alert_rules_and_the_dashboard_is_exported(
    server: FakeOpenAIServer, tmp_path: Path
) -> None:
    # the router side: real requests, including one handed to a person, with the queue read from the store
    cfg = config("lc-rules", tiers=("small", "unsure"), metrics={"queue_depth_interval_s": 0.05,
                                                                  "human_daily_capacity": 50},
                 human={"thresholds": {"automate": 0.8, "assist": 0.5}, "store": str(tmp_path / "r.db")})
    r = router(server, cfg)
    r.invoke("[hard] needs a person")
    r.invoke("easy")
    router(server, abort_config("lc-rules-abort")).invoke("Explain.")  # the early-abort series
    assert flush_all(10)
    assert wait_for(lambda: value(parse(generate_latest(REGISTRY).decode()),
                                  "confidence_router_human_queue_depth", route="human_assisted") >= 1)
    exported = parse(generate_latest(REGISTRY).decode())
    # the monitor side: its gauges after one run
    registry = CollectorRegistry()
    MonitorGauges(registry).update(Monitor(open_store(monitor_store(tmp_path / "m.db")), window=40).report())
    exported |= parse(generate_latest(registry).decode())

    labels: dict[str, set[str]] = {}
    for name, lbs in exported:
        labels.setdefault(name, set()).update(k for k, _ in lbs)
    recorded, alerts = rule_exprs()
    for what, exprs in (("alert rules", alerts + list(recorded.values())), ("dashboard", dashboard_exprs())):
        used = used_series(exprs, recorded)
        assert len(used) >= 8, used
        for name, matched in used.items():
            assert name in labels, f"{what} read {name}, which is not exported"
            extra = matched - labels[name] - {"le"}
            assert not extra, f"{what} match {name} on label(s) {extra} it does not have"


def test_every_slo_has_an_alert() -> None:
    _, alerts = rule_exprs()
    text = "\n".join(alerts)
    for needle in ("confidence_router_monitor_ece{binning=\"equal_width\"}) > 0.08",
                   "confidence_router:automation_rate:ratio_rate1h", "confidence_router_human_queue_depth",
                   "confidence_router:decision_seconds:p99_5m > 0.020", "confidence_router_monitor_psi) > 0.2"):
        assert needle in text, needle


@pytest.mark.skipif(shutil.which("promtool") is None,
                    reason="promtool is not installed (apt-get install prometheus, or a Prometheus release)")
def test_promtool_checks_the_rules_and_their_unit_tests() -> None:
    for command in (["promtool", "check", "rules", "alerts.yml"], ["promtool", "test", "rules", "alerts_test.yml"]):
        done = subprocess.run(command, cwd=MONITORING, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stdout + done.stderr


def test_the_langchain_metrics_example_runs_as_a_script() -> None:
    port = free_port()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, str(MONITORING / "langchain_metrics.py"), "", str(port)], cwd=REPO,
                          env=env, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    lines = dict(line.rsplit(" ", 1) for line in done.stdout.splitlines())
    key = "confidence_router_requests_total{{model={},outcome=accepted,route=automated,router=example}}"
    assert lines[key.format("small")] == "1" and lines[key.format("large")] == "1"
    assert lines["confidence_router_escalations_total{model=small,router=example}"] == "1"
    saved = (float(lines["confidence_router_always_largest_cost_usd_total{router=example}"])
             - float(lines["confidence_router_compared_cost_usd_total{router=example}"]))
    assert saved > 0

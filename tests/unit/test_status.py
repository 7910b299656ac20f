"""`edgeloop status`: health from two scrapes of each service's own /metrics."""
from __future__ import annotations

import json
import threading
import time

import pytest
from click.testing import CliRunner
from prometheus_client import CollectorRegistry, generate_latest, start_http_server

from llm_agents.metrics import build_llm_metrics
from streams.broker import free_port
from streams.metrics import EdgeMetrics
from streams.status import Thresholds, assess, parse_exposition, status


def snap(reg: CollectorRegistry):
    return parse_exposition(generate_latest(reg).decode())


def detector(version: str = "m1") -> EdgeMetrics:
    m = EdgeMetrics(CollectorRegistry())
    m.set_model(version)
    return m


def test_rates_come_from_the_difference_between_two_scrapes():
    m = detector("abc123")
    m.flows_in.inc(1_000)
    m.windows_scored.labels(closed_by="k").inc(100)
    first = snap(m.registry)
    m.flows_in.inc(400)
    m.windows_scored.labels(closed_by="k").inc(50)
    m.uncertain.labels(reason="low_confidence").inc(4)
    m.uncertain.labels(reason="audit").inc(20)  # confident windows sampled for audit: not uncertainty
    m.uncertain_rate_limited.inc(1)
    m.consumer_lag.labels(partition="0").set(7)
    m.consumer_lag.labels(partition="1").set(3)
    h = assess("edge:9400", first, snap(m.registry), seconds=2.0)
    assert h.service == "detector" and h.up and h.healthy
    assert h.flows_per_s == pytest.approx(200)
    assert h.uncertain_ratio == pytest.approx(5 / 50)
    assert h.lag == 10
    assert h.model_version == "abc123"
    assert h.deadletters == 0 and h.deadletters_per_s is None
    assert h.llm_failures is None


@pytest.mark.parametrize("change, limits, expected", [
    (lambda m: m.consumer_lag.labels(partition="0").set(20_000), Thresholds(), "lag 20,000 > 10,000 messages"),
    (lambda m: m.uncertain.labels(reason="ood").inc(40), Thresholds(), "uncertain 80% > 50%"),
    (lambda m: m.deadletters.labels(reason="bad_json", topic="f").inc(10), Thresholds(), "dead letters 5.0/s > 1/s"),
    (lambda m: m.deadletters.labels(reason="bad_json", topic="f").inc(1), Thresholds(max_deadletters_per_s=0),
     "dead letters 0.5/s > 0/s"),
    (lambda m: m.model_swaps_refused.labels(reason="verification").inc(), Thresholds(), "1 model release(s) refused"),
])
def test_each_threshold_makes_a_detector_unhealthy(change, limits, expected):
    m = detector()
    first = snap(m.registry)
    m.windows_scored.labels(closed_by="k").inc(50)
    change(m)
    h = assess("edge:9400", first, snap(m.registry), seconds=2.0, limits=limits)
    assert not h.healthy
    assert h.problems == [expected]


def test_llm_failure_share_is_taken_over_the_interval():
    reg = CollectorRegistry()
    llm = build_llm_metrics(reg)
    llm.requests.labels(purpose="label", outcome="error").inc(100)  # old failures, before the interval
    llm.requests.labels(purpose="label", outcome="ok").inc(10)
    first = snap(reg)
    llm.requests.labels(purpose="label", outcome="ok").inc(6)
    llm.requests.labels(purpose="label", outcome="error").inc(4)
    llm.failures.labels(purpose="label", kind="timeout").inc(4)
    h = assess("agent:9400", first, snap(reg), seconds=1.0)
    assert h.service == "agent"
    assert h.llm_failure_ratio == pytest.approx(0.4)
    assert h.llm_failures == 4
    assert h.problems == ["LLM failures 40% > 25%"]


def test_a_restart_between_scrapes_gives_no_rate_rather_than_a_negative_one():
    before = detector()
    before.flows_in.inc(5_000)
    after = detector()
    after.flows_in.inc(10)
    h = assess("edge:9400", snap(before.registry), snap(after.registry), seconds=2.0)
    assert h.flows_per_s is None and h.healthy


@pytest.fixture
def serve():
    servers = []

    def start(reg: CollectorRegistry) -> str:
        port = free_port()
        server, thread = start_http_server(port, addr="127.0.0.1", registry=reg)
        servers.append((server, thread))
        return f"127.0.0.1:{port}"

    yield start
    for server, thread in servers:
        server.shutdown()
        thread.join(5)


def test_cli_reports_live_services_and_fails_when_one_is_down(serve):
    edge = detector("v7")
    agent_reg = CollectorRegistry()
    build_llm_metrics(agent_reg).requests.labels(purpose="label", outcome="ok").inc()
    edge_t, agent_t, dead_t = serve(edge.registry), serve(agent_reg), f"127.0.0.1:{free_port()}"
    stop = threading.Event()

    def traffic() -> None:  # flows keep arriving while status watches
        while not stop.is_set():
            edge.flows_in.inc(100)
            time.sleep(0.02)

    t = threading.Thread(target=traffic)
    t.start()
    try:
        r = CliRunner().invoke(status, ["--target", edge_t, "--target", agent_t, "--target", dead_t,
                                        "--interval", "0.5", "--timeout", "1", "--json"])
    finally:
        stop.set()
        t.join()
    assert r.exit_code == 1, r.output
    rows = {d["target"]: d for d in map(json.loads, r.output.splitlines())}
    assert rows[edge_t]["service"] == "detector" and rows[edge_t]["healthy"]
    assert rows[edge_t]["flows_per_s"] > 0 and rows[edge_t]["model_version"] == "v7"
    assert rows[agent_t]["service"] == "agent" and rows[agent_t]["healthy"]
    assert not rows[dead_t]["up"] and rows[dead_t]["problems"][0].startswith("down: ")


def test_cli_table_and_exit_zero_when_all_healthy_default_target_from_settings(serve):
    edge = detector("v8")
    target = serve(edge.registry)
    port = target.rsplit(":", 1)[1]
    r = CliRunner().invoke(status, ["--interval", "0.2"], env={"EDGELOOP_METRICS_PORT": port})
    assert r.exit_code == 0, r.output
    assert "edgeloop status" in r.output and "detector" in r.output and "v8" in r.output


def test_cli_names_a_bad_setting():
    r = CliRunner().invoke(status, [], env={"EDGELOOP_METRICS_PORT": "seventy"})
    assert r.exit_code != 0
    assert "EDGELOOP_METRICS_PORT" in r.output


def test_sensors_and_enforcers_are_recognised_and_their_failures_are_problems():
    from streams.metrics import EnforcerMetrics, SensorMetrics

    sensor, enforcer = SensorMetrics(CollectorRegistry()), EnforcerMetrics(CollectorRegistry())
    sensor.flows_sent.inc(1_000)
    enforcer.policies_enforced.set(2)
    s1, e1 = snap(sensor.registry), snap(enforcer.registry)
    sensor.flows_sent.inc(600)
    h = assess("node-a:9380", s1, snap(sensor.registry), seconds=2.0)
    assert (h.service, h.flows_per_s, h.healthy) == ("sensor", pytest.approx(300), True)
    sensor.flows_lost.inc(500)
    assert assess("node-a:9380", s1, snap(sensor.registry), 2.0).problems == [
        "500 flows lost (Kafka refused their messages)"]

    h = assess("node-a:9390", e1, snap(enforcer.registry), seconds=2.0)
    assert (h.service, h.policies, h.healthy) == ("enforcer", "2 enforced, 0 refused", True)
    enforcer.policies_refused.labels(reason="guard").inc()
    enforcer.reconciles.labels(outcome="error").inc(3)
    h = assess("node-a:9390", e1, snap(enforcer.registry), seconds=2.0)
    assert h.policies == "2 enforced, 1 refused"
    assert h.problems == ["nftables apply failing (previous table in force)", "1 approved policies refused"]


def test_the_agent_shows_proposals_awaiting_approval(tmp_path):
    from llm_agents.agent_metrics import PolicyStoreCollector, build_agent_metrics
    from llm_agents.policies.store import PolicyStore

    reg = CollectorRegistry()
    build_agent_metrics(reg)
    store = PolicyStore(tmp_path / "policies")
    reg.register(PolicyStoreCollector(store))
    h = assess("agent:9391", snap(reg), snap(reg), seconds=2.0)
    assert (h.service, h.policies, h.healthy) == ("agent", "0 awaiting approval", True)

    from llm_agents.experiments.twin_scenarios import library_proposal, synthetic_scenario

    created = store.clock() - 30 * 60_000  # proposed half an hour ago
    store.add(library_proposal(synthetic_scenario("syn_scan", seed=3, n_benign=300), created_ms=created))
    h = assess("agent:9391", snap(reg), snap(reg), seconds=2.0)
    assert h.policies == "1 awaiting approval (oldest 30 min)" and h.healthy


def test_an_agent_whose_sandbox_cannot_start_is_unhealthy_and_says_why():
    from llm_agents.agent_metrics import build_agent_metrics

    reg = CollectorRegistry()
    m = build_agent_metrics(reg)
    m.sandbox_available.labels(mode="userns").set(1)
    assert assess("agent:9391", snap(reg), snap(reg), seconds=2.0).healthy
    m.sandbox_available.labels(mode="userns").set(0)
    h = assess("agent:9391", snap(reg), snap(reg), seconds=2.0)
    assert not h.healthy
    assert h.problems == ["not proposing policies: the blueprint sandbox cannot start here (agent only labels)"]

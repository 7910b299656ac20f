"""A real Prometheus (Debian's package) on loopback scrapes running edgeloop services:
edge workers, the agent, a sensor (`edgeloop replay --metrics-port`) and an enforcer.

Checks that the metrics arrive and move as flows are replayed and policies decided, that
every query in the Grafana dashboard is valid PromQL on real data, and that every metric
the dashboard and the alert rules name exists in the exposition of the live process that
owns it.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any, Callable

import pytest

from inference.datasets.synthetic import synthetic_flows
from streams.broker import free_port
from streams.producer import FlowPublisher
from streams.sources.replay import replay_frame

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
DASHBOARD = REPO / "deploy/grafana/dashboards/edgeloop.json"
RULES = REPO / "deploy/prometheus/rules/edgeloop.rules.yml"
METRIC = re.compile(r"\bedgeloop_[a-z0-9_]+")
# Panels that must show data once a sensor has sent flows and a person has decided policies.
SENSOR_AND_POLICY_PANELS = (
    "Policies waiting for approval", "Policies enforced", "Sensor flows acknowledged per second",
    "Sensor bytes per second", "Seconds since the last acknowledged message", "Flows per sensor message",
    "Policies by state", "Policy decisions over the range by action", "Policies in force: enforcers and detectors",
    "Policy refusals and rollbacks")


class Prometheus:
    """A prometheus server process on 127.0.0.1 with a temporary config and TSDB."""

    def __init__(self, binary: str, tmp: Path, jobs: dict[str, list[str]]) -> None:
        self.port = free_port()
        cfg = tmp / "prometheus.yml"
        scrape = "\n".join(
            f"  - job_name: {job}\n    static_configs:\n      - targets: {json.dumps(targets)}"
            for job, targets in jobs.items())
        cfg.write_text(f"global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\nscrape_configs:\n{scrape}\n")
        self.log = tmp / "prometheus.log"
        self.proc = subprocess.Popen(
            [binary, f"--config.file={cfg}", f"--storage.tsdb.path={tmp / 'tsdb'}",
             f"--web.listen-address=127.0.0.1:{self.port}", "--log.level=warn"],
            stdout=open(self.log, "wb"), stderr=subprocess.STDOUT, start_new_session=True)
        self.wait(lambda: self._ready(), "ready", timeout=30)

    def _ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/-/ready", timeout=1) as r:
                return r.status == 200
        except OSError:
            return False

    def query(self, promql: str) -> dict[str, Any]:
        """The /api/v1/query answer; raises AssertionError naming the query if Prometheus rejects it."""
        url = f"http://127.0.0.1:{self.port}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
        try:
            with urllib.request.urlopen(url, timeout=5) as r:
                body = json.load(r)
        except urllib.error.HTTPError as exc:
            raise AssertionError(f"Prometheus rejected {promql!r}: {exc.read().decode()}") from exc
        assert body["status"] == "success", body
        return body["data"]

    def value(self, promql: str) -> float | None:
        """The single value of an instant query, None when it returns nothing."""
        res = self.query(promql)["result"]
        return float(res[0]["value"][1]) if res else None

    def wait(self, ok: Callable[[], bool], what: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"prometheus exited {self.proc.returncode}: {self.log.read_text()[-2000:]}")
            if ok():
                return
            time.sleep(0.25)
        raise AssertionError(f"prometheus: {what} not reached after {timeout}s; log: {self.log.read_text()[-2000:]}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture
def prometheus(tmp_path: Path):
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.skip("the prometheus binary is missing: scripts/setup-deploy-tools.sh installs Debian's package")
    started: list[Prometheus] = []

    def start(jobs: dict[str, list[str]]) -> Prometheus:
        p = Prometheus(binary, tmp_path / f"prom{len(started)}", jobs)
        started.append(p)
        return p

    for d in range(2):
        (tmp_path / f"prom{d}").mkdir()
    yield start
    for p in started:
        p.stop()


def agent_available() -> bool:
    try:
        from llm_agents import cli
    except ImportError:
        return False
    return hasattr(cli, "agent")


class ServiceProc:
    """An `edgeloop <command>` subprocess on the test's topics, with its own metrics port
    (EDGELOOP_METRICS_PORT, and `{port}` in argv for commands that take it as an option)."""

    def __init__(self, name: str, argv: list[str], bootstrap: str, prefix: str, tmp: Path,
                 env: dict[str, str] | None = None) -> None:
        self.name, self.port = name, free_port()
        self.log = tmp / f"{name}.log"
        env = {**os.environ, "EDGELOOP_KAFKA_BOOTSTRAP": bootstrap, "EDGELOOP_TOPIC_PREFIX": prefix,
               "EDGELOOP_METRICS_PORT": str(self.port), "EDGELOOP_DATA_DIR": str(tmp / f"{name}-data"),
               "EDGELOOP_LLM_BASE_URL": "", **(env or {})}
        self.data_dir = Path(env["EDGELOOP_DATA_DIR"])
        argv = [a.format(port=self.port) for a in argv]
        self.proc = subprocess.Popen([sys.executable, "-m", "edgeloop_app.cli", *argv], env=env,
                                     stdout=open(self.log, "wb"), stderr=subprocess.STDOUT, cwd=REPO,
                                     start_new_session=True)

    def assert_alive(self) -> None:
        if self.proc.poll() is not None:
            raise AssertionError(f"{self.name} exited {self.proc.returncode}:\n{self.log.read_text()[-3000:]}")

    def metrics_text(self) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=5) as r:
            return r.read().decode()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture
def services(broker, tmp_path: Path):
    """Factory: start(name, argv, topics, **env) runs `edgeloop <argv>`; all stopped at the end."""
    procs: list[ServiceProc] = []

    def start(name: str, argv: list[str], topics: Any, **env: str) -> ServiceProc:
        p = ServiceProc(name, argv, broker.bootstrap, topics.prefix, tmp_path, env)
        procs.append(p)
        return p

    yield start
    for p in procs:
        p.stop()


@pytest.fixture
def edge_agent(services):
    """Factory: start `edgeloop agent` (offline) on a test's topics; skips where the command does not exist."""
    if not agent_available():
        pytest.skip("`edgeloop agent` is not in this checkout (llm_agents.cli.agent)")
    # No proposer: the detector's alerts would add proposals beside the ones a test makes.
    return lambda topics: services("agent", ["agent", "--no-retrain", "--no-propose"], topics,
                                   EDGELOOP_SESSION_TIMEOUT_S="6", EDGELOOP_HEARTBEAT_S="1")


def publish(bootstrap: str, topic: str, seed: int, hosts: int = 2, per_host: int = 32) -> int:
    df = synthetic_flows(hosts_per_class=hosts, flows_per_host=per_host, seed=seed)
    with FlowPublisher(bootstrap, topic) as pub:
        replay_frame(df, pub, progress=False)
    return len(df)


def dashboard_queries() -> list[tuple[str, str]]:
    """(panel title, expr) for every query in the dashboard, template variables filled in
    the way Grafana would with "All" selected."""
    subst = {"$job": "edgeloop.*", "$instance": ".*", "$__rate_interval": "15s", "$__range": "5m"}
    out = []
    for panel in json.loads(DASHBOARD.read_text())["panels"]:
        for t in panel.get("targets", []):
            expr = t["expr"]
            for k, v in subst.items():
                expr = expr.replace(k, v)
            out.append((panel["title"], expr))
    return out


def dashboard_answers(prom: Prometheus) -> dict[str, list]:
    """Every dashboard query run on `prom` (each must be valid): panel title -> all series."""
    answers: dict[str, list] = {}
    for title, expr in dashboard_queries():
        answers.setdefault(title, []).extend(prom.query(expr)["result"])
    return answers


def test_prometheus_scrapes_a_worker_and_sees_metrics_move_with_traffic(
        broker, topics, edge_worker, tiny_bundle, prometheus):
    w = edge_worker(topics, tiny_bundle.path, window_idle_s=2, alert_interval_s=1)
    prom = prometheus({"edgeloop-edge": [f"127.0.0.1:{w.port}"]})
    prom.wait(lambda: prom.value('up{job="edgeloop-edge"}') == 1.0, "edge worker up", timeout=20)
    assert prom.value("edgeloop_flows_in_total") == 0.0

    n1 = publish(broker.bootstrap, topics.flows, seed=21)
    prom.wait(lambda: prom.value("edgeloop_flows_in_total") == n1, f"flows_in == {n1}")
    n2 = publish(broker.bootstrap, topics.flows, seed=22, hosts=3)
    prom.wait(lambda: prom.value("edgeloop_flows_in_total") == n1 + n2, f"flows_in == {n1 + n2}")
    # The counter moved between scrapes, so a rate over the last seconds is positive.
    assert prom.value('sum(rate(edgeloop_flows_in_total{job="edgeloop-edge"}[10s]))') > 0
    # Windows close by K or after 2 s idle; each is scored once and its latency observed.
    prom.wait(lambda: (prom.value("sum(edgeloop_windows_scored_total)") or 0) > 0, "windows scored")
    prom.wait(lambda: (prom.value("sum(edgeloop_inference_seconds_count)") or 0) > 0, "inference observed")
    assert prom.value(f'edgeloop_model_info{{version="{tiny_bundle.version}"}}') == 1.0
    assert prom.value("edgeloop_assigned_partitions") == 4.0
    # The worker froze its startup objects (EDGELOOP_GC_FREEZE, the default) and observes
    # every collection's pause; the young generation collects under any traffic.
    assert (prom.value("edgeloop_gc_frozen_objects") or 0) > 10_000
    prom.wait(lambda: (prom.value('edgeloop_gc_pause_seconds_count{generation="0"}') or 0) > 0, "gc pauses observed")
    # Every message read went to the windows in some push (EDGELOOP_COALESCE_FLOWS).
    assert prom.value("edgeloop_window_push_messages_sum") == prom.value("edgeloop_flow_messages_in_total") > 0

    # Every dashboard query is valid PromQL on this data, and the edge panels have data.
    answers = dashboard_answers(prom)
    for title in ("Flows in", "Flows per second", "Windows scored per second",
                  "Detections per second by class", "Inference time per batch", "Model version per detector",
                  "Partitions owned", "Garbage-collector pauses (p99) by generation"):
        assert answers[title], f"dashboard panel {title!r} shows nothing"

    # Every detector metric the dashboard and the rules name is declared by this live
    # worker; the last test checks the other services' metrics against live processes.
    assert_referenced_metrics_exist({"detector": exposed_names(w.metrics_text())})
    w.assert_alive()


def test_prometheus_scrapes_the_agent_and_sees_uncertain_windows_reach_it(
        broker, topics, edge_worker, edge_agent, tiny_bundle, prometheus):
    # Every window goes to `uncertain` (audit sample 1, no rate limit), so the agent has work.
    w = edge_worker(topics, tiny_bundle.path, window_idle_s=2, audit_sample=1.0, uncertain_rate_per_s=0)
    agent = edge_agent(topics)
    agent_text = metrics_text_when_up(agent)
    prom = prometheus({"edgeloop-edge": [f"127.0.0.1:{w.port}"], "edgeloop-agent": [f"127.0.0.1:{agent.port}"]})
    prom.wait(lambda: prom.value('sum(up{job=~"edgeloop-.*"})') == 2.0, "worker and agent up", timeout=20)
    # Offline, the agent's LLM metrics are declared but have no samples yet: the names the
    # dashboard and rules use are all there.
    assert_referenced_metrics_exist({"detector": exposed_names(metrics_text_when_up(w)),
                                     "agent": exposed_names(agent_text)})

    n = publish(broker.bootstrap, topics.flows, seed=23)
    prom.wait(lambda: prom.value("edgeloop_flows_in_total") == n, f"flows_in == {n}")
    prom.wait(lambda: (prom.value('sum(edgeloop_uncertain_windows_total{job="edgeloop-edge"})') or 0) > 0,
              "windows sent to uncertain")
    prom.wait(lambda: (prom.value('sum(edgeloop_agent_windows_received_total{job="edgeloop-agent"})') or 0) > 0,
              "the agent received uncertain windows", timeout=60)
    answers = dashboard_answers(prom)
    for title in ("Uncertain windows through the agent", "Review queue and pending windows"):
        assert answers[title], f"dashboard panel {title!r} shows nothing"
    agent.assert_alive()
    w.assert_alive()


def nft_missing() -> str | None:
    """Why the enforcer's `nft -c` cannot run here, or None."""
    if shutil.which("nft") is None:
        return "nft is not installed (scripts/setup-lab.sh installs Debian's nftables)"
    if os.geteuid() != 0:
        return "nft -c needs root"
    return None


def test_prometheus_scrapes_a_sensor_an_enforcer_and_the_policy_loop(
        broker, topics, edge_worker, edge_agent, services, tiny_bundle, prometheus, tmp_path):
    from llm_agents.policies.proposals import approve_policy, publish
    from llm_agents.policies.store import PolicyStore
    from llm_agents.experiments.twin_scenarios import library_proposal, synthetic_scenario

    why = nft_missing()
    if why:
        pytest.skip(f"the enforcer checks its table with nft -c: {why}")
    # Unsigned approvals apply here (a lab switch): this test is about the metrics; signatures,
    # required by default, are test_policy_flow's and test_edge_pipeline's subject.
    w = edge_worker(topics, tiny_bundle.path, window_idle_s=2, alert_interval_s=1, allow_unsigned="true")
    agent = edge_agent(topics)
    enforcer = services("enforcer", ["enforce", "--dry-run", "--no-protect-local"], topics,
                        EDGELOOP_ALLOW_UNSIGNED="true")
    df = synthetic_flows(hosts_per_class=2, flows_per_host=32, seed=24)
    df.to_parquet(tmp_path / "flows.parquet")
    sensor = services("sensor", ["replay", str(tmp_path / "flows.parquet"), "--metrics-port", "{port}", "--hold",
                                 "--quiet"], topics)
    procs = {"detector": w, "agent": agent, "enforcer": enforcer, "sensor": sensor}
    live = {name: exposed_names(metrics_text_when_up(p)) for name, p in procs.items()}
    prom = prometheus({"edgeloop-edge": [f"127.0.0.1:{w.port}"], "edgeloop-agent": [f"127.0.0.1:{agent.port}"],
                       "edgeloop-enforcer": [f"127.0.0.1:{enforcer.port}"],
                       "edgeloop-sensor": [f"127.0.0.1:{sensor.port}"]})
    prom.wait(lambda: prom.value('sum(up{job=~"edgeloop-.*"})') == 4.0, "four services up", timeout=20)
    # Every metric the dashboard and the rules name, in the live process that owns it.
    assert_referenced_metrics_exist(live)

    # The sensor's flows: acknowledged by the broker, and the detector read every one.
    prom.wait(lambda: prom.value('edgeloop_sensor_flows_sent_total{job="edgeloop-sensor"}') == len(df),
              f"sensor sent {len(df)}")
    prom.wait(lambda: prom.value("edgeloop_flows_in_total") == len(df), f"detector read {len(df)}")
    assert prom.value('edgeloop_sensor_last_sent_timestamp_seconds') > time.time() - 120
    assert prom.value('sum(edgeloop_sensor_flows_lost_total)') == 0

    # A proposal waits in the agent's store; a person approves it; the enforcer checks
    # the table with it (dry run: nft -c, nothing applied).
    prom.wait(lambda: prom.value("edgeloop_enforcer_caught_up") == 1, "enforcer caught up")
    ok0 = prom.value('sum(edgeloop_enforcer_reconciles_total{outcome="ok"})') or 0
    store = PolicyStore(agent.data_dir / "policies")
    scenario = synthetic_scenario("syn_scan", seed=3, n_benign=600)
    now_ms = int(time.time() * 1000)
    good = library_proposal(scenario, "10.9.0.66", created_ms=now_ms)
    store.add(good)
    prom.wait(lambda: prom.value('edgeloop_policies{state="proposed"}') == 1, "one proposal waiting")
    approve_policy(store, good.policy_id, "prom-test", bootstrap=broker.bootstrap, topics=topics)
    prom.wait(lambda: prom.value('edgeloop_policies{state="active"}') == 1, "the policy active in the store")
    assert prom.value('edgeloop_policies{state="proposed"}') == 0
    assert prom.value('edgeloop_policy_decisions_total{action="approve"}') == 1
    prom.wait(lambda: (prom.value('sum(edgeloop_enforcer_reconciles_total{outcome="ok"})') or 0) > ok0,
              "the enforcer checked a table with the approved policy")

    # Approved without the CLI's guard, a policy blocking loopback reaches the enforcer,
    # whose own guard refuses it; garbage on policies.active is dead-lettered.
    bad = library_proposal(scenario, "127.0.0.1", created_ms=now_ms)
    store.add(bad)
    approve_policy(store, bad.policy_id, "prom-test", bootstrap=broker.bootstrap, topics=topics)
    publish(broker.bootstrap, topics.policies_active, "junk", b"{not json")
    prom.wait(lambda: prom.value('edgeloop_enforcer_policies_refused_total{reason="guard"}') == 1, "guard refusal")
    prom.wait(lambda: prom.value('sum(edgeloop_deadletter_records_total{job="edgeloop-enforcer"})') == 1,
              "the enforcer's dead letter")

    # rate()/increase() need a second sample of a counter that just appeared: wait for it.
    for title in SENSOR_AND_POLICY_PANELS:
        prom.wait(lambda: bool(dashboard_answers(prom)[title]), f"dashboard panel {title!r} shows data", timeout=15)
    for p in procs.values():
        p.assert_alive()


def metrics_text_when_up(w: Any, timeout: float = 60) -> str:
    # The edge_worker fixture can return before /metrics answers (its readiness probe
    # treats "unreachable" as a sample of 0), so wait here.
    deadline = time.monotonic() + timeout
    while True:
        w.assert_alive()
        try:
            return w.metrics_text()
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def exposed_names(text: str) -> set[str]:
    """Every sample name a /metrics exposition declares, including labelled metrics that
    have no sample yet (their HELP/TYPE lines are there from the start)."""
    from prometheus_client.parser import text_string_to_metric_families

    suffixes = {"counter": ("_total", "_created"), "histogram": ("_bucket", "_count", "_sum", "_created"),
                "summary": ("_count", "_sum", "_created"), "gauge": ("",), "info": ("_info",)}
    names: set[str] = set()
    for fam in text_string_to_metric_families(text):
        names.update(fam.name + s for s in suffixes.get(fam.type, ("",)))
        names.update(s.name for s in fam.samples)
    return names


def referenced_names() -> dict[str, set[str]]:
    """edgeloop_* metric names per file: the alert rules and the dashboard."""
    dash = {m for _, expr in dashboard_queries() for m in METRIC.findall(expr)}
    return {"rules": set(METRIC.findall(RULES.read_text())), "dashboard": dash}


def owner_of(metric: str) -> str:
    """The service whose exposition must declare `metric` (by its name)."""
    if metric.startswith("edgeloop_sensor_"):
        return "sensor"
    if metric.startswith("edgeloop_enforcer_"):
        return "enforcer"
    if metric.startswith(("edgeloop_llm_", "edgeloop_agent_", "edgeloop_policies", "edgeloop_policy_")):
        return "agent"
    return "detector"


def assert_referenced_metrics_exist(exposed: dict[str, set[str]]) -> None:
    """Every metric the rules and the dashboard name, owned by one of the `exposed`
    services, is in that service's live exposition; with all four services given, every
    referenced metric is checked."""
    refs = referenced_names()
    assert refs["rules"] and refs["dashboard"]
    for where, names in refs.items():
        for service, have in exposed.items():
            owned = {n for n in names if owner_of(n) == service}
            assert owned - have == set(), f"{where} names {service} metrics the live {service} does not expose"
    assert "edgeloop_flows_in_total" in refs["dashboard"] and "edgeloop_consumer_lag_messages" in refs["rules"]

"""A real Prometheus (Debian's package) on loopback scrapes a running edge worker and agent.

Checks that the metrics arrive and move as flows are replayed, that every query in the
Grafana dashboard is valid PromQL on real data, and that every metric the dashboard and
the alert rules name exists in a live process's exposition.
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


class AgentProc:
    """An `edgeloop agent` subprocess (offline: no LLM endpoint) with its own metrics port."""

    def __init__(self, bootstrap: str, prefix: str, tmp: Path) -> None:
        self.port = free_port()
        self.log = tmp / "agent.log"
        env = {**os.environ, "EDGELOOP_KAFKA_BOOTSTRAP": bootstrap, "EDGELOOP_TOPIC_PREFIX": prefix,
               "EDGELOOP_METRICS_PORT": str(self.port), "EDGELOOP_DATA_DIR": str(tmp / "agent-data"),
               "EDGELOOP_LLM_BASE_URL": "", "EDGELOOP_SESSION_TIMEOUT_S": "6", "EDGELOOP_HEARTBEAT_S": "1"}
        self.proc = subprocess.Popen([sys.executable, "-m", "streams.cli", "agent", "--no-retrain"], env=env,
                                     stdout=open(self.log, "wb"), stderr=subprocess.STDOUT, cwd=REPO,
                                     start_new_session=True)

    def assert_alive(self) -> None:
        if self.proc.poll() is not None:
            raise AssertionError(f"agent exited {self.proc.returncode}:\n{self.log.read_text()[-3000:]}")

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
def edge_agent(broker, tmp_path: Path):
    """Factory: start `edgeloop agent` on a test's topics; skips where the command does not exist."""
    if not agent_available():
        pytest.skip("`edgeloop agent` is not in this checkout (llm_agents.cli.agent)")
    procs: list[AgentProc] = []

    def start(topics: Any) -> AgentProc:
        a = AgentProc(broker.bootstrap, topics.prefix, tmp_path)
        procs.append(a)
        return a

    yield start
    for a in procs:
        a.stop()


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
    w = edge_worker(topics, tiny_bundle.path, window_seconds=2, alert_interval_s=1)
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

    # Every dashboard query is valid PromQL on this data, and the edge panels have data.
    answers = dashboard_answers(prom)
    for title in ("Flows in", "Flows per second", "Windows scored per second",
                  "Detections per second by class", "Inference time per batch", "Model version per detector",
                  "Partitions owned"):
        assert answers[title], f"dashboard panel {title!r} shows nothing"

    # Every metric the dashboard and the rules name is declared by this live worker, or
    # (edgeloop_agent_*, edgeloop_llm_*) by the builder the agent registers its metrics
    # with; the agent test below checks those against a live agent.
    from prometheus_client import CollectorRegistry, generate_latest

    from llm_agents.agent_metrics import build_agent_metrics

    reg = CollectorRegistry()
    build_agent_metrics(reg)
    assert_referenced_metrics_exist(edge=exposed_names(w.metrics_text()),
                                    agent=exposed_names(generate_latest(reg).decode()))
    w.assert_alive()


def test_prometheus_scrapes_the_agent_and_sees_uncertain_windows_reach_it(
        broker, topics, edge_worker, edge_agent, tiny_bundle, prometheus):
    # Every window goes to `uncertain` (audit sample 1, no rate limit), so the agent has work.
    w = edge_worker(topics, tiny_bundle.path, window_seconds=2, audit_sample=1.0, uncertain_rate_per_s=0)
    agent = edge_agent(topics)
    agent_text = metrics_text_when_up(agent)
    prom = prometheus({"edgeloop-edge": [f"127.0.0.1:{w.port}"], "edgeloop-agent": [f"127.0.0.1:{agent.port}"]})
    prom.wait(lambda: prom.value('sum(up{job=~"edgeloop-.*"})') == 2.0, "worker and agent up", timeout=20)
    # Offline, the agent's LLM metrics are declared but have no samples yet: the names the
    # dashboard and rules use are all there.
    assert_referenced_metrics_exist(edge=exposed_names(metrics_text_when_up(w)), agent=exposed_names(agent_text))

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


def assert_referenced_metrics_exist(edge: set[str], agent: set[str]) -> None:
    refs = referenced_names()
    assert refs["rules"] and refs["dashboard"]
    for where, names in refs.items():
        agent_refs = {n for n in names if n.startswith(("edgeloop_llm_", "edgeloop_agent_"))}
        assert names - agent_refs - edge == set(), f"{where} names metrics no worker exposes"
        assert agent_refs - agent == set(), f"{where} names agent metrics the agent does not expose"
    assert "edgeloop_flows_in_total" in refs["dashboard"] and "edgeloop_consumer_lag_messages" in refs["rules"]

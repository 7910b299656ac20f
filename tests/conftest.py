"""Shared fixtures: one embedded broker per session, own topics per test, worker processes.

    def test_x(broker, topics, edge_worker, tiny_bundle): ...

`tiny_bundle` trains a small CNN on SYNTHETIC flows in a few seconds: a test model,
never shipped.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import urllib.request
import uuid
from collections import Counter
from pathlib import Path
from typing import Any, Callable

import pytest

from streams.broker import EmbeddedBroker, free_port
from streams.kafka_security import kafka_python_options
from streams.topics import Topics, ensure_topics

REPO = Path(__file__).resolve().parents[1]
# Tests that time something, bound memory, kill workers on a schedule or make network
# namespaces, and the local LLM (llama.cpp's threads slowed 4-5x beside any other busy
# process): scripts/run-tests.sh runs them alone, after the rest ran on every core.
SERIAL_DIRS = ("e2e", "reliability", "security")
SERIAL_MODULES = {"test_local_llm"}
# Modules that keep both cores busy (torch training on 2 threads): one xdist group, so they
# run one after another on one process while the other process takes the tests that mostly
# wait on a broker. Run side by side, two of them took 2-10x longer.
CPU_BOUND = {"test_novel_attack_loop", "test_scan_retrain", "test_experiment_scarce",
             "test_quantize", "test_retrain", "test_model_training", "test_evaluate", "test_inference_cli",
             "test_experiment_augment", "test_review_round_loop"}


@pytest.hookimpl(tryfirst=True)  # before `-m` deselects by marker
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if item.path.parent.name in SERIAL_DIRS or item.path.stem in SERIAL_MODULES:
            item.add_marker(pytest.mark.serial)
        elif item.path.stem in CPU_BOUND:
            item.add_marker(pytest.mark.xdist_group("cpu"))


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory):
    b = EmbeddedBroker(free_port(), log_path=tmp_path_factory.mktemp("broker") / "tansu.log")
    b.start()
    yield b
    b.stop()


@pytest.fixture
def topics(broker: EmbeddedBroker) -> Topics:
    """Fresh topics (4 partitions for flows) under a prefix unique to this test."""
    t = Topics(f"t{uuid.uuid4().hex[:8]}.")
    ensure_topics(broker.bootstrap, t, partitions=4)
    return t


def _train(tmp: Path, seed: int, **kw: Any):
    pytest.importorskip("torch", reason="training a test model needs the train extra")
    from inference.datasets.synthetic import synthetic_flows
    from inference.train import TrainConfig, train_bundle

    df = synthetic_flows(hosts_per_class=4, flows_per_host=48, seed=seed)
    kw.setdefault("views", ["src", "dst"])  # the product's default window views
    kw.setdefault("config", TrainConfig(members=1))  # one network: a test model, trained in seconds
    return train_bundle(df, epochs=6, progress=False, out_dir=tmp, seed=seed, **kw)


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory: pytest.TempPathFactory):
    """A small CNN trained on SYNTHETIC flows (test-only)."""
    return _train(tmp_path_factory.mktemp("tiny_bundle"), seed=0)


@pytest.fixture(scope="session")
def tiny_bundle_b(tmp_path_factory: pytest.TempPathFactory):
    """A second test model with different weights (another version), for hot swaps."""
    return _train(tmp_path_factory.mktemp("tiny_bundle_b"), seed=1)


class WorkerProc:
    """An `edgeloop detect` subprocess with its own metrics port."""

    def __init__(self, proc: subprocess.Popen, port: int, log: Path) -> None:
        self.proc, self.port, self.log = proc, port, log

    def metrics_text(self) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=5) as r:
            return r.read().decode()

    def sample(self, name: str, labels: dict[str, str] | None = None) -> float:
        from prometheus_client.parser import text_string_to_metric_families

        try:
            text = self.metrics_text()
        except OSError:
            return 0.0
        total = 0.0
        for fam in text_string_to_metric_families(text):
            for s in fam.samples:
                if s.name == name and all(s.labels.get(k) == v for k, v in (labels or {}).items()):
                    total += s.value
        return total

    def wait_for(self, name: str, predicate: Callable[[float], bool], timeout: float = 60,
                 labels: dict[str, str] | None = None) -> float:
        deadline = time.monotonic() + timeout
        v = 0.0
        while time.monotonic() < deadline:
            self.assert_alive()
            v = self.sample(name, labels)
            if predicate(v):
                return v
            time.sleep(0.2)
        raise AssertionError(f"{name} stuck at {v} after {timeout}s; log:\n{self.log.read_text()[-3000:]}")

    def assert_alive(self) -> None:
        if self.proc.poll() is not None:
            raise AssertionError(f"worker exited {self.proc.returncode}:\n{self.log.read_text()[-3000:]}")


@pytest.fixture
def edge_worker(broker: EmbeddedBroker, tmp_path: Path):
    """Factory: start a detector worker on `topics` with extra EDGELOOP_* settings."""
    procs: list[WorkerProc] = []

    def start(topics: Topics, model: Path | str, group: str | None = None, **env: Any) -> WorkerProc:
        port = free_port()
        log = tmp_path / f"worker-{len(procs)}.log"
        e = {**os.environ, "EDGELOOP_KAFKA_BOOTSTRAP": broker.bootstrap, "EDGELOOP_TOPIC_PREFIX": topics.prefix,
             "EDGELOOP_MODEL": str(model), "EDGELOOP_METRICS_PORT": str(port),
             "EDGELOOP_GROUP_ID": group or f"g-{topics.prefix}", "EDGELOOP_DATA_DIR": str(tmp_path / "var"),
             "EDGELOOP_WORKER_ID": f"w{len(procs)}", "EDGELOOP_SESSION_TIMEOUT_S": "6",
             "EDGELOOP_HEARTBEAT_S": "1"}
        e.update({f"EDGELOOP_{k.upper()}": str(v) for k, v in env.items()})
        fh = open(log, "wb")
        p = subprocess.Popen([sys.executable, "-m", "edgeloop_app.cli", "detect"], env=e, stdout=fh,
                             stderr=subprocess.STDOUT, cwd=REPO, start_new_session=True)
        w = WorkerProc(p, port, log)
        procs.append(w)
        deadline = time.monotonic() + 60
        while True:  # until /metrics answers
            w.assert_alive()
            try:
                w.metrics_text()
                return w
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)

    yield start
    for w in procs:
        if w.proc.poll() is None:
            w.proc.terminate()
    for w in procs:
        try:
            w.proc.wait(15)
        except subprocess.TimeoutExpired:
            w.proc.kill()


def read_topic(bootstrap: str, topic: str, until: Callable[[list[bytes]], bool], timeout: float = 60) -> list[bytes]:
    """All values of a topic from the beginning, polling until `until(values)` or timeout."""
    from kafka import KafkaConsumer, TopicPartition

    c = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
                      consumer_timeout_ms=500, max_poll_interval_ms=5000, **kafka_python_options())
    parts = c.partitions_for_topic(topic) or {0}
    tps = [TopicPartition(topic, p) for p in parts]
    c.assign(tps)
    c.seek_to_beginning(*tps)
    values: list[bytes] = []
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            for batch in c.poll(timeout_ms=300, max_records=5000).values():
                values.extend(m.value for m in batch)
            if until(values):
                break
    finally:
        c.close()
    return values


@pytest.fixture
def topic_reader(broker: EmbeddedBroker):
    return lambda topic, until, timeout=60: read_topic(broker.bootstrap, topic, until, timeout)


def detections_of(values: list[bytes]) -> list[dict]:
    out = []
    for v in values:
        out.extend(json.loads(v)["detections"])
    return out


@pytest.fixture
def decode_detections():
    return detections_of


# -- skips: counted and explained in every run; under CI=true as root, only allow-listed -------

SKIP_ALLOWLIST = REPO / "tests" / "skip-allowlist.txt"


def _skip_reason(report: Any) -> str:
    longrepr = report.longrepr
    why = longrepr[2] if isinstance(longrepr, tuple) and len(longrepr) == 3 else str(longrepr)
    return why.removeprefix("Skipped: ")


def _allowed_skips() -> list[re.Pattern[str]]:
    lines = SKIP_ALLOWLIST.read_text().splitlines()
    return [re.compile(x) for x in (ln.strip() for ln in lines) if x and not x.startswith("#")]


def _strict_skips() -> bool:
    return os.environ.get("CI", "").lower() in ("true", "1") and os.geteuid() == 0


def _skips(config: pytest.Config) -> tuple[Counter, list[str]]:
    """(reason -> count, the reasons the allow-list does not explain)."""
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    reports = reporter.stats.get("skipped", []) if reporter else []
    reasons = Counter(_skip_reason(r) for r in reports)
    allowed = _allowed_skips()
    return reasons, [why for why in reasons if not any(p.search(why) for p in allowed)]


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    reasons, unexplained = _skips(config)
    terminalreporter.section("skips")
    terminalreporter.write_line(f"{sum(reasons.values())} skipped"
                                + (" (CI=true as root: only reasons in tests/skip-allowlist.txt may skip)"
                                   if _strict_skips() else ""))
    for why, n in reasons.most_common():
        mark = "NOT ALLOWED " if _strict_skips() and why in unexplained else ""
        terminalreporter.write_line(f"{n:5d}  {mark}{why}")


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if _strict_skips() and _skips(session.config)[1] and session.exitstatus == 0:
        session.exitstatus = 1  # an unexplained skip in CI fails the run

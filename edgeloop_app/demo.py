"""`edgeloop run`: the whole loop on one machine, with a live view of what happens.

Starts (or reuses) the broker, starts a detector worker process, replays a capture,
follows detections/uncertain/alerts live, and ends with a summary (and, when the file
carries ground truth, how well each attack was caught), the agent's pass over the
uncertain windows, the health of detector and sensor read from their own /metrics (what
Prometheus scrapes; `edgeloop status`), and policy proposals waiting for approval.
"""
from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from contextlib import ExitStack
from pathlib import Path
from typing import TYPE_CHECKING

import click
from rich.console import Console
from rich.live import Live
from rich.markup import escape
from rich.table import Table

from contracts.errors import BrokerError, EdgeloopError, SourceError
from streams.kafka_security import kafka_python_options
from streams.settings import Settings
from streams.terminal import safe
from streams.topics import Topics, ensure_topics

if TYPE_CHECKING:
    from streams.metrics import SensorMetrics

REPO = Path(__file__).resolve().parents[1]
DEFAULT_CAPTURES = ("data/lab/eval.pcap", "data/lab/eval.parquet")


def default_capture() -> Path:
    for rel in DEFAULT_CAPTURES:
        p = REPO / rel
        if p.is_file():
            if p.suffix == ".pcap":
                try:
                    import nfstream  # noqa: F401
                except ImportError:
                    continue
            return p
    raise SourceError(f"no capture to replay: none of {DEFAULT_CAPTURES} exists; pass --flows FILE")


def metric(port: int, name: str, **labels: str) -> float:
    """Sum of a metric's samples on a local /metrics endpoint whose labels include `labels`
    (0 when unreachable)."""
    from prometheus_client.parser import text_string_to_metric_families

    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as r:
            text = r.read().decode()
    except OSError:
        return 0.0
    return sum(s.value for f in text_string_to_metric_families(text) for s in f.samples
               if s.name == name and labels.items() <= s.labels.items())


def start_detector(s: Settings, bootstrap: str, log: Path) -> subprocess.Popen:
    env = {**os.environ, "EDGELOOP_KAFKA_BOOTSTRAP": bootstrap, "EDGELOOP_METRICS_PORT": str(s.metrics_port),
           "EDGELOOP_WORKER_ID": s.worker_id or "edge-0"}
    log.parent.mkdir(parents=True, exist_ok=True)
    return subprocess.Popen([sys.executable, "-m", "edgeloop_app.cli", "detect"], env=env, stdout=open(log, "wb"),
                            stderr=subprocess.STDOUT, start_new_session=True)


class LiveView:
    """Counts of what comes out of the detector, rendered as a table."""

    def __init__(self, topics: Topics) -> None:
        self.topics = topics
        self.by_class: Counter[str] = Counter()
        self.truth_hits: Counter[str] = Counter()
        self.uncertain = 0
        self.covered = 0  # of them, not sent: the detector's edgeloop_uncertain_covered_total
        # the detector's edgeloop_uncertain_gates_total: which checks deferred them
        self.gates: dict[str, int] = {}
        self.windows = 0
        self.alerts: list[dict] = []
        self.detections: list[dict] = []  # kept for the policy twin (a demo-sized capture)
        self.model = ""

    def feed(self, topic: str, value: bytes) -> None:
        v = json.loads(value)
        if topic == self.topics.detections:
            self.model = v["model_version"]
            self.detections.extend(v["detections"])
            for d in v["detections"]:
                self.windows += 1
                self.by_class[d["predicted"]] += 1
                self.uncertain += d["uncertain"]
        elif topic == self.topics.alerts:
            self.alerts.append(v)

    def table(self, sent: int, port: int, elapsed: float) -> Table:
        t = Table(title=f"{sent:,} flows replayed, {self.windows:,} windows scored, {elapsed:.0f}s",
                  caption=f"model {self.model or '…'}", min_width=60)
        t.add_column("predicted class")
        t.add_column("windows", justify="right")
        for c, n in self.by_class.most_common():
            t.add_row(c, f"{n:,}")
        # The detector counts a covered window before the detections that carry it are read
        # here, so the difference can dip below 0 for a moment.
        t.add_row("[yellow]uncertain (to the agent)[/]", f"{max(0, self.uncertain - self.covered):,}")
        if self.covered:
            t.add_row("[yellow]uncertain, covered by their sources' windows[/]", f"{self.covered:,}")
        gates = ", ".join(f"{g} {n:,}" for g, n in sorted(self.gates.items(), key=lambda kv: -kv[1]) if n)
        if gates:
            t.add_row("[yellow]  deferred by[/]", gates)
        t.add_row("[red]alerts[/]", f"{len(self.alerts):,}")
        t.caption = f"model {self.model or '…'}; metrics http://127.0.0.1:{port}/metrics"
        return t


def run_demo(s: Settings, flows_file: Path | None, speed: float, keep: bool, console: Console) -> None:
    from kafka import KafkaConsumer

    from streams.broker import EmbeddedBroker
    from streams.producer import FlowPublisher
    from streams.sources.files import load_flows
    from streams.sources.replay import replay_frame

    topics = Topics(s.topic_prefix)
    capture = flows_file or default_capture()
    logs = s.data_dir / "logs"
    with ExitStack() as stack:
        if s.kafka_bootstrap:
            bootstrap = s.kafka_bootstrap
            console.print(f"using Kafka at {bootstrap}")
        else:
            logs.mkdir(parents=True, exist_ok=True)
            b = EmbeddedBroker(s.embedded_port, log_path=logs / "broker.log")
            b.start()
            stack.callback(b.stop)
            bootstrap = b.bootstrap
            step(console, 1, f"embedded broker (Tansu) ready at {bootstrap}")
        ensure_topics(bootstrap, topics, s.partitions)
        det = start_detector(s, bootstrap, logs / "detect.log")
        stack.callback(_stop, det)
        step(console, 2, f"detector starting (log {logs / 'detect.log'}); joining its consumer group…")
        _wait_joined(det, s.metrics_port, logs / "detect.log")
        sensor, sensor_port = _sensor_metrics(s)
        step(console, 3, f"replaying {capture.relative_to(REPO) if capture.is_relative_to(REPO) else capture} "
                         f"(sensor metrics http://127.0.0.1:{sensor_port}/metrics)")
        df = load_flows(capture)
        targets = [f"127.0.0.1:{s.metrics_port}", f"127.0.0.1:{sensor_port}"]
        before = _scrape_all(targets)
        with FlowPublisher(bootstrap, topics.flows, key=s.window_key, sensor="demo",  # type: ignore[arg-type]
                           metrics=sensor, compression=s.kafka_compression, payload=s.flow_payload) as pub:
            st = replay_frame(df, pub, speed=speed, progress=True)
        step(console, 4, f"watching the detector (open windows close after {s.window_seconds:.0f}s idle)")
        view = _watch(KafkaConsumer, bootstrap, topics, det, s, st.records, console)
        _summary(view, df, console)
        step(console, 5, f"the agent labels the uncertain windows with the LLM at {s.llm_base_url}; what its "
                         "checks do not accept waits for a person" if s.llm_base_url else
                         "the agent takes the uncertain windows (offline without EDGELOOP_LLM_BASE_URL: "
                         "they wait for a person in the review queue)")
        _agent(s, bootstrap, logs / "agent.log", console)
        step(console, 6, "health from each service's own /metrics (what Prometheus scrapes; `edgeloop status`), "
                         "rates over the run")
        _health(targets, before, console)
        step(console, 7, "proposing policies for the alerts (blueprints validated on a digital twin)")
        _propose(view, df, s, bootstrap, console)
        if keep:
            console.print("running; Ctrl-C stops broker and detector")
            try:
                while det.poll() is None:
                    time.sleep(1)
            except KeyboardInterrupt:
                pass


STEPS = 7


def step(console: Console, n: int, text: str) -> None:
    console.print(f"[green]{n}/{STEPS}[/] {text}")


def _sensor_metrics(s: Settings) -> tuple[SensorMetrics, int]:
    """The replay's sensor metrics, served beside the detector's (its port + 2, else a free one)."""
    from prometheus_client import CollectorRegistry

    from contracts.errors import ConfigError
    from streams.metrics import SensorMetrics, serve_metrics

    m = SensorMetrics(CollectorRegistry())
    try:
        return m, serve_metrics(m.registry, s.metrics_port + 2 if 0 < s.metrics_port <= 65533 else 0)
    except ConfigError:
        return m, serve_metrics(m.registry, 0)


def _scrape_all(targets: list[str]) -> tuple[float, list[dict]]:
    from streams.status import scrape

    return time.monotonic(), [scrape(t) for t in targets]


def _health(targets: list[str], before: tuple[float, list[dict]], console: Console) -> None:
    """`edgeloop status`'s table, its rates taken from before the replay to now."""
    from streams.status import assess, table

    t0, first = before
    seconds, now = time.monotonic() - t0, _scrape_all(targets)[1]
    console.print(table([assess(t, a, b, seconds) for t, a, b in zip(targets, first, now)]))


def _agent(s: Settings, bootstrap: str, log: Path, console: Console) -> None:
    """Run the agent until `uncertain` is drained; show what it did with the windows."""
    # Port 0: the agent's /metrics is not scraped here, and a fixed neighbour of the
    # detector's port may be taken by something else (the agent then exits 1 at start).
    env = {**os.environ, "EDGELOOP_KAFKA_BOOTSTRAP": bootstrap, "EDGELOOP_METRICS_PORT": "0"}
    try:
        r = subprocess.run([sys.executable, "-m", "edgeloop_app.cli", "agent", "--once", "--no-retrain"], env=env,
                           capture_output=True, text=True, timeout=180)
    except subprocess.TimeoutExpired:
        console.print(f"[yellow]the agent did not drain `uncertain` in 180 s; see {log}[/]")
        return
    log.write_text(r.stdout + r.stderr)
    lines = [ln for ln in (r.stdout + r.stderr).splitlines() if ln.strip() and "WARNING" not in ln]
    for ln in lines[-6:]:
        console.print(f"  {ln}")
    if r.returncode != 0:
        console.print(f"[yellow]agent exited {r.returncode}; see {log}[/]")
        return
    if s.llm_base_url:
        _llm_answers(s, console)
    console.print("  a person labels them with: edgeloop review list / edgeloop review accept|correct")


def _llm_answers(s: Settings, console: Console, n: int = 6) -> None:
    """What the LLM answered for the windows waiting for a person, and why each waits."""
    from llm_agents.labeling.review import ReviewQueue

    items = ReviewQueue(Path(s.data_dir) / "review.sqlite").newest(n)
    if not items:
        return
    t = Table(title="the LLM's answers, held for a person by the acceptance checks")
    for col in ("window", "detector said", "LLM said", "confidence", "held because"):
        t.add_column(col)
    for i in items:
        t.add_row(safe(i.window_id[:16]), safe(i.window.predicted), safe(i.proposed or "-"),
                  "-" if i.confidence is None else f"{i.confidence:.2f}", safe(i.reason))
    console.print(t)


def _propose(view: LiveView, df, s: Settings, bootstrap: str, console: Console) -> None:
    """Offline (or with the configured LLM): a proposal per strongest alert, waiting for a person."""
    import pandas as pd

    from llm_agents.policies.proposals import propose_from_alerts

    logging.getLogger("edgeloop.policies").setLevel(logging.ERROR)  # the table below says it all
    if not view.alerts:
        console.print("no alerts, nothing to propose")
        return
    outcomes = propose_from_alerts(view.alerts, s, flows=df, detections=pd.DataFrame(view.detections),
                                   bootstrap=bootstrap, max_alerts=3)
    t = Table(title="policy proposals (waiting for approval)")
    t.add_column("policy", no_wrap=True)
    t.add_column("for alert", no_wrap=True)
    t.add_column("status")
    t.add_column("why")
    waiting = []
    for o in outcomes:
        pid = o.proposal.policy_id if o.proposal else "-"
        if o.proposal:
            waiting.append(pid)
        t.add_row(safe(pid), safe(o.alert_id), o.status, safe(o.reason[:90]))
    console.print(t)
    for pid in waiting[:1]:
        console.print(f"review it:   edgeloop policy show {escape(pid)}\n" + _approve_hint(pid, s))


def _approve_hint(pid: str, s: Settings) -> str:
    """How to approve, signed: detectors and enforcers refuse unsigned activations by default."""
    import getpass

    who = getpass.getuser()
    key = Path(s.data_dir) / "keys" / f"{who}.key"
    make = "" if key.exists() else (f"approve it:  edgeloop keys new {escape(who)} --trust    (once: your signing key, "
                                    "trusted on this host)\n             ")
    return (f"{make if make else 'approve it:  '}edgeloop policy approve {escape(pid)} --key {escape(str(key))}\n"
            "             (approval publishes to policies.active: it needs a broker, so run "
            "`edgeloop run --keep` or set EDGELOOP_KAFKA_BOOTSTRAP; `edgeloop enforce` applies it)")


def _stop(p: subprocess.Popen) -> None:
    if p.poll() is None:
        p.terminate()
        try:
            p.wait(15)
        except subprocess.TimeoutExpired:
            p.kill()


def _wait_joined(det: subprocess.Popen, port: int, log: Path, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if det.poll() is not None:
            raise BrokerError(f"detector exited ({det.returncode}); see {log}:\n{log.read_text()[-2000:]}")
        if metric(port, "edgeloop_assigned_partitions") > 0:
            return
        time.sleep(0.3)
    raise BrokerError(f"detector did not join its group in {timeout:.0f}s; see {log}")


def _watch(consumer_cls, bootstrap: str, topics: Topics, det: subprocess.Popen, s: Settings, sent: int,
           console: Console) -> LiveView:
    from inference.onnx_detector import UNCERTAIN_GATES

    c = consumer_cls(topics.detections, topics.alerts, bootstrap_servers=bootstrap, group_id=None,
                     auto_offset_reset="earliest", consumer_timeout_ms=300, enable_auto_commit=False,
                     **kafka_python_options())
    view, t0 = LiveView(topics), time.monotonic()
    port = s.metrics_port
    try:
        with Live(view.table(sent, port, 0), console=console, refresh_per_second=4) as live:
            quiet_since = None
            while time.monotonic() - t0 < 120 and det.poll() is None:
                for batch in c.poll(timeout_ms=250).values():
                    for m in batch:
                        view.feed(m.topic, m.value)
                view.covered = int(metric(port, "edgeloop_uncertain_covered_total"))
                view.gates = {g: int(metric(port, "edgeloop_uncertain_gates_total", gate=g))
                              for g in UNCERTAIN_GATES}
                live.update(view.table(sent, port, time.monotonic() - t0))
                done = (metric(port, "edgeloop_flows_in_total") >= sent
                        and metric(port, "edgeloop_open_windows") == 0
                        and view.windows >= metric(port, "edgeloop_windows_scored_total") > 0)
                quiet_since = (quiet_since or time.monotonic()) if done else None
                if quiet_since and time.monotonic() - quiet_since > max(1.5, s.alert_interval_s):
                    break
    finally:
        c.close()
    return view


def _summary(view: LiveView, df, console: Console) -> None:
    if view.alerts:
        t = Table(title="alerts (confident attack verdicts, aggregated per view, key and class)")
        for col in ("attack", "from / on", "windows", "flows", "sources", "dst ports", "max conf"):
            t.add_column(col)
        for a in sorted(view.alerts, key=lambda a: -a["windows"])[:15]:
            ports = ",".join(map(str, a["dst_ports"][:6])) + ("…" if len(a["dst_ports"]) > 6 else "")
            who = f"on {a['key']}" if a.get("view") == "dst" else f"from {a['key']}"
            t.add_row(safe(a["attack"]), safe(who), str(a["windows"]), str(a["flows"]), f"{a.get('sources', 0):,}",
                      safe(ports),
                      f"{a['max_confidence']:.2f}")
        console.print(t)
    covered = (f" ({view.covered:,} of them targets' windows that their sources' windows carry, not sent to "
               "the agent)" if view.covered else "")
    console.print(f"{view.windows:,} windows scored, {view.uncertain:,} uncertain{covered}, {len(view.alerts)} alerts.")


@click.command()
@click.option("--flows", "flows_file", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="Capture to replay (default: the bundled lab evaluation capture).")
@click.option("--speed", type=float, default=0.0, show_default=True, help="Replay speed (0 = as fast as possible).")
@click.option("--keep", is_flag=True, help="Keep broker and detector running after the replay (Ctrl-C stops).")
def run(flows_file: Path | None, speed: float, keep: bool) -> None:
    """Run the whole loop on one machine: broker, detector, replay, live view, metrics.

    This is what `make run` does. Uses EDGELOOP_KAFKA_BOOTSTRAP if set, else starts the
    embedded broker.
    """
    from edgeloop_app.cli import settings_or_exit

    s = settings_or_exit()
    try:
        run_demo(s, flows_file, speed=speed, keep=keep, console=Console(stderr=True))
    except EdgeloopError as exc:
        raise click.ClickException(str(exc)) from exc


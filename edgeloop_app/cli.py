"""The `edgeloop` command line. Every stage of the loop has a subcommand here.

Subcommands from the optional parts (training needs torch, the lab needs root) are
imported only when used, so `edgeloop --help` is instant and an edge install without
torch still works.
"""
from __future__ import annotations

import contextlib
import importlib
import logging
import signal
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

import click
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from contracts.errors import EdgeloopError
from streams.settings import Settings, bootstrap_of, load_settings
from streams.terminal import plain, safe

if TYPE_CHECKING:
    from streams.metrics import SensorMetrics

console = Console(stderr=True)

# name -> (module:attribute, one-line help). Loaded on first use.
LAZY = {
    "lab": ("trafficlab.cli:lab", "Traffic lab: real tools between network namespaces, labelled datasets."),
    "train": ("edgeloop_app.model_cli:train", "Train the CNN detector and write a bundle to the registry (needs torch)."),
    "evaluate": ("edgeloop_app.model_cli:evaluate", "Evaluate a bundle on a labelled flow file: F1, calibration, int8."),
    "models": ("edgeloop_app.model_cli:models", "The model registry: list and show bundles."),
    "datasets": ("edgeloop_app.model_cli:datasets", "Build shipped datasets from their sources: the nDPI foreign set."),
    "agent": ("llm_agents.cli:agent", "The LLM agent: label uncertain windows, keep the dataset, retrain."),
    "review": ("llm_agents.cli:review", "The review queue: list, accept or correct labels a person must check."),
    "retrain": ("llm_agents.cli:retrain", "Retrain now; promote the challenger only if it beats the champion."),
    "baseline": ("llm_agents.baseline_cli:baseline", "Learn this site's benign traffic; retrain through the promotion gate."),
    "status": ("streams.status:status", "Health of running services, read from their own metrics."),
    "policy": ("llm_agents.policies.cli:policy", "Policy proposals: list, show, approve, reject, revoke (audited)."),
    "enforce": ("streams.enforce_cli:enforce", "Enforce approved policies on this node: nftables, with guard and expiry."),
    "keys": ("streams.keys_cli:keys", "Signing keys for policy approvals: make and list them."),
    "sandbox": ("llm_agents.sandbox_cli:sandbox", "The blueprint sandbox: check it here, or serve it to the agent."),
    "llm": ("llm_agents.llm_cli:llm", "A local LLM endpoint for the agent: llama.cpp server with SmolLM2-135M."),
    "run": ("edgeloop_app.demo:run", "Run the whole loop on one machine: broker, detector, replay, live view, metrics."),
}
EXPERIMENTS = {
    "augment": ("llm_agents.experiments.cli:augment",
                "Macro-F1 vs real windows per class: none, SMOTE, synthesis (paper's result)."),
    "scarce": ("llm_agents.experiments.cli:scarce",
               "≤20 real windows per class from one lab capture; arms judged on other conditions and captures."),
    "policies": ("llm_agents.experiments.policies:policies",
                 "Policy success rates: direct, coder-only, blueprint loop, library (Hermes Table I)."),
    "open-world": ("evaluation.experiment_openworld:open_world",
                   "Train per seed on the default set; judge each on foreign captures and held-out kinds."),
    "compare": ("evaluation.experiment_openworld:compare",
                "Two open-world runs side by side: a recipe change against the recipe before, seed range by seed range."),
    "judge": ("evaluation.recipe_rule:judge_cmd",
              "Judge two open-world runs by an adoption rule written before the candidate was trained."),
    "baseline": ("llm_agents.experiments.baseline:baseline",
                 "Site baseline on half a foreign capture set; false alerts on the other half, before and after."),
    "review-round": ("llm_agents.experiments.review_round:review_round",
                     "One round of the loop on a held-out lab capture (a person labels its uncertain windows); "
                     "judged on the others."),
}


# An edge install (scripts/stage-edge.sh: contracts, streams, inference, edgeloop_app) leaves
# these out; a command that needs one says which install brings it.
CORE_PARTS = {
    "llm_agents": "the core install: pip install '.[agent]' in a full checkout, or the core image",
    "evaluation": "the core install: pip install '.[train]' in a full checkout, or the core image",
    "trafficlab": "a full checkout: pip install -e . there, then scripts/setup-lab.sh (the lab runs as root)",
}
# Lazy commands whose own module is on the edge but which need a core part as well.
NEEDS = {"run": ("llm_agents",)}


def _module_exists(mod: str) -> bool:
    try:
        return importlib.util.find_spec(mod) is not None
    except ModuleNotFoundError:
        return False


def _missing_part(name: str, mod: str) -> str | None:
    """The first package `edgeloop <name>` needs that this install lacks, or None."""
    wanted = (mod.split(".")[0], *NEEDS.get(name, ()))
    return next((p for p in wanted if not _module_exists(p)), None)


def _not_installed(name: str, part: str) -> click.UsageError:
    hint = CORE_PARTS.get(part, f"the package {part}")
    return click.UsageError(f"`{name}` needs {part}, which this install does not have (an edge install "
                            f"leaves the agent, the lab and the experiments out); it comes with {hint}.")


class LazyGroup(click.Group):
    """A click group whose listed subcommands are imported only when invoked."""

    def __init__(self, *args: object, lazy: dict[str, tuple[str, str]] | None = None, **kw: object) -> None:
        super().__init__(*args, **kw)  # type: ignore[arg-type]
        self.lazy = LAZY if lazy is None else lazy

    def _available(self, name: str) -> bool:
        return _missing_part(name, self.lazy[name][0].split(":")[0]) is None

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted([*super().list_commands(ctx), *(n for n in self.lazy if self._available(n))])

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name in self.lazy:
            mod, attr = self.lazy[name][0].split(":")
            part = _missing_part(name, mod)
            if part is not None:
                raise _not_installed(name, part)
            return getattr(importlib.import_module(mod), attr)
        return super().get_command(ctx, name)

    def invoke(self, ctx: click.Context) -> object:
        # A command that imports a core part only when it runs meets the same message.
        try:
            return super().invoke(ctx)
        except ModuleNotFoundError as exc:
            part = (exc.name or "").split(".")[0]
            if part not in CORE_PARTS:
                raise
            raise _not_installed(ctx.invoked_subcommand or ctx.info_name or "edgeloop", part) from exc

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(n, (self.lazy[n][1] if n in self.lazy else self.commands[n].get_short_help_str(80)))
                for n in self.list_commands(ctx)]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


def settings_or_exit() -> Settings:
    try:
        return load_settings()
    except EdgeloopError as exc:
        raise click.ClickException(f"bad configuration: {exc}") from exc


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option("-v", "--verbose", is_flag=True, help="Log at INFO level.")
def main(verbose: bool) -> None:
    """edgeloop: intrusion detection with ONNX CNN detectors at the edge and an LLM agent in the core.

    Configuration comes from EDGELOOP_* environment variables (see README). Kafka is the
    embedded Tansu broker on 127.0.0.1 unless EDGELOOP_KAFKA_BOOTSTRAP names a real cluster.

    Quick start: `edgeloop run` (what `make run` does) shows the whole loop on one machine.
    """
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if not verbose:
        # kafka-python logs every refused connection at ERROR; edgeloop reports the failure itself.
        logging.getLogger("kafka").setLevel(logging.CRITICAL)


@main.group(cls=LazyGroup, lazy=EXPERIMENTS)
def experiment() -> None:
    """Experiments that reproduce the papers' results on the lab data (tables and plots)."""


@main.command()
@click.option("--port", type=int, default=None, help="Port on 127.0.0.1 (default EDGELOOP_EMBEDDED_PORT, 9092).")
def broker(port: int | None) -> None:
    """Start the embedded Kafka-compatible broker (Tansu) and create the topics.

    Runs until Ctrl-C. Memory only: for one machine, a laptop or tests. Point
    EDGELOOP_KAFKA_BOOTSTRAP at Apache Kafka in production instead.
    """
    from streams.broker import EmbeddedBroker
    from streams.topics import Topics, ensure_topics

    s = settings_or_exit()
    b = EmbeddedBroker(port or s.embedded_port)
    try:
        b.start()
        created = ensure_topics(b.bootstrap, Topics(s.topic_prefix), s.partitions)  # embedded: 1 replica
    except EdgeloopError as exc:
        b.stop()
        raise click.ClickException(str(exc)) from exc
    console.print(f"[green]broker ready[/] at {b.bootstrap}; topics created: {len(created)}")
    console.print(f"export EDGELOOP_KAFKA_BOOTSTRAP={b.bootstrap}  # for other shells")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        while b.proc and b.proc.poll() is None:
            time.sleep(0.5)
        raise click.ClickException(f"broker exited with code {b.proc.returncode if b.proc else '?'}")
    except (KeyboardInterrupt, SystemExit):
        pass
    finally:
        b.stop()
        console.print("broker stopped")


@main.command()
def detect() -> None:
    """Run an edge detector worker (faust) on the flows topic.

    Windows every flow once per view (EDGELOOP_WINDOW_VIEWS, default src,dst: by source
    for fan-out attacks, by destination for fan-in ones such as spoofed floods), scores
    batches with ONNX Runtime and publishes detections, uncertain windows and alerts.
    Refuses a bundle whose window spec (K, T, views) differs from the settings, naming
    both, unless EDGELOOP_FOLLOW_BUNDLE_WINDOW=true. Follows the models topic and
    hot-swaps verified releases with the same window spec. Start several with the same
    EDGELOOP_GROUP_ID to share partitions. Metrics on EDGELOOP_METRICS_PORT.
    """
    from prometheus_client import CollectorRegistry

    from inference.registry import resolve_bundle
    from streams.metrics import serve_metrics
    from streams.worker import EdgeWorker

    s = settings_or_exit()
    try:
        bundle = resolve_bundle(s.model, s.data_dir / "registry")
        bundle.verify()
        reg = CollectorRegistry()
        w = EdgeWorker(s, bootstrap_of(s), bundle, reg)
        port = serve_metrics(reg, s.metrics_port, s.metrics_addr)
    except EdgeloopError as exc:
        raise click.ClickException(str(exc)) from exc
    from inference.history import history_engine
    console.print(f"detector {w.worker_id}: model {bundle.version}{' int8' if s.int8 else ''} "
                  f"({', '.join(bundle.class_names)}), "
                  f"{bundle.meta.window.describe()}, host history {history_engine(s.host_history)}; "
                  f"metrics http://{s.metrics_addr}:{port}/metrics")
    w.run()


@main.command()
@click.option("--partitions", type=int, default=None, help="Partitions for flows/detections/uncertain "
              "(default EDGELOOP_PARTITIONS).")
@click.option("--replication-factor", type=int, default=None,
              help="Replicas per partition (default EDGELOOP_REPLICATION_FACTOR; 3 on a real cluster).")
def topics(partitions: int | None, replication_factor: int | None) -> None:
    """Create edgeloop's topics on the configured Kafka (idempotent; `models` is compacted)."""
    from streams.topics import Topics, ensure_topics

    s = settings_or_exit()
    try:
        created = ensure_topics(bootstrap_of(s), Topics(s.topic_prefix), partitions or s.partitions,
                                replication_factor=replication_factor or s.replication_factor)
    except EdgeloopError as exc:
        raise click.ClickException(str(exc)) from exc
    console.print(f"created {len(created)} topics: {', '.join(created) or 'none (all existed)'}")


@contextlib.contextmanager
def sensor_metrics(s: Settings, port: int | None) -> Iterator[SensorMetrics | None]:
    """SensorMetrics served on `port` while the block runs (None: no metrics); the port is
    released at the end. A port already taken raises ConfigError naming it."""
    if port is None:
        yield None
        return
    from prometheus_client import CollectorRegistry

    from streams.metrics import SensorMetrics, metrics_server

    m = SensorMetrics(CollectorRegistry())
    with metrics_server(m.registry, port, s.metrics_addr) as bound:
        console.print(f"sensor metrics http://{s.metrics_addr}:{bound}/metrics")
        yield m


def hold_until_stopped(what: str) -> None:
    """Block until Ctrl-C or SIGTERM (a service manager's stop), keeping /metrics up."""
    console.print(f"{what}; serving /metrics until stopped (Ctrl-C)")
    stopping: list[int] = []
    signal.signal(signal.SIGTERM, lambda *_: stopping.append(1))
    try:
        while not stopping:
            time.sleep(0.2)
    except KeyboardInterrupt:
        pass


@main.command()
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--speed", type=float, default=0.0, show_default=True,
              help="0 = as fast as possible; 1 = the capture's own pace; 10 = ten times faster.")
@click.option("--batch", type=int, default=500, show_default=True, help="Flows per Kafka message.")
@click.option("--limit", type=int, default=None, help="Send at most this many flows.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@click.option("--metrics-port", type=click.IntRange(0, 65535), default=None,
              help="Serve the sensor's /metrics on this port while replaying (0: a free one). Off by default: "
                   "a one-off replay beside a detector would otherwise fight it for EDGELOOP_METRICS_PORT.")
@click.option("--hold", is_flag=True, help="After the replay, keep serving /metrics until stopped, so a "
              "Prometheus scraping this sensor sees its final counts instead of a target gone down.")
def replay(file: Path, speed: float, batch: int, limit: int | None, quiet: bool, metrics_port: int | None,
           hold: bool) -> None:
    """Publish a pcap (metered by NFStream), CSV, Parquet or JSONL file of flows to Kafka."""
    from streams.producer import FlowPublisher
    from streams.sources.files import load_flows
    from streams.sources.replay import replay_frame
    from streams.topics import Topics

    s = settings_or_exit()
    try:
        with sensor_metrics(s, metrics_port) as metrics:
            df = load_flows(file)
            with FlowPublisher(bootstrap_of(s), Topics(s.topic_prefix).flows, key=s.window_key,  # type: ignore[arg-type]
                               sensor=f"replay:{file.name}", batch_records=batch, metrics=metrics,
                               compression=s.kafka_compression, payload=s.flow_payload) as pub:
                st = replay_frame(df, pub, speed=speed, progress=not quiet, limit=limit)
            console.print(f"sent {st.records:,} flows in {st.messages:,} messages ({st.bytes / 1e6:.1f} MB "
                          f"compressed before send) in {st.seconds:.1f}s: {st.rate:,.0f} flows/s")
            if hold and metrics is not None:
                hold_until_stopped("replay done")
    except EdgeloopError as exc:
        raise click.ClickException(str(exc)) from exc


@main.command()
@click.option("--iface", required=True, help="Interface to meter, e.g. eth0.")
@click.option("--duration", type=float, default=None, help="Stop after this many seconds.")
@click.option("--max-flows", type=int, default=None, help="Stop after this many flows.")
@click.option("--metrics-port", type=click.IntRange(0, 65535), default=None,
              help="Port of the sensor's /metrics (default EDGELOOP_METRICS_PORT; 0: a free one).")
@click.option("--no-metrics", is_flag=True, help="Serve no /metrics.")
def capture(iface: str, duration: float | None, max_flows: int | None, metrics_port: int | None,
            no_metrics: bool) -> None:
    """Meter a live interface with NFStream and publish the flows (needs root and the capture extra).

    Runs until Ctrl-C or SIGTERM unless --duration or --max-flows bound it. Serves
    /metrics (flows acknowledged by the broker, send errors, time of the last send) on
    EDGELOOP_METRICS_PORT: give it a port of its own beside detectors on one host.
    """
    from streams.producer import FlowPublisher
    from streams.sources.live import capture as run_capture
    from streams.topics import Topics

    s = settings_or_exit()
    port = None if no_metrics else (s.metrics_port if metrics_port is None else metrics_port)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # a service manager's stop: flush and exit
    try:
        with sensor_metrics(s, port) as metrics, \
                FlowPublisher(bootstrap_of(s), Topics(s.topic_prefix).flows, key=s.window_key,  # type: ignore[arg-type]
                              sensor=f"live:{iface}", metrics=metrics, compression=s.kafka_compression, payload=s.flow_payload) as pub:
            st = run_capture(iface, pub, duration_s=duration, max_flows=max_flows,
                             on_batch=lambda n: console.print(f"published {n} flows"))
    except EdgeloopError as exc:
        raise click.ClickException(str(exc)) from exc
    except (KeyboardInterrupt, SystemExit):
        console.print("capture stopped")
        return
    console.print(f"captured and sent {st.records:,} flows")


@main.command()
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("-o", "--output", type=click.Path(path_type=Path), default=None,
              help="Write one row per window: .parquet (default) or .jsonl.")
@click.option("--model", default=None, help="Bundle directory or registry version (default: current).")
@click.option("--follow-bundle", is_flag=True, help="Cut windows as the bundle was trained (K, T, "
              "views) even where EDGELOOP_WINDOW_* say otherwise.")
def score(file: Path, output: Path | None, model: str | None, follow_bundle: bool) -> None:
    """Score a flow file offline (pcap, CSV, Parquet) with the edge's own windowing and model.

    Like `suricata -r`: no broker. Prints a summary per predicted class; with a label
    column in the input, also how often each predicted class matched it. Like a
    detector, refuses a bundle whose window spec differs from the settings, and scores
    with the bundle's int8 model under EDGELOOP_INT8=1, as a detector would.
    """
    from inference.bundle import check_window
    from inference.registry import resolve_bundle
    from streams.detector import DetectorConfig
    from streams.score import detector_for, score_frame, summary, write_windows
    from streams.sources.files import load_flows

    s = settings_or_exit()
    try:
        bundle = resolve_bundle(model or s.model, s.data_dir / "registry")
        check_window(bundle, s.window_k, s.window_seconds, s.views,
                     follow=follow_bundle or s.follow_bundle_window)
        model = detector_for(bundle, int8=s.int8, shape_rules=s.shape_rules)
        res = score_frame(load_flows(file), bundle, DetectorConfig.from_settings(s), model=model)
    except EdgeloopError as exc:
        raise click.ClickException(str(exc)) from exc
    out = output or file.with_suffix(".windows.parquet")
    write_windows(res.windows, out)
    t = Table(title=f"{file.name}: {len(res.windows)} windows, model {bundle.version}{' (int8)' if s.int8 else ''}")
    summ = summary(res.windows)
    for c in summ.columns:
        t.add_column(c)
    for row in summ.itertuples(index=False):
        t.add_row(*(f"{v:.3f}" if isinstance(v, float) else safe(v) for v in row))
    Console().print(t)
    if res.bad_rows:
        console.print(f"[yellow]{len(res.bad_rows)} rows failed validation[/], first: "
                      f"row {res.bad_rows[0][0]}: {escape(plain(res.bad_rows[0][1]))}")
    console.print(f"windows written to {out}")


@main.command()
@click.argument("bundle_path", metavar="BUNDLE", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--reason", default="manual release", show_default=True)
@click.option("--key", "key_path", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="Sign the release with this private key (`edgeloop keys new`); default: EDGELOOP_RELEASE_KEY.")
def release(bundle_path: Path, reason: str, key_path: Path | None) -> None:
    """Add a bundle to the registry, make it current and publish it on the models topic.

    Running detectors fetch it from their model store by version (EDGELOOP_MODEL_STORE,
    default their registry), verify hash and feature schema, and, where EDGELOOP_TRUSTED_KEYS
    is set, the release's signature; then they swap it in. Anything else is dead-lettered.
    """
    from inference.registry import Registry
    from streams.hotswap import publish_release
    from streams.signing import SigningKey
    from streams.topics import Topics

    s = settings_or_exit()
    try:
        key_file = key_path or s.release_key
        key = SigningKey.load(key_file) if key_file else None
        reg = Registry(s.data_dir / "registry")
        b = reg.add(bundle_path)
        reg.promote(b.version, reason)
        rel = publish_release(bootstrap_of(s), Topics(s.topic_prefix).models, b, reason, key=key)
    except EdgeloopError as exc:
        raise click.ClickException(str(exc)) from exc
    signed = f", signed by {rel.released_by}" if key else " (unsigned: no --key or EDGELOOP_RELEASE_KEY)"
    console.print(f"released {rel.version} ({', '.join(rel.class_names)}){signed}")


@main.command()
@click.argument("topic")
@click.option("--from-beginning", is_flag=True, help="Start at the oldest message.")
@click.option("--max", "max_messages", type=int, default=None, help="Stop after this many messages.")
def tail(topic: str, from_beginning: bool, max_messages: int | None) -> None:
    """Print a topic's messages as JSON lines (short names like `alerts` get the prefix)."""
    from kafka import KafkaConsumer

    from streams.kafka_security import kafka_python_options
    from streams.topics import Topics

    s = settings_or_exit()
    names = Topics(s.topic_prefix).all()
    c = KafkaConsumer(names.get(topic, topic), bootstrap_servers=bootstrap_of(s), **kafka_python_options(),
                      group_id=None, auto_offset_reset="earliest" if from_beginning else "latest")
    n = 0
    try:
        for msg in c:
            click.echo(msg.value.decode("utf-8", "replace"))
            n += 1
            if max_messages and n >= max_messages:
                break
    except KeyboardInterrupt:
        pass
    finally:
        c.close()


if __name__ == "__main__":
    main()

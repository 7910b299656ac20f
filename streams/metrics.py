"""Every Prometheus metric the edge processes expose, defined in one place.

    >>> m = EdgeMetrics(CollectorRegistry())          # `edgeloop detect`
    >>> m.flows_in.inc(100)
    >>> SensorMetrics(CollectorRegistry())            # `edgeloop capture` / `replay`
    >>> EnforcerMetrics(CollectorRegistry())          # `edgeloop enforce`

Each process registers one of these on its own registry; the dead-letter counter is the
same series in every process that dead-letters (one alert rule covers them all). Base
units throughout: seconds, `_total` counters. The exposition is served by
`serve_metrics(registry, port, addr)` for the life of a service, or by
`with metrics_server(registry, port, addr):` for a command that ends and must free its port.
"""
from __future__ import annotations

import contextlib
import gc
import time
from typing import Any, Callable, Iterator

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from contracts.errors import ConfigError

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096)
PUSH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)
# Approval to enforcement: a person's click to nft applying the table (measured: ~70 ms).
APPLY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)


# A collection of the young generations takes well under a millisecond; a full one walks
# every tracked object (tens of ms for a worker's imports unless they are frozen).
GC_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25)


def watch_gc(hist: Histogram) -> Callable[[], None]:
    """Observe each pause of the cyclic garbage collector into `hist` (label `generation`)
    from now on; returns the function that stops it. The worker's tail latency is where a
    full collection shows: every message waits for it."""
    started: list[float] = []
    children = {g: hist.labels(generation=str(g)) for g in range(3)}

    def on_gc(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            started.append(time.perf_counter())
        elif started:
            children[info["generation"]].observe(time.perf_counter() - started.pop())

    gc.callbacks.append(on_gc)

    def stop() -> None:
        if on_gc in gc.callbacks:
            gc.callbacks.remove(on_gc)
    return stop


def freeze_startup() -> int:
    """Collect once, then move every object alive now (imported modules, the model, the
    app) to the collector's permanent generation (`gc.freeze`), so a full collection walks
    only what the worker made since. Measured on the engine in process: a full collection
    37-43 ms before, 1.3 ms after. Returns how many objects were frozen."""
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()


def observe_many(hist: Histogram, values: Any) -> None:
    """`hist.observe(v)` for every v of `values` (a sequence of floats), with one bucket
    increment per bucket instead of one Python loop per value: the same exposition. Reads
    prometheus_client's bucket layout (upper bounds, one non-cumulative counter per bucket,
    a sum) and falls back to observe() one by one where a version lays it out otherwise."""
    v = np.asarray(values, dtype=np.float64)
    if not len(v):
        return
    bounds, buckets, total = (getattr(hist, a, None) for a in ("_upper_bounds", "_buckets", "_sum"))
    if bounds is None or buckets is None or total is None or len(bounds) != len(buckets):
        for x in v.tolist():
            hist.observe(x)
        return
    hist._raise_if_not_observable()
    total.inc(float(v.sum()))
    at = np.searchsorted(np.asarray(bounds, dtype=np.float64), v, side="left")  # first bound >= v
    for i, n in enumerate(np.bincount(at[at < len(bounds)], minlength=len(bounds)).tolist()):
        if n:
            buckets[i].inc(n)


def deadletter_counter(registry: CollectorRegistry, prefix: str = "edgeloop") -> Counter:
    """`<prefix>_deadletter_records_total{reason,topic}`: records sent to the dead-letter topic."""
    return Counter(f"{prefix}_deadletter_records", "Records sent to the dead-letter topic",
                   ["reason", "topic"], registry=registry)


class EdgeMetrics:
    """Detector and dead-letter metrics, registered on the given registry."""

    def __init__(self, registry: CollectorRegistry, prefix: str = "edgeloop") -> None:
        p = prefix
        r = dict(registry=registry)
        self.registry = registry
        self.flows_in = Counter(f"{p}_flows_in", "Flow records decoded from the flows topic", **r)
        self.messages_in = Counter(f"{p}_flow_messages_in", "Messages read from the flows topic", **r)
        self.windows_scored = Counter(f"{p}_windows_scored", "Windows scored, by how they closed",
                                      ["closed_by"], **r)
        self.detections = Counter(f"{p}_detections", "Detections by predicted class", ["predicted"], **r)
        self.uncertain = Counter(f"{p}_uncertain_windows", "Windows sent to the uncertain topic",
                                 ["reason"], **r)
        self.uncertain_rate_limited = Counter(
            f"{p}_uncertain_rate_limited", "Uncertain windows not forwarded (rate limit); "
            "still present in detections with uncertain=true", **r)
        self.uncertain_gates = Counter(
            f"{p}_uncertain_gates", "Windows scored uncertain, by each gate that made them so (a "
            "window can count under several): low_confidence, energy, support (a flow bigger than "
            "training's), member (the ensemble disagrees), flood_shape (a spoofed flood's shape "
            "called benign), repeat_shape (one client's repeated sessions to one service called "
            "benign), destination (covered by its sources' windows), one_service (an attack call the "
            "one-service rule would have turned into benign)", ["gate"], **r)
        self.windows_reranked = Counter(
            f"{p}_windows_reranked", "Windows whose call a rule replaced, by rule: one_service (a "
            "source window to one service called a port scan or a host sweep, which it cannot "
            "show, takes the best class it can show)", ["rule"], **r)
        self.uncertain_covered = Counter(
            f"{p}_uncertain_covered", "Uncertain destination windows not forwarded because their "
            "flows' source windows carry and name them (a scan's or a sweep's targets, a one-peer "
            "brute force or slow DoS victim); still present in detections with uncertain=true", **r)
        self.uncertain_ratio = Gauge(f"{p}_uncertain_ratio",
                                     "Share of windows scored uncertain in the last batch interval", **r)
        self.alerts = Counter(f"{p}_alerts", "Alerts published, by attack class", ["attack"], **r)
        self.alerts_muted = Counter(f"{p}_alert_windows_muted",
                                    "Attack windows kept out of alerts by an active policy", ["reason"], **r)
        self.active_policies = Gauge(f"{p}_active_policies", "Policies in force at this detector", **r)
        self.detector_policies_refused = Counter(
            f"{p}_detector_policies_refused", "Activations on policies.active this detector's guard refused "
            "(never applied; dead-lettered), by reason", ["reason"], **r)
        self.push_messages = Histogram(f"{p}_window_push_messages", "Flows messages windowed together in "
                                       "one push: those read between two ticks (up to EDGELOOP_COALESCE_FLOWS "
                                       "flows)", buckets=PUSH_BUCKETS, **r)
        self.batch_windows = Histogram(f"{p}_inference_batch_windows", "Windows per inference batch",
                                       buckets=BATCH_BUCKETS, **r)
        self.inference_seconds = Histogram(f"{p}_inference_seconds", "ONNX Runtime time per batch",
                                           buckets=LATENCY_BUCKETS, **r)
        self.end_to_end_seconds = Histogram(
            f"{p}_end_to_end_seconds", "From the window's last flow produced to its detection produced",
            buckets=LATENCY_BUCKETS, **r)
        self.gc_pause = Histogram(f"{p}_gc_pause_seconds", "Pauses of Python's cyclic garbage collector, "
                                  "by generation (streams.metrics.watch_gc)", ["generation"],
                                  buckets=GC_BUCKETS, **r)
        self.gc_frozen = Gauge(f"{p}_gc_frozen_objects", "Objects moved out of the collector's reach at "
                               "startup (EDGELOOP_GC_FREEZE; 0 when off)", **r)
        self.confidence = Histogram(f"{p}_window_confidence", "Calibrated confidence of scored windows",
                                    buckets=(0.3, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99, 1.0), **r)
        self.deadletters = deadletter_counter(registry, p)
        self.open_windows = Gauge(f"{p}_open_windows", "Windows waiting for more flows", **r)
        self.open_window_bytes = Gauge(f"{p}_open_window_bytes", "Estimated memory of the open windows "
                                       "(bounded by EDGELOOP_WINDOW_MEMORY_MB)", **r)
        self.model_info = Gauge(f"{p}_model_info", "The model version in use and its precision, fp32 or "
                                "int8 (EDGELOOP_INT8) (value 1)", ["version", "precision"], **r)
        self.host_history_info = Gauge(f"{p}_host_history_info", "How host history is counted: compiled "
                                       "(the C kernel the install builds) or numpy, about 10x slower "
                                       "(EDGELOOP_HOST_HISTORY) (value 1)", ["engine"], **r)
        self.model_swaps = Counter(f"{p}_model_swaps", "Model bundles swapped in", **r)
        self.model_swaps_refused = Counter(f"{p}_model_swaps_refused",
                                           "Model releases refused at verification", ["reason"], **r)
        self.assigned_partitions = Gauge(f"{p}_assigned_partitions",
                                         "Partitions of the flows topic this worker owns", **r)
        self.consumer_lag = Gauge(f"{p}_consumer_lag_messages",
                                  "Messages behind the end of the flows topic", ["partition"], **r)
        # At-least-once (streams.offsets): what is committed, what waits, what came twice.
        self.offsets_committed = Counter(f"{p}_offset_commits", "Offset commits of the flows topic, by outcome",
                                         ["outcome"], **r)
        self.handovers = Counter(f"{p}_handovers", "Partitions given up in a rebalance or a shutdown, by "
                                 "outcome: ok (open windows produced, offsets committed), commit_failed, or "
                                 "fenced (dropped from the group: open windows discarded, the next owner "
                                 "reads them again)", ["outcome"], **r)
        self.tick_deferred = Counter(f"{p}_tick_batches_deferred", "Ticks that ran out of their time "
                                     "budget with windows still waiting (scored on the next tick)", **r)
        self.messages_held = Gauge(f"{p}_flow_messages_held",
                                   "Consumed flows messages not committable yet: flows still in open windows",
                                   **r)
        self.flows_replayed = Counter(
            f"{p}_flows_replayed", "Flows consumed again after a restart or rebalance: the previous owner "
            "had read them but not committed them (their windows may be scored twice, same window ids)", **r)

    def set_model(self, version: str, precision: str = "fp32") -> None:
        self.model_info.clear()
        self.model_info.labels(version=version, precision=precision).set(1)


class SensorMetrics:
    """A sensor's publishing: what reached the broker, what did not, and when it last did.

    Flows count when the broker acknowledges their message, so a sensor whose broker is
    unreachable shows no progress rather than flows that were only queued.
    """

    def __init__(self, registry: CollectorRegistry, prefix: str = "edgeloop") -> None:
        p, r = f"{prefix}_sensor", dict(registry=registry)
        self.registry = registry
        self.flows_sent = Counter(f"{p}_flows_sent", "Flow records acknowledged by the broker", **r)
        self.messages_sent = Counter(f"{p}_messages_sent", "Flow messages (batches) acknowledged", **r)
        self.bytes_sent = Counter(f"{p}_bytes_sent", "Encoded bytes of acknowledged flow messages", **r)
        self.send_errors = Counter(f"{p}_send_errors", "Flow messages the broker did not take, by error",
                                   ["kind"], **r)
        self.flows_lost = Counter(f"{p}_flows_lost", "Flow records in messages that failed to send", **r)
        self.batch_flows = Histogram(f"{p}_batch_flows", "Flow records per message",
                                     buckets=BATCH_BUCKETS, **r)
        self.last_sent = Gauge(f"{p}_last_sent_timestamp_seconds",
                               "Unix time of the last acknowledged flow message", **r)


class EnforcerMetrics:
    """An enforcer's view of the approved policies: in force, refused, rolled back, how fast."""

    def __init__(self, registry: CollectorRegistry, prefix: str = "edgeloop") -> None:
        p, r = f"{prefix}_enforcer", dict(registry=registry)
        self.registry = registry
        self.policies_enforced = Gauge(f"{p}_policies_enforced", "Approved policies in force in this "
                                       "node's nftables table", **r)
        self.policies_refused = Counter(f"{p}_policies_refused", "Approved policies this enforcer "
                                        "refused: guard (protected address) or nft (nft -c rejected)",
                                        ["reason"], **r)
        self.rollbacks = Counter(f"{p}_rollbacks", "Policies taken out of the table, by why "
                                 "(revoked, expired)", ["why"], **r)
        self.apply_latency = Histogram(f"{p}_apply_latency_seconds", "From a person's approval to the "
                                       "table applied on this node", buckets=APPLY_BUCKETS, **r)
        self.reconciles = Counter(f"{p}_reconciles", "Table renders checked and applied, by outcome "
                                  "(ok, error: the previous table stays in force)", ["outcome"], **r)
        self.caught_up = Gauge(f"{p}_caught_up", "1 once the enforcer has read policies.active to its "
                               "end at start", **r)
        self.deadletters = deadletter_counter(registry, prefix)


def _start(registry: CollectorRegistry, port: int, addr: str) -> tuple[Any, int]:
    if port == 0:
        from streams.broker import free_port
        port = free_port()
    try:
        httpd, _thread = start_http_server(port, addr=addr, registry=registry)
    except OSError as exc:
        raise ConfigError("EDGELOOP_METRICS_PORT", port, f"cannot serve /metrics on {addr}:{port}: "
                          f"{exc.strerror or exc} (give each service on a host its own port)") from exc
    return httpd, port


def serve_metrics(registry: CollectorRegistry, port: int, addr: str = "127.0.0.1") -> int:
    """Serve /metrics on addr:port for the life of the process (0 = pick a free port); return the port.

    Raises ConfigError naming EDGELOOP_METRICS_PORT when the address cannot be bound, so
    two services started on one host with the same port fail at start, clearly.
    """
    return _start(registry, port, addr)[1]


@contextlib.contextmanager
def metrics_server(registry: CollectorRegistry, port: int, addr: str = "127.0.0.1") -> Iterator[int]:
    """Serve /metrics while the block runs, then release the port (commands that end:
    replay, a bounded capture or enforcer). Yields the port; errors as `serve_metrics`."""
    httpd, port = _start(registry, port, addr)
    try:
        yield port
    finally:
        httpd.shutdown()
        httpd.server_close()

"""Every Prometheus metric the edge processes expose, defined in one place.

    >>> m = EdgeMetrics(CollectorRegistry())
    >>> m.flows_in.inc(100)

Base units throughout: seconds, `_total` counters. The exposition is served per process
by `serve_metrics(registry, port)`.
"""
from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096)


class EdgeMetrics:
    """Detector, sensor and dead-letter metrics, registered on the given registry."""

    def __init__(self, registry: CollectorRegistry, prefix: str = "edgeloop") -> None:
        p = prefix
        r = dict(registry=registry)
        self.registry = registry
        self.flows_in = Counter(f"{p}_flows_in", "Flow records decoded from the flows topic", **r)
        self.messages_in = Counter(f"{p}_flow_messages_in", "Messages read from the flows topic", **r)
        self.flows_sent = Counter(f"{p}_flows_sent", "Flow records published by sensors/replay", **r)
        self.windows_scored = Counter(f"{p}_windows_scored", "Windows scored, by how they closed",
                                      ["closed_by"], **r)
        self.detections = Counter(f"{p}_detections", "Detections by predicted class", ["predicted"], **r)
        self.uncertain = Counter(f"{p}_uncertain_windows", "Windows sent to the uncertain topic",
                                 ["reason"], **r)
        self.uncertain_rate_limited = Counter(
            f"{p}_uncertain_rate_limited", "Uncertain windows not forwarded (rate limit); "
            "still present in detections with uncertain=true", **r)
        self.uncertain_ratio = Gauge(f"{p}_uncertain_ratio",
                                     "Share of windows scored uncertain in the last batch interval", **r)
        self.alerts = Counter(f"{p}_alerts", "Alerts published, by attack class", ["attack"], **r)
        self.alerts_muted = Counter(f"{p}_alert_windows_muted",
                                    "Attack windows kept out of alerts by an active policy", ["reason"], **r)
        self.active_policies = Gauge(f"{p}_active_policies", "Policies in force at this detector", **r)
        self.batch_windows = Histogram(f"{p}_inference_batch_windows", "Windows per inference batch",
                                       buckets=BATCH_BUCKETS, **r)
        self.inference_seconds = Histogram(f"{p}_inference_seconds", "ONNX Runtime time per batch",
                                           buckets=LATENCY_BUCKETS, **r)
        self.end_to_end_seconds = Histogram(
            f"{p}_end_to_end_seconds", "From the window's last flow produced to its detection produced",
            buckets=LATENCY_BUCKETS, **r)
        self.confidence = Histogram(f"{p}_window_confidence", "Calibrated confidence of scored windows",
                                    buckets=(0.3, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99, 1.0), **r)
        self.deadletters = Counter(f"{p}_deadletter_records", "Records sent to the dead-letter topic",
                                   ["reason", "topic"], **r)
        self.open_windows = Gauge(f"{p}_open_windows", "Windows waiting for more flows", **r)
        self.model_info = Gauge(f"{p}_model_info", "The model version in use (value 1)", ["version"], **r)
        self.model_swaps = Counter(f"{p}_model_swaps", "Model bundles swapped in", **r)
        self.model_swaps_refused = Counter(f"{p}_model_swaps_refused",
                                           "Model releases refused at verification", ["reason"], **r)
        self.assigned_partitions = Gauge(f"{p}_assigned_partitions",
                                         "Partitions of the flows topic this worker owns", **r)
        self.consumer_lag = Gauge(f"{p}_consumer_lag_messages",
                                  "Messages behind the end of the flows topic", ["partition"], **r)

    def set_model(self, version: str) -> None:
        self.model_info.clear()
        self.model_info.labels(version=version).set(1)


def serve_metrics(registry: CollectorRegistry, port: int, addr: str = "127.0.0.1") -> int:
    """Serve /metrics on addr:port (0 = pick a free port); return the port used."""
    if port == 0:
        from streams.broker import free_port
        port = free_port()
    start_http_server(port, addr=addr, registry=registry)
    return port

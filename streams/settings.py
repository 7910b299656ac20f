"""One typed settings object per process, read once at start from `EDGELOOP_*` env vars.

    >>> s = load_settings()            # raises ConfigError naming the key on a bad value
    >>> s.kafka_bootstrap, s.window_k

Nothing here reads the environment at import time.
"""
from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, ValidationError, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from contracts.errors import ConfigError
from contracts.window import DEFAULT_SHAPE_RULES

WindowKey = Literal["src", "dst", "pair"]
# What both Kafka clients here can read and write: kafka-python[lz4,zstd] and aiokafka[lz4,zstd].
Compression = Literal["zstd", "lz4", "gzip", "none"]


class Settings(BaseSettings):
    """Everything a process can be told. Each field is `EDGELOOP_<NAME>` in the environment."""

    model_config = SettingsConfigDict(env_prefix="EDGELOOP_", extra="ignore", frozen=True)

    # Where state lives: datasets, registry, audit log, policies.
    data_dir: Path = Path("var")
    # Kafka. Empty means: start/use the embedded Tansu broker on `embedded_port`.
    kafka_bootstrap: str = ""
    embedded_port: int = Field(9092, ge=1, le=65535)
    topic_prefix: str = "edgeloop."
    partitions: int = Field(4, ge=1, le=1024)
    # How every Kafka client of the process connects (streams/kafka_security.py).
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    kafka_sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    kafka_sasl_username: str = ""
    kafka_sasl_password: SecretStr = SecretStr("")
    kafka_ssl_cafile: Path | None = None
    kafka_ssl_certfile: Path | None = None
    kafka_ssl_keyfile: Path | None = None
    # Windowing. K, T and the views must be those the bundle was trained with (a detector
    # refuses a bundle whose window spec differs) unless follow_bundle_window is set.
    window_k: int = Field(8, ge=1, le=256)
    window_seconds: float = Field(10.0, gt=0, le=3600)
    # Every flow is windowed once per view: by source (fan-out), by destination (fan-in).
    window_views: str = "src,dst"
    # How the flows topic is keyed (partitioned) by sensors.
    window_key: WindowKey = "src"
    # Wall-clock silence after which an open window closes (default: T). Serving only:
    # training has no wall clock, so this is not part of the window spec.
    window_idle_s: float | None = Field(None, gt=0, le=3600)
    follow_bundle_window: bool = False
    # The memory bound of open windows (deploy/README.md, "Memory"): past either, the least
    # recently active windows close early (closed_by "pressure"). Memory in MB over all views
    # (the engine's estimate, edgeloop_open_window_bytes), and windows per view.
    window_memory_mb: float = Field(192.0, gt=0, le=1_000_000)
    max_open_windows: int = Field(200_000, ge=1)
    # Hosts remembered per view for host history (inference.history): the memory bound.
    max_hosts: int = Field(50_000, ge=1, le=10_000_000)
    # How host history is counted: "compiled" (the C kernel setup.py builds,
    # inference/_history_kernel.pyx: 0.6-0.7 us a flow against numpy's 6-12), "numpy", or
    # "auto" (compiled where it was built, else numpy, with a warning at start). The same
    # features bit for bit either way. "compiled" refuses to start where the kernel is missing.
    host_history: Literal["auto", "compiled", "numpy"] = "auto"
    # Batched inference: up to N windows or M milliseconds. Under load batches fill to N
    # long before the wait; at 5,000 flows/s a 5 ms wait (with a 5 ms fetch wait) gave
    # p50 29 ms / p99 median 63 ms produced->detection against 35 / 83 with 20 and 10
    # (five alternated runs), at the same flows/s.
    batch_max: int = Field(256, ge=1, le=65536)
    batch_wait_ms: float = Field(5.0, ge=0, le=10_000)
    # The flows messages read between two ticks (every batch_wait_ms, at least 5 ms) are
    # windowed in one push, or as soon as they hold this many flows (0: each message alone,
    # as it is read). A live sensor sends about 50 flows a message (200 a batch over 4
    # partitions): the engine in process took 41-48 us a flow in pushes of 50 against 23-28
    # in pushes of 500 (README, "Small messages"). The windows of a push are scored in the same tick, so a flow waits
    # about as long as when its windows waited for the tick instead.
    coalesce_flows: int = Field(2000, ge=0, le=1_000_000)
    # How often the worker commits the flows offsets whose flows are all in emitted windows.
    commit_interval_s: float = Field(1.0, gt=0, le=60)
    # Routing.
    uncertain_rate_per_s: float = Field(50.0, ge=0)
    audit_sample: float = Field(0.01, ge=0, le=1)
    alert_min_windows: int = Field(2, ge=1)
    alert_interval_s: float = Field(5.0, gt=0)
    # Model: a bundle directory or a registry version; empty = registry's current, else shipped default.
    model: str = ""
    # Score with the bundle's int8 model (bundles trained with --int8 carry one): measured on
    # the shipped bundle, the engine in process 1.27x the flows/s and one worker 1.20x, with
    # 0.38% of the shipped lab captures' verdicts moved, mostly to or from uncertain
    # (README, "int8 at the edge"). Check yours first: EDGELOOP_INT8=1 edgeloop score FILE.
    # A bundle or release without an int8 model is refused, not served in fp32.
    int8: bool = False
    # The shape rules a detector applies on top of its model (inference.onnx_detector): a
    # destination window shaped like a spoofed flood (flood_shape) and a source window shaped
    # like one client's repeated sessions to one service (repeat_shape), called benign, go to
    # `uncertain`. Comma-separated, or "none". Leave repeat_shape out where pollers fill the
    # uncertain channel: edgeloop_uncertain_gates_total{gate="repeat_shape"} counts what it
    # defers. Without it, a brute force of a protocol the model never learned (FTP) can be
    # called benign (docs/openworld.md, rule 20). one_service (on since rule 27): a source
    # window of 4 flows or more to one service, called a port scan or a host sweep, takes the
    # best class it can show; edgeloop_windows_reranked_total counts it (rule 23: it turned
    # most floods from an address that had scanned from syn_scan into syn_flood, and moved
    # nothing else measured, but gained less than the rule asked); a window whose best class
    # left is benign goes to `uncertain` instead (gate one_service; rule 24).
    shape_rules: str = ",".join(DEFAULT_SHAPE_RULES)  # the detector's own default, one list
    # Freeze what the worker holds at startup out of Python's cyclic garbage collector
    # (streams.metrics.freeze_startup): a full collection then walks only what the worker
    # made since (52-67 ms -> 6-10 ms a full collection in a worker;
    # edgeloop_gc_pause_seconds shows every pause). Off only to compare.
    gc_freeze: bool = True
    # Worker identity and metrics.
    worker_id: str = ""
    group_id: str = "edgeloop-edge"
    metrics_port: int = Field(9400, ge=0, le=65535)
    # Bind address of /metrics: 0.0.0.0 where Prometheus scrapes from another host or pod.
    metrics_addr: str = "127.0.0.1"
    # Replication factor when edgeloop creates topics (1 for the embedded broker).
    replication_factor: int = Field(1, ge=1, le=16)
    # faust consumer tuning. DESIGN.md: a 20 s poll interval is stable on Tansu under load.
    # Measured here: Tansu holds a joining member for half the session timeout, so 10 s
    # gives a 5 s join (30 s gave 15 s); heartbeats every 2 s keep it well inside.
    max_poll_interval_s: float = Field(20.0, gt=0)
    session_timeout_s: float = Field(10.0, gt=0)
    heartbeat_s: float = Field(2.0, gt=0)
    rebalance_timeout_s: float = Field(20.0, gt=0)
    # Tansu holds every fetch for the full wait (see streams/faust_transport.py), so this is
    # latency on every message; Apache Kafka answers as soon as data arrives.
    fetch_max_wait_ms: int = Field(5, ge=1, le=30_000)
    # Compression of what edgeloop produces (flows, detections, uncertain, alerts).
    # zstd: aiokafka compresses lz4 at level 9 (LZ4HC, 76 MB/s on a detections batch here)
    # and gzip at 9 (17 MB/s); zstd at the broker's level 3 runs at 384 MB/s and packs tighter
    # (3.55x against lz4's 2.46x). One worker, 200,000 flows, best of 3 alternated: zstd
    # 33,127, lz4 29,202, none 34,602 flows/s. Apache Kafka takes zstd from 2.1 on.
    compression: Compression = "zstd"
    # How sensors (`edgeloop replay`, `edgeloop capture`) encode a flows message: "json"
    # (edgeloop.flows/1, any producer can write it) or "arrow" (an Arrow IPC stream with a
    # `content-type` header; contracts/arrow_flows.py). Detectors read both, message by
    # message. Arrow is 0.40-0.50x the bytes of JSON before compression and 2.6x quicker to
    # decode into the windower's columns at 500 flows a message; README, "Arrow payloads".
    flow_payload: Literal["json", "arrow"] = "json"
    # Directory of trusted *.pub keys (streams/signing.py): detectors and enforcers apply only
    # policies.active records and model releases signed by one of them. Unset: <data_dir>/
    # trusted-keys; with no keys there, every record is refused (dead-lettered as unsigned or
    # unknown_signer) unless allow_unsigned is set, which is for a lab only.
    trusted_keys: Path | None = None
    allow_unsigned: bool = False
    # The key `edgeloop release` and the agent's retrainer sign model releases with
    # (a private key file from `edgeloop keys new`). Unset: releases go out unsigned.
    release_key: Path | None = None
    # Where detectors fetch a released bundle: <model_store>/<version>, by its content hash,
    # never from a path in the release (default: <data_dir>/registry; on a fleet, a copy of
    # the core's registry or a shared read-only mount).
    model_store: Path | None = None
    # LLM endpoint: any OpenAI-compatible server. Empty base URL = offline mode.
    llm_base_url: str = ""
    llm_model: str = ""
    llm_api_key: SecretStr = SecretStr("")
    llm_timeout_s: float = Field(60.0, gt=0)
    llm_max_retries: int = Field(2, ge=0, le=10)
    # The LLM budget is a rate: requests and tokens per hour (sliding), not per process lifetime.
    llm_max_requests: int = Field(1000, ge=0)
    llm_max_tokens: int = Field(2_000_000, ge=0)
    # The model's context in tokens (0: learned from the server's first refusal); the agent
    # sizes its labelling batches to it.
    llm_context_tokens: int = Field(0, ge=0)

    @field_validator("topic_prefix")
    @classmethod
    def _prefix(cls, v: str) -> str:
        if any(c.isspace() for c in v):
            raise ValueError("must not contain whitespace")
        return v

    @field_validator("window_views")
    @classmethod
    def _views(cls, v: str) -> str:
        from contracts.window import parse_views

        return ",".join(parse_views(v))

    @field_validator("shape_rules")
    @classmethod
    def _shape_rules(cls, v: str) -> str:
        from contracts.window import parse_shape_rules

        return ",".join(parse_shape_rules(v)) or "none"

    @field_validator("heartbeat_s")
    @classmethod
    def _heartbeat(cls, v: float, info: ValidationInfo) -> float:
        session = info.data.get("session_timeout_s")
        if session is not None and v * 3 > session:
            raise ValueError(f"must be at most a third of EDGELOOP_SESSION_TIMEOUT_S ({session})")
        return v

    @property
    def kafka_compression(self) -> str | None:
        """The value Kafka clients take for `compression_type` (None: uncompressed)."""
        return None if self.compression == "none" else self.compression

    @property
    def views(self) -> tuple[str, ...]:
        return tuple(self.window_views.split(","))

    @property
    def offline(self) -> bool:
        return not self.llm_base_url


def load_settings(**overrides: object) -> Settings:
    """Read the environment once; a bad value raises ConfigError with the env key and value.
    The process's Kafka clients connect as these settings say (streams.kafka_security)."""
    from streams.kafka_security import KafkaSecurity, configure

    try:
        s = Settings(**overrides)
    except ValidationError as exc:
        err = exc.errors()[0]
        field = str(err["loc"][0]) if err.get("loc") else "?"
        raise ConfigError(f"EDGELOOP_{field.upper()}", err.get("input"), err["msg"]) from exc
    configure(KafkaSecurity.from_settings(s))
    return s


def bootstrap_of(s: Settings) -> str:
    """The Kafka bootstrap servers a process connects to: the named cluster, else the
    embedded broker on loopback."""
    return s.kafka_bootstrap or f"127.0.0.1:{s.embedded_port}"

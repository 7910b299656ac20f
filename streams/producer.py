"""Publishing flows: batched per partition, compressed, keyed by window key.

Records are grouped by the partition of their window key (crc32 of the source, the
destination or the pair, modulo the partition count), so every flow of a key reaches
the same edge worker however many sensors publish. One message carries up to
`batch_records` flows: the stream then pays its per-event cost once per batch.

    >>> with FlowPublisher(bootstrap, topics.flows, key="src", metrics=SensorMetrics(registry)) as pub:
    ...     pub.publish(dicts)
    >>> pub.stats

With metrics, each message's outcome is counted when the broker answers (the producer's
I/O thread calls back): flows acknowledged, or the message's error kind and its flows lost.
"""
from __future__ import annotations

import time
import zlib
from collections import defaultdict
from dataclasses import dataclass
from typing import Any, Iterable

from contracts.arrow_flows import ARROW_HEADERS, encode_flow_arrow
from contracts.errors import BrokerError
from contracts.records import encode_flow_batch
from inference.windowing import KeyMode, key_function
from streams.kafka_security import kafka_python_options
from streams.metrics import SensorMetrics


@dataclass
class PublishStats:
    records: int = 0
    messages: int = 0
    bytes: int = 0
    seconds: float = 0.0

    @property
    def rate(self) -> float:
        return self.records / self.seconds if self.seconds else 0.0


class FlowPublisher:
    def __init__(self, bootstrap: str, topic: str, key: KeyMode = "src", sensor: str = "",
                 batch_records: int = 500, compression: str | None = "lz4",
                 metrics: SensorMetrics | None = None, payload: str = "json") -> None:
        from kafka import KafkaProducer
        from kafka.errors import KafkaError

        if payload not in ("json", "arrow"):
            raise ValueError(f"payload {payload!r}: give json or arrow")
        self.topic, self.sensor, self.batch_records, self.metrics = topic, sensor, batch_records, metrics
        self.payload = payload
        self._key = key_function(key)
        try:
            self.producer = KafkaProducer(bootstrap_servers=bootstrap, **kafka_python_options(),
                                          compression_type=compression,
                                          linger_ms=5, batch_size=1 << 20, max_request_size=8 << 20,
                                          acks=1, enable_idempotence=False)
            parts = self.producer.partitions_for(topic)
        except KafkaError as exc:
            raise BrokerError(f"cannot publish to {topic} at {bootstrap}: {exc}") from exc
        if not parts:
            raise BrokerError(f"topic {topic} does not exist at {bootstrap} (run `edgeloop broker` "
                              "or create topics)")
        self.partitions = sorted(parts)
        self.stats = PublishStats()
        self._t0 = time.perf_counter()

    def partition_for(self, src_ip: str, dst_ip: str) -> int:
        h = zlib.crc32(self._key(src_ip, dst_ip).encode())
        return self.partitions[h % len(self.partitions)]

    def publish(self, records: Iterable[dict[str, Any]]) -> int:
        """Send flow dicts, one batch message per partition per `batch_records`."""
        groups: dict[int, list[dict[str, Any]]] = defaultdict(list)
        n = 0
        for r in records:
            part = self.partition_for(str(r.get("src_ip", "")), str(r.get("dst_ip", "")))
            g = groups[part]
            g.append(r)
            n += 1
            if len(g) >= self.batch_records:
                self._send(part, g)
                groups[part] = []
        for part, g in groups.items():
            if g:
                self._send(part, g)
        return n

    def send_raw(self, value: bytes, partition: int | None = None, key: bytes | None = None,
                 headers: list[tuple[str, bytes]] | None = None) -> None:
        """Send an arbitrary value (tests and tools that need malformed input)."""
        self.producer.send(self.topic, value=value, key=key, partition=partition, headers=headers)

    def _send(self, partition: int, batch: list[dict[str, Any]]) -> None:
        now = int(time.time() * 1000)
        for r in batch:
            r["produced_ms"] = now
        if self.payload == "arrow":
            value, headers = encode_flow_arrow(batch, self.sensor), ARROW_HEADERS
        else:
            value, headers = encode_flow_batch(batch, self.sensor), None
        try:
            fut = self.producer.send(self.topic, value=value, partition=partition, headers=headers)
        except Exception as exc:  # kafka-python raises KafkaError subclasses and ValueError here
            self.failed(len(batch), exc)
            raise BrokerError(f"cannot send {len(batch)} flows to {self.topic}[{partition}]: {exc}") from exc
        if self.metrics is not None:
            n, size = len(batch), len(value)
            fut.add_callback(lambda _md: self.acked(n, size))
            fut.add_errback(lambda exc: self.failed(n, exc))
        self.stats.records += len(batch)
        self.stats.messages += 1
        self.stats.bytes += len(value)

    def acked(self, flows: int, size: int) -> None:
        """The broker took a message of `flows` records (`size` bytes encoded)."""
        if self.metrics is not None:
            m = self.metrics
            m.flows_sent.inc(flows)
            m.messages_sent.inc()
            m.bytes_sent.inc(size)
            m.batch_flows.observe(flows)
            m.last_sent.set_to_current_time()

    def failed(self, flows: int, exc: BaseException) -> None:
        """A message of `flows` records did not reach the broker."""
        if self.metrics is not None:
            self.metrics.send_errors.labels(kind=type(exc).__name__).inc()
            self.metrics.flows_lost.inc(flows)

    def flush(self) -> PublishStats:
        self.producer.flush(timeout=60)
        self.stats.seconds = time.perf_counter() - self._t0
        return self.stats

    def close(self) -> None:
        self.flush()
        self.producer.close()

    def __enter__(self) -> "FlowPublisher":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

"""Topic names (with the configurable prefix) and idempotent topic creation.

    >>> t = Topics("edgeloop.")
    >>> t.flows, t.models
    ('edgeloop.flows', 'edgeloop.models')
    >>> ensure_topics("127.0.0.1:9092", t, partitions=4)
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Awaitable, Callable

from contracts.errors import BrokerError
from streams.kafka_security import aiokafka_options, kafka_python_options

# Topics whose consumers want the latest value per key forever.
COMPACTED = {"models"}
# Topics that carry per-host traffic and scale with partitions; the rest stay small.
PARTITIONED = {"flows", "detections", "uncertain"}


@dataclass(frozen=True)
class Topics:
    prefix: str = "edgeloop."

    def _n(self, name: str) -> str:
        return f"{self.prefix}{name}"

    @property
    def flows(self) -> str: return self._n("flows")
    @property
    def detections(self) -> str: return self._n("detections")
    @property
    def alerts(self) -> str: return self._n("alerts")
    @property
    def uncertain(self) -> str: return self._n("uncertain")
    @property
    def labels(self) -> str: return self._n("labels")
    @property
    def models(self) -> str: return self._n("models")
    @property
    def policies_proposed(self) -> str: return self._n("policies.proposed")
    @property
    def policies_active(self) -> str: return self._n("policies.active")
    @property
    def deadletter(self) -> str: return self._n("deadletter")

    def all(self) -> dict[str, str]:
        """Short name -> full topic name for every topic in DESIGN.md."""
        short = ("flows", "detections", "alerts", "uncertain", "labels", "models",
                 "policies.proposed", "policies.active", "deadletter")
        return {s: self._n(s) for s in short}


def ensure_topics(bootstrap: str, topics: Topics, partitions: int = 4, timeout_s: float = 15.0,
                  replication_factor: int = 1) -> list[str]:
    """Create any missing topics; return the names created. Safe to call repeatedly."""
    from kafka.admin import KafkaAdminClient, NewTopic
    from kafka.errors import KafkaError, TopicAlreadyExistsError

    try:
        admin = KafkaAdminClient(bootstrap_servers=bootstrap, **kafka_python_options(),
                                 request_timeout_ms=int(timeout_s * 1000),
                                 client_id="edgeloop-admin")
    except KafkaError as exc:
        raise BrokerError(f"cannot reach Kafka at {bootstrap}: {exc}") from exc
    try:
        existing = set(admin.list_topics())
        new = []
        for short, name in topics.all().items():
            if name in existing:
                continue
            cfg = {"cleanup.policy": "compact"} if short in COMPACTED else {}
            n = partitions if short in PARTITIONED else 1
            new.append(NewTopic(name, num_partitions=n, replication_factor=replication_factor, topic_configs=cfg))
        for t in new:
            try:
                admin.create_topics([t])
            except TopicAlreadyExistsError:
                pass
        return [t.name for t in new]
    finally:
        admin.close()




async def follow_topic(bootstrap: str, topic: str,
                       on_poll: Callable[[list[bytes]], Awaitable[None]], poll_ms: int = 500) -> None:
    """Read every value of `topic` from the beginning, with no consumer group, forever.

    For state every node needs whole (model releases, active policies): each follower sees
    every record. `on_poll` gets each poll's values, possibly none, so it can also do
    periodic work such as expiry.
    """
    from aiokafka import AIOKafkaConsumer, TopicPartition

    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, **aiokafka_options(), enable_auto_commit=False,
                                auto_offset_reset="earliest", group_id=None)
    await consumer.start()
    try:
        parts = consumer.partitions_for_topic(topic) or {0}
        consumer.assign([TopicPartition(topic, p) for p in parts])
        while True:
            batches = await consumer.getmany(timeout_ms=poll_ms)
            await on_poll([m.value for msgs in batches.values() for m in msgs])
    finally:
        await consumer.stop()

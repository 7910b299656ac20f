"""What Kafka over TLS costs: the same flows produced and consumed in plaintext and over TLS.

    .venv/bin/python tests/bench/bench_kafka_tls.py [--flows 100000] [--repeat 3]

Two embedded brokers, one of them behind a stunnel TLS front (tests/support/tls.py, a CA made here).
Alternated, best of N, in one run:
- plaintext  a kafka-python FlowPublisher (the sensors' producer) to a bare embedded broker,
             then a bare KafkaConsumer reading every message back;
- TLS        the same to a second embedded broker behind stunnel, the clients verifying its
             certificate.
Prints flows/s and MB/s each way, and the TLS handshake time of one new client.
The TLS side here is a proxy in front of the broker (an extra hop on this machine's two
cores); Apache Kafka terminates TLS in the broker itself.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # tests.support

from inference.datasets.synthetic import synthetic_flows
from streams.broker import EmbeddedBroker, free_port, wait_until_ready
from streams.kafka_security import KafkaSecurity, configure, kafka_python_options
from streams.producer import FlowPublisher
from streams.sources.files import iter_flow_dicts
from streams.topics import Topics, ensure_topics
from tests.support.tls import TlsBroker  # noqa: E402


def produce(bootstrap: str, topic: str, records: list[dict]) -> tuple[float, int]:
    t0 = time.perf_counter()
    with FlowPublisher(bootstrap, topic, batch_records=500) as pub:
        pub.publish(records)
        pub.flush()
        size = pub.stats.bytes
    return time.perf_counter() - t0, size


def consume(bootstrap: str, topic: str, messages: int) -> float:
    from kafka import KafkaConsumer

    t0 = time.perf_counter()
    c = KafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=None, auto_offset_reset="earliest",
                      enable_auto_commit=False, consumer_timeout_ms=10_000, **kafka_python_options())
    n = 0
    for _ in c:
        n += 1
        if n >= messages:
            break
    c.close()
    assert n >= messages, (n, messages)
    return time.perf_counter() - t0


def handshake(bootstrap: str) -> float:
    from kafka import KafkaAdminClient

    t0 = time.perf_counter()
    a = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=5000, **kafka_python_options())
    a.list_topics()
    a.close()
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--flows", type=int, default=100_000, help="flows produced and consumed per run")
    ap.add_argument("--repeat", type=int, default=3, help="alternated runs of each (best is printed)")
    args = ap.parse_args()
    df = synthetic_flows(hosts_per_class=max(1, -(-args.flows // (4 * 64))), flows_per_host=64, seed=0)
    records = list(iter_flow_dicts(df.head(args.flows)))
    with tempfile.TemporaryDirectory() as tmp, TlsBroker(Path(tmp)) as tb, \
            EmbeddedBroker(free_port(), log_path=Path(tmp) / "plain.log") as bare:
        tls, plain = KafkaSecurity(protocol="SSL", cafile=tb.ca), KafkaSecurity()
        configure(tls)
        wait_until_ready(tb.bootstrap, 30)
        best: dict[str, dict[str, float]] = {"plaintext": {}, "TLS": {}}
        for i in range(args.repeat):
            for name, sec, boot in (("plaintext", plain, bare.bootstrap), ("TLS", tls, tb.bootstrap)):
                configure(sec)
                topics = Topics(f"bench{uuid.uuid4().hex[:6]}.")
                ensure_topics(boot, topics, partitions=4)
                took, size = produce(boot, topics.flows, records)
                back = consume(boot, topics.flows, -(-len(records) // 500))
                hs = handshake(boot)
                b = best[name]
                b["produce"] = min(b.get("produce", 1e9), took)
                b["consume"] = min(b.get("consume", 1e9), back)
                b["handshake"] = min(b.get("handshake", 1e9), hs)
                b["bytes"] = size
        configure(plain)
    n = len(records)
    print(f"{n:,} flows ({best['TLS']['bytes'] / 1e6:.1f} MB of flow messages), best of {args.repeat}, alternated")
    print(f"{'':<11}{'produce flows/s':>17}{'MB/s':>8}{'consume flows/s':>17}{'MB/s':>8}{'new client ms':>15}")
    for name, b in best.items():
        print(f"{name:<11}{n / b['produce']:>17,.0f}{b['bytes'] / b['produce'] / 1e6:>8.1f}"
              f"{n / b['consume']:>17,.0f}{b['bytes'] / b['consume'] / 1e6:>8.1f}{b['handshake'] * 1e3:>15.1f}")
    p, t = best["plaintext"], best["TLS"]
    print(f"TLS / plaintext time: produce {t['produce'] / p['produce']:.2f}x, consume {t['consume'] / p['consume']:.2f}x")


if __name__ == "__main__":
    main()

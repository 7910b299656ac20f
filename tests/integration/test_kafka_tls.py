"""Kafka over TLS for real: stunnel, with a certificate from a CA made here, in front of the
embedded broker (which speaks PLAINTEXT only and advertises the TLS front, so every client
connection goes through it).

An `edgeloop detect` worker (faust for the flows, aiokafka for the model and policy
watchers, kafka-python for its producer of dead letters) reads flows published over TLS by
kafka-python and writes detections read back over TLS. A plaintext client and a client that
trusts another CA get nothing.

SASL is not exercised end to end: Tansu 0.6.0 with memory storage cannot hold a SCRAM user
while `--authentication` is on (creating one needs an authenticated connection), and without
it answers every SASL handshake "unsupported mechanism". tests/unit/test_kafka_security.py
shows the SASL settings reaching all three clients.
"""
from __future__ import annotations

import uuid

import pytest

from contracts.errors import BrokerError
from inference.datasets.synthetic import synthetic_flows
from streams.broker import EmbeddedBroker, free_port, wait_until_ready
from streams.kafka_security import KafkaSecurity, configure, current
from streams.producer import FlowPublisher
from streams.sources.replay import replay_frame
from streams.topics import Topics, ensure_topics
from tests.conftest import detections_of, read_topic
from tests.support.tls import TlsBroker, stunnel_binary

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def tls_broker(tmp_path_factory: pytest.TempPathFactory):
    if stunnel_binary() is None:  # scripts/setup-deploy-tools.sh installs it; missing means the setup is broken
        pytest.fail("stunnel is not installed: run `make deploy-tools` (scripts/setup-deploy-tools.sh)")
    before = current()
    with TlsBroker(tmp_path_factory.mktemp("kafka-tls")) as tb:
        configure(KafkaSecurity(protocol="SSL", cafile=tb.ca))  # this process's clients (publisher, reader)
        try:
            wait_until_ready(tb.bootstrap, timeout_s=30)
            yield tb
        finally:
            configure(before)


def _refused(sec: KafkaSecurity, bootstrap: str) -> str:
    before = current()
    configure(sec)
    try:
        wait_until_ready(bootstrap, timeout_s=4)
    except BrokerError as exc:
        return str(exc)
    finally:
        configure(before)
    return ""


def test_a_detector_reads_flows_and_writes_detections_over_tls(tls_broker, edge_worker, tiny_bundle):
    topics = Topics(f"tls{uuid.uuid4().hex[:6]}.")
    ensure_topics(tls_broker.bootstrap, topics, partitions=2)
    w = edge_worker(topics, tiny_bundle.path, kafka_bootstrap=tls_broker.bootstrap, kafka_security_protocol="SSL",
                    kafka_ssl_cafile=tls_broker.ca, window_idle_s=2, alert_interval_s=1)
    df = synthetic_flows(hosts_per_class=2, flows_per_host=24, seed=3)
    with FlowPublisher(tls_broker.bootstrap, topics.flows) as pub:
        replay_frame(df, pub, progress=False)
    w.wait_for("edgeloop_flows_in_total", lambda v: v == len(df), timeout=90)
    values = read_topic(tls_broker.bootstrap, topics.detections,
                        lambda vs: sum(len(d["flow_ids"]) for d in detections_of(vs)) >= 2 * len(df), timeout=60)
    dets = detections_of(values)
    assert sorted(f for d in dets if d["view"] == "src" for f in d["flow_ids"]) == sorted(df["flow_id"])
    assert w.sample("edgeloop_model_info", {"version": tiny_bundle.version}) == 1


def test_the_tls_front_refuses_plaintext_and_other_cas(tls_broker):
    assert _refused(KafkaSecurity(), tls_broker.bootstrap), "a plaintext client reached the broker through TLS"
    assert _refused(KafkaSecurity(protocol="SSL", cafile=tls_broker.other_ca), tls_broker.bootstrap), \
        "a client trusting another CA accepted the broker's certificate"
    assert _refused(KafkaSecurity(protocol="SSL", cafile=tls_broker.ca), tls_broker.bootstrap) == ""


def test_the_embedded_broker_will_not_start_where_clients_expect_tls(tls_broker):
    before = current()
    configure(KafkaSecurity(protocol="SSL", cafile=tls_broker.ca))
    try:
        with pytest.raises(BrokerError, match="speaks PLAINTEXT"):
            EmbeddedBroker(free_port()).start()
    finally:
        configure(before)

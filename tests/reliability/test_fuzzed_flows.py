"""Fuzzed input into a running detector on the real broker: nothing crashes, nothing stalls,
nothing vanishes.

A seeded generator of our own makes the bad input the edge meets in the field: values that
are not JSON, JSON of the wrong shape, deep nesting, NaN / Infinity / negative / huge
numbers, invalid UTF-8, an oversize value, a batch over the record limit, and batches of 500
with one bad record in them. Good flows are interleaved. The test checks, and prints:

- every good record is decoded (edgeloop_flows_in_total), so 0 good records are lost;
- every bad item has exactly one dead letter with a reason, and its value is replayable:
  a bad record of a batch is kept whole (its position in `index`), a whole bad message is
  kept whole or, when cut, points at its partition and offset;
- the worker never restarts its agent (no crash in its log), and a bad message costs
  under 100 ms: 50 deeply nested values ahead of a good batch delay it by less than 5 s
  beyond the same batch alone.
"""
from __future__ import annotations

import base64
import json
import random
import time

import pytest

from contracts.records import MAX_BATCH_RECORDS, encode_flow_batch
from inference.bundle import DEFAULT_BUNDLE_DIR
from streams.producer import FlowPublisher

pytestmark = pytest.mark.integration

DEEP = b"[" * 100_000 + b"]" * 100_000


def flow(i: int, tag: str = "g") -> dict:
    """A physically consistent flow with a unique id."""
    t = 1_700_000_000_000 + i * 7
    return dict(schema="edgeloop.flow/1", flow_id=f"{tag}-{i}", first_seen_ms=t, last_seen_ms=t + 40,
                src_ip=f"10.9.{i // 250 % 250}.{i % 250 + 1}", dst_ip="10.9.255.1", src_port=40000 + i % 20000,
                dst_port=443, protocol=6, packets=6, bytes=900, src2dst_packets=3, dst2src_packets=3,
                min_ps=60, mean_ps=150, max_ps=400, syn_packets=2, ack_packets=5)


def bad_records(rng: random.Random) -> list[tuple[str, bytes]]:
    """(reason, raw JSON of one record) for a record that must fail alone inside a batch."""
    g = json.dumps(flow(rng.randrange(10**6), "bad"))[:-1]  # an open object to append a field to
    return [
        ("non_finite", (g + ',"duration_ms":NaN}').encode()),
        ("non_finite", (g + ',"mean_piat_ms":Infinity}').encode()),
        ("non_finite", (g + ',"max_ps":-Infinity}').encode()),
        ("invalid", (g + ',"bytes":-5}').encode()),
        ("invalid", (g + ',"packets":1e300}').encode()),
        ("huge_number", (g + ',"bytes":' + "7" * 5000 + "}").encode()),
        ("bad_utf8", (g + ',"user_agent":"\xff\xfe\xfd"}').encode("latin-1")),
        ("invalid", b'"a string, not a record"'),
        ("invalid", b"[1, [2, [3]]]"),
        ("invalid", b"null"),
        ("invalid", (g + ',"src_ip":{"nested":[1,2,3]}}').encode()),
        ("missing_field", b'{"schema":"edgeloop.flow/1","flow_id":"only-an-id"}'),
        ("schema_version", (g.replace("edgeloop.flow/1", "edgeloop.flow/7") + "}").encode()),
    ]


def bad_messages(rng: random.Random) -> list[tuple[str, bytes]]:
    """(reason, value) for a whole message that must be dead-lettered as one."""
    noise = bytes(rng.randrange(256) for _ in range(300))
    return [
        ("bad_json", noise),
        ("bad_json", b'{"schema":"edgeloop.flows/1","records":[{"flow_id":'),
        ("bad_json", b""),
        ("too_deep", DEEP),
        ("too_large", b'{"x":"' + b"a" * (9 * 1024 * 1024) + b'"}'),
        ("invalid", b'{"schema":"edgeloop.flows/1","records":"not a list"}'),
        ("missing_field", b'{"schema":"edgeloop.flows/1","sensor":"s"}'),
        ("invalid", b"12345"),
        ("bad_utf8", json.dumps(flow(999_999, "whole")).encode().replace(b"10.9.255.1", b"10.9.\xff.1")),
    ]


def by_reason(item: tuple[str, int | None]) -> tuple[str, int]:
    """(reason, index) in order, a whole message (index None) first."""
    return item[0], -1 if item[1] is None else item[1]


def arrived(w, topics, topic_reader, good: int, expected: list) -> list[dict]:
    """Wait until the worker decoded `good` records and the dead letters of `expected` are
    out; require exactly `good` (none lost, none twice); the dead letters."""
    w.wait_for("edgeloop_flows_in_total", lambda v: v >= good, timeout=120)
    dl = [json.loads(v) for v in topic_reader(topics.deadletter, lambda vs: len(vs) >= len(expected), timeout=60)]
    time.sleep(1.0)
    assert w.sample("edgeloop_flows_in_total") == good, "a good record was lost or counted twice"
    return dl


def test_fuzzed_flows_are_dead_lettered_one_by_one_and_good_ones_all_arrive(
        broker, topics, edge_worker, topic_reader) -> None:
    rng = random.Random(2026)
    w = edge_worker(topics, DEFAULT_BUNDLE_DIR, window_idle_s=2)
    good = 0
    expected: list[tuple[str, int | None]] = []   # (reason, index in its batch or None)
    with FlowPublisher(broker.bootstrap, topics.flows) as pub:
        pub.producer.config["max_request_size"] = 16 << 20
        sent_whole = bad_messages(rng)
        for reason, raw in sent_whole:
            pub.send_raw(raw, partition=rng.randrange(4))
            expected.append((reason, None))
        # One bad record in 500, each kind in its own batch, at a random place.
        for reason, raw in bad_records(rng):
            at = rng.randrange(500)
            recs = [json.dumps(flow(good + j)).encode() for j in range(499)]
            recs.insert(at, raw)
            good += 499
            pub.send_raw(b'{"schema":"edgeloop.flows/1","sensor":"fuzz","records":[' + b",".join(recs) + b"]}",
                         partition=rng.randrange(4))
            expected.append((reason, at))
        # A batch one record over the limit: the last record is refused, not the batch.
        over = [flow(good + j) for j in range(MAX_BATCH_RECORDS + 1)]
        pub.send_raw(encode_flow_batch(over, "fuzz"), partition=0)
        good += MAX_BATCH_RECORDS
        expected.append(("over_batch_limit", MAX_BATCH_RECORDS))
        pub.producer.flush()
    dl = arrived(w, topics, topic_reader, good, expected)
    got = sorted(((d["reason"], d.get("index")) for d in dl), key=by_reason)
    print(f"\nfuzz: {good:,} good records all decoded; {len(dl)} dead letters for {len(expected)} bad items: "
          f"{sorted({r for r, _ in got})}")
    assert got == sorted(expected, key=by_reason)
    for d in dl:
        assert d["source_topic"] == topics.flows and d["partition"] is not None and d["offset"] is not None
        assert d["error"]
        if d.get("index") is not None:   # one record of a batch: kept whole, parseable again
            assert not d.get("truncated"), d
            json.loads(d["value"])
        else:                        # a whole message: kept whole (text, or base64 when it is not
            assert d["truncated"] == (d["value_bytes"] > 65536)   # UTF-8), or cut with its pointer
            kept = (base64.b64decode(d["value"]) if d.get("value_encoding") == "base64"
                    else d["value"].encode("utf-8"))
            if d["truncated"]:  # the message's first 64 Ki characters (or bytes), its rest at the offset
                assert len(kept) >= 65536 and any(raw.startswith(kept) for _, raw in sent_whole), d["reason"]
            else:
                assert any(raw == kept for _, raw in sent_whole), d["reason"]
    w.assert_alive()
    assert "Traceback" not in w.log.read_text(), "the worker's agent crashed on fuzzed input"


def test_a_bad_message_costs_under_100_ms(broker, topics, edge_worker) -> None:
    w = edge_worker(topics, DEFAULT_BUNDLE_DIR, window_idle_s=2)
    n_bad, batch = 50, [flow(j, "t") for j in range(200)]
    took = {}
    with FlowPublisher(broker.bootstrap, topics.flows) as pub:
        pub.producer.config["max_request_size"] = 16 << 20
        for name, bad in (("alone", 0), ("after bad", n_bad), ("alone again", 0)):
            before = w.sample("edgeloop_flows_in_total")
            t = time.perf_counter()
            for _ in range(bad):
                pub.send_raw(DEEP, partition=0)
            pub.send_raw(encode_flow_batch([dict(f, flow_id=f"{f['flow_id']}-{name}") for f in batch], "t"),
                         partition=0)
            pub.producer.flush()
            w.wait_for("edgeloop_flows_in_total", lambda v: v >= before + len(batch), timeout=60)
            took[name] = time.perf_counter() - t
    extra = took["after bad"] - min(took["alone"], took["alone again"])
    print(f"\n{n_bad} deeply nested values ahead of a good batch: {took}; "
          f"{1000 * extra / n_bad:.1f} ms per bad message")
    assert extra / n_bad < 0.1, took
    assert w.sample("edgeloop_deadletter_records_total") == n_bad
    w.assert_alive()


def test_arrow_payloads_bad_rows_go_alone_and_good_rows_all_arrive(broker, topics, edge_worker, topic_reader) -> None:
    """Arrow IPC flows messages (a `content-type` header) beside JSON ones on the same topic:
    one bad row in 500 is dead-lettered alone (replayable as JSON), a message that is not an
    Arrow stream is one dead letter whose value is the message itself (base64), and every
    good row is decoded."""
    from contracts.arrow_flows import ARROW_HEADERS, encode_flow_arrow
    from contracts.errors import RecordError
    from contracts.records import FlowRecord, validate

    rng = random.Random(41)
    w = edge_worker(topics, DEFAULT_BUNDLE_DIR, window_idle_s=2)
    faults = [("invalid", {"packets": 0}), ("non_finite", {"duration_ms": float("nan")}),
              ("invalid", {"flow_id": ""}), ("invalid", {"rst_packets": 99}), ("invalid", {"ip_version": 5})]
    expected: list[tuple[str, int | None]] = []
    whole = {b"\xff\x00 not arrow at all": "bad_arrow", encode_flow_arrow([flow(7, "cut")])[:-40]: "bad_arrow"}
    with FlowPublisher(broker.bootstrap, topics.flows, payload="arrow") as pub:
        pub.publish(flow(i, "arrow") for i in range(3000))          # the publisher's own Arrow messages
        good = 3000
        for k, (reason, change) in enumerate(faults):
            recs = [flow(10_000 + 500 * k + j, "ab") for j in range(500)]
            at = rng.randrange(500)
            recs[at] = dict(recs[at], **change)
            pub.send_raw(encode_flow_arrow(recs), partition=rng.randrange(4), headers=ARROW_HEADERS)
            good += 499
            expected.append((reason, at))
        for raw, reason in whole.items():
            pub.send_raw(raw, partition=rng.randrange(4), headers=ARROW_HEADERS)
            expected.append((reason, None))
        pub.send_raw(encode_flow_batch([flow(20_000 + j, "json") for j in range(100)]), partition=0)  # JSON beside
        good += 100
        pub.producer.flush()
    dl = arrived(w, topics, topic_reader, good, expected)
    assert sorted(((d["reason"], d.get("index")) for d in dl), key=by_reason) == sorted(expected, key=by_reason)
    for d in dl:
        if d.get("index") is not None:
            assert d["value_encoding"] == "utf-8"
            with pytest.raises(RecordError) as again:      # replayed, the row is refused the same way
                validate(FlowRecord, json.loads(d["value"]))
            assert again.value.reason == d["reason"]
        else:
            assert d["value_encoding"] == "base64" and base64.b64decode(d["value"]) in whole
    print(f"\narrow: {good:,} good rows decoded, {len(dl)} dead letters: {sorted({d['reason'] for d in dl})}")
    w.assert_alive()
    assert "Traceback" not in w.log.read_text()

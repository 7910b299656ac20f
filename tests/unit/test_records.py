import json

import pytest

from streams.errors import RecordError, SchemaVersionError
from streams.records import (FLOW_FIELDS, DeadLetter, FlowRecord, decode, decode_flows, encode,
                             encode_flow_batch)

GOOD = dict(flow_id="s-1", first_seen_ms=1000, last_seen_ms=1500, src_ip="10.0.0.1", dst_ip="10.0.0.2",
            src_port=40000, dst_port=80, protocol=6, packets=10, bytes=1200, src2dst_packets=6,
            dst2src_packets=4, min_ps=60, mean_ps=120, max_ps=400, syn_packets=1)


def test_single_record_and_batch_decode_to_the_same_records():
    single = decode_flows(json.dumps(GOOD).encode())
    batch = decode_flows(encode_flow_batch([GOOD, dict(GOOD, flow_id="s-2")]))
    assert [r.flow_id for r in single] == ["s-1"]
    assert [r.flow_id for r in batch] == ["s-1", "s-2"]
    assert single[0] == batch[0]


@pytest.mark.parametrize("raw,reason", [
    (b"{not json", "bad_json"),
    (b'{"schema":"edgeloop.flow/1","packets":NaN}', "non_finite"),
    (b'{"schema":"edgeloop.flow/1","packets":Infinity}', "non_finite"),
    (json.dumps({**GOOD, "schema": "edgeloop.flow/2"}).encode(), "schema_version"),
    (json.dumps({k: v for k, v in GOOD.items() if k != "src_ip"}).encode(), "missing_field"),
    (json.dumps({**GOOD, "packets": 10**13}).encode(), "invalid"),
    (json.dumps({**GOOD, "dst_port": 70000}).encode(), "invalid"),
    (json.dumps({**GOOD, "syn_packets": 11}).encode(), "invalid"),
    (json.dumps({**GOOD, "last_seen_ms": 10}).encode(), "invalid"),
    (b"[1, 2]", "invalid"),
    (b'"' + b"x" * (9 * 1024 * 1024) + b'"', "too_large"),
])
def test_bad_values_become_errors_with_a_reason(raw, reason):
    (out,) = decode_flows(raw)
    assert isinstance(out, RecordError)
    assert out.reason == reason, out


def test_a_bad_record_inside_a_batch_keeps_the_good_ones_and_names_the_bad_one():
    bad = dict(GOOD, flow_id="bad", packets=-1)
    out = decode_flows(encode_flow_batch([GOOD, bad, dict(GOOD, flow_id="s-3")]))
    assert [type(o).__name__ for o in out] == ["FlowRecord", "RecordError", "FlowRecord"]
    assert out[1].item["flow_id"] == "bad"


def test_schema_version_error_is_a_record_error():
    with pytest.raises(SchemaVersionError):
        decode(DeadLetter, json.dumps({"schema": "edgeloop.deadletter/0"}))


def test_encode_round_trip_and_field_list():
    r = FlowRecord(**GOOD)
    assert decode(FlowRecord, encode(r)) == r
    assert "label" in FLOW_FIELDS and "schema" not in FLOW_FIELDS

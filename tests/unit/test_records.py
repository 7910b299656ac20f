import json

import pytest

from contracts.errors import RecordError, SchemaVersionError
from contracts.records import (FLOW_FIELDS, DeadLetter, FlowRecord, decode, decode_flows, encode,
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


def _batch_with(bad_record: bytes, n: int = 500, at: int = 250) -> bytes:
    """A FlowBatch of n records, the one at `at` replaced by raw JSON text."""
    recs = [json.dumps(dict(GOOD, flow_id=f"s-{i}")).encode() for i in range(n)]
    recs[at] = bad_record
    return b'{"schema":"edgeloop.flows/1","sensor":"t","records":[' + b",".join(recs) + b"]}"


@pytest.mark.parametrize("bad,reason", [
    (b'{"flow_id":"bad","packets":NaN}', "non_finite"),
    (b'{"flow_id":"bad","bytes":-Infinity}', "non_finite"),
    (b'{"flow_id":"bad","bytes":' + b"9" * 5000 + b"}", "huge_number"),
    (b'{"flow_id":"bad","user_agent":"\xff\xfe"}', "bad_utf8"),
    (b'"not an object"', "invalid"),
    (b"[[[[1]]]]", "invalid"),
    (b'{"flow_id":"bad","src_ip":{"a":[1]}}', "invalid"),
    (json.dumps(dict(GOOD, packets=-1)).encode(), "invalid"),
])
def test_one_bad_record_in_500_costs_only_itself(bad, reason):
    from contracts.records import record_json
    out = decode_flows(_batch_with(bad))
    errors = [(i, o) for i, o in enumerate(out) if isinstance(o, RecordError)]
    assert len(out) == 500 and len(errors) == 1, errors[:3]
    i, err = errors[0]
    assert (i, err.index, err.reason) == (250, 250, reason)
    assert [o.flow_id for o in out if not isinstance(o, RecordError)] == [f"s-{j}" for j in range(500) if j != 250]
    back = json.loads(record_json(err.item))  # the dead letter's value: the bad record alone, as JSON
    if isinstance(err.item, dict):   # NaN != NaN, so compare what names the record
        assert back["flow_id"] == err.item["flow_id"] and back.keys() == err.item.keys()
    else:
        assert back == err.item


def test_deep_nesting_is_a_fast_error_not_a_crash():
    import time
    raw = b"[" * 200_000 + b"]" * 200_000
    t = time.perf_counter()
    (out,) = decode_flows(raw)
    assert isinstance(out, RecordError) and out.reason == "too_deep"
    assert time.perf_counter() - t < 0.5
    inside = _batch_with(b"[" * 100_000 + b"]" * 100_000, n=10, at=3)
    (out,) = decode_flows(inside)   # a record nobody can parse spoils its message: one dead letter
    assert out.reason == "too_deep"


def test_records_over_the_batch_limit_are_dead_lettered_not_the_batch():
    from contracts.records import MAX_BATCH_RECORDS
    out = decode_flows(encode_flow_batch([dict(GOOD, flow_id=f"s-{i}") for i in range(MAX_BATCH_RECORDS + 1)]))
    assert sum(isinstance(o, FlowRecord) for o in out) == MAX_BATCH_RECORDS
    assert [(o.reason, o.index) for o in out if isinstance(o, RecordError)] == [("over_batch_limit", MAX_BATCH_RECORDS)]


def test_a_dead_letter_names_the_record_and_keeps_it_replayable():
    from contracts.records import record_json
    from streams.deadletter import dead_letter
    (err,) = [o for o in decode_flows(_batch_with(json.dumps(dict(GOOD, flow_id="bad", syn_packets=99)).encode()))
              if isinstance(o, RecordError)]
    dl = dead_letter(err, topic="edgeloop.flows", partition=1, offset=7, value=record_json(err.item))
    assert (dl.index, dl.truncated, dl.partition, dl.offset) == (250, False, 1, 7)
    assert json.loads(dl.value) == dict(GOOD, flow_id="bad", syn_packets=99)   # replayable as it was
    whole = dead_letter(RecordError("bad_json", "x"), topic="f", partition=0, offset=1, value=b"x" * 100_000)
    assert whole.truncated and whole.index is None


def _mutations(seed: int, n: int) -> list[dict]:
    """Records with random faults of every kind a producer can send (one field each)."""
    import random

    rng = random.Random(seed)
    fields = list(GOOD) + ["duration_ms", "ip_version", "label", "produced_ms", "sensor", "rst_packets"]
    values = [0, -1, 1, 2, 7, 65536, 10**12, 10**13, 10**15, 2**63, 1.5, 5.0, -0.0, 1e13, 1e14, "5", "",
              "x" * 70, "x" * 600, None, True, False, [1], {"a": 1}, "\u00e9", 4, 6]
    out = []
    for i in range(n):
        rec = dict(GOOD, flow_id=f"m-{i}")
        for _ in range(rng.choice((0, 0, 1, 1, 2))):
            f = rng.choice(fields)
            if rng.random() < 0.15:
                rec.pop(f, None)
            else:
                rec[f] = rng.choice(values)
        out.append(rec)
    return out


@pytest.mark.parametrize("seed", range(6))
def test_the_fast_row_decoder_gives_the_records_and_errors_of_decode_flows(seed):
    import msgspec

    from contracts.records import decode_flow_rows

    recs = _mutations(seed, 300)
    values = [encode_flow_batch(recs[i:i + 50]) for i in range(0, 300, 50)]
    values += [json.dumps(r).encode() for r in recs[:60]]  # single-record messages
    fast_rows = 0
    for raw in values:
        want, got = decode_flows(raw), decode_flow_rows(raw)
        assert len(want) == len(got)
        for w, g in zip(want, got):
            if isinstance(w, RecordError):
                assert isinstance(g, RecordError), (w, g)
                assert (g.reason, str(g), g.index, g.item) == (w.reason, str(w), w.index, w.item)
            else:
                assert not isinstance(g, RecordError), g
                rec = g if isinstance(g, FlowRecord) else FlowRecord(**{
                    k: v for k, v in msgspec.structs.asdict(g).items() if k != "schema_"})
                assert rec.model_dump() == w.model_dump()
                fast_rows += type(g).__name__ == "FlowRow"
    assert fast_rows >= 20  # the fast path was taken (clean single records, clean batches)


def test_a_broken_physical_rule_costs_only_its_row_on_the_fast_path():
    from contracts.records import decode_flow_rows

    batch = [dict(GOOD, flow_id=f"s-{i}") for i in range(500)]
    batch[250] = dict(GOOD, flow_id="bad", syn_packets=99)
    out = decode_flow_rows(encode_flow_batch(batch))
    assert [type(o).__name__ for o in out].count("FlowRow") == 499
    assert isinstance(out[250], RecordError) and out[250].index == 250 and out[250].item["flow_id"] == "bad"


def test_a_clean_batch_carries_its_numeric_fields_once_read_and_the_windower_takes_them():
    """A message whose rows all decode clean comes with their numeric fields as one matrix
    (read once, for the physical checks); the windower's RAW_COLUMNS are columns of it,
    equal to reading them off the rows. A message with a bad row carries none."""
    import numpy as np

    from contracts.records import NUMERIC_FIELDS, decode_flow_rows
    from inference.features import RAW_COLUMNS, raw_matrix

    batch = [dict(GOOD, flow_id=f"s-{i}", src_port=1024 + i, packets=10 + i % 7, src2dst_packets=6 + i % 7,
                  bytes=900 + 13 * i, first_seen_ms=GOOD["first_seen_ms"] + i) for i in range(300)]
    out = decode_flow_rows(encode_flow_batch(batch))
    assert out.numeric is not None and out.numeric.shape == (300, len(NUMERIC_FIELDS))
    for j, name in enumerate(NUMERIC_FIELDS):
        np.testing.assert_array_equal(out.numeric[:, j], [float(getattr(r, name)) for r in out])
    by_attribute = [[float(getattr(r, c)) for c in RAW_COLUMNS] for r in out]
    np.testing.assert_array_equal(raw_matrix(out), by_attribute)        # from the matrix read at decode
    np.testing.assert_array_equal(raw_matrix(list(out)), by_attribute)  # read now
    batch[7] = dict(GOOD, flow_id="bad", syn_packets=99)
    assert getattr(decode_flow_rows(encode_flow_batch(batch)), "numeric", None) is None

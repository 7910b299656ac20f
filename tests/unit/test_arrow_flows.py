"""Arrow IPC flows payloads: the same records, the same rules and the same detections as JSON.

The column masks of contracts.arrow_flows are checked against FlowRecord itself on fuzzed
rows (each bad value a field can hold, and FlowRecord's physical rules): a row is refused
exactly when FlowRecord refuses it, with FlowRecord's reason and message; the good rows of
the same message go on. A whole message that cannot be read is one error.
"""
from __future__ import annotations

import base64
import json
import math
import random

import msgspec
import pyarrow as pa
import pytest

from contracts.arrow_flows import (ARROW_CONTENT_TYPE, ARROW_HEADERS, FIELDS, SCHEMA, decode_flow_arrow,
                                   encode_flow_arrow, is_arrow)
from contracts.errors import RecordError
from contracts.records import MAX_BATCH_RECORDS, FlowRecord, decode_flow_rows, encode_flow_batch, validate
from streams.deadletter import dead_letter


def flow(i: int) -> dict:
    t = 1_700_000_000_000 + i * 7
    return dict(flow_id=f"a-{i}", first_seen_ms=t, last_seen_ms=t + 40, src_ip=f"10.1.{i // 200 % 200}.{i % 200 + 1}",
                dst_ip="10.1.255.1", src_port=40000 + i % 20000, dst_port=443, protocol=6, packets=6, bytes=900,
                src2dst_packets=3, dst2src_packets=3, min_ps=60.0, mean_ps=150.0, max_ps=400.0, syn_packets=2,
                ack_packets=5, user_agent="curl/8" if i % 3 else "", label=None if i % 2 else "benign",
                produced_ms=None if i % 5 == 0 else t + 90)


# One bad value per rule a field carries, and each physical rule broken alone.
BAD_VALUES = [
    ("flow_id", ""), ("flow_id", "x" * 129), ("flow_id", None), ("src_ip", "1"), ("dst_ip", "d" * 65),
    ("sensor", "s" * 513), ("user_agent", "u" * 513), ("label", "l" * 65), ("first_seen_ms", -1),
    ("last_seen_ms", 10**14 + 1), ("src_port", 65536), ("dst_port", -3), ("protocol", 256), ("ip_version", 5),
    ("packets", 0), ("bytes", -5), ("bytes", 10**12 + 1), ("syn_packets", -1), ("produced_ms", -1),
    ("duration_ms", math.nan), ("mean_piat_ms", math.inf), ("max_ps", -math.inf), ("stddev_ps", -0.5),
    ("min_ps", 1e13 + 1), ("protocol", None), ("packets", None), ("dst_port", None),
    ("last_seen_ms", 1_600_000_000_000),            # before first_seen_ms
    ("src2dst_packets", 4),                          # 4 + 3 != 6 packets
    ("rst_packets", 7),                              # a flag count over packets
    ("mean_ps", 500.0),                              # min <= mean <= max broken
]


def test_a_round_trip_keeps_every_field_and_the_contract_defaults() -> None:
    rows = [flow(i) for i in range(50)]
    del rows[3]["user_agent"], rows[4]["src_port"]          # fields a record may leave out
    got = decode_flow_arrow(encode_flow_arrow(rows, sensor="s1"))
    assert not got.errors and len(got) == 50
    want = [FlowRecord.model_validate(r).model_dump(exclude={"schema_"}) for r in rows]
    assert got.table.to_pylist() == want


def test_the_masks_refuse_exactly_what_flowrecord_refuses_with_its_reason() -> None:
    rng = random.Random(7)
    rows, expect = [], {}
    for i in range(600):
        r = flow(i)
        if i % 4 == 0:
            name, value = BAD_VALUES[(i // 4) % len(BAD_VALUES)]
            r[name] = value
        if i % 97 == 5:                              # two faults in one row: still one dead letter
            r["packets"], r["bytes"] = 0, -1
        rows.append(r)
        try:
            validate(FlowRecord, r)
        except RecordError as exc:
            expect[i] = (exc.reason, str(exc))
    perm = list(range(len(rows)))
    rng.shuffle(perm)                                # the faults anywhere in the batch
    rows = [rows[i] for i in perm]
    at = {i: j for j, i in enumerate(perm)}
    expect = {at[i]: v for i, v in expect.items()}
    assert len(expect) >= 150                        # the generator makes bad rows...
    got = decode_flow_arrow(encode_flow_arrow(rows))
    assert {e.index: (e.reason, str(e)) for e in got.errors} == expect
    for e in got.errors:                             # ...each kept whole, replayable as JSON
        assert e.item["flow_id"] == rows[e.index]["flow_id"]
    good = [r["flow_id"] for j, r in enumerate(rows) if j not in expect]
    assert got.table.column("flow_id").to_pylist() == good   # every good row, in order


def _table_bytes(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as w:
        w.write_table(table)
    return sink.getvalue().to_pybytes()


def test_a_message_it_cannot_read_is_one_error_for_the_whole_message() -> None:
    good = pa.Table.from_pylist([flow(i) for i in range(3)])
    cases = {
        "bad_arrow": b'{"schema":"edgeloop.flows/1","records":[]}',
        "bad_arrow ": encode_flow_arrow([flow(1)])[:-40],                      # cut short
        "missing_field": _table_bytes(good.drop_columns(["packets"])),
        "invalid": _table_bytes(good.set_column(good.column_names.index("packets"), "packets",
                                                pa.array(["six"] * 3))),
    }
    for reason, raw in cases.items():
        got = decode_flow_arrow(raw)
        assert len(got) == 0 and [(e.reason, e.index) for e in got.errors] == [(reason.strip(), None)], reason


def test_other_producers_tables_are_cast_and_unknown_columns_ignored() -> None:
    t = pa.Table.from_pylist([flow(i) for i in range(4)])
    t = t.set_column(t.column_names.index("packets"), "packets", pa.array([6] * 4, pa.int32()))
    t = t.append_column("vlan", pa.array([7] * 4)).drop_columns(["user_agent", "label"])
    got = decode_flow_arrow(_table_bytes(t))
    assert not got.errors and got.table.column("packets").to_pylist() == [6] * 4
    assert got.table.column("user_agent").to_pylist() == [""] * 4
    lossy = t.set_column(t.column_names.index("bytes"), "bytes", pa.array([900.5] * 4))
    assert [e.reason for e in decode_flow_arrow(_table_bytes(lossy)).errors] == ["invalid"]  # 900.5 bytes


def test_the_header_says_which_payload() -> None:
    assert is_arrow(ARROW_HEADERS) and is_arrow({"Content-Type": ARROW_CONTENT_TYPE})
    assert not is_arrow(None) and not is_arrow([]) and not is_arrow([("content-type", b"application/json")])
    assert [f.name for f in FIELDS] == SCHEMA.names


def test_a_whole_arrow_message_dead_letters_as_base64_and_replays() -> None:
    raw = encode_flow_arrow([flow(1)])[:-40]
    err = decode_flow_arrow(raw).errors[0]
    dl = dead_letter(err, topic="t", partition=0, offset=3, value=raw)
    assert dl.value_encoding == "base64" and base64.b64decode(dl.value) == raw and not dl.truncated
    text = dead_letter(err, topic="t", partition=0, offset=3, value=b'{"a":1}')
    assert (text.value_encoding, text.value) == ("utf-8", '{"a":1}')


def test_the_engine_gives_the_same_detections_from_arrow_as_from_json() -> None:
    """The shipped bundle on a slice of a shipped lab capture, pushed both ways."""
    from inference.bundle import DEFAULT_BUNDLE_DIR, Bundle
    from inference.datasets.lab import lab_paths
    from inference.onnx_detector import OnnxDetector
    from streams.detector import DetectorConfig, EdgeDetector
    from streams.sources.files import iter_flow_dicts, load_flows

    path = lab_paths().eval
    if not path.is_file():
        pytest.skip(f"no lab capture at {path}")
    rows = list(iter_flow_dicts(load_flows(path).head(4000)))
    for r in rows:
        r["produced_ms"] = 1
    model = OnnxDetector(Bundle.load(DEFAULT_BUNDLE_DIR))

    def run(arrow: bool) -> list[tuple[str, bytes | None, bytes]]:
        eng = EdgeDetector(model, DetectorConfig(uncertain_rate_per_s=0, audit_sample=0.05), clock=lambda: 0.0)
        out = []
        for a in range(0, len(rows), 500):
            if arrow:
                eng.ingest_arrow(decode_flow_arrow(encode_flow_arrow(rows[a:a + 500])).table)
            else:
                eng.ingest(decode_flow_rows(encode_flow_batch(rows[a:a + 500])))
            out += eng.tick() if eng.due() else []
        out += eng.flush_all()
        norm = []
        for o in out:   # the scoring wall-clock time apart
            v = msgspec.json.decode(o.value)
            for d in v.get("detections", []) if isinstance(v, dict) else []:
                d.pop("scored_ms", None)
            norm.append((o.topic, o.key, json.dumps(v, sort_keys=True).encode()))
        return norm

    js, ar = run(False), run(True)
    assert {t for t, _, _ in js} >= {"detections", "uncertain"}
    assert ar == js


def test_a_small_message_cannot_unpack_into_a_large_table() -> None:
    """Refused from the messages' metadata, before a buffer is read: compressed buffers (8 MB
    of zstd could stand for gigabytes), more rows than a batch may hold, and columns whose
    few bytes stand for many (dictionary-encoded)."""
    t = pa.Table.from_pylist([flow(i) for i in range(300)], schema=SCHEMA)
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, SCHEMA, options=pa.ipc.IpcWriteOptions(compression="zstd")) as w:
        w.write_table(t)
    got = decode_flow_arrow(sink.getvalue().to_pybytes())
    assert len(got) == 0 and [e.reason for e in got.errors] == ["bad_arrow"] and "compressed" in str(got.errors[0])
    many = [flow(i) for i in range(MAX_BATCH_RECORDS + 1)]
    assert [e.reason for e in decode_flow_arrow(encode_flow_arrow(many)).errors] == ["over_batch_limit"]
    ok = decode_flow_arrow(encode_flow_arrow(many[:MAX_BATCH_RECORDS]))
    assert not ok.errors and len(ok) == MAX_BATCH_RECORDS
    coded = t.set_column(0, "flow_id", t.column("flow_id").dictionary_encode())
    got = decode_flow_arrow(_table_bytes(coded))
    assert [(e.reason, e.index) for e in got.errors] == [("invalid", None)] and "dictionary" in str(got.errors[0])


def test_corrupted_arrow_messages_never_raise_and_never_pass_a_bad_row() -> None:
    """Seeded byte flips, cuts and splices of a valid message: each is read, refused whole or
    row by row, and every row it lets through is a valid FlowRecord."""
    rng = random.Random(5)
    good = encode_flow_arrow([flow(i) for i in range(40)])
    outcomes: dict[str, int] = {}
    for k in range(400):
        raw = bytearray(good)
        for _ in range(rng.randint(1, 8)):
            raw[rng.randrange(len(raw))] = rng.randrange(256)
        if k % 7 == 0:
            raw = raw[:rng.randrange(len(raw))]
        got = decode_flow_arrow(bytes(raw))
        for row in got.table.to_pylist():
            validate(FlowRecord, row)
        kind = "whole" if any(e.index is None for e in got.errors) else "rows" if got.errors else "clean"
        outcomes[kind] = outcomes.get(kind, 0) + 1
    assert outcomes.get("whole", 0) > 50 and outcomes.get("rows", 0) > 20, outcomes  # both layers reached

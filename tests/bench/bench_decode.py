"""Decoding `flows` messages: the edge's msgspec row decoder beside the pydantic decoder it
replaced and a bare json.loads (the raw baseline), alternated, best of N, on the same
messages. Prints figures; it does not pass or fail.

    .venv/bin/python tests/bench/bench_decode.py [--flows 100000] [--batch 500] [--repeat 5]

Messages are FlowBatches of `--batch` lab-like records (every field a sensor fills). The
same batches are also sent as Arrow IPC streams (EDGELOOP_FLOW_PAYLOAD=arrow,
contracts/arrow_flows.py) and decoded by the edge's Arrow decoder, which checks every rule
as column masks. The "engine input" rows go on to what the windower takes (the RAW_COLUMNS
matrix and the other fields as columns): from JSON rows (raw_matrix, extra_columns) or
straight from the Arrow table (arrow_columns). The "1 bad in 500" rows put one record that
breaks a physical rule (more SYNs than packets) in every message: msgspec still decodes the
batch, the masks find the row, and only that row is judged again by pydantic; a type error
(a string for a count) sends a JSON message down the per-record path instead (an Arrow
column has one type: a string among counts cannot be sent).
"""
from __future__ import annotations

import argparse
import gc
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))


def records(n: int) -> list[dict]:
    out = []
    for i in range(n):
        t = 1_700_000_000_000 + i * 3
        out.append(dict(schema="edgeloop.flow/1", flow_id=f"bench-{i}", sensor="s1", first_seen_ms=t,
                        last_seen_ms=t + 220, src_ip=f"10.7.{i % 200}.{i % 250 + 1}", dst_ip=f"10.8.0.{i % 40 + 1}",
                        src_port=40000 + i % 20000, dst_port=443, protocol=6, ip_version=4, duration_ms=220.5,
                        packets=12, bytes=4200, src2dst_packets=7, src2dst_bytes=1100, dst2src_packets=5,
                        dst2src_bytes=3100, min_ps=54, mean_ps=350.0, stddev_ps=410.2, max_ps=1448,
                        mean_piat_ms=20.0, stddev_piat_ms=11.0, max_piat_ms=61.0, syn_packets=2, ack_packets=11,
                        psh_packets=4, fin_packets=2, src2dst_syn_packets=1, dst2src_syn_packets=1,
                        application_name="TLS", requested_server_name="example.internal"))
    return out


def messages(n: int, batch: int, fault: str | None) -> list[bytes]:
    from contracts.records import encode_flow_batch

    recs = records(n)
    out = []
    for a in range(0, n, batch):
        chunk = [dict(r) for r in recs[a:a + batch]]
        if fault == "physical":
            chunk[len(chunk) // 2]["syn_packets"] = 99
        elif fault == "type":
            chunk[len(chunk) // 2]["packets"] = "12"
        out.append(encode_flow_batch(chunk))
    return out


def arrow_payloads(n: int, batch: int, fault: str | None = None) -> list[bytes]:
    """The same batches as Arrow IPC streams, as an edgeloop sensor sends them."""
    from contracts.arrow_flows import encode_flow_arrow

    recs = records(n)
    out = []
    for a in range(0, n, batch):
        chunk = [dict(r) for r in recs[a:a + batch]]
        if fault == "physical":
            chunk[len(chunk) // 2]["syn_packets"] = 99
        out.append(encode_flow_arrow(chunk))
    return out


def engine_inputs() -> dict:
    """Each payload decoded into what the windower takes: the RAW_COLUMNS matrix, addresses,
    ids and the other fields as columns (what `EdgeDetector.ingest` / `ingest_arrow` make)."""
    from contracts.arrow_flows import decode_flow_arrow
    from contracts.records import decode_flow_rows
    from inference.features import raw_matrix
    from inference.window_batch import arrow_columns, extra_columns

    def from_json(raw: bytes) -> list:
        rows = [r for r in decode_flow_rows(raw) if not isinstance(r, Exception)]
        raw_matrix(rows), extra_columns(rows), [r.src_ip for r in rows], [r.dst_ip for r in rows]
        return rows

    def from_arrow(raw: bytes) -> list:
        ids = arrow_columns(decode_flow_arrow(raw).table)[0]
        return ids

    return {"JSON -> engine input": from_json, "Arrow IPC -> engine input": from_arrow}


def main() -> None:
    from contracts.records import decode_flow_rows, decode_flows

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--flows", type=int, default=100_000)
    ap.add_argument("--batch", type=int, default=500)
    ap.add_argument("--repeat", type=int, default=5, help="alternated runs of each; the best is reported")
    a = ap.parse_args()
    from contracts.arrow_flows import decode_flow_arrow

    decoders = {"bare json.loads": lambda raw: json.loads(raw)["records"],
                "pydantic (decode_flows)": decode_flows, "msgspec rows (decode_flow_rows)": decode_flow_rows}
    arrow_decoders = {"Arrow IPC (decode_flow_arrow)": lambda raw: decode_flow_arrow(raw).table.column(0).to_pylist()}
    print(f"{a.flows:,} flows in messages of {a.batch}; best of {a.repeat} alternated runs")
    print(f"{'messages':<22}{'decoder':<34}{'flows/s':>12}{'us/flow':>9}{'good':>9}")
    for fault, label in ((None, "clean"), ("physical", f"1 bad in {a.batch} (rule)"),
                         ("type", f"1 bad in {a.batch} (type)")):
        msgs = messages(a.flows, a.batch, fault)
        runs = {name: (dec, msgs) for name, dec in decoders.items()}
        if fault != "type":
            arrow = arrow_payloads(a.flows, a.batch, fault)
            runs.update({name: (dec, arrow) for name, dec in arrow_decoders.items()})
            inputs = engine_inputs()
            runs["JSON -> engine input"] = (inputs["JSON -> engine input"], msgs)
            runs["Arrow IPC -> engine input"] = (inputs["Arrow IPC -> engine input"], arrow)
        if fault is None:
            print(f"{'':<22}payload: JSON {sum(map(len, msgs)) / a.flows:,.0f} B/flow, "
                  f"Arrow IPC {sum(map(len, arrow)) / a.flows:,.0f} B/flow")
        best: dict[str, float] = {}
        good: dict[str, int] = {}
        for _ in range(a.repeat):
            for name, (dec, payloads) in runs.items():
                got = None
                gc.collect()
                gc.disable()   # a collection of another decoder's objects is not this one's cost
                t0 = time.perf_counter()
                got = [dec(m) for m in payloads]
                secs = time.perf_counter() - t0
                gc.enable()
                best[name] = min(best.get(name, secs), secs)
                good[name] = sum(1 for out in got for r in out if not isinstance(r, Exception))
        for name, secs in best.items():
            print(f"{label:<22}{name:<34}{a.flows / secs:12,.0f}{secs / a.flows * 1e6:9.2f}{good[name]:9,}")


if __name__ == "__main__":
    main()

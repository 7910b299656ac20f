"""What at-least-once costs the engine: the same flows through the edge engine with the
offset ledger (a token per message riding with every flow, releases after each tick,
the safe offsets computed once a second) and without it, alternated, best of N.
Prints figures; it does not pass or fail.

    .venv/bin/python tests/bench/bench_offsets.py [--flows 100000] [--sources 1500] [--repeat 5]

Flows come as the worker gets them: messages of 500 decoded records, on 4 partitions,
from `--sources` sources (so windows stay open across many messages and the ledger holds
many at once). The shipped bundle scores both views.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))


def messages(n: int, sources: int) -> list[list]:
    from contracts.records import decode_flows, encode_flow_batch

    out = []
    for a in range(0, n, 500):
        recs = []
        for i in range(a, min(a + 500, n)):
            s = i % sources
            t = 1_700_000_000_000 + i // 5
            recs.append(dict(schema="edgeloop.flow/1", flow_id=f"b-{i}", first_seen_ms=t, last_seen_ms=t + 40,
                             src_ip=f"10.7.{s // 250}.{s % 250 + 1}", dst_ip=f"10.8.0.{i % 40 + 1}",
                             src_port=40000 + i % 20000, dst_port=443, protocol=6, packets=6, bytes=900,
                             src2dst_packets=3, dst2src_packets=3, min_ps=60, mean_ps=150, max_ps=400,
                             syn_packets=2, ack_packets=5))
        out.append(list(decode_flows(encode_flow_batch(recs))))
    return out


def run(msgs: list[list], ledger: bool) -> dict:
    from inference.bundle import DEFAULT_BUNDLE_DIR, Bundle
    from inference.onnx_detector import OnnxDetector
    from streams.detector import DetectorConfig, EdgeDetector
    from streams.offsets import OffsetLedger

    eng = EdgeDetector(OnnxDetector(Bundle.load(DEFAULT_BUNDLE_DIR)), DetectorConfig(batch_wait_ms=20))
    led, views, held_max, commits = OffsetLedger(), len(eng.windower.views), 0, 0
    t0 = last_commit = time.perf_counter()
    for off, recs in enumerate(msgs):
        if ledger:
            eng.ingest(recs, led.consumed(off % 4, off // 4, len(recs) * views))
        else:
            eng.ingest(recs)
        if eng.due():
            eng.tick()
            if ledger:
                led.release(eng.take_released())
        if ledger and time.perf_counter() - last_commit >= 1.0:
            led.committed(led.committable())
            held_max, commits, last_commit = max(held_max, led.held()), commits + 1, time.perf_counter()
    eng.flush_all(closed_by="revoke")
    if ledger:
        led.release(eng.take_released())
        assert led.held() == 0
    secs = time.perf_counter() - t0
    return {"secs": secs, "held_max": held_max, "commits": commits}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--flows", type=int, default=100_000)
    ap.add_argument("--sources", type=int, default=1500)
    ap.add_argument("--repeat", type=int, default=5, help="alternated runs of each; the best is reported")
    a = ap.parse_args()
    msgs = messages(a.flows, a.sources)
    best: dict[str, dict] = {}
    for r in range(a.repeat):
        for name in ("engine alone", "engine + offset ledger"):
            got = run(msgs, ledger=name != "engine alone")
            if name not in best or got["secs"] < best[name]["secs"]:
                best[name] = got
            print(f"  run {r + 1} {name:<24} {a.flows / got['secs']:9,.0f} flows/s", flush=True)
    print(f"\n{a.flows:,} flows, {a.sources:,} sources, messages of 500, best of {a.repeat}:")
    base = best["engine alone"]["secs"]
    for name, got in best.items():
        extra = f"; messages held at most {got['held_max']}, {got['commits']} commit points" if got["commits"] else ""
        print(f"  {name:<24} {a.flows / got['secs']:9,.0f} flows/s  ({base / got['secs']:.2f}x){extra}")


if __name__ == "__main__":
    main()

"""Memory of open windows: peak RSS of the edge engine under a flood of one-flow sources,
by memory bound (`window_memory_mb`, the count cap out of the way), beside the same process
with the model loaded and no windows. Prints figures; it does not pass or fail.

    .venv/bin/python tests/bench/bench_open_windows.py [--sources 300000] [--bounds 64,192,512]
    .venv/bin/python tests/bench/bench_open_windows.py --sources 30000 --per-source 7 --bounds 64

Each run is its own process (a fresh heap): the shipped bundle in an EdgeDetector (both
views), fed `--sources` flows from distinct sources in batches of 500, encoded and decoded
as on the wire, as the worker ingests them, ticking between batches. A deployment's memory limit (1 GiB in deploy/)
must hold the cap's peak; deploy/README.md has the arithmetic.
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def one_run(sources: int, bound_mb: int, per_source: int = 1) -> dict:
    sys.path.insert(0, str(REPO))
    from contracts.records import decode_flow_rows, encode_flow_batch
    from inference.bundle import DEFAULT_BUNDLE_DIR, Bundle
    from inference.onnx_detector import OnnxDetector
    from streams.detector import DetectorConfig, EdgeDetector

    det = OnnxDetector(Bundle.load(DEFAULT_BUNDLE_DIR))
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if bound_mb == 0:
        return {"bound": 0, "rss_mb": base, "base_mb": base}
    # A still clock and flows inside one T: no window closes by time, as when 300k sources
    # arrive within a minute; only K flows or the cap close them.
    eng = EdgeDetector(det, DetectorConfig(max_open=10**9, memory_mb=bound_mb), clock=lambda: 0.0)
    t0, now, scored, opened, est = time.perf_counter(), 1_700_000_000_000, 0, 0, 0
    n = sources * per_source   # flow i comes from source i % sources: each source's window fills up
    for start in range(0, n, 500):
        rows = [dict(flow_id=f"f{i}", first_seen_ms=now + 9000 * i // n, last_seen_ms=now + 9000 * i // n + 1,
                     src_ip=f"10.{s >> 16 & 255}.{s >> 8 & 255}.{s & 255}", dst_ip="192.0.2.1",
                     src_port=1024 + i % 60000, dst_port=80, protocol=6, packets=1, bytes=60,
                     src2dst_packets=1, syn_packets=1, src2dst_syn_packets=1)
                for i in range(start, min(start + 500, n)) for s in (i % sources,)]
        # Decoded from the wire as the worker does, so each record owns its strings.
        batch = decode_flow_rows(encode_flow_batch(rows, "bench"))
        eng.ingest(batch)
        scored += sum(o.topic == "detections" for o in eng.tick())
        opened, est = max(opened, len(eng.windower)), max(est, eng.windower.open_bytes)
    took = time.perf_counter() - t0
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"bound": bound_mb, "rss_mb": rss, "base_mb": base, "flows_per_s": n / took,
            "detection_messages": scored, "max_open_seen": opened, "estimate_mb": est / 2**20}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sources", type=int, default=300_000)
    ap.add_argument("--bounds", default="64,192,512", help="window_memory_mb values, comma-separated")
    ap.add_argument("--per-source", type=int, default=1,
                    help="flows per source (7: every open window holds K-1 flows, the worst case)")
    ap.add_argument("--one", type=int, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.one is not None:
        print(json.dumps(one_run(a.sources, a.one, a.per_source)))
        return
    print(f"{a.sources:,} sources x {a.per_source} flows, both views, batches of 500; peak RSS per process")
    print(f"{'window_memory_mb':>17} {'open (max)':>11} {'estimate MB':>12} {'peak RSS MB':>12} "
          f"{'over model-only':>16} {'flows/s':>9}")
    for cap in [0, *(int(c) for c in a.bounds.split(","))]:
        out = subprocess.run([sys.executable, __file__, "--sources", str(a.sources), "--one", str(cap),
                              "--per-source", str(a.per_source)],
                             capture_output=True, text=True, check=True)
        r = json.loads(out.stdout.strip().splitlines()[-1])
        name = "model only" if cap == 0 else f"{cap:,}"
        rate = f"{r['flows_per_s']:,.0f}" if cap else "-"
        print(f"{name:>17} {r.get('max_open_seen', 0):11,} {r.get('estimate_mb', 0):12.0f} {r['rss_mb']:12.0f} "
              f"{r['rss_mb'] - r['base_mb']:16.0f} {rate:>9}")


if __name__ == "__main__":
    main()

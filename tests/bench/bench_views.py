"""What the destination view and host history cost: prints figures; it does not pass or fail.

    .venv/bin/python tests/bench/bench_views.py [--flows 60000] [--rounds 5]

On the same flows, in one process, alternated best-of-N (this machine's timings vary
by +-30%):
  1. the raw baseline: flow features only (features.flow_features over the batch);
  2. the Windower with one view (src) and with two (src, dst), each with host history;
  3. the whole edge engine (windowing, batched ONNX scoring, routing) with the default
     bundle cut by src only and by src+dst (the shipped spec);
  4. memory under a spoofed flood: 300,000 sources against one victim, host entries held
     and peak RSS, with the default max_hosts.
"""
from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from inference.datasets.synthetic import synthetic_flows  # noqa: E402
from inference.features import flow_features, raw_matrix  # noqa: E402
from inference.windowing import Windower  # noqa: E402
from streams.sources.files import records_from_frame  # noqa: E402

CHUNK = 500


def flows(n: int):
    df = synthetic_flows(hosts_per_class=max(1, n // (6 * 200)), flows_per_host=200, seed=0).iloc[:n]
    recs, _ = records_from_frame(df)
    return recs


def run_features(recs) -> float:
    t = time.perf_counter()
    for i in range(0, len(recs), CHUNK):
        flow_features(raw_matrix(recs[i:i + CHUNK]))
    return time.perf_counter() - t


def run_windower(recs, views) -> float:
    w = Windower(k=8, seconds=10, views=views, clock=lambda: 0.0)
    t = time.perf_counter()
    for i in range(0, len(recs), CHUNK):
        w.push_records(recs[i:i + CHUNK])
    w.flush()
    return time.perf_counter() - t


def run_engine(recs, views) -> tuple[float, int]:
    from inference.bundle import DEFAULT_BUNDLE_DIR, Bundle
    from inference.onnx_detector import OnnxDetector
    from streams.detector import DetectorConfig, EdgeDetector

    det = OnnxDetector(Bundle.load(DEFAULT_BUNDLE_DIR))
    det.window = det.window.model_copy(update={"views": list(views)})
    eng = EdgeDetector(det, DetectorConfig(uncertain_rate_per_s=0), clock=lambda: 0.0)
    windows = 0
    t = time.perf_counter()
    for i in range(0, len(recs), CHUNK):
        eng.ingest(recs[i:i + CHUNK])
        while len(eng.pending) >= 256:
            windows += len(eng.pending[:256])
            eng.score_pending()
    windows += len(eng.pending) + len(eng.windower)
    eng.flush_all()
    return time.perf_counter() - t, windows


def flood_memory(n: int) -> tuple[int, int, float]:
    from contracts.records import FlowRecord

    w = Windower(k=8, seconds=10, views=("src", "dst"), clock=lambda: 0.0, keep_items=False)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    for start in range(0, n, 5000):
        batch = [FlowRecord(flow_id=f"f{i}", first_seen_ms=1_000_000 + i // 30, last_seen_ms=1_000_000 + i // 30,
                            src_ip=f"{1 + i % 223}.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}", dst_ip="10.77.0.10",
                            src_port=1024 + i % 60000, dst_port=80, protocol=6, packets=1, bytes=60,
                            src2dst_packets=1, src2dst_bytes=60, syn_packets=1, src2dst_syn_packets=1)
                 for i in range(start, min(n, start + 5000))]
        w.push_records(batch)
    grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    return w.history_entries, len(w), grown / 1024


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--flows", type=int, default=60_000)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--flood", type=int, default=300_000)
    a = ap.parse_args()
    recs = flows(a.flows)
    n = len(recs)
    best: dict[str, float] = {}
    wins: dict[str, int] = {}
    for _ in range(a.rounds):  # alternated, best of N
        for name, fn in (("features", lambda: run_features(recs)),
                         ("windower src", lambda: run_windower(recs, ("src",))),
                         ("windower src+dst", lambda: run_windower(recs, ("src", "dst"))),
                         ("engine src", lambda: run_engine(recs, ("src",))),
                         ("engine src+dst", lambda: run_engine(recs, ("src", "dst")))):
            out = fn()
            secs, count = out if isinstance(out, tuple) else (out, 0)
            best[name] = min(best.get(name, float("inf")), secs)
            wins[name] = count
    print(f"{n:,} flows, chunks of {CHUNK}, best of {a.rounds} alternated rounds")
    print(f"{'stage':<54}{'flows/s':>12}{'vs one view':>14}")
    for name in best:
        rel = ""
        if name.endswith("src+dst"):
            rel = f"{best[name.replace('src+dst', 'src')] / best[name]:>13.2f}x"
        extra = f"   ({wins[name]:,} windows)" if wins[name] else ""
        print(f"{name:<54}{n / best[name]:>12,.0f}{rel:>14}{extra}")
    entries, open_w, mb = flood_memory(a.flood)
    print(f"spoofed flood, {a.flood:,} sources -> 1 victim: host-history entries {entries:,} "
          f"(bound: 5 x max_hosts per view), open windows {open_w:,}, peak RSS grew {mb:,.0f} MB")


if __name__ == "__main__":
    main()

"""int8 at the edge (EDGELOOP_INT8=1): what it buys and what it changes. Prints figures; it
does not pass or fail.

    .venv/bin/python tests/bench/bench_int8.py [--flows 100000] [--repeat 3] [--captures eval,heldout]

1. The whole engine in this process (decode, windows, history, score, route, encode), fp32
   and int8 alternated --repeat times on the same synthetic flows, best of each: flows/s.
2. Every window of the shipped lab captures scored by both (streams.score.score_frame, the
   code behind `edgeloop score` and the stream): how many verdicts (class, or uncertain)
   differ, and which way, against the capture's labels.
"""
from __future__ import annotations

import argparse
import sys
import time
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests" / "bench"))

from bench_edge import bench_flows  # noqa: E402


def engine_rate(detector, raws: list[bytes], n: int) -> float:
    from contracts.records import decode_flow_rows
    from streams.detector import DetectorConfig, EdgeDetector

    eng = EdgeDetector(detector, DetectorConfig())
    t = time.perf_counter()
    for raw in raws:
        eng.ingest(decode_flow_rows(raw))
        if eng.due():
            eng.tick()
    eng.flush_all()
    return n / (time.perf_counter() - t)


def engine_rates(detectors: dict, flows, repeat: int) -> tuple[dict[str, float], int]:
    """The whole engine in this process on `flows` (a DataFrame) in messages of 500, each
    detector alternated `repeat` times: the best flows/s of each, and the flow count."""
    from contracts.records import encode_flow_batch
    from streams.sources.files import iter_flow_dicts

    rows = list(iter_flow_dicts(flows))
    raws = [encode_flow_batch(rows[a:a + 500]) for a in range(0, len(rows), 500)]
    best = {name: 0.0 for name in detectors}
    for _ in range(repeat):
        for name, det in detectors.items():
            best[name] = max(best[name], engine_rate(det, raws, len(rows)))
    return best, len(rows)


def print_engine_rates(detectors: dict, flows, repeat: int, base: str, candidate: str) -> dict[str, float]:
    """engine_rates, printed: each detector's best flows/s and candidate / base."""
    best, n = engine_rates(detectors, flows, repeat)
    print(f"the engine in this process, {n:,} synthetic flows in messages of 500, best of {repeat} alternated:")
    for name, rate in best.items():
        print(f"  {name:<44}{rate:>12,.0f} flows/s")
    print(f"  {candidate} / {base}: {best[candidate] / best[base]:.3f}x")
    return best


def verdict(w) -> str:
    return "uncertain" if w.uncertain else str(w.predicted)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--flows", type=int, default=100_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--captures", default="eval,heldout,heldout-b,heldout-c,heldout-d,heldout-e,heldout-f")
    args = ap.parse_args()

    import pandas as pd

    from inference.bundle import DEFAULT_BUNDLE_DIR, Bundle
    from inference.onnx_detector import OnnxDetector
    from streams.score import score_frame

    bundle = Bundle.load(DEFAULT_BUNDLE_DIR)
    benign = bundle.meta.benign_class
    fp32, int8 = OnnxDetector(bundle), OnnxDetector(bundle, int8=True)
    print(f"bundle {bundle.version}")
    print_engine_rates({"fp32": fp32, "int8": int8}, bench_flows(args.flows), args.repeat, "fp32", "int8")

    print("verdicts, every window of the shipped lab captures (class, or uncertain):")
    total, moved, outcome = 0, Counter(), Counter()
    for cap in args.captures.split(","):
        df = pd.read_parquet(REPO / "data" / "lab" / f"{cap}.parquet")
        a = score_frame(df, bundle, model=fp32).windows.set_index("window_id")
        b = score_frame(df, bundle, model=int8).windows.set_index("window_id")
        assert a.index.equals(b.index), "the two models must see the same windows"
        va = ["uncertain" if u else p for p, u in zip(a["predicted"], a["uncertain"])]
        vb = ["uncertain" if u else p for p, u in zip(b["predicted"], b["uncertain"])]
        diff = [(x, y) for x, y in zip(va, vb) if x != y]
        moved.update(f"{x} -> {y}" for x, y in diff)
        for name, verdicts in (("fp32", va), ("int8", vb)):
            for v, lab in zip(verdicts, a["label"].fillna(benign)):
                outcome[name, "deferred" if v == "uncertain" else "right" if v == lab
                        else "false alerts" if lab == benign else "missed (called benign)" if v == benign
                        else "another class"] += 1
        total += len(va)
        print(f"  {cap}: {len(va):,} windows, {len(diff)} differ ({100 * len(diff) / max(len(va), 1):.2f}%)")
    n_diff = sum(moved.values())
    print(f"  all: {total:,} windows, {n_diff} differ ({100 * n_diff / max(total, 1):.2f}%); fp32 -> int8:")
    for k, v in moved.most_common(12):
        print(f"    {v:4d}  {k}")
    print("  against each window's label (its flows' labels; a kind the model lacks is never right):")
    for name in ("fp32", "int8"):
        print(f"    {name}: " + ", ".join(f"{k} {outcome[name, k]:,}" for k in
                                        ("right", "deferred", "false alerts", "missed (called benign)", "another class")))


if __name__ == "__main__":
    main()

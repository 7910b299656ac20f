"""What the destination-window rules cost at scoring: prints figures; it does not pass or fail.

    .venv/bin/python tests/bench/bench_destination_rules.py [--batches 20] [--rounds 7]

A destination window called a host sweep, or with one peer called a class whose attacker
opens the flows (contracts.window), is deferred and counted as covered; the check runs in
OnnxDetector.score on every batch. On the lab evaluation capture's windows (both views),
batches of 256, in one process, alternated best-of-N (this machine's timings vary by
+-30%):
  1. the raw baseline: OnnxDetector.score with both rules off;
  2. the same with both rules on (the shipped detector);
  3. the rules' own numpy passes alone (one-peer mask and class lookups).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from inference.bundle import DEFAULT_BUNDLE_DIR, Bundle  # noqa: E402
from inference.onnx_detector import OnnxDetector  # noqa: E402
from inference.windowing import stack_windows, windows_from_frame  # noqa: E402

BATCH = 256


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batches", type=int, default=20, help="batches of 256 windows per round")
    ap.add_argument("--rounds", type=int, default=7, help="alternated rounds (best and median printed)")
    a = ap.parse_args()
    bundle = Bundle.load(DEFAULT_BUNDLE_DIR)
    det = OnnxDetector(bundle)
    spec = bundle.meta.window
    flows = pd.read_parquet(REPO / "data" / "lab" / "eval.parquet")
    x, mask = stack_windows(windows_from_frame(flows, k=spec.k, seconds=spec.seconds, views=spec.views), spec.k)
    x, mask = x[:BATCH * a.batches], mask[:BATCH * a.batches]
    rules = {"on": (det._source_only.copy(), det._one_peer_source.copy()),
             "off": (np.zeros_like(det._source_only), np.zeros_like(det._one_peer_source))}

    def score_all() -> tuple[float, int]:
        t, covered = time.perf_counter(), 0
        for i in range(0, len(x), BATCH):
            s = det.score(x[i:i + BATCH], mask[i:i + BATCH])
            covered += int(s.covered.sum()) if s.covered is not None else 0
        return (time.perf_counter() - t) / len(x) * 1e6, covered

    times: dict[str, list[float]] = {"off": [], "on": []}
    covered = {}
    for _ in range(a.rounds):
        for k in ("off", "on"):
            det._source_only, det._one_peer_source = rules[k]
            us, covered[k] = score_all()
            times[k].append(us)
    print(f"{len(x):,} windows of the lab evaluation capture, batches of {BATCH}, {a.rounds} alternated rounds")
    for k, label in (("off", "score, rules off (baseline)"), ("on", "score, rules on (shipped)")):
        v = sorted(times[k])
        print(f"  {label:32s} best {v[0]:6.2f} us/window  median {v[len(v) // 2]:6.2f}  covered {covered[k]:,}")
    # The rules as OnnxDetector.score runs them, on each batch's predictions: the view flag,
    # the class lookups and the one-peer mask.
    pc, vd = det._peer_changed, det._view_dst
    source_only, one_peer_source = rules["on"]
    preds = [det.score(x[i:i + BATCH], mask[i:i + BATCH]).predicted for i in range(0, len(x), BATCH)]
    t = time.perf_counter()
    reps = 50
    for _ in range(reps):
        for j, i in enumerate(range(0, len(x), BATCH)):
            xb, mb, pred = x[i:i + BATCH], mask[i:i + BATCH], preds[j]
            dst = xb[:, vd, 0] > 0.5
            one_peer = ~((xb[:, pc, :] > 0.5) & (mb > 0)).any(axis=1)
            source_only[pred] & dst | one_peer_source[pred] & dst & one_peer
    print(f"  the rules' own numpy pass        {(time.perf_counter() - t) / (reps * len(x)) * 1e6:6.3f} us/window")


if __name__ == "__main__":
    main()

"""Benchmark: training time, model size, and fp32 vs int8 scoring speed. Prints figures.

    .venv/bin/python tests/bench/bench_inference.py                 # the shipped default bundle
    .venv/bin/python tests/bench/bench_inference.py --train         # also time a training run
    .venv/bin/python tests/bench/bench_inference.py --bundle var/registry/<version> --threads 2

Windows come from the shipped lab evaluation set (raw, unnormalised, as the edge gets them).
For each batch size it times bare onnxruntime on normalised input and the full
`OnnxDetector.score` (normalisation, session, temperature softmax, energy, thresholds), so
the difference is the detector's own overhead. Then the flow-support gate's share of it:
`beyond_support` alone beside the full score at batch 256, alternated, best of 5. Not a
pass/fail test.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from inference.bundle import DEFAULT_BUNDLE_DIR, Bundle  # noqa: E402
from inference.datasets.lab import load_lab  # noqa: E402
from inference.onnx_detector import OnnxDetector  # noqa: E402
from inference.quantize import measure_speed, time_batches  # noqa: E402
from inference.windowing import stack_windows, windows_from_frame  # noqa: E402

BATCHES = (1, 32, 256)


def _train_time(seed: int) -> None:
    import tempfile

    from inference.train import train_bundle

    df = load_lab("train")
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as out:
        b = train_bundle(df, seed=seed, int8=True, progress=False, out_dir=out)
        wall = time.perf_counter() - t0
    print(f"training on the shipped set: {wall:.1f} s wall ({len(df)} flows, "
          f"{sum(b.meta.training['windows']['train'].values())} train windows, "
          f"{b.meta.training['epochs_run']} epochs; the bundle records {b.meta.metrics['train_seconds']:.1f} s)")


def _sizes(b: Bundle) -> None:
    fp32 = b.onnx_path().stat().st_size
    int8 = b.onnx_path(int8=True).stat().st_size if b.meta.int8 else 0
    total = sum(p.stat().st_size for p in b.path.rglob("*") if p.is_file())
    print(f"bundle {b.version}: model.onnx {fp32 / 1024:.0f} KiB, model.int8.onnx "
          f"{int8 / 1024:.0f} KiB, directory incl. reports {total / 1024:.0f} KiB")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bundle", type=Path, default=DEFAULT_BUNDLE_DIR)
    ap.add_argument("--threads", type=int, default=1, help="onnxruntime intra-op threads")
    ap.add_argument("--seconds", type=float, default=1.0, help="minimum timing per case")
    ap.add_argument("--train", action="store_true", help="also time training on the shipped set")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    if args.train:
        _train_time(args.seed)
    b = Bundle.load(args.bundle)
    b.verify()
    _sizes(b)
    spec = b.meta.window
    closed = windows_from_frame(load_lab("eval"), k=spec.k, seconds=spec.seconds, key=spec.key)
    x, mask = stack_windows(closed, spec.k)
    print(f"{len(closed)} windows from the shipped evaluation set; {args.threads} thread(s)")
    precisions = ["fp32"] + (["int8"] if b.meta.int8 else [])
    print(f"{'model':6} {'path':10} {'batch':>5} {'windows/s':>12} {'p50 ms':>9} {'p99 ms':>9}")
    for prec in precisions:
        det = OnnxDetector(b, int8=prec == "int8", threads=args.threads)
        xn = det.schema.normalise(x, mask)
        bare = measure_speed(b.onnx_path(int8=prec == "int8"), xn, mask, BATCHES, args.threads,
                             min_seconds=args.seconds)
        full = [time_batches(det.score, x, mask, n, args.seconds) for n in BATCHES]
        for path, rows in (("onnxrt", bare), ("detector", full)):
            for r in rows:
                print(f"{prec:6} {path:10} {r['batch']:>5} {r['windows_per_s']:>12,.0f} "
                      f"{r['p50_ms']:>9.3f} {r['p99_ms']:>9.3f}")
    _support_cost(b, x, mask)


def _support_cost(b, x, mask, batch: int = 256, rounds: int = 5) -> None:
    """The flow-support gate (inference.support) against the whole score, per window."""
    import time

    import numpy as np

    from inference.support import beyond_support

    support = b.meta.thresholds.support
    if not support:
        print("flow-support gate: this bundle has none")
        return
    det = OnnxDetector(b)
    parts = [(x[i:i + batch], mask[i:i + batch]) for i in range(0, len(x), batch)]
    best = {"gate": np.inf, "score": np.inf}
    for _ in range(rounds):
        for name, fn in (("gate", lambda a, m: beyond_support(a, m, support)), ("score", det.score)):
            t0 = time.perf_counter()
            for a, m in parts:
                fn(a, m)
            best[name] = min(best[name], time.perf_counter() - t0)
    us = {k: 1e6 * v / len(x) for k, v in best.items()}
    flagged = int(beyond_support(x, mask, support).sum())
    print(f"flow-support gate: {us['gate']:.2f} us/window of the detector's {us['score']:.2f} "
          f"({100 * us['gate'] / us['score']:.1f}%), batch {batch}; {flagged} of {len(x)} windows beyond support")


if __name__ == "__main__":
    main()

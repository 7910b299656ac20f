"""A shape rule at the edge: the flood-shape rule (contracts.window.FLOOD_SHAPE_SPAN_MS, rule
19) or the repeat-shape rule (contracts.window.REPEAT_SHAPE_*, rule 20): what it costs and how
many verdicts it moves. Prints figures; it does not pass or fail.

    .venv/bin/python tests/bench/bench_flood_shape.py [--rule flood_shape|repeat_shape]
                                                      [--flows 100000] [--repeat 3]

1. OnnxDetector.score on the shipped lab evaluation capture's windows, batch 256, without and
   with the rule, alternated --repeat times, best of each: windows/s.
2. The whole engine in this process on synthetic flows, without and with the rule, alternated
   --repeat times, best of each: flows/s.
3. Every window of the shipped lab captures scored both ways: the verdicts that move.
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
from bench_int8 import print_engine_rates  # noqa: E402


# Each rule: the setting that turns it off when None, and the captures whose moves to show.
RULES = {"flood_shape": ("FLOOD_SHAPE_SPAN_MS", ("eval", "heldout", "spoofed_flood")),
         "repeat_shape": ("REPEAT_SHAPE_MIN_FLOWS", ("eval", "heldout", "heldout-p"))}


def detector(bundle, setting, value):
    """A detector built with the rule's `setting` at `value` (None: no rule)."""
    import inference.onnx_detector as od

    keep = getattr(od, setting)
    setattr(od, setting, value)
    try:
        return od.OnnxDetector(bundle)
    finally:
        setattr(od, setting, keep)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rule", choices=sorted(RULES), default="flood_shape")
    ap.add_argument("--flows", type=int, default=100_000)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()

    import pandas as pd

    import contracts.window
    from inference.bundle import DEFAULT_BUNDLE_DIR, Bundle
    from inference.windowing import stack_windows, windows_from_frame
    from streams.score import score_frame

    bundle = Bundle.load(DEFAULT_BUNDLE_DIR)
    setting, captures = RULES[args.rule]
    value = getattr(contracts.window, setting)
    dets = {"without": detector(bundle, setting, None), "with": detector(bundle, setting, value)}
    spec = bundle.meta.window
    ws = windows_from_frame(pd.read_parquet(REPO / "data" / "lab" / "eval.parquet"), k=spec.k,
                            seconds=spec.seconds, views=spec.views)
    x, mask = stack_windows(ws, spec.k)
    batches = [(x[a:a + 256], mask[a:a + 256]) for a in range(0, len(x), 256)]
    best = {name: 0.0 for name in dets}
    for _ in range(args.repeat):
        for name, det in dets.items():
            t0 = time.perf_counter()
            for xb, mb in batches:
                det.score(xb, mb)
            best[name] = max(best[name], len(x) / (time.perf_counter() - t0))
    print(f"bundle {bundle.version}; rule {args.rule} ({setting} = {value}); best of {args.repeat} alternated")
    print(f"1. OnnxDetector.score, {len(x):,} windows of the lab evaluation capture, batch 256:")
    for name, rate in best.items():
        print(f"  {name} the rule: {rate:,.0f} windows/s")
    print(f"  with / without: {best['with'] / best['without']:.3f}x")

    print("2. ", end="")
    print_engine_rates(dets, bench_flows(args.flows), args.repeat, "without", "with")

    print("3. verdicts that move (label: without -> with), every window of the shipped lab captures:")
    for cap in captures:
        df = pd.read_parquet(REPO / "data" / "lab" / f"{cap}.parquet")
        a, b = (score_frame(df, bundle, model=det).windows.set_index("window_id") for det in dets.values())
        moved = b.index[a["uncertain"] != b.loc[a.index, "uncertain"]]
        label = df.drop_duplicates("flow_id").set_index("flow_id")["label"]
        what = Counter(f"{'/'.join(sorted(set(label.loc[list(f)])))}: {p} -> uncertain"
                       for f, p in zip(a.loc[moved, "flow_ids"], a.loc[moved, "predicted"]))
        print(f"  {cap}: {len(a):,} windows, {len(moved)} moved" + "".join(f"; {k} x{v}" for k, v in what.items()))


if __name__ == "__main__":
    main()

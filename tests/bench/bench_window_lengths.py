"""Short windows run on their real positions only (OnnxDetector.run_by_length): what it saves
on real traffic and on the synthetic benchmark flows. Prints figures; it does not pass or fail.

    .venv/bin/python tests/bench/bench_window_lengths.py [--repeat 3] [--flows 100000]

1. ONNX Runtime alone on the same normalised windows in batches of 256 (the engine's
   batch_max): one padded run a batch (bare ONNX Runtime, as every batch ran before) against
   runs grouped by window length, alternated --repeat times, best of each, windows/s; with
   each set's mean flows a window and the share of padded positions. Window sets: the nDPI
   captures (real benign traffic of other networks, each capture windowed alone), the lab's
   evaluation and held-out captures, and the synthetic flows of bench_edge.py.
2. The whole engine in this process (bench_edge.stage_times), both ways alternated, on the
   nDPI flows, the lab's held-out capture and the synthetic flows: us a flow and ONNX
   Runtime's part of it.
3. Whether any verdict moved: every window of each set scored both ways.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests" / "bench"))

from bench_edge import bench_flows, stage_times  # noqa: E402


def window_sets(flows: int) -> dict[str, tuple[object, list]]:
    """name -> (flows frame, its windows), each capture windowed alone."""
    import pandas as pd

    from inference.bundle import DEFAULT_BUNDLE_DIR, Bundle
    from inference.windowing import windows_from_frame
    from streams.sources.files import load_flows

    spec = Bundle.load(DEFAULT_BUNDLE_DIR).meta.window

    def win(df) -> list:
        return windows_from_frame(df, k=spec.k, seconds=spec.seconds, views=spec.views, label_column=None)

    ndpi = pd.read_parquet(REPO / "data" / "ndpi" / "flows.parquet")
    out = {"nDPI captures": (ndpi, [w for _, g in ndpi.groupby("file", sort=True) for w in win(g)])}
    for name in ("eval", "heldout"):
        df = load_flows(REPO / "data" / "lab" / f"{name}.parquet")
        out[f"lab {name}"] = (df, win(df))
    synth = bench_flows(flows)
    out["synthetic (bench_edge)"] = (synth, win(synth))
    return out


def ort_rates(det_pad, det_len, windows: list, repeat: int, batch: int = 256) -> tuple[float, float]:
    from inference.windowing import stack_windows

    x, mask = stack_windows(windows, det_pad.k)
    xn = det_pad.schema.normalise(x, mask)
    best = {"pad": 0.0, "len": 0.0}
    for _ in range(repeat):
        for name, det in (("pad", det_pad), ("len", det_len)):
            t = time.perf_counter()
            for i in range(0, len(xn), batch):
                det.run(xn[i:i + batch], mask[i:i + batch])
            best[name] = max(best[name], len(xn) / (time.perf_counter() - t))
    return best["pad"], best["len"]


def moved(det_pad, det_len, windows: list) -> int:
    """Windows whose verdict (class, uncertain) differs between the two ways, batch 256."""
    n = 0
    for i in range(0, len(windows), 256):
        a, b = det_pad.score_windows(windows[i:i + 256]), det_len.score_windows(windows[i:i + 256])
        n += int(((a.predicted != b.predicted) | (a.uncertain != b.uncertain)).sum())
    return n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=3, help="alternated runs of each way; best of each")
    ap.add_argument("--flows", type=int, default=100_000, help="synthetic flows (bench_edge.bench_flows)")
    a = ap.parse_args()

    from inference.bundle import DEFAULT_BUNDLE_DIR, Bundle
    from inference.onnx_detector import OnnxDetector

    bundle = Bundle.load(DEFAULT_BUNDLE_DIR)
    det_len = OnnxDetector(bundle)
    det_pad = OnnxDetector(bundle, session=det_len.session, by_length=False)
    if not det_len._any_length:
        sys.exit("the served session has a fixed window length (the rewrite's check failed: see the log)")
    sets = window_sets(a.flows)
    print(f"bundle {bundle.version}; ONNX Runtime alone, batches of 256, best of {a.repeat} alternated")
    print(f"{'windows':<26}{'windows':>9}{'flows/win':>10}{'padding':>9}{'padded run':>14}{'by length':>13}{'gain':>7}"
          f"{'moved':>7}")
    for name, (_, ws) in sets.items():
        fill = np.array([len(w.flow_ids) for w in ws])
        pad, by_len = ort_rates(det_pad, det_len, ws, a.repeat)
        print(f"{name:<26}{len(ws):>9,}{fill.mean():>10.2f}{1 - fill.mean() / det_len.k:>9.0%}"
              f"{pad:>10,.0f} w/s{by_len:>9,.0f} w/s{by_len / pad:>6.2f}x{moved(det_pad, det_len, ws):>7}",
              flush=True)
    print(f"\nthe engine in this process (bench_edge.stage_times, messages of 500), best of {3 * a.repeat} each way")
    print(f"{'flows':<26}{'flows':>9}{'padded run':>22}{'by length':>22}{'gain':>7}")
    for name in ("nDPI captures", "lab heldout", "synthetic (bench_edge)"):
        df = sets[name][0]
        got = {}
        for _ in range(a.repeat):
            for way in (False, True):
                t, stages = stage_times(DEFAULT_BUNDLE_DIR, df, repeat=3, by_length=way)
                if way not in got or t < got[way][0]:
                    got[way] = (t, stages["ONNX Runtime"])
        (tp, op), (tl, ol) = got[False], got[True]
        print(f"{name:<26}{len(df):>9,}{tp:>8.2f} us/fl (ORT {op:5.2f}){tl:>8.2f} us/fl (ORT {ol:5.2f})"
              f"{tp / tl:>6.2f}x", flush=True)


if __name__ == "__main__":
    main()

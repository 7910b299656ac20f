"""The member-disagreement gate at the edge (a bundle with `thresholds.member_benign`): what it
costs and how many verdicts it moves. Prints figures; it does not pass or fail.

    .venv/bin/python tests/bench/bench_member_gate.py [--flows 100000] [--repeat 3] [--tau 0.5]

The shipped bundle has no gate, so a gated copy is made here: the same graph with its
members' stacked logits (the `Concat` under the `ReduceMean` that makes `logits`) as a second
output "member_logits", as `edgeloop train --member-gate` exports it, and `member_benign`
set to --tau (a tau set by hand, not from validation: a cost figure, not a judged one).

1. Bare ONNX Runtime on the shipped captures' windows, batch 256: the graph with one output
   and with both (what fetching the members' logits costs in the session).
2. OnnxDetector.score on the same batches, ungated and gated (normalise, run, calibrate,
   gates): windows/s.
3. The whole engine in this process on synthetic flows, ungated and gated, alternated
   --repeat times, best of each: flows/s.
4. Every window of the shipped lab captures scored by both: how many benign calls the gate
   sends to `uncertain`, against the capture's labels.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests" / "bench"))

from bench_edge import bench_flows  # noqa: E402
from bench_int8 import print_engine_rates  # noqa: E402


def gated_copy(bundle, tau: float, out: Path):
    """The bundle's fp32 graph with a "member_logits" output and member_benign = tau."""
    import onnx

    from inference.bundle import write_bundle
    from inference.export import MEMBERS_OUTPUT

    m = onnx.load(str(bundle.onnx_path(False)))
    last = next(n for n in m.graph.node if "logits" in n.output)
    stack = next(n for n in m.graph.node if last.input[0] in n.output)
    if last.op_type != "ReduceMean" or stack.op_type != "Concat":
        raise SystemExit(f"{bundle.version}: logits are not a mean over stacked members ({last.op_type})")
    m.graph.node.append(onnx.helper.make_node("Identity", [stack.output[0]], [MEMBERS_OUTPUT]))
    m.graph.output.append(onnx.helper.make_tensor_value_info(MEMBERS_OUTPUT, onnx.TensorProto.FLOAT, None))
    meta = bundle.meta.model_copy(deep=True)
    meta.int8 = None
    meta.thresholds.member_benign = tau
    return write_bundle(out, m.SerializeToString(), meta)


def best_rate(fn, batches, n: int, repeat: int) -> float:
    best = 0.0
    for _ in range(repeat):
        t = time.perf_counter()
        for b in batches:
            fn(*b)
        best = max(best, n / (time.perf_counter() - t))
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--flows", type=int, default=100_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--tau", type=float, default=0.5)
    ap.add_argument("--captures", default="eval,heldout,heldout-b,heldout-c,heldout-d")
    args = ap.parse_args()

    import pandas as pd

    from inference.bundle import DEFAULT_BUNDLE_DIR, Bundle
    from inference.onnx_detector import OnnxDetector
    from inference.windowing import stack_windows, windows_from_frame
    from streams.score import score_frame

    bundle = Bundle.load(DEFAULT_BUNDLE_DIR)
    gated_bundle = gated_copy(bundle, args.tau, Path(tempfile.mkdtemp(prefix="edgeloop-gated-")))
    plain, gated = OnnxDetector(bundle), OnnxDetector(gated_bundle)
    benign = bundle.meta.benign_class
    print(f"bundle {bundle.version}, gated copy {gated_bundle.version} (member_benign {args.tau})")

    frames = {cap: pd.read_parquet(REPO / "data" / "lab" / f"{cap}.parquet") for cap in args.captures.split(",")}
    spec = bundle.meta.window
    closed = [w for df in frames.values()
              for w in windows_from_frame(df, k=spec.k, seconds=spec.seconds, key=spec.key, views=spec.views)]
    x, mask = stack_windows(closed, plain.k)
    xn = plain.schema.normalise(x, mask)
    raw = [(x[i:i + 256], mask[i:i + 256]) for i in range(0, len(x), 256)]
    norm = [(xn[i:i + 256], mask[i:i + 256]) for i in range(0, len(x), 256)]
    one = lambda a, b: plain.session.run(["logits"], {"windows": a, "mask": b})  # noqa: E731
    both = lambda a, b: gated.session.run(["logits", "member_logits"], {"windows": a, "mask": b})  # noqa: E731
    rates = Counter()
    for _ in range(args.repeat):   # alternated, best of each
        for name, fn, batches in (("bare ONNX Runtime, logits", one, norm), ("bare ONNX Runtime, logits + members", both, norm),
                                  ("OnnxDetector.score, no gate", plain.score, raw),
                                  ("OnnxDetector.score, member gate", gated.score, raw)):
            rates[name] = max(rates[name], best_rate(fn, batches, len(x), 1))
    print(f"{len(x):,} windows of the shipped captures, batch 256, best of {args.repeat} alternated:")
    for name, r in rates.items():
        print(f"  {name:<44}{r:>12,.0f} windows/s")
    print(f"  gate / no gate (score): {rates['OnnxDetector.score, member gate'] / rates['OnnxDetector.score, no gate']:.3f}x")

    print_engine_rates({"no gate": plain, "member gate": gated}, bench_flows(args.flows), args.repeat,
                       "no gate", "member gate")

    print("verdicts on the shipped captures' windows (benign calls the gate sends to uncertain):")
    for cap, df in frames.items():
        a = score_frame(df, bundle, model=plain).windows.set_index("window_id")
        b = score_frame(df, gated_bundle, model=gated).windows.set_index("window_id")
        assert a.index.equals(b.index), "the two models must see the same windows"
        moved = (~a["uncertain"]) & b["uncertain"]
        back = a["uncertain"] & ~b["uncertain"]
        lab = a["label"].fillna(benign)
        called_benign = (~a["uncertain"]) & (a["predicted"] == benign)
        print(f"  {cap}: {len(a):,} windows, {int(called_benign.sum()):,} called benign, {int(moved.sum())} gated "
              f"({100 * moved.sum() / max(called_benign.sum(), 1):.2f}%: {int((moved & (lab == benign)).sum())} benign, "
              f"{int((moved & (lab != benign)).sum())} attack windows); back from uncertain {int(back.sum())}; "
              f"other verdicts changed {int(((a['predicted'] != b['predicted']) & ~moved).sum())}")


if __name__ == "__main__":
    main()

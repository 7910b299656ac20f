"""How far a detector's ensemble members disagree on the windows it calls benign: a diagnostic
for the member-disagreement gate at hand-picked thresholds, on any ensemble bundle (the gate
itself is built: `edgeloop train --member-gate SHARE`; docs/openworld.md, "A lead: the
ensemble members' disagreement" and rule 15 after it).

    .venv/bin/python scripts/member_disagreement.py BUNDLE OUT [--tau 0.5,0.7] [--manifest M ...]

The shipped model is three CNNs whose logits are averaged (the graph's `ReduceMean` over a
`Concat` of the members' logits). For every window of each manifest (default: the nDPI test
half and the judged lab held-out captures a-n; never o or p, which are kept unjudged), this
scores as `edgeloop evaluate --open-world` does, with every verdict as shipped, and records
the lowest member's calibrated p(benign). Then, per threshold tau, it prints what a gate
"a benign call needs every member at p(benign) >= tau, else uncertain" would do: unknown-kind
windows missed (confidently benign) before and after, the worst capture after, benign
deferrals on the nDPI test half and the lab captures before and after, and known-class misses
it would defer. OUT/all.parquet keeps every scoped window with that score (`member_min`).

A diagnostic only: a tau chosen by looking at these captures is not a judged figure. Run it
on a bundle without the gate (with one, its own gate already defers some benign calls).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

JUDGED = ["lab-heldout"] + [f"lab-heldout-{c}" for c in "bcdefghijklmn"] + ["ndpi-test"]


def member_session(bundle) -> tuple[object, str]:
    """A session on the bundle's fp32 graph that also outputs the members' stacked logits."""
    import onnx
    import onnxruntime as ort

    m = onnx.load(str(bundle.onnx_path(False)))
    last = next(n for n in m.graph.node if "logits" in n.output)
    stack = next(n for n in m.graph.node if last.input[0] in n.output)
    if last.op_type != "ReduceMean" or stack.op_type != "Concat":
        raise SystemExit(f"{bundle.version}: logits are not a mean over stacked members ({last.op_type})")
    name = stack.output[0]
    m.graph.output.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    return ort.InferenceSession(m.SerializeToString(), opts, providers=["CPUExecutionProvider"]), name


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("bundle", help="bundle directory")
    ap.add_argument("out", type=Path, help="directory for the reports and all.parquet")
    ap.add_argument("--tau", default="0.5,0.7,0.8,0.9", help="thresholds to print (comma-separated)")
    ap.add_argument("--manifest", action="append", help="manifest names under data/openworld "
                    "(repeatable; default: the nDPI test half and lab captures a-n)")
    a = ap.parse_args()

    import pandas as pd

    import inference.onnx_detector as od
    from evaluation.openworld import evaluate_open_world
    from inference.bundle import Bundle

    bundle = Bundle.load(a.bundle)
    sess, out_name = member_session(bundle)
    shipped_score = od.OnnxDetector.score

    def score(self, x_raw, mask):
        s = shipped_score(self, x_raw, mask)       # every verdict as shipped
        if len(x_raw):
            x = self.schema.normalise(x_raw, mask)
            members = sess.run([out_name], {"windows": x, "mask": mask})[0]   # [members, n, C]
            b = self.class_names.index(bundle.meta.benign_class)
            p = np.stack([od.calibrate(z, self.temperature)[0][:, b] for z in members])
            s.ood[:] = p.min(axis=0)                  # reported as ood_score: the lowest member
        return s

    od.OnnxDetector.score = score
    a.out.mkdir(parents=True, exist_ok=True)
    frames = []
    for man in a.manifest or JUDGED:
        w = a.out / f"{man}.parquet"
        evaluate_open_world(REPO / "data" / "openworld" / f"{man}.toml", bundle, out_dir=a.out, name=man,
                            plots=False, progress=False, windows_out=w)
        frames.append(pd.read_parquet(w, columns=["capture", "kind", "expected", "verdict", "predicted",
                                                  "uncertain", "ood_score", "scoped"]))
        print(f"{man}: scored", file=sys.stderr)
    d = pd.concat(frames, ignore_index=True)
    d = d[d["scoped"]].rename(columns={"ood_score": "member_min"})
    d.to_parquet(a.out / "all.parquet")

    ndpi = d["capture"].str.startswith("ndpi")
    unk, ben = d["kind"] == "unknown", d["kind"] == "benign"
    missed = unk & (d["verdict"] == "miss")
    deferred = d["verdict"] == "deferred"
    print(f"bundle {bundle.version}: {int(unk.sum()):,} unknown-kind windows, {int(missed.sum())} missed")
    for tau in (float(t) for t in a.tau.split(",")):
        gate = (d["predicted"] == bundle.meta.benign_class) & ~d["uncertain"] & (d["member_min"] < tau)
        left = missed & ~gate
        worst = left[unk].groupby(d.loc[unk, "capture"]).mean().max()
        nd, lab = ben & ndpi, ben & ~ndpi
        print(f"tau {tau:.2f}: unknown missed {int(missed.sum())} -> {int(left.sum())} "
              f"(worst capture {worst:.2%}); benign deferred nDPI {deferred[nd].mean():.2%} -> "
              f"{(deferred | gate)[nd].mean():.2%}, lab {deferred[lab].mean():.2%} -> "
              f"{(deferred | gate)[lab].mean():.2%}; known misses deferred "
              f"{int((gate & (d['kind'] == 'known')).sum())}")


if __name__ == "__main__":
    main()

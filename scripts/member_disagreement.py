"""How far a detector's ensemble members disagree on the windows it calls benign: a diagnostic
for the member-disagreement gate at hand-picked thresholds, on any ensemble bundle (the gate
itself is built: `edgeloop train --member-gate SHARE`; docs/openworld.md, "A lead: the
ensemble members' disagreement" and rule 15 after it).

    .venv/bin/python scripts/member_disagreement.py BUNDLE OUT [--tau 0.5,0.7] [--manifest M ...]

The shipped model is three CNNs whose logits are averaged (the graph's `ReduceMean` over a
`Concat` of the members' logits). For every window of each manifest (default: the nDPI test
half and the lab held-out captures a-n, as measured before o and p were judged), this
scores as `edgeloop evaluate --open-world` does, with every verdict as shipped, and records
the lowest member's calibrated p(benign). Then, per threshold tau, it prints what a gate
"a benign call needs every member at p(benign) >= tau, else uncertain" would do: unknown-kind
windows missed (confidently benign) before and after, the worst capture after, benign
deferrals on the nDPI test half and the lab captures before and after, and known-class misses
it would defer. OUT/all.parquet keeps every scoped window with that score (`member_min`).

A diagnostic only: a tau chosen by looking at these captures is not a judged figure. Run it
on a bundle without the gate (with one, its own gate already defers some benign calls).

`--measure benign-distance` asks the same of another score, class-conditional density in the
embedding (Lee et al., 2018): each member's squared Mahalanobis distance of the window's pooled
features to the benign class mean (tied covariance), read from the graph, which already
computes it for every class (`inference.model.DistanceShifted` folds the nearest class's into
the energy). A gate would send a benign call to `uncertain` when the largest member's distance
is over tau; `--tau` then gives quantiles of that distance over the training windows that are
benign and called benign (0.995: 0.5% of them would be deferred), as the member gate's SHARE
does on validation windows. docs/openworld.md, "Measured, not built: the distance to the
benign class".
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


def distance_session(bundle) -> tuple[object, list[str]]:
    """A session on the bundle's fp32 graph that also outputs each member's squared
    Mahalanobis distances to every class mean [n, C] (the input of the member's ReduceMin)."""
    import onnx
    import onnxruntime as ort

    m = onnx.load(str(bundle.onnx_path(False)))
    names = [n.input[0] for n in m.graph.node if n.op_type == "ReduceMin" and n.output[0].startswith("/members.")]
    if not names:
        raise SystemExit(f"{bundle.version}: no per-member class distances in the graph")
    for name in names:
        m.graph.output.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    return ort.InferenceSession(m.SerializeToString(), opts, providers=["CPUExecutionProvider"]), names


def train_distance_quantiles(det, measure, qs: list[float]) -> list[float]:
    """Quantiles of `measure` over the default training set's windows that are benign and
    called benign (the reference a gate's tau would be set from)."""
    from inference.datasets.training import training_flows
    from inference.train import frame_windows

    w = det.window
    tr = frame_windows(training_flows(), w.k, w.seconds, w.key, det.class_names[det._benign], w.views)
    pick = np.array(tr.labels) == det.class_names[det._benign]
    x, mask = tr.x[pick].astype(np.float32), tr.mask[pick].astype(np.float32)
    s = det.score(x, mask)
    called = (s.predicted == det._benign) & ~s.uncertain
    return [float(np.quantile(measure(det, x, mask)[called], q)) for q in qs]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("bundle", help="bundle directory")
    ap.add_argument("out", type=Path, help="directory for the reports and all.parquet")
    ap.add_argument("--measure", choices=("member", "benign-distance"), default="member",
                    help="member: the lowest member's p(benign), gate below tau; benign-distance: "
                         "the largest member's distance to the benign mean, gate above tau")
    ap.add_argument("--tau", default=None, help="thresholds to print (comma-separated; default "
                    "0.5,0.7,0.8,0.9 for member; for benign-distance, quantiles of the training "
                    "benign windows' distances, default 0.995,0.99,0.98,0.95)")
    ap.add_argument("--manifest", action="append", help="manifest names under data/openworld "
                    "(repeatable; default: the nDPI test half and lab captures a-n)")
    a = ap.parse_args()

    import pandas as pd

    import inference.onnx_detector as od
    from evaluation.openworld import evaluate_open_world
    from inference.bundle import Bundle

    bundle = Bundle.load(a.bundle)
    distance = a.measure == "benign-distance"
    b = bundle.meta.class_names.index(bundle.meta.benign_class)
    if distance:
        sess, names = distance_session(bundle)

        def measure(self, x_raw, mask):        # the largest member's distance to the benign mean
            d = sess.run(names, {"windows": self.schema.normalise(x_raw, mask), "mask": mask})
            return np.max([m[:, b] for m in d], axis=0)
    else:
        sess, out_name = member_session(bundle)

        def measure(self, x_raw, mask):        # the lowest member's calibrated p(benign)
            members = sess.run([out_name], {"windows": self.schema.normalise(x_raw, mask), "mask": mask})[0]
            return np.stack([od.calibrate(z, self.temperature)[0][:, b] for z in members]).min(axis=0)
    shipped_score = od.OnnxDetector.score

    def score(self, x_raw, mask):
        s = shipped_score(self, x_raw, mask)       # every verdict as shipped
        if len(x_raw):
            s.ood[:] = measure(self, x_raw, mask)  # reported as ood_score
        return s

    if distance:
        qs = [float(t) for t in (a.tau or "0.995,0.99,0.98,0.95").split(",")]
        taus = train_distance_quantiles(od.OnnxDetector(bundle), measure, qs)
        print("training benign windows called benign, distance quantiles: "
              + ", ".join(f"{q:g}: {t:.1f}" for q, t in zip(qs, taus)))
    else:
        taus = [float(t) for t in (a.tau or "0.5,0.7,0.8,0.9").split(",")]

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
    col = "benign_distance" if distance else "member_min"
    d = d[d["scoped"]].rename(columns={"ood_score": col})
    d.to_parquet(a.out / "all.parquet")

    ndpi = d["capture"].str.startswith("ndpi")
    unk, ben = d["kind"] == "unknown", d["kind"] == "benign"
    missed = unk & (d["verdict"] == "miss")
    deferred = d["verdict"] == "deferred"
    print(f"bundle {bundle.version}: {int(unk.sum()):,} unknown-kind windows, {int(missed.sum())} missed")
    for tau in taus:
        beyond = d[col] > tau if distance else d[col] < tau
        gate = (d["predicted"] == bundle.meta.benign_class) & ~d["uncertain"] & beyond
        left = missed & ~gate
        worst = left[unk].groupby(d.loc[unk, "capture"]).mean().max()
        nd, lab = ben & ndpi, ben & ~ndpi
        print(f"tau {tau:.{1 if distance else 2}f}: unknown missed {int(missed.sum())} -> {int(left.sum())} "
              f"(worst capture {worst:.2%}); benign deferred nDPI {deferred[nd].mean():.2%} -> "
              f"{(deferred | gate)[nd].mean():.2%}, lab {deferred[lab].mean():.2%} -> "
              f"{(deferred | gate)[lab].mean():.2%}; known misses deferred "
              f"{int((gate & (d['kind'] == 'known')).sum())}")


if __name__ == "__main__":
    main()

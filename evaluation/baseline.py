"""A site baseline: this site's own ordinary traffic, for a detector that knows it.

A detector trained on the lab and on other people's networks still meets protocols and
habits at a new site that it never saw: they come out deferred, or worse, as false alerts.
`edgeloop baseline` takes a stretch of the site's traffic (captures, or N minutes of the
live `flows` topic), and

1. scores it with the current model, the edge's own code, and **leaves out every flow
   that sits in a window whose best class is an attack** (in any view, confident or
   deferred): a baseline must not teach an attack in progress, or what looks like one,
   as normal;
2. splits what is left into a `train` part and a `reference` part, by capture (or by
   time: the first `train_share` of each capture trains; the default for one capture);
3. writes both under `<data_dir>/baseline/` (flows.parquet with `capture` and `part`
   columns, baseline.json with what was kept and left out, and why).

The train part then goes to the dataset store as benign windows and a retrain runs
through the promotion gate, whose foreign reference includes the reference part
(evaluation.gate): the site's traffic must come out better, and nothing else worse.

    >>> b = build_baseline(flows_by_capture, bundle, out_dir=data_dir / "baseline")
    >>> b.counts["kept_flows"], b.counts["left_out_flows"]
    >>> train = load_baseline(data_dir / "baseline", part="train")
"""
from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal, Mapping

import numpy as np

from contracts.errors import SourceError

BASELINE_SCHEMA = "edgeloop.baseline/1"
FLOWS = "flows.parquet"
META = "baseline.json"


@dataclass
class Baseline:
    path: Path
    model_version: str
    counts: dict[str, int]
    captures: dict[str, dict[str, Any]] = field(default_factory=dict)
    created_ms: int = 0

    def to_json(self) -> dict[str, Any]:
        return {"schema": BASELINE_SCHEMA, **{k: (str(v) if isinstance(v, Path) else v)
                                              for k, v in asdict(self).items()}}


def attack_flow_ids(windows: Any, benign: str = "benign") -> set[str]:
    """Flow ids in any window whose best class is an attack, confident or deferred. (With
    confident ones only, a baseline on the early half of the nDPI test captures gave a
    challenger that missed 38 points more of the lab's SYN floods, and the gate refused
    it; leaving out the leaning ones too, it was promoted. One run each.)"""
    hit = windows[windows["predicted"] != benign]
    return {f for ids in hit["flow_ids"] for f in ids}


def split_parts(flows: Any, train_share: float, by_capture: bool) -> np.ndarray:
    """'train' or 'reference' per row: whole captures (`by_capture`: a keyed hash of the
    names picks `train_share` of them), else the first share of each capture's time."""
    if by_capture:
        names = sorted(flows["capture"].astype(str).unique())
        n_train = max(1, min(len(names) - 1, round(len(names) * train_share)))
        order = np.argsort([hash_name(n) for n in names])
        train = {names[i] for i in order[:n_train]}
        return np.where(flows["capture"].astype(str).isin(train), "train", "reference")
    ts = flows["first_seen_ms"].to_numpy(dtype=np.float64)
    if not len(ts):
        return np.array([], dtype=object)
    caps = flows["capture"].astype(str) if "capture" in flows.columns else np.zeros(len(ts))
    cut = flows.groupby(caps)["first_seen_ms"].transform(lambda t: np.quantile(t.to_numpy(np.float64), train_share))
    return np.where(ts <= cut.to_numpy(dtype=np.float64), "train", "reference")


def hash_name(name: str) -> str:
    import hashlib

    return hashlib.blake2b(name.encode(), key=b"edgeloop/baseline-split", digest_size=8).hexdigest()


def build_baseline(captures: Mapping[str, Any], bundle: Any, out_dir: str | Path, *,
                   train_share: float = 0.5, split: Literal["auto", "capture", "time"] = "auto",
                   progress: Any = None) -> Baseline:
    """Score, filter, split and write a baseline from {capture name: flows DataFrame}.

    `split`: "capture" (whole captures train, the rest are the reference: the gate then
    asks whether what was learnt carries over to the site's other captures), "time" (the
    first `train_share` of each capture's time trains: every capture is learnt, and judged
    on its later traffic), "auto" (by capture when there are several)."""
    import pandas as pd

    from streams.detector import DetectorConfig
    from streams.score import detector_for, score_frame

    if not captures:
        raise SourceError("a baseline needs at least one capture with flows")
    model = detector_for(bundle)  # the shape rules a worker would apply
    cfg = DetectorConfig(seconds=bundle.meta.window.seconds, key=bundle.meta.window.key)
    kept, info = [], {}
    for name, flows in captures.items():
        w = score_frame(flows, bundle, cfg, model=model).windows
        bad = attack_flow_ids(w, bundle.meta.benign_class) if len(w) else set()
        keep = flows[~flows["flow_id"].astype(str).isin(bad)].assign(capture=name)
        info[name] = {"flows": int(len(flows)), "windows": int(len(w)), "left_out_flows": int(len(flows) - len(keep)),
                      "attack_windows": int((w["predicted"] != bundle.meta.benign_class).sum()) if len(w) else 0}
        kept.append(keep)
        if progress:
            progress(name)
    df = pd.concat(kept, ignore_index=True)
    if df.empty:
        raise SourceError("nothing left for a baseline: every flow was in an attack window")
    df["label"] = bundle.meta.benign_class
    by_capture = split == "capture" or (split == "auto" and len(captures) > 1)
    df["part"] = split_parts(df, train_share, by_capture=by_capture)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    df.to_parquet(out / FLOWS, index=False)
    counts = {"captures": len(captures), "flows": int(sum(v["flows"] for v in info.values())),
              "kept_flows": int(len(df)), "left_out_flows": int(sum(v["left_out_flows"] for v in info.values())),
              "train_flows": int((df["part"] == "train").sum()),
              "reference_flows": int((df["part"] == "reference").sum())}
    b = Baseline(out, bundle.version, counts, info, int(time.time() * 1000))
    (out / META).write_text(json.dumps(b.to_json(), indent=2))
    return b


def load_baseline(path: str | Path, part: Literal["train", "reference", "all"] = "all") -> Any:
    """The baseline's flows (with `capture`, `label`), one part or all."""
    import pandas as pd

    f = Path(path) / FLOWS
    if not f.is_file():
        raise SourceError(f"no site baseline at {path} (make one: edgeloop baseline --help)")
    df = pd.read_parquet(f)
    if part != "all":
        df = df[df["part"] == part]
    return df.drop(columns=["part"]).reset_index(drop=True)


def has_baseline(path: str | Path) -> bool:
    return (Path(path) / FLOWS).is_file()

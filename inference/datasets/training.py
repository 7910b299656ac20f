"""The default training set: the lab's own capture plus foreign benign traffic.

A detector trained only on the lab's generator learns the lab: two thirds of ordinary
traffic from other networks then looks unlike anything it knows. The default set is

    lab-train        data/lab/train.parquet, every attack run from a host of its own
                     (inference.datasets.lab.separate_attack_runs)
    lab-train-<n>    data/lab/train-<n>.parquet: further training generations (other
                     seeds, other link-condition draws), the same way
    ndpi:<file>      the *train* half of the nDPI captures (inference.datasets.ndpi), as
                     benign, one capture per file

Each capture is windowed on its own (`capture` column): host history never runs from one
network into another. The nDPI test half is never part of it.

    >>> df = training_flows()
    >>> df.groupby("capture").size()
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

CAPTURE = "capture"


def training_flows(lab_root: str | Path | None = None, ndpi_path: str | Path | None = None,
                   foreign: bool = True) -> Any:
    """Labelled flows of the default training set, with a `capture` column."""
    import pandas as pd

    from inference.datasets.lab import extra_train_paths, load_lab

    parts = [load_lab("train", root=lab_root, separate_runs=True, carriers=True).assign(**{CAPTURE: "lab-train"})]
    parts += [load_lab("train", path=p, separate_runs=True, carriers=True).assign(**{CAPTURE: f"lab-{p.stem}"})
              for p in extra_train_paths(lab_root)]
    if foreign:
        parts.append(foreign_benign(ndpi_path))
    return pd.concat(parts, ignore_index=True)


def foreign_benign(path: str | Path | None = None) -> Any:
    """The nDPI train half as benign flows, one capture per file."""
    from inference.datasets.ndpi import load_ndpi

    nd = load_ndpi("train", purpose="train", path=path)
    # A few captures of the nDPI suite hold the same packets under two names: the same
    # flow (same flow_id) twice would be two windows with one window id.
    nd = nd.drop_duplicates("flow_id", keep="first")
    return nd.assign(**{CAPTURE: "ndpi:" + nd["file"].astype(str)}).drop(columns=["file", "split"])


def lab_eval_flows(lab_root: str | Path | None = None) -> Any:
    """The lab's own evaluation capture (another seed of the same generator), its attack
    runs given hosts of their own as in training."""
    from inference.datasets.lab import load_lab

    return load_lab("eval", root=lab_root, separate_runs=True)


def lab_eval_judging(flows: Any, benign: str = "benign") -> dict[str, Any]:
    """How the open-world judge reads the lab evaluation capture's windows (the keyword
    arguments of inference.openworld_verdicts.judge_windows beside scope "labels"): who
    carries each attack, when, and who was under attack. `flows`: lab_eval_flows()."""
    import json

    from inference.datasets.lab import lab_paths, labels_principals
    from inference.openworld_captures import attacked_times

    labels = lab_paths().eval.with_name(lab_paths().eval.stem + ".labels.json")
    principals, periods = labels_principals(json.loads(labels.read_text()), separated=True)
    return {"principals": principals, "periods": periods, "attacked": attacked_times(flows, benign)}

"""TrainConfig.recorded_attacks: beside a lab capture with its attack runs apart, its attack
windows as the lab recorded them, one attacker address running one attack after another, so
the host history beside a later attack holds the earlier one (README, "An attacker that keeps
its address")."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd

from contracts.records import FlowRecord
from inference.datasets.lab import RECORDED_SRC, load_lab
from inference.features import N_FEATURES
from inference.history import N_HISTORY
from inference.train import frame_windows, recorded_attack_windows

ATTACKER, SERVER, CLIENT = "10.77.0.9", "10.77.0.20", "10.77.0.5"
SPEC = (8, 10.0, "src", "benign", ["src", "dst"])


def _flow(i: int, src: str, dst: str, t: int, label: str, port: int, packets: int = 1) -> dict:
    r = FlowRecord(flow_id=f"f{i}", first_seen_ms=t, last_seen_ms=t + 5, src_ip=src, dst_ip=dst, protocol=6,
                   dst_port=port, packets=packets, bytes=60 * packets, src2dst_packets=packets,
                   dst2src_packets=0).model_dump()
    return {**r, "label": label}


def _capture(tmp_path) -> pd.DataFrame:
    """A scan (40 ports in 2 s) and then, from the same address, 40 logins to one port."""
    rows = [_flow(i, ATTACKER, SERVER, 50 * i, "syn_scan", 1000 + i) for i in range(40)]
    rows += [_flow(100 + i, ATTACKER, SERVER, 20_000 + 400 * i, "http_bruteforce", 80, 6) for i in range(40)]
    rows += [_flow(200 + i, CLIENT, SERVER, 1_000 * i, "benign", 443, 10) for i in range(40)]
    df = pd.DataFrame(rows).sort_values("first_seen_ms", kind="stable")
    df.to_parquet(tmp_path / "cap.parquet")
    spans = [{"label": "syn_scan", "attacker_ip": ATTACKER, "start_ms": 0, "end_ms": 2_000, "match": "attacker"},
             {"label": "http_bruteforce", "attacker_ip": ATTACKER, "start_ms": 20_000, "end_ms": 36_000,
              "match": "attacker"}]
    (tmp_path / "cap.labels.json").write_text(json.dumps({"spans": spans}))
    return load_lab("train", path=tmp_path / "cap.parquet", separate_runs=True, carriers=True).assign(capture="c")


def test_a_later_attack_as_recorded_carries_the_earlier_one_in_its_history(tmp_path):
    df = _capture(tmp_path)
    attack = df["label"] != "benign"
    assert (df.loc[attack, "src_ip"] != ATTACKER).all() and (df.loc[attack, RECORDED_SRC] == ATTACKER).all()
    assert df["src_ip"][attack & (df["label"] == "syn_scan")].nunique() == 1  # each run a host of its own
    rec, flows = recorded_attack_windows(df, SPEC)
    assert flows == len(df) and rec.labels and "benign" not in rec.labels
    apart = frame_windows(df, *SPEC)
    twin = {frozenset(ids): i for i, ids in enumerate(apart.flow_ids)}
    hist = slice(N_FEATURES - N_HISTORY, N_FEATURES)
    same: dict[str, list[bool]] = {"syn_scan": [], "http_bruteforce": []}
    for i, (label, ids) in enumerate(zip(rec.labels, rec.flow_ids)):
        j = twin[frozenset(ids)]  # the same flows, windowed with the runs apart
        assert apart.labels[j] == label
        same[label].append(np.array_equal(rec.x[i, hist], apart.x[j, hist]))
    # The first run looks the same either way; the brute force after the scan does not.
    assert same["syn_scan"] and all(same["syn_scan"])
    assert same["http_bruteforce"] and not any(same["http_bruteforce"])


def test_nothing_is_added_without_recorded_addresses(tmp_path):
    df = _capture(tmp_path).drop(columns=[RECORDED_SRC])
    rec, flows = recorded_attack_windows(df, SPEC)
    assert flows == 0 and len(rec.labels) == 0 and rec.x.shape[1:] == (N_FEATURES, SPEC[0])


def test_history_swap_keeps_each_windows_flows_and_label_and_takes_another_attack_classes_history():
    from inference.train import Windows, history_swapped

    rng = np.random.default_rng(3)
    x = rng.normal(size=(30, N_FEATURES, 8)).astype(np.float32)
    mask = np.ones((30, 8), np.float32)
    mask[12, 5:] = 0  # a donor with 5 flows: positions past its last take its last flow's history
    labels = ["benign"] * 10 + ["syn_scan"] * 10 + ["syn_flood"] * 10
    out = history_swapped(Windows(x, mask, labels, None), 0.5, np.random.default_rng(1))
    own, hist = slice(0, N_FEATURES - N_HISTORY), slice(N_FEATURES - N_HISTORY, N_FEATURES)
    assert len(out.labels) == 10 and "benign" not in out.labels
    for i, label in enumerate(out.labels):
        (src,) = [j for j in range(30) if np.array_equal(x[j, own], out.x[i, own])]
        assert labels[src] == label and np.array_equal(mask[src], out.mask[i])
        donors = [d for d in range(10, 30) if labels[d] != label and np.array_equal(
            x[d, hist][:, np.minimum(np.arange(8), int(mask[d].sum()) - 1)], out.x[i, hist])]
        assert donors, f"window {i} ({label}): its history is no other attack class's window's"
    assert len(history_swapped(Windows(x[:20], mask[:20], labels[:20], None), 0.5, rng).labels) == 0  # one class


def test_train_bundle_adds_the_recorded_and_swapped_windows(tmp_path, monkeypatch):
    """Both settings reach training: the set grows by the recorded windows, then by the
    swapped copies, and the bundle records how many flows the recorded copy windowed."""
    from dataclasses import replace

    from inference import train as tr

    df = _capture(tmp_path)
    sizes: list[int] = []
    real = tr.train_windows

    def counting(x, *a, **k):
        sizes.append(len(x))
        return real(x, *a, **k)

    monkeypatch.setattr(tr, "train_windows", counting)
    base = replace(tr.RECIPE, run_variants=0, recorded_attacks=False)
    cfgs = (base, replace(base, recorded_attacks=True), replace(base, recorded_attacks=True, history_swap=0.5))
    bundles = [tr.train_bundle(df, views=["src", "dst"], epochs=1, progress=False, config=c, out_dir=tmp_path / f"b{i}")
               for i, c in enumerate(cfgs)]
    assert sizes[0] < sizes[1] < sizes[2]
    # Recorded again: the capture less the flows of the validation windows (never copied).
    none, recorded, swapped = (b.meta.training["source"]["variant_flows"] for b in bundles)
    assert none == 0 and 0 < recorded == swapped < len(df)

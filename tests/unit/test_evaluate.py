"""Evaluation reports: fields, PNGs, unseen labels, and the labels-file join."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("torch")

from contracts.errors import SourceError  # noqa: E402
from inference.datasets.synthetic import synthetic_flows  # noqa: E402
from inference.evaluate import TARGETS, evaluate_bundle, label_flows, load_labelled_flows  # noqa: E402
from inference.train import train_bundle  # noqa: E402


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    """Trained without fin_scan, so its windows are a label the model has never seen."""
    flows = synthetic_flows(hosts_per_class=3, flows_per_host=48, seed=3)
    return train_bundle(flows, epochs=8, int8=True, exclude_classes=["fin_scan"], progress=False,
                        out_dir=tmp_path_factory.mktemp("bundle"))


@pytest.fixture(scope="module")
def report(bundle):
    flows = synthetic_flows(hosts_per_class=2, flows_per_host=48, seed=11)
    return evaluate_bundle(bundle, flows, name="synthetic-eval", batch_sizes=(1, 32))


def test_report_has_per_class_scores_confusion_and_calibration(report, bundle):
    names = bundle.class_names
    assert set(report["per_class"]) == set(names)
    for v in report["per_class"].values():
        assert {"precision", "recall", "f1", "support"} <= set(v)
    cm = np.array(report["confusion_matrix"])
    assert cm.shape == (len(names), len(names)) and cm.sum() == report["windows"]
    assert report["accuracy"] == pytest.approx(np.trace(cm) / cm.sum())
    assert 0 <= report["macro_f1"] <= 1 and 0 <= report["ece"] <= 1
    assert sum(report["reliability"]["count"]) == report["windows"]
    assert set(report["targets"]) >= {"macro_f1", "min_recall", "ece", "all_met"}
    assert report["targets"]["macro_f1"]["target"] == TARGETS["macro_f1"]


def test_unseen_label_windows_are_counted_with_their_uncertain_share(report):
    u = report["unseen"]["fin_scan"]
    assert u["windows"] == report["dataset"]["labels"]["fin_scan"] > 0
    assert 0 <= u["uncertain"] <= u["windows"]
    assert u["uncertain"] == u["low_confidence"] + u["ood"]
    assert sum(u["predicted"].values()) == u["windows"]
    assert report["windows"] + u["windows"] == report["dataset"]["windows"]


def test_int8_and_speed_figures(report):
    assert report["int8"]["available"] in (True, False)
    if report["int8"]["available"]:
        assert 0 <= report["int8"]["agreement_with_fp32"] <= 1
        assert "int8_delta_points" in report["targets"]
        assert [r["batch"] for r in report["speed"]["int8"]] == [1, 32]
    assert [r["batch"] for r in report["speed"]["fp32"]] == [1, 32]
    assert all(r["windows_per_s"] > 0 for r in report["speed"]["fp32"])


def test_json_and_pngs_are_written_next_to_the_bundle(report, bundle):
    files = report["files"]
    assert files["json"] == str(bundle.path / "reports" / "synthetic-eval.json")
    assert json.loads((bundle.path / "reports" / "synthetic-eval.json").read_text())["macro_f1"] == report["macro_f1"]
    for key in ("confusion_png", "reliability_png"):
        data = open(files[key], "rb").read()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000
    bundle.verify()  # reports do not touch the hashed content


def test_load_labelled_flows_from_csv_and_parquet(tmp_path):
    flows = synthetic_flows(hosts_per_class=1, flows_per_host=5, seed=0)
    flows.to_csv(tmp_path / "f.csv", index=False)
    flows.to_parquet(tmp_path / "f.parquet")
    for name in ("f.csv", "f.parquet"):
        df = load_labelled_flows(tmp_path / name)
        assert df["label"].tolist() == flows["label"].tolist()
    flows.drop(columns=["label"]).to_parquet(tmp_path / "nolabel.parquet")
    with pytest.raises(SourceError, match="label"):
        load_labelled_flows(tmp_path / "nolabel.parquet")
    (tmp_path / "x.pcap").write_bytes(b"")
    with pytest.raises(SourceError, match="labels file"):
        load_labelled_flows(tmp_path / "x.pcap")


def test_label_flows_by_flow_id_or_by_source_and_time_span():
    flows = pd.DataFrame({"flow_id": ["a", "b", "c"], "src_ip": ["h1", "h1", "h2"],
                          "first_seen_ms": [100, 500, 120]})
    by_id = label_flows(flows, pd.DataFrame({"flow_id": ["b"], "label": ["syn_scan"]}))
    assert by_id["label"].tolist() == ["benign", "syn_scan", "benign"]
    spans = pd.DataFrame({"src_ip": ["h1"], "start_ms": [400], "end_ms": [600], "label": ["ssh_bruteforce"]})
    assert label_flows(flows, spans)["label"].tolist() == ["benign", "ssh_bruteforce", "benign"]
    with pytest.raises(SourceError):
        label_flows(flows, pd.DataFrame({"x": [1]}))


def test_lab_labels_json_marks_flows_to_or_from_the_attacker(tmp_path):
    from inference.evaluate import _read_labels

    doc = {"schema": "edgeloop.lab_labels/1", "grace_ms": 100, "idle_timeout": 5, "active_timeout": 30,
           "spans": [{"label": "syn_scan", "attacker_ip": "10.0.0.9", "start_ms": 1000, "end_ms": 2000}]}
    (tmp_path / "x.labels.json").write_text(json.dumps(doc))
    spans, opts = _read_labels(tmp_path / "x.labels.json")
    assert opts == {"idle_timeout": 5, "active_timeout": 30}
    flows = pd.DataFrame({"flow_id": list("abcd"), "src_ip": ["10.0.0.9", "10.0.0.2", "10.0.0.9", "10.0.0.9"],
                          "dst_ip": ["10.0.0.1", "10.0.0.9", "10.0.0.1", "10.0.0.1"],
                          "first_seen_ms": [950, 1500, 2200, 1999]})
    assert label_flows(flows, spans)["label"].tolist() == ["syn_scan", "syn_scan", "benign", "syn_scan"]


def test_judged_windows_count_each_attack_on_its_principal_and_the_targets_read_there(tmp_path):
    """With the lab's judging (who carried each attack), the report's `judged` block holds
    benign windows and each attack's windows keyed by its attacker; the attack's other
    windows (its targets' destination windows) are collateral, and the targets are read on
    the judged windows while the top-level figures still count every window."""
    from inference.evaluate import lab_judging
    from inference.windowing import window_label, windows_from_frame

    bundle = train_bundle(synthetic_flows(hosts_per_class=3, flows_per_host=48, seed=3), epochs=3, progress=False,
                          views=("src", "dst"), out_dir=tmp_path / "bundle")
    flows = synthetic_flows(hosts_per_class=2, flows_per_host=48, seed=11)
    attackers = {lab: sorted(set(g["src_ip"].astype(str))) for lab, g in flows.groupby("label") if lab != "benign"}
    doc = {"spans": [{"label": lab, "attacker_ip": ip, "start_ms": 0, "end_ms": 4e12, "match": "attacker"}
                     for lab, ips in attackers.items() for ip in ips]}
    (tmp_path / "cap.labels.json").write_text(json.dumps(doc))
    r = evaluate_bundle(bundle, flows, name="judged", out_dir=tmp_path, plots=False, speed=False,
                        judging=lab_judging(flows, tmp_path / "cap.labels.json"))
    spec = bundle.meta.window
    closed = windows_from_frame(flows, k=spec.k, seconds=spec.seconds, key=spec.key, views=spec.views)
    truth = [window_label(w.labels) for w in closed]
    for lab, ips in attackers.items():
        on_attacker = sum(t == lab and w.view == "src" and w.key in ips for w, t in zip(closed, truth))
        assert r["judged"]["labels"].get(lab, 0) == on_attacker > 0, lab
    elsewhere = sum(t != "benign" and not (w.view == "src" and w.key in attackers[t]) for w, t in zip(closed, truth))
    assert elsewhere > 0 and r["judged"]["collateral"] >= elsewhere
    assert r["windows"] > r["judged"]["windows"]
    assert r["targets_on"] == "judged windows"
    assert r["targets"]["macro_f1"]["value"] == r["judged"]["macro_f1"]
    assert r["targets"]["min_recall"]["windows"] == r["judged"]["windows"] < r["windows"]
    plain = evaluate_bundle(bundle, flows, name="plain", out_dir=tmp_path, plots=False, speed=False)
    assert "judged" not in plain and plain["targets_on"] == "every window"
    assert plain["targets"]["macro_f1"]["value"] == plain["macro_f1"] == r["macro_f1"]
    assert plain["targets"]["macro_f1"]["windows"] == plain["windows"] == r["windows"]

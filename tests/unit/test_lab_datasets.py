"""The shipped lab datasets (data/lab/) are what their datasheets say: the right classes,
only the variants and conditions of their split, and a spoofed flood from over 20,000
sources that the labels file labels by destination."""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from trafficlab.labelling import apply_labels, load_spans
from trafficlab.scenarios import HELDOUT_KINDS, SCENARIOS, TRAIN_LABELS

LAB = Path(__file__).resolve().parents[2] / "data" / "lab"


def _sheet(name: str) -> dict:
    return json.loads((LAB / f"{name}.datasheet.json").read_text())


def _flows(name: str) -> pd.DataFrame:
    return pd.read_parquet(LAB / f"{name}.parquet")


def test_train_and_eval_hold_the_known_classes_and_heldout_adds_the_held_out_kinds() -> None:
    train, evals, held = _flows("train"), _flows("eval"), _flows("heldout")
    assert set(train["label"]) == set(TRAIN_LABELS)
    assert set(evals["label"]) == set(train["label"])
    assert not set(HELDOUT_KINDS) & set(train["label"])
    assert set(HELDOUT_KINDS) <= set(held["label"])
    for df in (train, evals, held):
        assert df["flow_id"].is_unique and (df["label"] == "benign").sum() > 1000


@pytest.mark.parametrize("name,split,conditions", [("train", "train", "train"),
                                                     ("eval", "train", "train"),
                                                     ("heldout", "heldout", "heldout")])
def test_each_set_ran_only_its_own_variants_and_conditions(name: str, split: str, conditions: str) -> None:
    sheet, df = _sheet(name), _flows(name)
    assert sheet["variants_selected"] == split
    assert sheet["conditions"]["mode"] == conditions
    assert sheet["conditions"]["links"] and sheet["link_counters"]
    for run in sheet["runs"]:
        variant = SCENARIOS[run["scenario"]].variant(run["variant"])
        assert variant.split == split, run["variant"]
        assert run["tool"] and run["tool_argv"]
    assert sheet["counts"] == {k: int((df["label"] == k).sum()) for k in sheet["counts"]}
    assert sheet["attacker_flows_labelled_benign"] == 0
    assert {"hping3", "nmap", "python:nfstream"} <= set(sheet["tools"])


def test_sets_were_made_with_different_seeds_and_draws() -> None:
    seeds = {n: _sheet(n)["seed"] for n in ("train", "eval", "heldout")}
    assert seeds == {"train": 1, "eval": 2, "heldout": 3}
    assert _sheet("train")["conditions"]["links"] != _sheet("eval")["conditions"]["links"]
    assert _sheet("heldout")["conditions"]["mtu"] == 1280


def test_spoofed_flood_capture_labels_over_20000_sources_by_destination() -> None:
    pytest.importorskip("nfstream")
    from inference.flow_meter import meter_pcap

    pcap = LAB / "spoofed_flood.pcap"
    assert pcap.stat().st_size <= 3_000_000
    spans = load_spans(LAB / "spoofed_flood.labels.json")
    assert {s.match for s in spans} == {"victim"}
    doc = json.loads((LAB / "spoofed_flood.labels.json").read_text())
    df = apply_labels(meter_pcap(pcap, sensor=doc["sensor"], idle_timeout=doc["idle_timeout"],
                                 active_timeout=doc["active_timeout"]), spans)
    flood = df[df["label"] == "syn_flood"]
    assert flood["src_ip"].nunique() >= 20_000
    assert (flood["dst_ip"] == doc["victim_ip"]).all() and (flood["syn_packets"] >= 1).all()
    lab_hosts = set(spans[0].not_with)
    assert not set(flood["src_ip"]) & lab_hosts            # the lab's own hosts stay benign
    assert (df.loc[df["src_ip"].isin(lab_hosts), "label"] == "benign").all()

"""The dataset store: append-only parts, idempotent by window id, stream-identical tensors."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from inference.features import FLOW_FEATURES
from inference.windowing import Windower, stack_windows
from llm_agents.labeling.acceptance import window_vectors
from llm_agents.store import DatasetStore, frame_vectors, reference_frame, window_rows
from llm_agents.window_frames import window_tensors
from tests.support.scripted_windows import synthetic_windows


def _rows(batch, source: str = "llm:m") -> pd.DataFrame:
    return pd.concat([window_rows(w, y, label_source=source, confidence=0.9)
                      for w, y in zip(batch.windows, batch.labels)], ignore_index=True)


def test_append_is_idempotent_by_window_id_and_manifest_counts(tmp_path) -> None:
    store = DatasetStore(tmp_path)
    a = synthetic_windows({"dos": 3, "benign": 2}, seed=1, id_prefix="a")
    r1 = store.append("labelled", _rows(a))
    assert r1.windows == 5 and r1.rows == 40 and r1.skipped == []
    # A redelivery of the same windows, plus one new: only the new one is stored.
    b = synthetic_windows({"portscan": 1}, seed=2, id_prefix="b")
    r2 = store.append("labelled", pd.concat([_rows(a), _rows(b)], ignore_index=True))
    assert r2.windows == 1 and sorted(r2.skipped) == sorted(w.window_id for w in a.windows)
    assert store.append("labelled", _rows(a)).part is None
    m = json.loads((tmp_path / "manifest.json").read_text())
    assert m["seq"] == 2 and [p["windows"] for p in m["parts"]] == [5, 1]
    assert store.counts()["labelled"] == {"dos": 3, "benign": 2, "portscan": 1}
    df = store.frame(("labelled",))
    assert df["window_id"].nunique() == 6 and len(df) == 48
    assert set(df["label_source"]) == {"llm:m"} and set(df["provenance"]) == {"real"}


def test_reference_and_labelled_share_one_id_space_synthetic_does_not(tmp_path) -> None:
    store = DatasetStore(tmp_path)
    a = synthetic_windows({"dos": 2}, seed=1)
    store.append("reference", _rows(a, "dataset:lab"))
    assert store.append("labelled", _rows(a)).windows == 0
    synth = _rows(a).assign(provenance="stat:kde", label_source="synthesizer")
    assert store.append("synthetic", synth).windows == 2
    looked = store.lookup([a.windows[0].window_id, "nope"])
    assert list(looked) == [a.windows[0].window_id] and looked[a.windows[0].window_id]["kind"] == "reference"


def test_synthetic_parts_are_read_without_being_kept(tmp_path) -> None:
    """A retrain reads the synthetic part once (frame(cache=False)); checking a new
    synthetic append's ids must not keep it in memory either. Real parts stay cached."""
    store = DatasetStore(tmp_path)
    a = synthetic_windows({"dos": 2}, seed=1)
    store.append("reference", _rows(a, "dataset:lab"))
    synth = _rows(a).assign(provenance="stat:kde", label_source="synthesizer")
    store.append("synthetic", synth)
    store.append("synthetic", synth)                    # ids checked against the first part
    assert len(store.frame(("synthetic",), cache=False)) == len(synth)
    kept = {rel.split("/")[0] for rel in store._cache}
    assert "synthetic" not in kept
    store.frame(("reference",))
    store.frame(("synthetic",))
    assert {rel.split("/")[0] for rel in store._cache} == {"reference", "synthetic"}


def test_ground_truth_on_flows_never_enters_the_store(tmp_path) -> None:
    a = synthetic_windows({"dos": 1}, seed=3)
    assert a.windows[0].flows[0].label == "dos"  # the scripted windows carry truth, like lab replays
    rows = window_rows(a.windows[0], "benign", label_source="llm:m", confidence=0.8)
    store = DatasetStore(tmp_path)
    store.append("labelled", rows)
    df = store.frame()
    assert set(df["label"]) == {"benign"} and "produced_ms" not in df.columns


def test_stored_windows_give_the_detectors_tensors_and_acceptance_vectors(tmp_path) -> None:
    """A window stored from an UncertainWindow rebuilds exactly the tensor the edge scored."""
    a = synthetic_windows({"dos": 2, "bruteforce": 2, "benign": 1}, seed=4)
    store = DatasetStore(tmp_path)
    store.append("labelled", _rows(a))
    x, mask, labels, prov = window_tensors(store.frame(), k=8)
    closed = []
    for w in a.windows:
        win = Windower(k=8, seconds=3600, max_open=10)
        closed += win.push_records(w.flows) + win.flush()
    ex, em = stack_windows(closed, 8)
    np.testing.assert_allclose(x, ex, rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(mask, em)
    assert list(labels) == a.labels and set(prov) == {"real"}
    vx, vy, vid = store.evidence()
    np.testing.assert_allclose(vx, window_vectors(a.windows), rtol=1e-5, atol=1e-6)
    assert list(vy) == a.labels and list(vid) == [w.window_id for w in a.windows]


def test_an_orphan_part_from_a_crash_is_ignored_and_cleaned(tmp_path) -> None:
    store = DatasetStore(tmp_path)
    a = synthetic_windows({"dos": 2}, seed=5, id_prefix="a")
    store.append("labelled", _rows(a))
    orphan = tmp_path / "labelled" / "part-000099-deadbeef.parquet"
    orphan.write_bytes(b"half written")
    assert store.frame()["window_id"].nunique() == 2
    b = synthetic_windows({"dos": 1}, seed=6, id_prefix="b")
    store.append("labelled", _rows(b))
    assert not orphan.exists() and DatasetStore(tmp_path).frame()["window_id"].nunique() == 3


def test_reference_frame_windows_like_the_edge_and_keeps_only_known_classes(tmp_path) -> None:
    from inference.datasets.synthetic import synthetic_flows

    flows = synthetic_flows(hosts_per_class=2, flows_per_host=24, seed=1)
    ref = reference_frame(flows, classes=["benign", "syn_scan"], source="synthetic")
    assert set(ref["label"]) == {"benign", "syn_scan"} and set(ref["label_source"]) == {"dataset:synthetic"}
    store = DatasetStore(tmp_path)
    res = store.append("reference", ref)
    assert res.windows == ref["window_id"].nunique()
    assert frame_vectors(store.frame()).shape == (res.windows, 2 * len(FLOW_FEATURES))  # mean and spread


def test_bad_frames_are_refused(tmp_path) -> None:
    store = DatasetStore(tmp_path)
    a = _rows(synthetic_windows({"dos": 2}, seed=7))
    with pytest.raises(ValueError, match="kind"):
        store.append("misc", a)
    with pytest.raises(ValueError, match="contiguous"):
        store.append("labelled", pd.concat([a.iloc[:4], a.iloc[8:12], a.iloc[4:8]]))
    with pytest.raises(ValueError, match="columns"):
        store.append("labelled", a.drop(columns=["window_id"]))

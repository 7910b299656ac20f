"""A destination window shaped like a spoofed flood (contracts.window.FLOOD_SHAPE_SPAN_MS, rule
19): a full window of one-packet flows nobody answered, the peer changing at every flow, all
within 50 ms. Called benign, it goes to `uncertain` (reason ood); anything else about it, and
every other window, is unchanged."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import inference.onnx_detector as od
from contracts.window import FLOOD_SHAPE_SPAN_MS
from inference.bundle import DEFAULT_BUNDLE_DIR, Bundle
from inference.features import FEATURE_NAMES, N_FEATURES
from inference.onnx_detector import OnnxDetector
from tests.unit.test_source_only_classes import REPO, _Session, eval_capture_through_the_engine

F = {n: FEATURE_NAMES.index(n) for n in ("view_dst", "peer_changed", "log_gap_ms", "log_packets",
                                          "log_bwd_packets")}


@pytest.fixture(scope="module")
def bundle():
    return Bundle.load(DEFAULT_BUNDLE_DIR)


def _flood(n: int, gap_ms: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """n copies of a spoofed flood's destination window: 8 one-packet flows, no answer, a new
    peer each, `gap_ms` apart."""
    x = np.zeros((n, N_FEATURES, 8), np.float32)
    x[:, F["view_dst"], :] = 1.0
    x[:, F["log_packets"], :] = np.log1p(1.0)
    x[:, F["peer_changed"], 1:] = 1.0
    x[:, F["log_gap_ms"], 1:] = np.log1p(gap_ms)
    return x, np.ones((n, 8), np.float32)


def test_a_benign_call_on_a_flood_shaped_destination_window_is_deferred(bundle):
    names = list(bundle.class_names)
    benign, flood = names.index("benign"), names.index("syn_flood")
    x, mask = _flood(9)
    x[1, F["log_gap_ms"], 1:] = np.log1p(60 / 7)          # 60 ms from first to last: too slow
    x[2, F["log_bwd_packets"], 4] = np.log1p(1.0)         # one flow answered
    x[3, F["log_packets"], 6] = np.log1p(2.0)             # one flow of two packets
    x[4, F["peer_changed"], 3] = 0.0                      # a peer twice in a row
    x[5, F["view_dst"], :] = 0.0                          # a source window
    mask[6, 7] = 0.0                                      # seven flows: not a full window
    x[6, :, 7] = 0.0
    calls = [benign] * 7 + [flood, benign]                 # 7: the flood called a flood
    x[8, F["log_gap_ms"], 1:] = np.log1p(49 / 7)          # 49 ms: inside the span
    det = OnnxDetector(bundle, session=_Session(calls, len(names)))
    det.thresholds = det.thresholds.model_copy(update={"ood": None, "support": {}})
    s = det.score(x, mask)
    assert [names[p] for p in s.predicted] == [names[c] for c in calls]
    assert not s.low_confidence.any()
    assert s.uncertain.tolist() == [True, False, False, False, False, False, False, False, True]
    assert not s.covered.any()                            # the agent must see them


def test_the_rule_can_be_turned_off(bundle, monkeypatch):
    names = list(bundle.class_names)
    x, mask = _flood(1)
    monkeypatch.setattr(od, "FLOOD_SHAPE_SPAN_MS", None)
    det = OnnxDetector(bundle, session=_Session([names.index("benign")], len(names)))
    det.thresholds = det.thresholds.model_copy(update={"ood": None, "support": {}})
    assert not det.score(x, mask).uncertain.any()


def test_the_engine_applies_it_to_real_windows(bundle, monkeypatch):
    """`edgeloop score`'s engine on the lab evaluation capture, whose namespaces all start at
    once: 5 destination windows of 8 one-packet IPv6 neighbour-discovery flows from 8 hosts,
    called benign by the shipped network, go to uncertain with the rule and not without it.
    Fails if a feature the rule reads is renamed or rescaled (the rule would be silently off),
    or if the span is read in other units."""
    from streams.score import score_frame

    assert FLOOD_SHAPE_SPAN_MS == 50.0
    df = pd.read_parquet(REPO / "data" / "lab" / "eval.parquet")
    on = score_frame(df, bundle).windows.set_index("window_id")
    monkeypatch.setattr(od, "FLOOD_SHAPE_SPAN_MS", None)
    off = score_frame(df, bundle).windows.set_index("window_id")
    moved = on.index[on["uncertain"] != off.loc[on.index, "uncertain"]]
    assert len(moved) == 5
    assert (on.loc[moved, "uncertain"]).all() and (on.loc[moved, "view"] == "dst").all()
    assert (on.loc[moved, "predicted"] == "benign").all()
    assert (on.loc[moved, "flow_ids"].map(len) == 8).all()


def test_the_edge_counts_deferred_windows_by_gate(bundle):
    """The engine on the lab evaluation capture: edgeloop_uncertain_gates_total counts the 5
    flood-shaped windows under `flood_shape`, the covered ones under `destination`, and the
    rest under the network's own doubts, and no fewer counts than uncertain detections.
    Fails if a gate's windows are not counted, or counted under another gate."""
    outs, dets, reg = eval_capture_through_the_engine(bundle)
    gate = {g: reg.get_sample_value("edgeloop_uncertain_gates_total", {"gate": g}) or 0.0
            for g in od.UNCERTAIN_GATES}
    assert gate["flood_shape"] == 5 and gate["member"] == 0
    assert set(OnnxDetector(bundle).score(*_flood(1)).gates) <= set(od.UNCERTAIN_GATES)
    assert gate["destination"] == reg.get_sample_value("edgeloop_uncertain_covered_total")
    assert gate["low_confidence"] > 0 and gate["energy"] > 0
    unsure = sum(d["uncertain"] for d in dets)
    assert max(gate.values()) <= unsure <= sum(gate.values())

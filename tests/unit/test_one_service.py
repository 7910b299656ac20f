"""The one-service rule (contracts.window.MANY_SERVICE_CLASSES, ONE_SERVICE_MIN_FLOWS; rule
23, on by default since rule 27): a source window of at least 4 flows, every one to the same
destination address and port, cannot show a port scan or a host sweep; called one, it takes the
best class it can show (renormalised, then the usual floors), or is deferred where that is
benign (rule 24). Nothing else moves."""
from __future__ import annotations

import numpy as np
import pytest

import inference.onnx_detector as od
from contracts.window import MANY_SERVICE_CLASSES
from inference.bundle import DEFAULT_BUNDLE_DIR, Bundle
from inference.features import FEATURE_NAMES, N_FEATURES
from inference.onnx_detector import OnnxDetector, rerank

F = {n: FEATURE_NAMES.index(n) for n in ("view_dst", "peer_changed", "dst_port_changed")}


class _Logits:
    """A session returning the logits it was given."""

    def __init__(self, logits: np.ndarray) -> None:
        self.logits = logits.astype(np.float32)

    def run(self, names, feeds):
        return [self.logits]


@pytest.fixture(scope="module")
def bundle():
    return Bundle.load(DEFAULT_BUNDLE_DIR)


ON = "flood_shape,repeat_shape,one_service"


def _detector(bundle, logits: np.ndarray, shape_rules: str = ON) -> OnnxDetector:
    det = OnnxDetector(bundle, session=_Logits(logits), shape_rules=shape_rules)
    det.thresholds = det.thresholds.model_copy(update={"ood": None, "support": {}})
    det.temperature = 1.0
    return det


def _logits(names: list[str], first: str, second: str, p1: float, p2: float) -> np.ndarray:
    """Log-probabilities with `first` at p1, `second` at p2 and the rest spread evenly."""
    p = np.full(len(names), (1.0 - p1 - p2) / (len(names) - 2))
    p[names.index(first)], p[names.index(second)] = p1, p2
    return np.log(p)


def test_a_scan_call_on_a_window_to_one_service_takes_the_best_class_it_can_show(bundle):
    names = list(bundle.class_names)
    x = np.zeros((7, N_FEATURES, 8), np.float32)
    mask = np.zeros((7, 8), np.float32)
    mask[:, :6] = 1.0
    mask[1, 3:] = 0.0                                   # 3 flows: too few to tell
    x[2, F["dst_port_changed"], 4] = 1.0                # a second port: a scan can show
    x[3, F["peer_changed"], 2] = 1.0                    # a second host: a sweep can show
    x[4, F["view_dst"], :] = 1.0                        # a destination window
    calls = [("syn_scan", "syn_flood"), ("syn_scan", "syn_flood"), ("syn_scan", "syn_flood"),
             ("host_sweep", "syn_flood"), ("syn_scan", "syn_flood"), ("benign", "syn_scan"),
             ("udp_scan", "host_sweep")]                # 6: the second choice is excluded too
    logits = np.stack([_logits(names, a, b, 0.9, 0.095) for a, b in calls])
    s = _detector(bundle, logits).score(x, mask)
    got = [names[p] for p in s.predicted]
    assert got == ["syn_flood", "syn_scan", "syn_scan", "host_sweep", "syn_scan", "benign", got[6]]
    assert got[6] not in MANY_SERVICE_CLASSES
    assert s.reranked.tolist() == [True, False, False, False, False, False, True]
    # renormalised over what is left (syn_flood's 0.095 and the other classes' share), over
    # syn_flood's floor: an alert
    p0 = np.exp(logits[0]) / np.exp(logits[0]).sum()
    many = np.array([c in MANY_SERVICE_CLASSES for c in names])
    assert s.confidence[0] == pytest.approx(0.095 / p0[~many].sum(), abs=1e-4) and not s.uncertain[0]
    assert s.probabilities[0].sum() == pytest.approx(1.0, abs=1e-5)
    assert s.probabilities[0, [names.index(c) for c in MANY_SERVICE_CLASSES if c in names]].max() == 0.0
    # the best class left was weak (0.1 spread over the rest): under its floor, deferred
    assert s.uncertain[6] and s.low_confidence[6]


def test_a_scan_call_whose_best_other_class_is_benign_is_deferred_not_called_benign(bundle):
    """Rule 24: unknown UDP floods to one port, called udp_scan, took benign as the best class
    left and became confident misses. A re-ranked window whose best class is benign goes to
    `uncertain` (gate "one_service"), whatever its confidence; one re-ranked to an attack
    class does not."""
    names = list(bundle.class_names)
    x = np.zeros((3, N_FEATURES, 8), np.float32)
    mask = np.zeros((3, 8), np.float32)
    mask[:, :6] = 1.0
    calls = [("udp_scan", "benign"), ("syn_scan", "syn_flood"), ("benign", "udp_scan")]
    logits = np.stack([_logits(names, a, b, 0.9, 0.095) for a, b in calls])
    s = _detector(bundle, logits).score(x, mask)
    assert [names[p] for p in s.predicted] == ["benign", "syn_flood", "benign"]
    assert s.reranked.tolist() == [True, True, False]
    assert s.confidence[0] > 0.9 and not s.low_confidence[0]  # confident: only the rule defers it
    assert s.uncertain.tolist() == [True, False, False]
    assert s.gates["one_service"].tolist() == [True, False, False]


def test_the_rule_is_on_by_default_and_off_where_left_out(bundle):
    names = list(bundle.class_names)
    x = np.zeros((1, N_FEATURES, 8), np.float32)
    mask = np.ones((1, 8), np.float32)
    logits = _logits(names, "syn_scan", "syn_flood", 0.9, 0.095)[None, :]
    assert names[_detector(bundle, logits).score(x, mask).predicted[0]] == "syn_flood"
    off = _detector(bundle, logits, shape_rules="flood_shape,repeat_shape").score(x, mask)
    assert names[off.predicted[0]] == "syn_scan" and off.reranked is None
    default = OnnxDetector(bundle, session=_Logits(logits))
    default.thresholds = default.thresholds.model_copy(update={"ood": None, "support": {}})
    assert default.shape_rules == ("flood_shape", "repeat_shape", "one_service")
    assert names[default.score(x, mask).predicted[0]] == "syn_flood" and default.score(x, mask).reranked.tolist() == [True]


def test_rerank_keeps_a_row_with_nothing_left():
    p = np.array([[0.0, 1.0, 0.0], [0.2, 0.5, 0.3]], np.float32)
    out = rerank(p, np.array([False, True, False]))
    assert out[0].tolist() == [0.0, 1.0, 0.0]
    np.testing.assert_allclose(out[1], [0.4, 0.0, 0.6], rtol=1e-6)


def test_the_engine_counts_what_it_reranked(bundle):
    """The lab's held-out capture a as recorded, through the engine: the attacker that scans
    and then floods. Some of its source windows are reranked, each counted in
    edgeloop_windows_reranked_total{rule="one_service"}; every one of them holds at least 4
    flows to one service, none is called a scan or a sweep any more."""
    import json

    import pandas as pd
    from prometheus_client import CollectorRegistry

    from streams.detector import DetectorConfig, EdgeDetector
    from streams.metrics import EdgeMetrics
    from streams.sources.files import records_from_frame
    from tests.unit.test_source_only_classes import REPO

    records, bad = records_from_frame(pd.read_parquet(REPO / "data" / "lab" / "heldout.parquet"))
    assert not bad
    reg = CollectorRegistry()
    seen: list = []
    eng = EdgeDetector(OnnxDetector(bundle, shape_rules=ON), DetectorConfig(uncertain_rate_per_s=0, audit_sample=0.0),
                       EdgeMetrics(reg))
    real_score = eng.model.score

    def score(x, mask):
        s = real_score(x, mask)
        if s.reranked is not None:
            seen.append((x[s.reranked], mask[s.reranked], s.predicted[s.reranked]))
        return s

    eng.model.score = score
    for a in range(0, len(records), 500):
        eng.ingest(records[a:a + 500])
        eng.tick()
    eng.flush_all()
    n = sum(len(p) for _, _, p in seen)
    assert n >= 20  # 33 with the shipped bundle af197e62 (88 with a546cb0c, trained without recorded attacks)
    assert reg.get_sample_value("edgeloop_windows_reranked_total", {"rule": "one_service"}) == n
    names = list(bundle.class_names)
    for x, mask, pred in seen:
        assert (mask.sum(axis=1) >= 4).all() and (x[:, F["view_dst"], 0] < 0.5).all()
        assert not (((x[:, F["peer_changed"], :] > 0.5) | (x[:, F["dst_port_changed"], :] > 0.5)) & (mask > 0)).any()
        assert not {names[p] for p in pred} & MANY_SERVICE_CLASSES


def test_without_the_rule_constant_nothing_is_reranked(bundle, monkeypatch):
    monkeypatch.setattr(od, "ONE_SERVICE_MIN_FLOWS", None)
    names = list(bundle.class_names)
    logits = _logits(names, "syn_scan", "syn_flood", 0.9, 0.095)[None, :]
    s = _detector(bundle, logits).score(np.zeros((1, N_FEATURES, 8), np.float32), np.ones((1, 8), np.float32))
    assert names[s.predicted[0]] == "syn_scan"


def test_offline_scoring_and_the_open_world_judge_apply_the_rules_the_edge_is_told(tmp_path, monkeypatch, bundle):
    """`edgeloop score`, the open-world evaluation and `experiment open-world` build their
    detector as a worker does, from EDGELOOP_SHAPE_RULES, and the report names the rules: a
    rule judged offline is the rule the edge would apply (rule 24's first run scored with the
    defaults while the variable named one_service, and nothing in the report said so)."""
    from evaluation.openworld import evaluate_open_world
    from inference.openworld_crafted import write_crafted_set
    from streams.score import detector_for

    manifest = write_crafted_set(tmp_path / "crafted")
    monkeypatch.setenv("EDGELOOP_SHAPE_RULES", "flood_shape,repeat_shape")
    assert detector_for(bundle).shape_rules == ("flood_shape", "repeat_shape")
    off = evaluate_open_world(manifest, bundle, out_dir=tmp_path / "off", plots=False, progress=False)
    assert off["bundle"]["shape_rules"] == ["flood_shape", "repeat_shape"]
    monkeypatch.delenv("EDGELOOP_SHAPE_RULES")
    assert detector_for(bundle).shape_rules == tuple(ON.split(","))  # the default since rule 27
    assert detector_for(bundle, shape_rules="none").shape_rules == ()
    on = evaluate_open_world(manifest, bundle, out_dir=tmp_path / "on", plots=False, progress=False)
    assert on["bundle"]["shape_rules"] == ON.split(",")
    assert on["bundle"]["shape_settings"]["one_service"] == {"min_flows": 4}
    assert "one_service" not in off["bundle"]["shape_settings"]


def test_the_judge_prints_what_each_side_was_scored_with():
    from evaluation.recipe_rule import shape_settings_line

    seed = {"shape_settings": {"flood_shape": {"span_ms": 50.0}, "repeat_shape": {"min_flows": 2}}}
    assert shape_settings_line({"per_seed": [seed, seed]}) == "flood_shape (span_ms 50.0), repeat_shape (min_flows 2)"
    other = {"shape_settings": {"repeat_shape": {"min_flows": 4}}}
    assert shape_settings_line({"per_seed": [seed, other]}).startswith("differ by seed: ")
    assert shape_settings_line({"per_seed": [{}]}).startswith("not recorded")
    assert shape_settings_line({"per_seed": [{"shape_settings": {}}]}) == "none"


def test_the_gate_the_baseline_and_the_review_round_build_their_detector_as_a_worker_does(bundle, monkeypatch):
    """The promotion gate's reference figures, the lab-holdout recall check, the site baseline
    and the review round's queue judge a model with the shape rules a worker would apply
    (streams.score.detector_for, EDGELOOP_SHAPE_RULES), not the library's defaults: a rule
    named there that does not exist stops each of them."""
    import pandas as pd

    from evaluation.baseline import build_baseline
    from evaluation.gate import reference_figures
    from evaluation.holdout_gate import predict
    from llm_agents.experiments.review_round import MANIFESTS, review_queue

    monkeypatch.setenv("EDGELOOP_SHAPE_RULES", "flood_shape,no_such_rule")
    calls = [lambda: reference_figures(bundle, []),
             lambda: predict(bundle, np.zeros((0, N_FEATURES, 8), np.float32), np.zeros((0, 8), np.float32)),
             lambda: build_baseline({"site": pd.DataFrame({"flow_id": []})}, bundle, "unused"),
             lambda: review_queue(bundle, MANIFESTS / "lab-heldout-d.toml")]
    for call in calls:
        with pytest.raises(ValueError, match="no_such_rule"):
            call()

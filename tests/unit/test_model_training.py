"""Training on SYNTHETIC flows: the bundle verifies, ONNX matches torch, the seed fixes the result."""
from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from contracts.errors import ModelError  # noqa: E402
from inference.bundle import Bundle  # noqa: E402
from inference.datasets.synthetic import synthetic_flows  # noqa: E402
from inference.export import check_against_torch, export_onnx, run_onnx, torch_logits  # noqa: E402
from inference.features import N_FEATURES  # noqa: E402
from inference.model import ModelConfig, WindowCNN, count_parameters  # noqa: E402
from inference.onnx_detector import OnnxDetector  # noqa: E402
from inference.train import frame_windows, train_bundle, train_windows  # noqa: E402
from inference.windowing import windows_from_frame  # noqa: E402

EPOCHS = 6


@pytest.fixture(scope="module")
def flows():
    return synthetic_flows(hosts_per_class=3, flows_per_host=48, seed=3)


@pytest.fixture(scope="module")
def bundle(flows, tmp_path_factory):
    return train_bundle(flows, seed=0, epochs=EPOCHS, progress=False,
                        out_dir=tmp_path_factory.mktemp("b"), dataset="synthetic")


def test_bundle_verifies_and_records_how_it_was_made(bundle):
    bundle.verify()
    reloaded = Bundle.load(bundle.path)
    assert reloaded.version == bundle.version
    m = reloaded.meta
    assert m.class_names[0] == "benign" and len(m.class_names) == 6
    assert m.window.k == 8 and m.thresholds.ood is not None and 0 < m.temperature <= 20
    assert m.training["seed"] == 0 and m.training["source"]["dataset"] == "synthetic"
    assert "quantile of free energy" in m.training["thresholds"]["ood"]
    # the largest training flow of each protocol, twice over, bounds what the model may call anything
    assert set(m.thresholds.support) >= {"tcp", "udp"} and "largest real flow" in m.training["thresholds"]["support"]
    assert all(v["log_packets"] > np.log(2) for v in m.thresholds.support.values())
    assert sum(m.training["windows"]["train"].values()) > 0
    assert m.metrics["train_seconds"] > 0 and len(m.metrics["history"]) == m.training["epochs_run"]
    assert json.loads((bundle.path / "bundle.json").read_text())["version"] == bundle.version


def test_detector_scores_its_training_flows(bundle, flows):
    det = OnnxDetector(bundle)
    closed = windows_from_frame(flows, k=8)
    s = det.score_windows(closed)
    truth = [w.labels[0] for w in closed]
    pred = [det.class_names[i] for i in s.predicted]
    assert np.mean([a == b for a, b in zip(truth, pred)]) > 0.9
    assert np.allclose(s.probabilities.sum(axis=1), 1.0, atol=1e-5)


def test_same_seed_same_bundle_other_seed_other_bundle(bundle, flows, tmp_path):
    again = train_bundle(flows, seed=0, epochs=EPOCHS, progress=False, out_dir=tmp_path / "a",
                         dataset="synthetic")
    assert again.version == bundle.version
    assert (again.path / "model.onnx").read_bytes() == (bundle.path / "model.onnx").read_bytes()
    other = train_bundle(flows, seed=1, epochs=EPOCHS, progress=False, out_dir=tmp_path / "b",
                         dataset="synthetic")
    assert other.version != bundle.version


def test_train_windows_accepts_string_labels_and_excluded_classes_are_unseen(flows, tmp_path):
    w = frame_windows(flows[flows.label != "fin_scan"], k=8)
    b = train_windows(w.x, w.mask, w.labels, epochs=2, progress=False, out_dir=tmp_path)
    assert "fin_scan" not in b.class_names and b.meta.window.k == 8
    b2 = train_bundle(flows, exclude_classes=["fin_scan"], epochs=2, progress=False,
                      out_dir=tmp_path / "x")
    assert b2.class_names == b.class_names
    assert b2.meta.training["source"]["excluded_classes"] == ["fin_scan"]


def test_unknown_label_is_an_error(flows):
    w = frame_windows(flows, k=8)
    with pytest.raises(ModelError, match="not in class_names"):
        train_windows(w.x, w.mask, w.labels, class_names=["benign", "syn_scan"], epochs=1,
                      progress=False)


@pytest.mark.parametrize("k", [1, 8])
def test_onnx_export_matches_torch_with_dynamic_batch(k):
    torch.manual_seed(0)
    net = WindowCNN(ModelConfig(n_features=N_FEATURES, n_classes=4))
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, N_FEATURES, k)).astype(np.float32)
    mask = (rng.random((64, k)) < 0.7).astype(np.float32)
    mask[:, 0] = 1.0
    x *= mask[:, None, :]
    data = export_onnx(net, x, mask)
    for n in (1, 7, 64):  # batch sizes other than the export sample's
        assert np.abs(run_onnx(data, x[:n], mask[:n]) - torch_logits(net, x[:n], mask[:n])).max() < 1e-4
    assert count_parameters(net) < 100_000


def test_padding_does_not_change_logits():
    """A window's logits depend only on its real flows, whatever the padding holds."""
    torch.manual_seed(0)
    net = WindowCNN(ModelConfig(n_features=N_FEATURES, n_classes=3))
    x = np.random.default_rng(1).normal(size=(2, N_FEATURES, 8)).astype(np.float32)
    mask = np.zeros((2, 8), np.float32)
    mask[:, :3] = 1
    clean = x.copy()
    clean[:, :, 3:] = 0
    junk = x.copy()
    junk[:, :, 3:] = 5.0  # junk where the mask says padding; the model zeroes it after embedding
    assert not np.allclose(junk, clean)  # the two inputs differ exactly where the mask says padding
    a = torch_logits(net, junk, mask)
    b = torch_logits(net, clean, mask)
    assert np.allclose(a, b, atol=1e-6)


def test_export_check_refuses_a_graph_that_disagrees():
    torch.manual_seed(0)
    net = WindowCNN(ModelConfig(n_features=N_FEATURES, n_classes=3))
    x = np.random.default_rng(2).normal(size=(8, N_FEATURES, 4)).astype(np.float32)
    mask = np.ones((8, 4), np.float32)
    data = export_onnx(net, x, mask)
    with torch.no_grad():
        net.head[-1].bias.add_(1.0)  # the torch model moves on; the graph did not
    with pytest.raises(ModelError, match="disagrees"):
        check_against_torch(data, net, x, mask)


def test_constant_features_are_neutralised_and_recorded(bundle):
    """urg_ratio is always 0 in the synthetic flows: it must not be able to sway a verdict."""
    m = bundle.meta
    assert "urg_ratio" in m.training["ignored_features"]
    schema = bundle.feature_schema
    assert schema.std[schema.names.index("urg_ratio")] >= 1e3
    det = OnnxDetector(bundle)
    x = np.zeros((1, N_FEATURES, 8), np.float32)
    mask = np.ones((1, 8), np.float32)
    wild = x.copy()
    wild[0, schema.names.index("urg_ratio")] = 1.0  # never seen in training
    assert np.allclose(det.score(x, mask).probabilities, det.score(wild, mask).probabilities, atol=1e-3)


def test_port_class_shuffle_only_touches_port_rows_of_real_flows():
    from inference.features import FeatureSchema
    from inference.train import _port_codes, _shuffle_port_class

    groups = [(rows, torch.from_numpy(codes)) for rows, codes in _port_codes(FeatureSchema())]
    x = torch.full((64, N_FEATURES, 8), 7.0)
    mask = torch.ones(64, 8)
    mask[:, 5:] = 0
    out = _shuffle_port_class(x * mask[:, None, :], mask, groups, 1.0, torch.Generator().manual_seed(0))
    port_rows = [r for rows, _ in groups for r in rows]
    others = [i for i in range(N_FEATURES) if i not in port_rows]
    assert torch.equal(out[:, others], (x * mask[:, None, :])[:, others])
    assert torch.all(out[:, :, 5:] == 0)
    dst, src = groups[0][0], groups[1][0]
    assert {tuple(out[i, dst, 0].tolist()) for i in range(64)} == {(1.0, 0.0), (0.0, 1.0), (0.0, 0.0)}
    assert {tuple(out[i, src, 0].tolist()) for i in range(64)} == {(1.0,), (0.0,)}
    assert all(len(set(out[i, dst[0], :5].tolist())) == 1 for i in range(64))  # one class per window


def test_distance_shift_keeps_probabilities_and_raises_energy_of_novel_windows():
    from inference.model import fit_distance
    from inference.onnx_detector import calibrate

    torch.manual_seed(0)
    net = WindowCNN(ModelConfig(n_features=N_FEATURES, n_classes=3)).eval()
    rng = np.random.default_rng(3)
    x = rng.normal(size=(300, N_FEATURES, 8)).astype(np.float32)
    mask = np.ones((300, 8), np.float32)
    y = rng.integers(0, 3, 300)
    with torch.no_grad():
        feats = net.features(torch.from_numpy(x), torch.from_numpy(mask)).numpy()
    shifted = fit_distance(net, feats, y).eval()
    far = (x * 5).clip(-8, 8)  # windows unlike anything the distances were fitted on
    for batch in (x, far):
        p0, e0 = calibrate(torch_logits(net, batch, mask), 1.5)
        p1, e1 = calibrate(torch_logits(shifted, batch, mask), 1.5)
        assert np.allclose(p0, p1, atol=2e-4)     # verdicts and confidence untouched
        assert np.all(e1 >= e0 - 1e-3)            # energy only goes up, by the distance
    rise = lambda b: (calibrate(torch_logits(shifted, b, mask), 1.5)[1]  # noqa: E731
                      - calibrate(torch_logits(net, b, mask), 1.5)[1]).mean()
    assert rise(far) > 3 * rise(x)
    data = export_onnx(shifted, x, mask)  # the wrapper exports and matches torch
    assert np.allclose(run_onnx(data, far[:4], mask[:4]), torch_logits(shifted, far[:4], mask[:4]),
                       rtol=1e-4, atol=1e-2)


def test_run_variants_and_attack_floors_reach_the_bundle_and_the_detector(flows, tmp_path):
    from dataclasses import replace

    from inference.train import TrainConfig

    cfg = replace(TrainConfig(), run_variants=2, confidence=0.9, attack_confidence=0.6, members=1)
    b = train_bundle(flows, epochs=2, progress=False, out_dir=tmp_path / "v", config=cfg)
    plain = train_bundle(flows, epochs=2, progress=False, out_dir=tmp_path / "p",
                         config=replace(cfg, run_variants=0))
    src = b.meta.training["source"]
    attacks = int((flows["label"] != "benign").sum())
    # copies of every attack flow but those of the validation windows
    assert src["train_flows"] == len(flows) and 0 < src["variant_flows"] < 2 * attacks
    assert list(src["variation"]["rtt_ms"]) == [0.0, 300.0]
    w, wp = b.meta.training["windows"], plain.meta.training["windows"]
    assert w["val"] == wp["val"]                      # validation: the same real windows
    assert sum(w["train"].values()) > sum(wp["train"].values())
    th = b.meta.thresholds
    assert th.confidence == 0.9 and th.per_class == {c: 0.6 for c in b.class_names if c != "benign"}
    probs = np.full((2, len(b.class_names)), 0.05, np.float32)
    probs[0, 0], probs[1, 1] = 0.7, 0.7      # benign at 0.7: unsure; an attack at 0.7: an alert
    # No shape rule: these all-zero windows are 8 flows to one service, so the one-service rule
    # would re-rank a scan call; the floors are the subject here.
    det = OnnxDetector(b, session=_FixedLogits(np.log(probs)), shape_rules="none")
    det.temperature = 1.0
    s = det.score(np.zeros((2, N_FEATURES, 8), np.float32), np.ones((2, 8), np.float32))
    assert s.low_confidence.tolist() == [True, False]


class _FixedLogits:
    def __init__(self, logits: np.ndarray) -> None:
        self.logits = logits

    def run(self, _names, _feeds):
        return [self.logits]

"""Static int8: a QDQ graph that agrees with fp32, the bundle's keep-or-drop rule, timing."""
from __future__ import annotations

import numpy as np
import onnx
import pytest

pytest.importorskip("torch")

from inference.features import N_FEATURES  # noqa: E402
from inference.datasets.synthetic import synthetic_flows  # noqa: E402
from inference.export import export_onnx, run_onnx  # noqa: E402
from inference.features import FeatureSchema  # noqa: E402
from inference.model import ModelConfig, WindowCNN  # noqa: E402
from inference.onnx_detector import OnnxDetector  # noqa: E402
from inference.quantize import calibration_sample, measure_speed, quantize_int8  # noqa: E402
from inference.train import TrainConfig, frame_windows, train_bundle  # noqa: E402


@pytest.fixture(scope="module")
def windows():
    w = frame_windows(synthetic_flows(hosts_per_class=3, flows_per_host=48, seed=5), k=8)
    xn = FeatureSchema.fit(w.x, w.mask).normalise(w.x, w.mask)
    return xn, w.mask, np.array(w.labels)


def test_quantized_graph_is_qdq_smaller_and_agrees(windows):
    import torch

    xn, mask, _ = windows
    torch.manual_seed(0)
    fp32 = export_onnx(WindowCNN(ModelConfig(n_features=xn.shape[1], n_classes=6)), xn, mask)
    int8 = quantize_int8(fp32, xn, mask)
    ops = {n.op_type for n in onnx.load_from_string(int8).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    assert len(int8) < len(fp32)
    a, b = run_onnx(fp32, xn, mask), run_onnx(int8, xn, mask)
    assert np.mean(a.argmax(1) == b.argmax(1)) > 0.9
    assert np.abs(a - b).max() < 0.25 * np.abs(a).max()


def test_calibration_sample_keeps_every_class(windows):
    xn, mask, y = windows
    xs, ms = calibration_sample(xn, mask, y, n=12, seed=0)
    assert len(xs) == 12 and ms.shape == (12, 8)
    assert calibration_sample(xn, mask, y, n=10_000)[0] is xn


def test_bundle_keeps_int8_only_within_tolerance(tmp_path):
    flows = synthetic_flows(hosts_per_class=3, flows_per_host=48, seed=3)
    b = train_bundle(flows, epochs=6, int8=True, progress=False, out_dir=tmp_path / "a")
    info = b.meta.training["int8"]
    assert info["requested"] and info["included"] == (b.meta.int8 is not None)
    assert info["val_accuracy_fp32"] - info["val_accuracy_int8"] <= 0.005 or b.meta.int8 is None
    b.verify()
    if b.meta.int8 is not None:
        s = OnnxDetector(b, int8=True).score(np.zeros((2, N_FEATURES, 8), np.float32), np.ones((2, 8), np.float32))
        assert s.probabilities.shape == (2, len(b.class_names))
    strict = TrainConfig(max_int8_drop=-1.0)  # int8 can never be within a negative tolerance
    b2 = train_bundle(flows, epochs=6, int8=True, progress=False, out_dir=tmp_path / "b",
                      config=strict)
    assert b2.meta.int8 is None and b2.meta.training["int8"]["included"] is False
    assert not (tmp_path / "b" / "model.int8.onnx").exists()


def test_measure_speed_reports_each_batch_size(windows):
    import torch

    xn, mask, _ = windows
    torch.manual_seed(0)
    fp32 = export_onnx(WindowCNN(ModelConfig(n_features=xn.shape[1], n_classes=6)), xn, mask)
    rows = measure_speed(fp32, xn, mask, batch_sizes=(1, 32), min_seconds=0.05)
    assert [r["batch"] for r in rows] == [1, 32]
    assert all(r["windows_per_s"] > 0 and r["p99_ms"] >= r["p50_ms"] > 0 for r in rows)

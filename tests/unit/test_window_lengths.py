"""Short windows run on their real positions only: the served graph takes any window length
(inference.conv_matmul.any_window_length, checked on a probe), and OnnxDetector.run_by_length
groups a batch by length. Same answers as one padded run, on the shipped model and on real
captures; fewer rows where windows are short."""
from __future__ import annotations

import numpy as np
import onnx
import pandas as pd
import pytest
from onnx import numpy_helper

from inference.bundle import DEFAULT_BUNDLE_DIR, Bundle
from inference.conv_matmul import any_window_length, check_any_window_length, conv_as_matmul
from inference.onnx_detector import OnnxDetector
from inference.windowing import stack_windows, windows_from_frame
from tests.unit.test_source_only_classes import REPO


@pytest.fixture(scope="module")
def bundle():
    return Bundle.load(DEFAULT_BUNDLE_DIR)


def test_the_shipped_model_takes_any_window_length_with_the_same_answers(bundle):
    fast, _ = conv_as_matmul(bundle.onnx_path(False).read_bytes())
    flexible = any_window_length(fast)
    assert flexible is not None
    dims = [d.dim_param or d.dim_value for d in onnx.load_from_string(flexible).graph.input[0].type.tensor_type.shape.dim]
    assert dims == ["n", len(bundle.feature_schema.names), "k"]
    assert check_any_window_length(fast, flexible) is None


def test_the_check_catches_a_wrong_fill(bundle):
    """The fill fraction is n / K exported: a graph that divides by anything else gives other
    answers on short windows, and the check says so (the edge then keeps K fixed)."""
    fast, _ = conv_as_matmul(bundle.onnx_path(False).read_bytes())
    m = onnx.load_from_string(any_window_length(fast))
    for init in m.graph.initializer:
        if init.name.endswith("/k"):   # [0, K]: the K the fill divides by
            init.CopyFrom(numpy_helper.from_array(np.array([0, 4], np.int64), init.name))
    why = check_any_window_length(fast, m.SerializeToString())
    assert why is not None and "differs" in why


def test_a_graph_that_reads_the_window_length_elsewhere_is_left_fixed():
    from onnx import TensorProto, helper

    nodes = [helper.make_node("Shape", ["windows"], ["s"]), helper.make_node("ReduceSum", ["mask"], ["logits"])]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("windows", TensorProto.FLOAT, ["n", 3, 8]),
                                       helper.make_tensor_value_info("mask", TensorProto.FLOAT, ["n", 8])],
                          [helper.make_tensor_value_info("logits", TensorProto.FLOAT, None)])
    assert any_window_length(helper.make_model(g).SerializeToString()) is None


class _Recorder:
    """A session that sums each window's real positions (padding is zero, so any cut of a
    window past its last flow gives the same sums) and records the shapes it was run on."""

    def __init__(self, n_classes: int) -> None:
        self.c, self.shapes = n_classes, []

    def get_inputs(self):
        return [type("I", (), {"shape": ["n", 54, "k"]})(), type("I", (), {"shape": ["n", "k"]})()]

    def get_outputs(self):
        return [type("O", (), {"name": "logits"})()]

    def run(self, names, feeds):
        x, mask = feeds["windows"], feeds["mask"]
        self.shapes.append(x.shape)
        return [x[:, :self.c, :].sum(axis=2) + mask.sum(axis=1, keepdims=True)]


def _windows(fills: list[int], f: int = 54, k: int = 8, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    mask = (np.arange(k)[None, :] < np.asarray(fills)[:, None]).astype(np.float32)
    return rng.normal(size=(len(fills), f, k)).astype(np.float32) * mask[:, None, :], mask


def test_a_batch_runs_in_length_groups_and_answers_in_its_own_order(bundle):
    c = len(bundle.class_names)
    fills = [1] * 40 + [2] * 20 + [3] * 5 + [4] * 30 + [8] * 60 + [6] * 10
    order = np.random.default_rng(1).permutation(len(fills))
    x, mask = _windows([fills[i] for i in order])
    rec = _Recorder(c)
    got = OnnxDetector(bundle, session=rec).run(x, mask)
    # 1: 40 windows; 2: 20; 3-4 (5 + 30) at 4; 5-8 at 8; no group under MIN_GROUP alone
    assert sorted(s[0] for s in rec.shapes) == [20, 35, 40, 70]
    assert {s[0]: s[2] for s in rec.shapes} == {40: 1, 20: 2, 35: 4, 70: 8}
    padded = _Recorder(c)
    want = OnnxDetector(bundle, session=padded, by_length=False).run(x, mask)
    assert padded.shapes == [x.shape]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_small_groups_join_the_next_and_a_full_batch_runs_once(bundle):
    c = len(bundle.class_names)
    rec = _Recorder(c)
    det = OnnxDetector(bundle, session=rec)
    x, mask = _windows([1] * 15 + [2] * 3 + [8] * 100)            # 18 windows at 2 flows, the rest full
    det.run(x, mask)
    assert [s[2] for s in rec.shapes] == [2, 8] and [s[0] for s in rec.shapes] == [18, 100]
    rec.shapes.clear()
    x, mask = _windows([1] * 5 + [3] * 5 + [8] * 200)              # every short group too small: one run
    det.run(x, mask)
    assert rec.shapes == [x.shape]


def test_real_captures_score_the_same_by_length_and_padded(bundle):
    """The shipped model on the nDPI captures (mostly one-flow windows) and the lab's held-out
    capture, batches of 256 as the engine takes them: identical verdicts, probabilities and
    OOD scores to float rounding."""
    spec = bundle.meta.window
    ndpi = pd.read_parquet(REPO / "data" / "ndpi" / "flows.parquet")
    windows = [w for _, g in ndpi.groupby("file") for w in
               windows_from_frame(g, k=spec.k, seconds=spec.seconds, views=spec.views, label_column=None)]
    lab = pd.read_parquet(REPO / "data" / "lab" / "heldout.parquet").head(8000)
    windows += windows_from_frame(lab, k=spec.k, seconds=spec.seconds, views=spec.views, label_column=None)
    served = OnnxDetector(bundle).session
    cuts: list[int] = []

    class Counting:  # the served session, counting the window lengths it runs at
        get_inputs, get_outputs = served.get_inputs, served.get_outputs

        def run(self, names, feeds):
            cuts.append(feeds["mask"].shape[1])
            return served.run(names, feeds)

    by_length = OnnxDetector(bundle, session=Counting())
    padded = OnnxDetector(bundle, session=served, by_length=False)
    for i in range(0, len(windows), 256):
        x, mask = stack_windows(windows[i:i + 256], spec.k)
        a, b = by_length.score(x, mask), padded.score(x, mask)
        assert (a.predicted == b.predicted).all() and (a.uncertain == b.uncertain).all()
        np.testing.assert_allclose(a.probabilities, b.probabilities, atol=1e-5)
        np.testing.assert_allclose(a.ood, b.ood, rtol=1e-5, atol=1e-3)
    assert cuts.count(1) >= 30 and cuts.count(8) >= 30    # the one-flow groups ran on one position


def test_stacking_pads_each_window_after_its_own_flows():
    from types import SimpleNamespace

    from inference.features import N_FEATURES

    rng = np.random.default_rng(3)
    windows = [SimpleNamespace(features=rng.normal(size=(n, N_FEATURES)).astype(np.float32))
               for n in (1, 8, 3, 1, 5, 2)]
    x, mask = stack_windows(windows, 8)
    assert x.shape == (6, N_FEATURES, 8) and mask.sum(axis=1).tolist() == [1, 8, 3, 1, 5, 2]
    for i, w in enumerate(windows):
        n = len(w.features)
        assert np.array_equal(x[i, :, :n], w.features.T) and not x[i, :, n:].any()
        assert mask[i, :n].all() and not mask[i, n:].any()
    assert stack_windows([], 8)[0].shape == (0, N_FEATURES, 8)


def test_the_int8_model_takes_any_window_length_too(bundle):
    """Its convolutions are left as they are (their weights come from DequantizeLinear), but
    its window axis is made dynamic: the nDPI windows score the same both ways."""
    if not bundle.onnx_path(True).is_file():
        pytest.skip("the default bundle has no int8 model")
    spec = bundle.meta.window
    det = OnnxDetector(bundle, int8=True)
    assert det._any_length
    padded = OnnxDetector(bundle, session=det.session, int8=True, by_length=False)
    ndpi = pd.read_parquet(REPO / "data" / "ndpi" / "flows.parquet")
    windows = [w for _, g in ndpi.groupby("file") for w in
               windows_from_frame(g, k=spec.k, seconds=spec.seconds, views=spec.views, label_column=None)]
    for i in range(0, len(windows), 256):
        x, mask = stack_windows(windows[i:i + 256], spec.k)
        a, b = det.score(x, mask), padded.score(x, mask)
        assert (a.predicted == b.predicted).all() and (a.uncertain == b.uncertain).all()
        np.testing.assert_allclose(a.probabilities, b.probabilities, atol=1e-5)


def test_member_logits_come_back_in_the_batchs_order_too(bundle):
    """The member-disagreement gate reads the members' logits [M, n, C]: grouped by length,
    they are put back on their windows' axis like the logits."""
    c = len(bundle.class_names)

    class Members(_Recorder):
        def run(self, names, feeds):
            z = super().run(["logits"], feeds)[0]
            out = {"logits": z, "member_logits": np.stack([z, 2 * z, z - 1])}
            return [out[n] for n in names]

    fills = [1] * 20 + [8] * 30 + [2] * 20
    order = np.random.default_rng(2).permutation(len(fills))
    x, mask = _windows([fills[i] for i in order])
    det = OnnxDetector(bundle, session=Members(c))
    got = det.run_by_length(x, mask, ["logits", "member_logits"])
    want = OnnxDetector(bundle, session=Members(c), by_length=False).run_by_length(x, mask, ["logits", "member_logits"])
    assert len(det.session.shapes) == 3 and got[1].shape == (3, len(fills), c)
    for a, b in zip(got, want):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)

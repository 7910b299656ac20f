"""The member-disagreement gate: an ensemble's benign call needs every member's p(benign) at or
above the bundle's `member_benign`; the graph carries the members' logits; tau comes from the
validation windows when a bundle is made."""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from contracts.errors import ModelError
from inference.calibration import member_benign_threshold
from inference.features import N_FEATURES
from inference.onnx_detector import OnnxDetector

torch = pytest.importorskip("torch")

from inference.datasets.synthetic import synthetic_flows  # noqa: E402
from inference.train import TrainConfig, train_bundle  # noqa: E402
from inference.windowing import windows_from_frame  # noqa: E402


@pytest.fixture(scope="module")
def flows():
    return synthetic_flows(hosts_per_class=3, flows_per_host=48, seed=3)


@pytest.fixture(scope="module")
def gated(flows, tmp_path_factory):
    cfg = replace(TrainConfig(), members=2, member_gate=0.05)
    return train_bundle(flows, seed=0, epochs=2, progress=False, int8=True, config=cfg,
                        out_dir=tmp_path_factory.mktemp("gated"))


def test_a_gated_bundle_records_tau_and_serves_the_members_logits(gated, flows):
    th = gated.meta.thresholds
    assert th.member_benign is not None and 0 < th.member_benign < 1
    assert "quantile of the lowest member's p(benign)" in gated.meta.training["thresholds"]["member_benign"]
    gated.verify()
    x = windows_from_frame(flows, k=8)
    for int8 in (False, True):  # the conv rewrite (fp32) and the quantised graph both keep it
        det = OnnxDetector(gated, int8=int8)
        assert [o.name for o in det.session.get_outputs()] == ["logits", "member_logits"]
        from inference.windowing import stack_windows

        xr, mask = stack_windows(x, 8)
        logits, members = det.session.run(None, {"windows": det.schema.normalise(xr, mask), "mask": mask})
        assert members.shape == (2, *logits.shape)
        np.testing.assert_allclose(members.mean(axis=0), logits, atol=1e-4 * max(1.0, np.abs(logits).max()))


def test_without_the_gate_the_graph_and_thresholds_are_as_before(flows, tmp_path):
    b = train_bundle(flows, seed=0, epochs=1, progress=False, out_dir=tmp_path,
                     config=replace(TrainConfig(), members=2))
    assert b.meta.thresholds.member_benign is None and "member_benign" not in b.meta.training["thresholds"]
    assert [o.name for o in OnnxDetector(b).session.get_outputs()] == ["logits"]


class _Session:
    """Fixed logits and member logits, as an ONNX Runtime session returns them."""

    def __init__(self, members: np.ndarray, outputs=("logits", "member_logits")) -> None:
        self.members, self.outputs = members.astype(np.float32), outputs

    def get_outputs(self):
        return [type("O", (), {"name": n})() for n in self.outputs]

    def run(self, names, _feeds):
        full = {"logits": self.members.mean(axis=0), "member_logits": self.members}
        return [full[n] for n in names]


def _members(*rows: tuple[list[float], list[float]]) -> np.ndarray:
    """Two members' probabilities per window, as log-probabilities [2, n, C]."""
    return np.log(np.array([[a for a, _ in rows], [b for _, b in rows]], dtype=np.float64))


def test_the_gate_moves_only_benign_calls_the_members_disagree_on(gated):
    c = len(gated.class_names)

    def p(benign: float) -> list[float]:  # benign, then the rest spread over the attack classes
        return [benign] + [(1 - benign) / (c - 1)] * (c - 1)

    def attack(first: float) -> list[float]:
        return [0.005, first] + [(0.995 - first) / (c - 2)] * (c - 2)

    z = _members((p(0.999), p(0.998)),       # both members sure of benign: benign
                 (p(0.9999), p(0.3)),        # the mean is benign, one member is not: uncertain
                 (attack(0.99), attack(0.6)),  # an attack call: the gate never touches it
                 (p(0.5), p(0.5)))           # unsure anyway: low confidence, not the gate
    meta = gated.meta.model_copy(deep=True)
    meta.thresholds = meta.thresholds.model_copy(update={"member_benign": 0.6, "ood": None, "support": {},
                                                         "confidence": 0.9, "per_class": {}})
    b = type(gated)(gated.path, meta)
    # Without the one-service rule: these all-zero windows are 8 flows to one service, and the
    # attack call (class 1) may be a scan it would re-rank; only the member gate is judged here.
    det = OnnxDetector(b, session=_Session(z), shape_rules="flood_shape,repeat_shape")
    det.temperature = 1.0
    x = np.zeros((4, N_FEATURES, 8), np.float32)
    s = det.score(x, np.ones((4, 8), np.float32))
    assert s.predicted.tolist()[:3] == [0, 0, 1]
    assert s.uncertain.tolist() == [False, True, False, True]
    assert s.low_confidence.tolist() == [False, False, False, True]   # the gate's reason is "ood"
    # with no gate in the bundle the same logits pass as benign
    meta.thresholds.member_benign = None
    s0 = OnnxDetector(type(gated)(gated.path, meta), session=_Session(z, ("logits",)),
                      shape_rules="flood_shape,repeat_shape").score(
        x, np.ones((4, 8), np.float32))
    assert not s0.uncertain[1]


def test_a_bundle_that_sets_the_gate_needs_the_member_output(gated):
    z = np.zeros((2, 1, len(gated.class_names)))
    with pytest.raises(ModelError, match="member_logits"):
        OnnxDetector(gated, session=_Session(z, ("logits",)))


def test_tau_defers_the_share_of_validation_benign_calls():
    rng = np.random.default_rng(0)
    n = 4000
    y = np.r_[np.zeros(n, int), np.ones(500, int)]          # benign, then one attack class
    base = np.c_[np.r_[np.full(n, 4.0), np.full(500, -4.0)], np.zeros(n + 500)]
    members = np.stack([base + rng.normal(0, 1.5, base.shape) for _ in range(3)])
    tau, used = member_benign_threshold(members, y, 1.0, 0, floor=0.9, ood=None, share=0.02)
    called = (y == 0) & (members.mean(axis=0).argmax(axis=1) == 0)
    p = np.exp(members[:, :, 0]) / np.exp(members).sum(axis=2)
    z_mean = members.mean(axis=0)
    conf = np.exp(z_mean[:, 0]) / np.exp(z_mean).sum(axis=1)
    called &= conf >= 0.9
    assert used == int(called.sum()) and used > 3000
    assert abs((p.min(axis=0)[called] < tau).mean() - 0.02) < 0.002
    assert member_benign_threshold(members[:, n:], y[n:], 1.0, 0, 0.9, None, 0.02) == (None, 0)

"""A destination window cannot show a host sweep (contracts.window.SOURCE_ONLY_CLASSES): the
detector sends such a call to `uncertain` (reason ood), never to an alert naming the probed
host. Source windows called a sweep, and destination windows called anything else, are
unchanged."""
from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from evaluation.openworld import evaluate_open_world
from inference.bundle import DEFAULT_BUNDLE_DIR, Bundle
from inference.features import FEATURE_NAMES, N_FEATURES
from inference.onnx_detector import OnnxDetector

REPO = Path(__file__).resolve().parents[2]
VIEW_DST = FEATURE_NAMES.index("view_dst")


class _Session:
    """Logits that make each window's class the one asked for, confidently."""

    def __init__(self, classes: list[int], n_classes: int) -> None:
        self.logits = np.full((len(classes), n_classes), 0.0, np.float32)
        self.logits[np.arange(len(classes)), classes] = 16.0

    def run(self, names, feeds):
        return [self.logits]


@pytest.fixture(scope="module")
def bundle():
    return Bundle.load(DEFAULT_BUNDLE_DIR)


def test_a_destination_window_called_a_sweep_is_deferred_a_source_window_is_not(bundle):
    names = list(bundle.class_names)
    sweep, flood, benign = names.index("host_sweep"), names.index("syn_flood"), names.index("benign")
    cases = [(sweep, "dst"), (sweep, "src"), (flood, "dst"), (flood, "src"), (benign, "dst")]
    x = np.zeros((len(cases), N_FEATURES, 8), np.float32)
    mask = np.zeros((len(cases), 8), np.float32)
    mask[:, :3] = 1.0
    for i, (_, view) in enumerate(cases):
        x[i, VIEW_DST, :3] = view == "dst"
    det = OnnxDetector(bundle, session=_Session([c for c, _ in cases], len(names)))
    det.thresholds = det.thresholds.model_copy(update={"ood": None, "support": {}})
    s = det.score(x, mask)
    assert [names[p] for p in s.predicted] == [names[c] for c, _ in cases]
    assert (s.confidence > 0.95).all() and not s.low_confidence.any()
    assert s.uncertain.tolist() == [True, False, False, False, False]


def test_the_shipped_bundle_raises_no_sweep_alert_on_a_destination_window():
    """The fifth held-out capture, where the shipped network calls 229 destination windows
    host sweeps (sweep targets' windows, and 1 benign false alert before the rule): every one
    goes to `uncertain`. Also fails if the schema's `view_dst` is renamed (the rule would be
    silently off)."""
    bundle = Bundle.load(DEFAULT_BUNDLE_DIR)
    with tempfile.TemporaryDirectory() as tmp:
        rep = evaluate_open_world(REPO / "data" / "openworld" / "lab-heldout-e.toml", bundle, out_dir=tmp, plots=False,
                                  progress=False, windows_out=Path(tmp) / "w.parquet")
        w = pd.read_parquet(rep["files"]["windows"])
    called = w[(w["view"] == "dst") & (w["predicted"] == "host_sweep")]
    assert len(called) >= 1 and called["uncertain"].all()
    assert not ((w["verdict"] == "false_alert") & (w["view"] == "dst") & (w["predicted"] == "host_sweep")).any()

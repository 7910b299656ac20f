"""The energy gate defers unfamiliar windows the model calls benign, never ones it calls an attack."""
from __future__ import annotations

import numpy as np

from inference.bundle import Bundle, write_bundle
from inference.onnx_detector import OnnxDetector
from inference.windowing import stack_windows, windows_from_frame
from inference.datasets.synthetic import synthetic_flows


def test_only_benign_calls_are_deferred_as_unfamiliar(tiny_bundle, tmp_path):
    meta = tiny_bundle.meta.model_copy(deep=True)
    meta.thresholds.ood = -1e9            # every window is "unfamiliar" to the energy score
    meta.thresholds.support = None
    b = write_bundle(tmp_path, tiny_bundle.onnx_path().read_bytes(), meta)
    flows = synthetic_flows(hosts_per_class=2, flows_per_host=24, seed=5)
    x, mask = stack_windows(windows_from_frame(flows, k=8, views=["src"]), 8)
    s = OnnxDetector(b).score(x, mask)
    benign = np.array(b.class_names)[s.predicted] == b.meta.benign_class
    assert benign.any() and (~benign).any()
    assert s.uncertain[benign].all()                               # unfamiliar and benign: a person looks
    assert (s.uncertain[~benign] == s.low_confidence[~benign]).all()  # an attack call stands on its floor
    plain = OnnxDetector(tiny_bundle).score(x, mask)
    assert (plain.predicted == s.predicted).all()

"""Per-protocol flow support (inference.support): a flow bigger than any flow of its protocol
in training puts its window out of distribution, in the detector and in a trained bundle."""
from __future__ import annotations

import math

import numpy as np
import pytest

from inference.features import FEATURE_NAMES, N_FEATURES
from inference.support import beyond_support, flow_support

PK, BY = FEATURE_NAMES.index("log_packets"), FEATURE_NAMES.index("log_bytes")


def _windows(flows: list[list[tuple[str, int, int]]], k: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """Raw windows of (protocol, packets, bytes) flows; the rest of each window is padding."""
    x = np.zeros((len(flows), N_FEATURES, k), np.float32)
    mask = np.zeros((len(flows), k), np.float32)
    for i, w in enumerate(flows):
        for j, (proto, packets, size) in enumerate(w):
            if proto in ("tcp", "udp", "icmp"):
                x[i, FEATURE_NAMES.index(f"proto_{proto}"), j] = 1.0
            x[i, PK, j], x[i, BY, j] = np.log1p(packets), np.log1p(size)
            mask[i, j] = 1.0
    return x, mask


def test_support_is_each_protocols_largest_flow_plus_the_margin():
    x, mask = _windows([[("icmp", 46, 4600), ("tcp", 5000, 4_000_000)], [("icmp", 3, 300), ("gre", 10, 900)]])
    x[1, PK, 5] = 99.0                                   # padding: never counts
    sup = flow_support(x, mask, margin=math.log(2))
    assert set(sup) == {"tcp", "icmp", "other"}          # no UDP flow seen: no UDP support
    assert sup["icmp"]["log_packets"] == pytest.approx(np.log1p(46) + math.log(2), abs=1e-4)
    assert sup["tcp"]["log_bytes"] == pytest.approx(np.log1p(4_000_000) + math.log(2), abs=1e-4)
    assert sup["other"]["log_packets"] == pytest.approx(np.log1p(10) + math.log(2), abs=1e-4)


def test_a_ping_flood_flow_is_beyond_support_a_tcp_flow_of_its_size_is_not():
    train, tmask = _windows([[("icmp", 46, 4600), ("tcp", 5000, 4_000_000), ("udp", 800, 90_000)]])
    sup = flow_support(train, tmask, margin=math.log(2))
    x, mask = _windows([
        [("icmp", 1300, 127_400)],                       # ping -f metered as one flow
        [("tcp", 1300, 127_400), ("icmp", 80, 8000)],    # big for ICMP only under twice 46: inside
        [("icmp", 20, 2000)] * 8,
        [("udp", 50_000, 1_000_000)],                    # UDP flood in one flow
        [("gre", 10**6, 10**8)],                         # a protocol training never had: no gate
    ])
    assert beyond_support(x, mask, sup).tolist() == [True, False, False, True, False]
    mask[0, 0] = 0.0                                     # the same values as padding: ignored
    assert not beyond_support(x, mask, sup)[0]
    assert not beyond_support(x, mask, {}).any()         # bundles made before the gate


def test_the_detector_defers_a_window_beyond_support_as_ood():
    from types import SimpleNamespace

    from inference.onnx_detector import OnnxDetector

    train, tmask = _windows([[("icmp", 46, 4600)]])
    x, mask = _windows([[("icmp", 1300, 127_400)], [("icmp", 40, 4000)]])
    logits = np.log(np.array([[0.99, 0.01], [0.99, 0.01]], np.float32))
    det = OnnxDetector.__new__(OnnxDetector)
    det.class_names, det.temperature = ["benign", "icmp_thing"], 1.0
    det.schema = SimpleNamespace(normalise=lambda x_, m_: x_)
    det.session = SimpleNamespace(run=lambda names, feeds: [logits])
    det._floors = np.array([0.9, 0.6], np.float32)
    det._view_dst, det._source_only, det._outputs = None, np.zeros(2, bool), ["logits"]
    det._flood_shape = None                   # no view_dst in this schema: no flood-shape rule
    det._repeat_shape = None                  # nor a repeat-shape rule
    det._any_length = False                   # a fixed-length session
    det._one_service = None                   # no one-service rule
    for support, want in (({}, [False, False]), (flow_support(train, tmask, math.log(2)), [True, False])):
        det.thresholds = SimpleNamespace(ood=None, support=support)
        s = det.score(x, mask)
        assert s.uncertain.tolist() == want and not s.low_confidence.any()


def test_a_bundle_made_before_the_gate_keeps_its_version():
    """A registry's bundles were hashed without the support field: reading it back as empty
    must not change their version, or every one would fail verification after an upgrade.
    tests/data/bundle-before-support.json is the default bundle 770d01ca's bundle.json."""
    import json
    from pathlib import Path

    from inference.bundle import BundleMeta, content_version

    raw = (Path(__file__).parents[1] / "data" / "bundle-before-support.json").read_text()
    assert "support" not in json.loads(raw)["thresholds"]
    meta = BundleMeta.model_validate_json(raw)
    assert meta.thresholds.support == {} and meta.version == "770d01ca719af1fc"
    assert content_version(meta) == meta.version
    meta.thresholds.support = {"icmp": {"log_packets": 4.5}}
    assert content_version(meta) != meta.version          # a bundle with the gate hashes it

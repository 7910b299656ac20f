"""Outlier exposure's made-up windows (inference.train.intensified): benign windows whose
hosts act beyond any benign host, padding left alone, the flows themselves unchanged."""
from __future__ import annotations

import numpy as np

from inference.features import FEATURE_NAMES
from inference.train import intensified

F = {n: i for i, n in enumerate(FEATURE_NAMES)}


def _windows(n: int = 200, k: int = 8, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Benign-looking raw windows: TCP flows of 10-100 packets, ICMP flows of 1-4, and padding."""
    rng = np.random.default_rng(seed)
    x = np.zeros((n, len(FEATURE_NAMES), k), np.float32)
    mask = np.zeros((n, k), np.float32)
    mask[:, :6] = 1
    icmp = rng.random((n, k)) < 0.3
    packets = np.where(icmp, rng.integers(1, 5, (n, k)), rng.integers(10, 101, (n, k))).astype(np.float64)
    x[:, F["proto_icmp"], :] = icmp
    x[:, F["proto_tcp"], :] = ~icmp
    x[:, F["log_packets"], :] = np.log1p(packets)
    x[:, F["log_fwd_packets"], :] = np.log1p(np.ceil(packets / 2))
    x[:, F["log_bytes"], :] = np.log1p(packets * 100)
    x[:, F["log_mean_piat_ms"], :] = np.log1p(50.0)
    x[:, F["log_duration_ms"], :] = np.log1p(1000.0)
    x[:, F["log_gap_ms"], :] = np.log1p(200.0)
    x[:, F["h10_flows"], :] = np.log1p(rng.integers(1, 20, (n, k)))
    x[:, F["h10_new_peers"], :] = np.log1p(rng.integers(0, 5, (n, k)))
    return x * mask[:, None, :], mask


def test_intensified_hosts_go_beyond_every_benign_host_and_flows_stay():
    x, mask = _windows()
    out, _ = intensified(x, mask, np.random.default_rng(2), (1.5, 30.0))
    real = mask.astype(bool)
    top = np.expm1(np.quantile(x[:, F["h10_flows"], :][real], 0.999))
    assert (np.expm1(out[:, F["h10_flows"], :])[real] >= 1.5 * top - 1e-3).all()
    flow = [i for n, i in F.items() if not n.startswith("h")]   # every feature of the flows themselves
    np.testing.assert_array_equal(out[:, flow, :], x[:, flow, :])
    # Half fan out too (new peers and services beyond benign), half failed, chosen apart.
    peers_top = np.expm1(np.quantile(x[:, F["h10_new_peers"], :][real], 0.999))
    fan = np.expm1(out[:, F["h10_new_peers"], 0]) >= 1.5 * peers_top - 1e-3
    failed = out[:, F["h10_failed"], 0] == 1.0
    assert 0.3 < fan.mean() < 0.7 and 0.3 < failed.mean() < 0.7
    assert (out[:, :, 6:] == 0).all()

"""Outlier exposure's made-up windows (inference.train.intensified): benign windows whose
hosts act beyond any benign host, padding left alone, the flows themselves unchanged."""
from __future__ import annotations

import numpy as np

from inference.features import FEATURE_NAMES
from inference.train import intensified

F = {n: i for i, n in enumerate(FEATURE_NAMES)}


def _windows(n: int = 200, k: int = 8, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Raw windows of 6 flows and 2 padding slots: every feature random, the hosts' flow and
    new-peer counts at benign levels (history features hold log1p of counts)."""
    rng = np.random.default_rng(seed)
    x = rng.random((n, len(FEATURE_NAMES), k)).astype(np.float32)
    x[:, F["h10_failed"], :] = 0.0
    for name, hi in (("flows", 20), ("new_peers", 5)):
        x[:, F[f"h10_{name}"], :] = np.log1p(rng.integers(0, hi, (n, k)))
    mask = np.zeros((n, k), np.float32)
    mask[:, :6] = 1
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
    assert 0.15 < (fan & failed).mean() < 0.35
    assert (out[:, :, 6:] == 0).all()

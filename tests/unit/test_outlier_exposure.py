"""Outlier exposure's made-up windows (inference.train): benign windows pushed beyond any
benign host (intensified) or any benign flow of their protocol (voluminous), padding left
alone, nothing else of the window changed."""
from __future__ import annotations

import numpy as np

from inference.features import FEATURE_NAMES
from inference.train import intensified, voluminous

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
    x[:, F["h10_flows"], :] = np.log1p(rng.integers(1, 20, (n, k)))
    return x * mask[:, None, :], mask


def test_voluminous_flows_go_beyond_every_benign_flow_of_their_protocol():
    x, mask = _windows()
    out, om = voluminous(x, mask, np.random.default_rng(1), (1.5, 30.0))
    real = mask.astype(bool)
    icmp = (x[:, F["proto_icmp"], :] > 0.5) & real
    tcp = (x[:, F["proto_tcp"], :] > 0.5) & real
    pk = lambda a: np.expm1(a[:, F["log_packets"], :])  # noqa: E731
    top_icmp, top_tcp = np.quantile(pk(x)[icmp], 0.999), np.quantile(pk(x)[tcp], 0.999)
    assert (pk(out)[icmp] >= 1.5 * top_icmp - 1e-3).all()
    assert (pk(out)[tcp] >= 1.5 * top_tcp - 1e-3).all()
    # Beyond the top of its own protocol, at most 30x it: the top is per protocol, not the
    # top of all flows (a TCP flow's 100 packets would put every ICMP flow at >= 150).
    assert (pk(out)[icmp] <= 30 * top_icmp + 1e-3).all()
    # Bytes per packet kept; the gaps shrink by as much as the packets grow; the rest is as it was.
    bpp = lambda a: np.expm1(a[:, F["log_bytes"], :])[real] / pk(a)[real]  # noqa: E731
    np.testing.assert_allclose(bpp(out), bpp(x), rtol=1e-3)
    grow = pk(out)[real] / pk(x)[real]
    piat = np.expm1(out[:, F["log_mean_piat_ms"], :])[real]
    np.testing.assert_allclose(piat * grow, 50.0, rtol=1e-3)
    for name in ("log_duration_ms", "h10_flows", "proto_icmp", "proto_tcp"):
        np.testing.assert_array_equal(out[:, F[name], :], x[:, F[name], :])
    assert (out[:, :, 6:] == 0).all() and om is mask  # padding stays padding


def test_intensified_hosts_go_beyond_every_benign_host_and_flows_stay():
    x, mask = _windows()
    out, _ = intensified(x, mask, np.random.default_rng(2), (1.5, 30.0))
    real = mask.astype(bool)
    top = np.expm1(np.quantile(x[:, F["h10_flows"], :][real], 0.999))
    assert (np.expm1(out[:, F["h10_flows"], :])[real] >= 1.5 * top - 1e-3).all()
    np.testing.assert_array_equal(out[:, F["log_packets"], :], x[:, F["log_packets"], :])
    assert (out[:, :, 6:] == 0).all()

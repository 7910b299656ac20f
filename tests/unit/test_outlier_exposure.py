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


def test_repeated_sessions_repeat_one_answered_tcp_connection_of_a_source_window():
    """Each made-up window is K copies of one answered TCP flow with a SYN of a source window
    (one client repeating one session against one service), a few hundred ms to 3 s apart;
    destination windows and windows without such a flow give none."""
    from inference.train import repeated_sessions

    x, mask = _windows(n=40)
    x[:, F["view_dst"], :] = 0.0
    x[:, F["proto_tcp"], :] = 0.0
    x[:, F["tcp_no_syn"], :] = 1.0
    # Windows 0-19: flow 3 is an answered TCP connection with a SYN; 20-29 the same but keyed
    # by destination; 30-39 have none (SYN-less or unanswered).
    x[:30, F["proto_tcp"], 3] = 1.0
    x[:30, F["tcp_no_syn"], 3] = 0.0
    x[:30, F["log_bwd_packets"], 3] = 1.5
    x[20:30, F["view_dst"], :6] = 1.0
    x[30:, F["proto_tcp"], 2] = 1.0
    x[30:, F["log_bwd_packets"], 2] = 0.0
    x[30:, F["tcp_no_syn"], 2] = 0.0
    out, om = repeated_sessions(x, mask, np.random.default_rng(0), 100)
    assert len(out) == 20 and (om == 1).all()
    same = [i for n, i in F.items() if n not in ("log_gap_ms", "dst_port_changed", "peer_changed", "log_duration_ms")]
    srcs = {tuple(np.round(x[r, same, 3], 5)) for r in range(20)}
    for w in out:
        assert tuple(np.round(w[same, 0], 5)) in srcs          # the flow of one source window ...
        np.testing.assert_array_equal(w[same, :], np.repeat(w[same, :1], 8, axis=1))  # ... K times
        gaps = np.expm1(w[F["log_gap_ms"], 1:])
        assert w[F["log_gap_ms"], 0] == 0 and (gaps >= 99).all() and (gaps <= 3001).all()
        assert (w[F["dst_port_changed"]] == 0).all() and (w[F["peer_changed"]] == 0).all()
    assert len(repeated_sessions(x, mask, np.random.default_rng(0), 5)[0]) == 5


def test_each_directions_average_packet_is_a_feature():
    """A server that only acknowledges and one that answers with text differ in the
    dst2src bytes a packet, which the pooled average hides."""
    from inference.features import RAW_COLUMNS, flow_features

    raw = np.zeros((2, len(RAW_COLUMNS)))
    c = {n: i for i, n in enumerate(RAW_COLUMNS)}
    for row, back in ((0, 66 * 5), (1, 180 * 5)):
        raw[row, [c["src2dst_packets"], c["dst2src_packets"], c["packets"]]] = 5, 5, 10
        raw[row, c["src2dst_bytes"]], raw[row, c["dst2src_bytes"]] = 1000, back
        raw[row, c["bytes"]] = 1000 + back
    f = flow_features(raw)
    np.testing.assert_allclose(f[:, F["log_fwd_bytes_per_packet"]], np.log1p(200.0), rtol=1e-6)
    np.testing.assert_allclose(f[:, F["log_bwd_bytes_per_packet"]], np.log1p([66.0, 180.0]), rtol=1e-6)


def _answered_tcp(n: int = 40) -> tuple[np.ndarray, np.ndarray]:
    """Source windows whose flow 3 is an answered TCP connection with a SYN, nothing else."""
    x, mask = _windows(n=n)
    x[:, F["view_dst"], :] = 0.0
    x[:, F["proto_tcp"], :] = 0.0
    x[:, F["tcp_no_syn"], :] = 1.0
    x[:, F["proto_tcp"], 3] = 1.0
    x[:, F["tcp_no_syn"], 3] = 0.0
    x[:, F["log_bwd_packets"], 3] = 1.5
    return x, mask


def test_repeated_sessions_keep_away_from_a_guarded_classs_flows():
    """A connection among the `guard_share` nearest to a guarded class's flows is never
    repeated: here the class's flows are those of windows 0-19, exactly."""
    from inference.features import FLOW_FEATURES
    from inference.train import repeated_sessions

    x, mask = _answered_tcp()
    g = np.zeros_like(x[:20])
    g[:, :, 0] = x[:20, :, 3]
    gm = np.zeros_like(mask[:20])
    gm[:, 0] = 1
    kept = [i for i in range(len(FLOW_FEATURES)) if FEATURE_NAMES[i] != "log_duration_ms"]  # jittered
    out, _ = repeated_sessions(x, mask, np.random.default_rng(0), 100, guard=[(g, gm)], guard_share=0.5)
    guarded = {tuple(np.round(x[r, kept, 3], 5)) for r in range(20)}
    assert len(out) == 20
    assert not {tuple(np.round(w[kept, 0], 5)) for w in out} & guarded
    # Unguarded, the same call repeats the class's own connections too.
    free, _ = repeated_sessions(x, mask, np.random.default_rng(0), 100)
    assert len(free) == 40 and {tuple(np.round(w[kept, 0], 5)) for w in free} & guarded


def test_only_a_class_learned_from_few_windows_is_guarded(monkeypatch):
    """train_windows guards the classes below `repeat_guard_below` windows, never benign nor
    a class with many windows."""
    import inference.train as train

    seen: dict = {}

    class Stop(Exception):
        pass

    def spy(x, mask, rng, n, guard=(), guard_share=0.1):
        seen["guard"] = [len(g) for g, _ in guard]
        raise Stop

    monkeypatch.setattr(train, "repeated_sessions", spy)
    x, mask = _answered_tcp(n=400)
    labels = ["benign"] * 300 + ["syn_flood"] * 70 + ["slow_http_dos"] * 30
    cfg = train.TrainConfig(members=1, repeat_guard_below=50, val_fraction=0.0)
    try:
        train.train_windows(x, mask, labels, epochs=1, progress=False, config=cfg)
    except Stop:
        pass
    assert len(seen["guard"]) == 1 and 25 <= seen["guard"][0] <= 30   # slow_http_dos, less its validation share

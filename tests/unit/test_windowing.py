import numpy as np
import pandas as pd

from contracts.records import FlowRecord
from inference.features import FEATURE_NAMES, N_FEATURES
from inference.windowing import Windower, stack_windows, window_label, windows_from_frame


def flow(i, src="10.0.0.1", dst="10.0.0.9", ts=None, port=80):
    t = i * 100 if ts is None else ts
    return FlowRecord(flow_id=f"f{i}", first_seen_ms=t, last_seen_ms=t + 5, src_ip=src, dst_ip=dst,
                      protocol=6, dst_port=port, packets=2, bytes=120, src2dst_packets=1, dst2src_packets=1)


def test_window_closes_at_k_and_keeps_order():
    w = Windower(k=3, seconds=10)
    closed = w.push_records([flow(i) for i in range(7)])
    assert [c.flow_ids for c in closed] == [["f0", "f1", "f2"], ["f3", "f4", "f5"]]
    assert all(c.closed_by == "k" for c in closed)
    (last,) = w.flush()
    assert last.flow_ids == ["f6"] and last.closed_by == "flush"


def test_event_time_horizon_starts_a_new_window():
    w = Windower(k=8, seconds=1)
    closed = w.push_records([flow(0, ts=0), flow(1, ts=500), flow(2, ts=1600)])
    assert [c.flow_ids for c in closed] == [["f0", "f1"]] and closed[0].closed_by == "time"


def test_idle_expiry_uses_wall_clock():
    now = [0.0]
    w = Windower(k=8, seconds=5, clock=lambda: now[0])
    w.push_records([flow(0)])
    assert w.expire() == []
    now[0] = 6.0
    (c,) = w.expire()
    assert c.closed_by == "idle" and len(w) == 0


def test_key_modes_group_a_spoofed_flood_per_destination():
    flood = [flow(i, src=f"198.18.{i // 250}.{i % 250}", dst="10.0.0.80") for i in range(16)]
    by_src = Windower(k=8, key="src").push_records(flood)
    by_dst = Windower(k=8, key="dst").push_records(flood)
    by_pair = Windower(k=8, key="pair").push_records(flood)
    assert by_src == [] and by_pair == []
    assert [c.key for c in by_dst] == ["10.0.0.80", "10.0.0.80"]


def test_max_open_evicts_oldest():
    w = Windower(k=8, max_open=2)
    closed = w.push_records([flow(0, src="a.1"), flow(1, src="b.1"), flow(2, src="c.1")])
    assert [c.key for c in closed] == ["a.1"] and len(w) == 2
    assert closed[0].closed_by == "pressure"


def test_stack_pads_with_mask_and_context_features():
    w = Windower(k=4)
    closed = w.push_records([flow(0, port=22), flow(1, port=23), flow(2, port=23)]) + w.flush()
    x, mask = stack_windows(closed, 4)
    assert x.shape == (1, N_FEATURES, 4)
    assert mask.tolist() == [[1, 1, 1, 0]]
    assert np.all(x[0, :, 3] == 0)
    assert x[0, FEATURE_NAMES.index("dst_port_changed"), :3].tolist() == [0, 1, 0]


def test_frame_and_records_give_the_same_windows():
    recs = [flow(i, src=f"10.0.0.{i % 3}") for i in range(30)]
    df = pd.DataFrame([r.model_dump() for r in recs])
    a = windows_from_frame(df, k=4)
    w = Windower(k=4)
    b = w.push_records(recs) + w.flush()
    assert [(c.window_id, c.flow_ids) for c in a] == [(c.window_id, c.flow_ids) for c in b]
    assert np.allclose(np.stack([c.features for c in a if len(c.flow_ids) == 4]),
                       np.stack([c.features for c in b if len(c.flow_ids) == 4]))


def test_window_label_prefers_attack():
    assert window_label(["benign", "syn_scan", "benign"]) == "syn_scan"
    assert window_label(["benign", None]) == "benign"


def test_windows_closed_together_get_the_features_each_would_get_alone():
    """Closing many windows in one vectorised pass must not mix flows across windows: the
    first flow of each window has no previous flow, gaps and changes stay inside it."""
    from inference.datasets.synthetic import synthetic_flows
    from inference.features import context_features, flow_features, raw_matrix_from_frame
    from inference.features import RAW_COLUMNS

    df = synthetic_flows(hosts_per_class=3, flows_per_host=37, seed=4).reset_index(drop=True)
    closed = windows_from_frame(df, k=8, seconds=2.0)
    by_id = df.set_index("flow_id")
    ts_col, port_col = RAW_COLUMNS.index("first_seen_ms"), RAW_COLUMNS.index("dst_port")
    assert len(closed) > 20 and {c.closed_by for c in closed} >= {"k", "flush"}
    for c in closed:
        rows = by_id.loc[c.flow_ids]
        raw = raw_matrix_from_frame(rows)
        alone = np.concatenate([flow_features(raw), context_features(raw[:, ts_col], raw[:, port_col],
                                                                      rows["dst_ip"].tolist())], axis=1)
        np.testing.assert_array_equal(c.features[:, :alone.shape[1]], alone)
        assert (c.first_seen_ms, c.last_seen_ms) == (int(raw[:, ts_col].min()), int(raw[:, ts_col].max()))


def test_open_window_memory_stays_under_its_byte_bound_and_the_least_recent_close_first():
    from inference.windowing import FLOW_BYTES, ITEM_BYTES, WINDOW_BYTES

    bound = 400 * (WINDOW_BYTES + FLOW_BYTES + ITEM_BYTES / 2) * 2  # about 400 one-flow windows per view
    w = Windower(k=8, seconds=1e9, views=("src", "dst"), max_open=10**9, idle_s=1e9, max_bytes=int(bound),
                 keep_items=True, clock=lambda: 0.0)
    recs = [flow(i, src=f"10.1.{i // 250}.{i % 250}", dst=f"10.9.{i // 250}.{i % 250}") for i in range(3000)]
    pressure = []
    for a in range(0, len(recs), 100):
        pressure += [c for c in w.push_records(recs[a:a + 100]) if c.closed_by == "pressure"]
        assert w.open_bytes <= bound
    assert len(pressure) > 2000
    # The first windows opened are the first to go: least recently active first.
    src_closed = [c.key for c in pressure if c.view == "src"]
    assert src_closed[:3] == ["10.1.0.0", "10.1.0.1", "10.1.0.2"]


def test_a_window_touched_again_is_not_expired_with_the_silent_ones():
    now = [0.0]
    w = Windower(k=8, seconds=1e9, views=("src",), idle_s=5.0, clock=lambda: now[0])
    w.push_records([flow(i, src=f"10.2.0.{i}") for i in range(10)])
    now[0] = 4.0
    w.push_records([flow(20, src="10.2.0.0")])  # the oldest window is active again
    now[0] = 6.0
    expired = w.expire()
    assert sorted(c.key for c in expired) == sorted(f"10.2.0.{i}" for i in range(1, 10))
    assert len(w) == 1 and w.expire(now=8.9) == [] and len(w.expire(now=9.0)) == 1

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
    from inference.features import RAW_COLUMNS
    from inference.windowing import BATCH_FLOW_BYTES, EXTRA_FLOW_BYTES, FLOW_BYTES, WINDOW_BYTES

    kept = BATCH_FLOW_BYTES + EXTRA_FLOW_BYTES + 8 * len(RAW_COLUMNS)  # a record's columns, shared by the views
    bound = 400 * (WINDOW_BYTES + FLOW_BYTES + kept / 2) * 2  # about 400 one-flow windows per view
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


def test_windows_rebuild_their_records_from_the_columns_exactly():
    """Open windows keep columns, not records: a window's `items` must be its flows exactly
    (every field, as decoded from the wire or as FlowRecords), and `column` the same values."""
    import msgspec

    from contracts.records import decode_flow_rows, encode_flow_batch

    rng = np.random.default_rng(5)
    rows = []
    for i in range(300):
        t = 1_700_000_000_000 + int(rng.integers(0, 9000))
        pk = int(rng.integers(1, 50))
        fwd = int(rng.integers(0, pk + 1))
        rows.append(dict(
            flow_id=f"x{i}", sensor=["s1", "s2"][i % 2], first_seen_ms=t, last_seen_ms=t + int(rng.integers(0, 5000)),
            src_ip=f"10.0.{i % 7}.{i % 5}", dst_ip="2001:db8::1" if i % 3 else "10.9.0.1", ip_version=6 if i % 3 else 4,
            src_port=int(rng.integers(0, 65536)), dst_port=int(rng.integers(0, 65536)), protocol=[6, 17, 1][i % 3],
            duration_ms=float(rng.uniform(0, 1e4)), packets=pk, bytes=pk * 60 + i, src2dst_packets=fwd,
            dst2src_packets=pk - fwd, src2dst_bytes=fwd * 60, dst2src_bytes=(pk - fwd) * 60,
            min_ps=60.0, mean_ps=float(rng.uniform(60, 1500)), max_ps=1500.0, mean_piat_ms=0.123456789 * i,
            syn_packets=min(pk, 1), application_name=["", "TLS.Google", "DNS"][i % 3],
            requested_server_name="example.org" if i % 4 == 0 else "", user_agent="curl/8" if i % 5 == 0 else "",
            label=None if i % 2 else "syn_scan", produced_ms=None if i % 6 == 0 else t + 7))
    wire = decode_flow_rows(encode_flow_batch(rows, "t"))
    records = [FlowRecord(**r) for r in rows]
    wire_by_id = {f.flow_id: f for f in wire}

    def typed(row):
        return {k: (v, type(v)) for k, v in msgspec.structs.asdict(row).items()}
    for given in (wire, records):
        w = Windower(k=8, seconds=10, views=("src", "dst"), clock=lambda: 0.0)
        closed = []
        for a in range(0, len(given), 64):
            closed += w.push_records(given[a:a + 64])
        closed += w.flush()
        by_id = {r["flow_id"]: r for r in rows}
        assert sum(len(c.flow_ids) for c in closed) == 2 * len(rows)
        for c in closed:
            assert [f.flow_id for f in c.items] == c.flow_ids
            for f in c.items:  # the decoded record's values and types, and the same record
                assert typed(f) == typed(wire_by_id[f.flow_id])
                assert FlowRecord.model_validate(msgspec.to_builtins(f)) == FlowRecord(**by_id[f.flow_id])
            assert c.column("produced_ms") == [by_id[f]["produced_ms"] for f in c.flow_ids]
            assert c.column("dst_port") == [by_id[f]["dst_port"] for f in c.flow_ids]
            assert c.column("sensor") == [by_id[f]["sensor"] for f in c.flow_ids]


def test_a_window_pushed_without_records_has_none_to_rebuild():
    w = Windower(k=2, seconds=10, keep_items=False)
    (c,) = w.push_records([flow(1), flow(2)])
    assert c.items == [] and c.column("produced_ms") == [] and c.column("dst_port") == [] and c.rows == []


def test_an_open_window_keeps_columns_not_records():
    """10,000 one-flow windows from decoded wire records: what the windower holds once the
    records are dropped stays under 700 B a window, less than one record (a kept FlowRow
    alone is about 700 B, so keeping them would fail this)."""
    import gc
    import tracemalloc

    from contracts.records import decode_flow_rows, encode_flow_batch

    n, t = 10_000, 1_700_000_000_000
    w = Windower(k=8, seconds=1e9, views=("src", "dst"), max_open=10**9, idle_s=1e9, max_hosts=100,
                 clock=lambda: 0.0)
    gc.collect()
    tracemalloc.start()
    for a in range(0, n, 500):
        rows = [dict(flow_id=f"flow-{i:08d}", first_seen_ms=t + i, last_seen_ms=t + i + 3, src_ip=f"10.{i >> 8 & 255}.{i & 255}.7",
                     dst_ip="192.0.2.1", src_port=1024 + i % 60000, dst_port=80, protocol=6, packets=2, bytes=120,
                     src2dst_packets=1, dst2src_packets=1, sensor="edge-1", application_name="HTTP")
                for i in range(a, a + 500)]
        w.push_records(decode_flow_rows(encode_flow_batch(rows, "t")))
    del rows
    gc.collect()
    held = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    assert len(w) >= n
    per_window = held / n
    assert per_window < 700, f"{per_window:.0f} B a window"
    print(f"{per_window:.0f} B a window, estimate {w.open_bytes / held:.2f} of held")
    # The estimate the memory bound uses is within reach of what is held.
    assert 0.6 < w.open_bytes / held < 1.6


def test_the_byte_estimate_counts_each_live_batch_once_and_returns_to_zero():
    """Windows that fill up inside the push that opened them (K = 2 here) release their batch
    while other views still add to it: the estimate must count every live batch exactly
    once, never go below what the open windows hold, and be 0 once everything closed."""
    from inference.windowing import FLOW_BYTES, WINDOW_BYTES

    rng = np.random.default_rng(3)
    w = Windower(k=2, seconds=1e9, views=("src", "dst"), max_open=10**9, idle_s=1e9, clock=lambda: 0.0)
    for a in range(0, 3000, 150):
        w.push_records([flow(i, src=f"10.3.0.{rng.integers(0, 40)}", dst=f"10.4.0.{rng.integers(0, 3)}")
                        for i in range(a, a + 150)])
        live = {id(b): b for v in w._views for o in v.open.values() for b in o.flows[::2]}
        assert w.open_bytes == len(w) * WINDOW_BYTES + w._held * FLOW_BYTES + sum(b.nbytes for b in live.values())
    w.flush()
    assert (len(w), w.open_bytes) == (0, 0)


def test_windows_spanning_many_pushes_and_views_gather_the_same_flows_features_and_tokens():
    """A closing pass gathers flows from many batches at once (grouped by batch, each view's
    history rows from its own view): pushed in uneven chunks, two views give the windows,
    features, labels and origins of one push of everything. Origins come back only for the
    flows pushed with one."""
    from inference.datasets.synthetic import synthetic_flows
    from inference.features import raw_matrix_from_frame

    df = synthetic_flows(hosts_per_class=3, flows_per_host=37, seed=5).reset_index(drop=True)
    cols = (df["src_ip"].astype(str).tolist(), df["dst_ip"].astype(str).tolist(), df["flow_id"].astype(str).tolist())
    raw, labels = raw_matrix_from_frame(df), df["label"].tolist()

    def run(cuts: list[int], with_origin) -> list:
        w = Windower(k=8, seconds=2.0, views=("src", "dst"), max_open=10**9, keep_items=False)
        out = []
        for a, b in zip(cuts[:-1], cuts[1:]):
            origins = [f"o{i}" for i in range(a, b)] if with_origin(a) else None
            out += w.push(cols[0][a:b], cols[1][a:b], cols[2][a:b], raw[a:b], labels=labels[a:b], origins=origins)
        return out + w.flush()

    n = len(df)
    row_of = {f: i for i, f in enumerate(cols[2])}
    whole = run([0, n], lambda a: True)
    rng = np.random.default_rng(0)
    cuts = sorted({0, n, *rng.integers(1, n, 40).tolist()})
    odd = {a for i, a in enumerate(cuts[:-1]) if i % 2}  # every other chunk comes without origins
    chunked = run(cuts, lambda a: a not in odd)
    assert len(whole) == len(chunked) > 50
    assert {c.view for c in chunked} == {"src", "dst"}
    spanning = 0
    for a, b in zip(sorted(whole, key=lambda c: c.window_id), sorted(chunked, key=lambda c: c.window_id)):
        assert (a.window_id, a.flow_ids, a.labels) == (b.window_id, b.flow_ids, b.labels)
        np.testing.assert_array_equal(a.features, b.features)
        idx = [row_of[f] for f in b.flow_ids]
        chunk = np.searchsorted(cuts, idx, side="right") - 1
        assert b.origins == [f"o{i}" for i, c in zip(idx, chunk) if cuts[c] not in odd]
        spanning += len(set(chunk.tolist())) > 1
    assert spanning > 20  # windows whose flows came in several pushes

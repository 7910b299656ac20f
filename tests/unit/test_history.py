"""Host history beside each window (inference.history) and the views of the Windower."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from contracts.records import FlowRecord
from inference.features import FEATURE_NAMES
from inference.history import HISTORY_FEATURES, HostHistory, new_history
from inference.windowing import Windower, windows_from_frame


ENGINES = ("numpy", "compiled")  # the same semantics either way (tests/unit/test_history_kernel.py)


def col(name: str) -> int:
    return HISTORY_FEATURES.index(name)


@pytest.mark.parametrize("engine", ENGINES)
def test_decayed_count_follows_the_half_life(engine):
    h = new_history(engine=engine)
    n = 30
    rows = h.update(["a"] * n, ["b"] * n, [80] * n, [i * 1000.0 for i in range(n)], [False] * n, [100.0] * n)
    want = sum(2 ** (-i / 10) for i in range(n))  # 10 s half-life, one flow a second
    assert rows[-1, col("h10_flows")] == pytest.approx(math.log1p(want), rel=1e-5)
    want300 = sum(2 ** (-i / 300) for i in range(n))
    assert rows[-1, col("h300_flows")] == pytest.approx(math.log1p(want300), rel=1e-5)
    assert rows[-1, col("h10_bytes")] == pytest.approx(math.log1p(100.0), rel=1e-5)  # mean of log1p(bytes)
    assert rows[-1, col("h10_bytes_sd")] == pytest.approx(0.0, abs=1e-3)  # every flow the same size


@pytest.mark.parametrize("engine", ENGINES)
def test_new_services_count_distinct_destination_ports_within_the_scale(engine):
    h = new_history(engine=engine)
    # 20 distinct ports in 20 s, then the same 20 again: the repeats are not new within 60 s.
    ports = list(range(1, 21)) * 2
    ts = [i * 1000.0 for i in range(40)]
    rows = h.update(["s"] * 40, ["v"] * 40, ports, ts, [True] * 40, [60.0] * 40)
    new60 = np.expm1(rows[:, col("h60_new_services")])
    assert new60[19] == pytest.approx(sum(2 ** (-(19 - i) / 60) for i in range(20)), rel=1e-4)
    assert new60[39] < new60[19]  # nothing new since: only decay
    # One peer throughout: new_peers counted once, then decays.
    assert np.expm1(rows[0, col("h60_new_peers")]) == pytest.approx(1.0)
    assert rows[:, col("h60_failed")].min() == pytest.approx(1.0)


@pytest.mark.parametrize("engine", ENGINES)
def test_out_of_order_flows_do_not_decay_backwards(engine):
    h = new_history(engine=engine)
    rows = h.update(["a"] * 3, ["b", "c", "d"], [1, 2, 3], [10_000.0, 5_000.0, 10_000.0], [False] * 3, [1.0] * 3)
    flows = np.expm1(rows[:, col("h10_flows")])
    assert flows.tolist() == pytest.approx([1.0, 2.0, 3.0])


@pytest.mark.parametrize("engine", ENGINES)
def test_memory_is_bounded_whatever_the_number_of_sources(engine):
    h = new_history(max_hosts=1000, max_pairs=2000, engine=engine)
    n = 300_000
    keys = [f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}" for i in range(n)]
    h.update(keys, ["192.0.2.1"] * n, [80] * n, [float(i) for i in range(n)], [True] * n, [60.0] * n)
    assert len(h) == 1000 and h.entries <= 1000 + 2 * 2000


def _flood(n_sources: int, victim: str = "10.77.0.10") -> list[FlowRecord]:
    return [FlowRecord(flow_id=f"f{i}", first_seen_ms=1_000_000 + i, last_seen_ms=1_000_000 + i,
                       src_ip=f"172.16.{i >> 8 & 255}.{i & 255}", dst_ip=victim, src_port=1024 + i % 50000,
                       dst_port=80, protocol=6, packets=1, bytes=60, src2dst_packets=1, src2dst_bytes=60,
                       syn_packets=1, src2dst_syn_packets=1, min_ps=60, mean_ps=60, max_ps=60)
            for i in range(n_sources)]


def test_a_spoofed_flood_fills_destination_windows_on_the_victim():
    w = Windower(k=8, seconds=10, views=("src", "dst"))
    closed = w.push_records(_flood(4000)) + w.flush()
    by_view = {v: [c for c in closed if c.view == v] for v in ("src", "dst")}
    assert all(len(c.flow_ids) == 1 for c in by_view["src"])
    dst = by_view["dst"]
    assert {c.key for c in dst} == {"10.77.0.10"} and len(dst) == 500
    last = dst[-1].history[-1]
    # Every flow came from a new source: new peers keep pace with flows on the victim.
    assert np.expm1(last[col("h10_new_peers")]) == pytest.approx(np.expm1(last[col("h10_flows")]), rel=1e-3)
    assert dst[-1].features[0, FEATURE_NAMES.index("view_dst")] == 1.0
    assert by_view["src"][0].features[0, FEATURE_NAMES.index("view_dst")] == 0.0
    assert len({c.window_id for c in closed}) == len(closed)


def test_history_is_the_same_pushed_in_chunks_as_windowed_at_once():
    from inference.datasets.synthetic import synthetic_flows

    df = synthetic_flows(hosts_per_class=3, flows_per_host=40, seed=3).sort_values("first_seen_ms")
    whole = windows_from_frame(df, k=8, seconds=10.0, views=("src", "dst"))
    recs = [FlowRecord.model_validate(r) for r in df.drop(columns=["label"]).to_dict("records")]
    w = Windower(k=8, seconds=10.0, views=("src", "dst"), clock=lambda: 0.0)
    chunked = []
    for i in range(0, len(recs), 37):
        chunked += w.push_records(recs[i:i + 37])
    chunked += w.flush()
    a = {c.window_id: c.features for c in whole}
    b = {c.window_id: c.features for c in chunked}
    assert a.keys() == b.keys()
    for wid in a:
        np.testing.assert_allclose(a[wid], b[wid], rtol=1e-6)


def test_a_window_frame_keeps_the_history_the_stream_saw():
    from inference.datasets.synthetic import synthetic_flows
    from inference.windowing import stack_windows
    from llm_agents.window_frames import window_tensors, windows_frame

    df = synthetic_flows(hosts_per_class=2, flows_per_host=30, seed=9).reset_index(drop=True)
    frame = windows_frame(df, k=8, views=("src", "dst"))
    x, mask, _, _ = window_tensors(frame, k=8)
    closed = windows_from_frame(df, k=8, views=("src", "dst"))
    x2, mask2 = stack_windows(closed, 8)
    np.testing.assert_allclose(x, x2, rtol=1e-6)
    # Without the stored history (a synthetic window), each window is its host's whole past.
    bare = frame.drop(columns=list(HISTORY_FEATURES))
    x3, _, _, _ = window_tensors(bare, k=8)
    hist = slice(len(FEATURE_NAMES) - len(HISTORY_FEATURES), None)
    np.testing.assert_allclose(x3[:, :hist.start], x[:, :hist.start], rtol=1e-6)
    assert not np.allclose(x3[:, hist], x[:, hist])
    assert pd.Series(frame["view"]).isin(["src", "dst"]).all()


@pytest.mark.parametrize("engine", ENGINES)
def test_size_spread_tells_a_repeating_host_from_a_varied_one(engine):
    h = new_history(engine=engine)
    n = 40
    rows = h.update(["a"] * n, ["b"] * n, [22] * n, [i * 100.0 for i in range(n)], [False] * n,
                    [100.0 if i % 2 else 10_000.0 for i in range(n)])
    half_gap = (math.log1p(10_000.0) - math.log1p(100.0)) / 2
    assert rows[-1, col("h300_bytes_sd")] == pytest.approx(half_gap, rel=0.02)


@pytest.mark.parametrize("seed", range(4))
def test_the_vectorised_update_counts_like_the_flow_by_flow_reference(seed):
    """Random batches (repeats, out-of-order times, hours apart, full tables that evict),
    split at a random flow: the batch path and the flow-by-flow path agree on every row
    and leave the same tables, in the same LRU order."""
    rng = np.random.default_rng(seed)
    vectorised = 0
    for _ in range(40):
        n, hosts, peers = int(rng.integers(1, 400)), int(rng.integers(1, 30)), int(rng.integers(1, 10))
        keys = [f"h{rng.integers(hosts)}" for _ in range(n)]
        peer = [f"p{rng.integers(peers)}" for _ in range(n)]
        ports = [float(rng.integers(0, 5)) for _ in range(n)]
        ts = 1.7e12 + np.sort(rng.uniform(0, rng.choice([1e3, 1e5, 1e7]), n))
        ts = (ts + rng.normal(0, 3000, n) * (rng.random(n) < 0.2)).round().tolist()
        failed = (rng.random(n) < 0.3).tolist()
        nbytes = rng.integers(0, 10**6, n).astype(float).tolist()
        cap_hosts, cap_pairs = int(rng.integers(1, 40)), int(rng.integers(1, 80))
        ref, fast = HostHistory(cap_hosts, cap_pairs), HostHistory(cap_hosts, cap_pairs)
        cut = int(rng.integers(0, n + 1))
        parts = [slice(0, cut), slice(cut, n)]
        a = np.concatenate([ref._update_rows(keys[s], peer[s], ports[s], ts[s], failed[s], nbytes[s]) for s in parts])
        b = np.concatenate([fast.update(keys[s], peer[s], ports[s], ts[s], failed[s], nbytes[s]) for s in parts])
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)
        assert list(ref._hosts) == list(fast._hosts) and ref._peers.order() == fast._peers.order()
        assert ref._services.order() == fast._services.order()
        for k in ref._hosts:
            np.testing.assert_allclose(ref.state(k), fast.state(k), rtol=1e-9)
        vectorised += len(keys) >= 32 and len(set(keys)) <= cap_hosts
    assert vectorised > 5


@pytest.mark.parametrize("engine", ENGINES)
def test_host_rows_stay_apart_as_the_table_grows_and_evicts(engine):
    """One long stream in batches of random size, so both engines add hosts to one table
    while it grows (numpy's state array past its first 1,024 rows) and then evicts: every row
    must equal the flow-by-flow reference's (two hosts sharing a state row would not); the
    compiled kernel's bit for bit, with the same hosts and pairs held in the same order."""
    rng = np.random.default_rng(7)
    ref, fast = HostHistory(2_500, 6_000), new_history(2_500, 6_000, engine=engine)
    t = 1.7e12
    for _ in range(160):
        n = int(rng.choice([5, 20, 64, 300]))
        keys = [f"10.0.{k // 256}.{k % 256}" for k in rng.integers(0, 3_200, n)]
        peer = [f"p{p}" for p in rng.integers(0, 6, n)]
        ports = rng.integers(0, 4, n).tolist()
        ts = (t + np.sort(rng.uniform(0, 2_000, n))).round().tolist()
        t = ts[-1]
        failed = (rng.random(n) < 0.3).tolist()
        nbytes = rng.integers(0, 10**5, n).astype(float).tolist()
        a = ref._update_rows(keys, peer, ports, ts, failed, nbytes)
        b = fast.update(keys, peer, ports, ts, failed, nbytes)
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)
        assert engine == "numpy" or np.array_equal(a, b)
    assert len(fast) == 2_500 and fast.entries == ref.entries
    if engine == "numpy":
        assert len(fast._state) == 2_500 and sorted(fast._hosts.values()) == list(range(2_500))
    else:
        hosts, pairs, services = fast.order()
        assert hosts == [hash(k) for k in ref._hosts] and fast._kernel.services.evictions > 0
        assert pairs == ref._peers.order() and services == ref._services.order()

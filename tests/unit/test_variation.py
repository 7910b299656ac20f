"""Attack runs re-rendered as other tools would send them (inference.datasets.variation):
labels and carriers kept, benign flows untouched, every row a valid flow record, and each
choice doing what it says to the flows."""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from contracts.records import physical_problems
from inference.datasets.lab import CARRIES
from inference.datasets.variation import Variation, run_keys, run_variants
from streams.sources.files import records_from_frame


def _flow(i: int, src: str, dst: str, label: str, t: int, **kw) -> dict:
    row = dict(flow_id=f"f{i}", sensor="t", first_seen_ms=t, last_seen_ms=t + kw.get("duration_ms", 0),
               src_ip=src, dst_ip=dst, src_port=40000 + i, dst_port=kw.pop("dst_port", 1000 + i), protocol=6,
               ip_version=4, duration_ms=0.0, packets=2, bytes=108, src2dst_packets=1, src2dst_bytes=54,
               dst2src_packets=1, dst2src_bytes=54, min_ps=54, mean_ps=54.0, stddev_ps=0.0, max_ps=54,
               mean_piat_ms=0.0, stddev_piat_ms=0.0, max_piat_ms=0.0, syn_packets=1, ack_packets=1,
               psh_packets=0, rst_packets=1, fin_packets=0, urg_packets=0, src2dst_syn_packets=1,
               dst2src_syn_packets=0, dst2src_rst_packets=1, label=label, capture="lab", **{CARRIES: "s"})
    row.update(kw)
    return row


@pytest.fixture()
def flows() -> pd.DataFrame:
    scan = [_flow(i, "10.77.128.1", "10.77.0.5", "syn_scan", 1_000 + 10 * i, duration_ms=2.0) for i in range(40)]
    fin = [_flow(100 + i, "10.77.128.2", "10.77.0.5", "fin_scan", 5_000 + 10 * i, syn_packets=0,
                 src2dst_syn_packets=0, fin_packets=1) for i in range(40)]
    brute = [_flow(200 + i, "10.77.128.3", "10.77.0.5", "ssh_bruteforce", 9_000 + 50 * i, dst_port=22,
                   packets=20, bytes=3000, src2dst_packets=11, src2dst_bytes=1500, dst2src_packets=9,
                   dst2src_bytes=1500, min_ps=54, mean_ps=150.0, max_ps=400, stddev_ps=80.0,
                   duration_ms=300.0, mean_piat_ms=15.0, max_piat_ms=40.0, psh_packets=8, fin_packets=2,
                   ack_packets=19, rst_packets=0, dst2src_rst_packets=0) for i in range(30)]
    benign = [_flow(300 + i, "10.77.0.9", "10.77.0.5", "benign", 1_000 + 37 * i, **{CARRIES: "sd"})
              for i in range(50)]
    return pd.DataFrame(scan + fin + brute + benign).sort_values("first_seen_ms", kind="stable").reset_index(drop=True)


def test_each_attack_run_gets_its_copies_and_benign_none(flows):
    out = run_variants(flows, copies=2, seed=0)
    assert sorted(set(run_keys(flows))) == ["", "fin_scan@10.77.128.2", "ssh_bruteforce@10.77.128.3",
                                            "syn_scan@10.77.128.1"]
    assert len(out) == 2 * (flows["label"] != "benign").sum()
    assert "benign" not in set(out["label"])
    assert out["capture"].nunique() == 6              # one capture per run and copy
    assert out["flow_id"].is_unique and not set(out["flow_id"]) & set(flows["flow_id"])
    assert (out[CARRIES] == "s").all()
    assert out.groupby("capture")["label"].nunique().max() == 1


def test_copies_are_valid_flow_records_in_time_order(flows):
    out = run_variants(flows, copies=3, seed=1)
    records, errors = records_from_frame(out)          # FlowRecord validation of every row
    assert not errors and len(records) == len(out)
    assert not physical_problems(records).any()
    for _, g in out.groupby("capture"):
        assert (np.diff(g["first_seen_ms"].to_numpy()) >= 0).all()
    assert (out["last_seen_ms"] >= out["first_seen_ms"]).all()


def test_same_seed_same_copies_other_seed_other_choices(flows):
    a, b = run_variants(flows, copies=2, seed=5), run_variants(flows, copies=2, seed=5)
    pd.testing.assert_frame_equal(a, b)
    c = run_variants(flows, copies=2, seed=6)
    assert not np.array_equal(a["first_seen_ms"].to_numpy(), c["first_seen_ms"].to_numpy())


def test_pace_stretches_a_run_and_sizes_scale_only_for_probes(flows):
    v = Variation(rate=(4.0, 4.0), rtt_ms=(0.0, 0.0), size=(2.0, 2.0), no_reply_chance=0.0)
    out = run_variants(flows, copies=1, seed=0, variation=v)
    scan = out[out["label"] == "syn_scan"]
    assert scan["first_seen_ms"].max() - scan["first_seen_ms"].min() == pytest.approx(4 * 390, abs=2)
    assert (scan["bytes"] == 216).all() and (scan["mean_ps"] == 108).all()
    brute = out[out["label"] == "ssh_bruteforce"]
    assert (brute["bytes"] == 3000).all()             # the protocol fixes a brute force's sizes
    assert brute["first_seen_ms"].max() - brute["first_seen_ms"].min() == pytest.approx(4 * 1450, abs=2)


def test_a_longer_round_trip_lengthens_each_exchange(flows):
    v = Variation(rate=(1.0, 1.0), rtt_ms=(200.0, 200.0), size=(1.0, 1.0), no_reply_chance=0.0)
    out = run_variants(flows, copies=1, seed=0, variation=v)
    brute = out[out["label"] == "ssh_bruteforce"]
    # 9 answered packets: 9 round trips of 200 ms (+-10%) more than the 300 ms it took
    assert brute["duration_ms"].between(300 + 9 * 180, 300 + 9 * 220).all()
    assert (brute["mean_piat_ms"] == brute["duration_ms"] / 19).all()


def test_probes_may_lose_their_answers_but_a_brute_force_never(flows):
    v = Variation(no_reply_chance=1.0, no_reply_share=(1.0, 1.0))
    out = run_variants(flows, copies=2, seed=0, variation=v)
    scan = out[out["label"] == "syn_scan"]
    assert (scan["dst2src_packets"] == 0).all() and (scan["packets"] == 1).all()
    assert (scan["rst_packets"] == 0).all() and (scan["duration_ms"] == 0).all()
    assert (scan["syn_packets"] == scan["src2dst_syn_packets"]).all()
    brute = out[out["label"] == "ssh_bruteforce"]
    assert (brute["dst2src_packets"] == 9).all()


def test_synless_probes_get_other_flag_combinations(flows):
    out = run_variants(flows, copies=40, seed=3)
    fin = out[out["label"] == "fin_scan"]
    combos = {tuple(g[["fin_packets", "psh_packets", "urg_packets"]].iloc[0]) for _, g in fin.groupby("capture")}
    assert (0, 0, 0) in combos and (1, 1, 1) in combos and len(combos) >= 4
    assert (fin["syn_packets"] == 0).all()
    scan = out[out["label"] == "syn_scan"]          # a SYN scan keeps its flags
    assert (scan["fin_packets"] == 0).all() and (scan["psh_packets"] == 0).all()


def test_no_attack_no_copies(flows):
    assert run_variants(flows[flows["label"] == "benign"], copies=3).empty
    assert run_variants(flows, copies=0).empty



def _slow_dos(n: int = 20) -> pd.DataFrame:
    rows = [_flow(400 + i, "10.77.128.4", "10.77.0.5", "slow_http_dos", 20_000 + 100 * i, dst_port=80,
                  packets=16, bytes=1470, src2dst_packets=9, src2dst_bytes=1000, dst2src_packets=7,
                  dst2src_bytes=470, min_ps=54, mean_ps=1470 / 16, max_ps=400, stddev_ps=60.0,
                  duration_ms=9000.0, mean_piat_ms=600.0, max_piat_ms=3000.0, psh_packets=6, fin_packets=2,
                  ack_packets=15, rst_packets=0, dst2src_rst_packets=0) for i in range(n)]
    return pd.DataFrame(rows)


_STILL = Variation(rate=(1.0, 1.0), rtt_ms=(0.0, 0.0), trickle=(1.0, 1.0), client_size=(1.0, 1.0))


def test_a_slow_dos_client_sends_other_sizes_the_server_answers_alike():
    v = replace(_STILL, client_size=(4.0, 4.0))
    out = run_variants(_slow_dos(), copies=1, seed=0, variation=v)
    assert (out["src2dst_bytes"] == 4000).all()         # the trickled lines and chunks, 4x
    assert (out["dst2src_bytes"] == 470).all() and (out["bytes"] == 4470).all()
    assert (out["max_ps"] == 1514).all()                # 400 x 4, at most a full frame
    assert (out["mean_ps"] == 4470 / 16).all()
    big = run_variants(_slow_dos(), copies=1, seed=0, variation=replace(v, client_size=(50.0, 50.0)))
    assert (big["src2dst_bytes"] == 9 * 1514).all()     # never more than full frames
    records, errors = records_from_frame(pd.concat([out, big]))
    assert not errors and not physical_problems(records).any()


def test_a_slow_dos_connection_carries_more_or_fewer_trickled_segments_at_its_pace():
    longer = run_variants(_slow_dos(), copies=1, seed=0, variation=replace(_STILL, trickle=(3.0, 3.0)))
    assert (longer["src2dst_packets"] == 27).all() and (longer["dst2src_packets"] == 21).all()
    assert (longer["packets"] == 48).all() and (longer["src2dst_bytes"] == 3000).all()
    assert (longer["bytes"] == 3000 + 1410).all()       # the same sizes a packet, both ways
    assert (longer["ack_packets"] == 45).all() and (longer["psh_packets"] == 18).all()
    assert (longer["fin_packets"] == 2).all()           # one close, however long it held
    assert (longer["duration_ms"] == 9000 * 47 / 15).all() and (longer["mean_piat_ms"] == 600).all()
    assert (longer["last_seen_ms"] - longer["first_seen_ms"] == np.round(9000 * 47 / 15)).all()
    shorter = run_variants(_slow_dos(), copies=1, seed=0, variation=replace(_STILL, trickle=(0.05, 0.05)))
    assert (shorter["src2dst_packets"] == 1).all() and (shorter["dst2src_packets"] == 1).all()
    assert (shorter["duration_ms"] == 9000 / 15).all() and (shorter["mean_ps"] == (111 + 67) / 2).all()
    records, errors = records_from_frame(pd.concat([longer, shorter]))
    assert not errors and not physical_problems(records).any()


def test_a_slow_read_keeps_its_counts_and_sizes():
    """Where the server sends (a slow read: the client's ACKs trickle), its answer sets the
    counts and the client's sizes are acknowledgements: neither is redrawn."""
    read = _slow_dos().assign(dst2src_bytes=7 * 250, bytes=1000 + 7 * 250, mean_ps=2750 / 16)
    both = pd.concat([read, _slow_dos().assign(flow_id=lambda d: d["flow_id"] + "q", src_port=50000)],
                     ignore_index=True)
    out = run_variants(both, copies=1, seed=0,
                       variation=replace(_STILL, trickle=(3.0, 3.0), client_size=(4.0, 4.0)))
    sent = out[out["dst2src_bytes"] == 7 * 250]
    assert len(sent) == 20 and (sent["packets"] == 16).all() and (sent["src2dst_bytes"] == 1000).all()
    quiet = out[out["dst2src_bytes"] != 7 * 250]
    assert len(quiet) == 20 and (quiet["packets"] == 48).all() and (quiet["src2dst_bytes"] == 12000).all()


def test_client_sizes_and_trickles_stay_for_classes_not_listed(flows):
    v = Variation(client_size=(4.0, 4.0), trickle=(3.0, 3.0), client_shaped=("slow_http_dos",))
    brute = run_variants(flows, copies=1, seed=0, variation=v).query("label == 'ssh_bruteforce'")
    assert (brute["src2dst_bytes"] == 1500).all() and (brute["packets"] == 20).all()


def _benign_exchanges() -> pd.DataFrame:
    """Two lab clients' answered TCP flows and a foreign capture's, for the benign link copies."""
    kw = dict(packets=12, bytes=2000, src2dst_packets=7, src2dst_bytes=900, dst2src_packets=5, dst2src_bytes=1100,
              duration_ms=110.0, mean_piat_ms=10.0, max_piat_ms=30.0, dst_port=443, rst_packets=0,
              dst2src_rst_packets=0, fin_packets=2, ack_packets=11)
    rows = [_flow(i, f"10.77.0.{1 + i % 2}", "10.77.0.5", "benign", 1_000 + 100 * i, **kw) for i in range(20)]
    rows += [_flow(50 + i, "192.168.1.7", "10.77.0.5", "benign", 1_000 + 100 * i, **{**kw, "capture": "ndpi"})
             for i in range(5)]
    rows += [_flow(80 + i, "10.77.128.1", "10.77.0.5", "syn_scan", 2_000 + 10 * i) for i in range(10)]
    return pd.DataFrame(rows)


def test_benign_link_copies_slow_only_the_lab_benign_flows_one_round_trip_per_host():
    from inference.datasets.variation import BENIGN_MARK, benign_link_copies

    df = _benign_exchanges()
    out = benign_link_copies(df, copies=2, seed=0)
    assert len(out) == 2 * 20 and set(out["label"]) == {"benign"}           # no attack, no foreign flow
    assert set(out["capture"]) == {"benign-link-0:lab", "benign-link-1:lab"}
    assert out["flow_id"].str.contains(BENIGN_MARK, regex=False).all() and out["flow_id"].is_unique
    src = df.set_index("flow_id")
    real = src.loc[out["flow_id"].str.split(BENIGN_MARK, regex=False).str[0]]
    untouched = [c for c in df.columns if c not in ("flow_id", "capture", "duration_ms", "mean_piat_ms",
                                                   "max_piat_ms", "last_seen_ms")]
    assert (out[untouched].to_numpy() == real[untouched].to_numpy()).all()   # sizes, counts, pace kept
    # 5 answered exchanges per flow: each waits the host's d ms more (+-10% per flow)
    added = (out["duration_ms"].to_numpy() - real["duration_ms"].to_numpy()) / 5
    per_host = pd.Series(added).groupby([out["capture"].to_numpy(), out["src_ip"].to_numpy()])
    assert (per_host.max() <= per_host.min() * 1.1 / 0.9 + 1e-6).all() and (added >= 0).all()
    assert per_host.mean().nunique() == 4 and per_host.mean().max() <= 300 * 1.1
    assert (out["last_seen_ms"] >= out["first_seen_ms"]).all()
    records, errors = records_from_frame(out)
    assert not errors and len(records) == len(out)
    assert benign_link_copies(df, copies=0, seed=0).empty


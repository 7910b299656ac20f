"""Physical constraints on flow rows: every rule fires on the row that breaks it, and only there.

All flows here are SYNTHETIC (tests.support.testing.toy_flows), not captured traffic.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from llm_agents.synthesis.constraints import check_flows, repair_flows
from tests.support.testing import toy_flows


@pytest.fixture(scope="module")
def flows() -> pd.DataFrame:
    return toy_flows({"benign": 3, "syn_scan": 2, "syn_flood": 2, "ssh_bruteforce": 2}, seed=3)


def test_toy_flows_pass_every_rule(flows: pd.DataFrame) -> None:
    rep = check_flows(flows)
    assert rep.ok.all(), rep.counts()
    assert rep.n_bad == 0 and rep.reasons[0] == ()


def _broken(flows: pd.DataFrame, label: str = "benign", **changes: object) -> pd.DataFrame:
    row = flows[flows["label"] == label].head(1).copy()
    for col, val in changes.items():
        row[col] = val
    return pd.concat([flows, row], ignore_index=True)


def _first_multi_packet(flows: pd.DataFrame) -> pd.Series:
    return flows[(flows["label"] == "benign") & (flows["packets"] >= 4)].iloc[0]


@pytest.mark.parametrize("changes, rule", [
    ({"bytes": 50, "src2dst_bytes": 25, "dst2src_bytes": 25}, "bytes<20*packets"),
    ({"syn_packets": 10_000}, "flag>packets"),
    ({"protocol": 17}, "tcp_flags_on_non_tcp"),
    ({"duration_ms": -1.0}, "negative:duration_ms"),
    ({"min_ps": 900.0, "max_ps": 100.0}, "ps_order"),
    ({"max_piat_ms": 1e9}, "piat>duration"),
    ({"dst_port": 70_000}, "port_range"),
    ({"src2dst_packets": 1}, "direction_packets"),
    ({"packets": 2.5}, "not_integer:packets"),
    ({"mean_piat_ms": np.nan}, "not_finite:mean_piat_ms"),
    ({"stddev_ps": 5000.0}, "ps_spread"),
    ({"mean_piat_ms": 0.0, "max_piat_ms": 0.0, "stddev_piat_ms": 0.0}, "piat_sum_mismatch"),
    ({"last_seen_ms": 0}, "time_order"),
])
def test_each_rule_flags_the_broken_row(flows: pd.DataFrame, changes: dict, rule: str) -> None:
    df = _broken(flows, **changes)
    rep = check_flows(df)
    assert not rep.ok[-1] and rule in rep.reasons[-1], rep.reasons[-1]
    assert rep.ok[:-1].all()
    assert rep.counts()[rule] >= 1


def test_bytes_must_fit_between_smallest_and_largest_packet(flows: pd.DataFrame) -> None:
    row = _first_multi_packet(flows)
    big = row["max_ps"] * row["packets"] + 10 * row["packets"]
    df = _broken(flows, bytes=big, src2dst_bytes=big - row["dst2src_bytes"],
                 mean_ps=big / row["packets"])
    reasons = check_flows(df).reasons[-1]
    assert "bytes_outside_ps_range" in reasons or "ps_order" in reasons


def test_udp_flow_without_flags_is_fine(flows: pd.DataFrame) -> None:
    flag_cols = [c for c in flows.columns if c.endswith(("syn_packets", "ack_packets", "psh_packets",
                                                         "rst_packets", "fin_packets", "urg_packets"))]
    df = _broken(flows, protocol=17, **{c: 0 for c in flag_cols})
    assert check_flows(df).ok[-1]


def test_one_packet_flow_has_one_size_and_no_time(flows: pd.DataFrame) -> None:
    df = _broken(flows, "syn_flood", duration_ms=50.0, last_seen_ms=flows["last_seen_ms"].max() + 10**6)
    assert "single_packet_time" in check_flows(df).reasons[-1]


def test_missing_required_column_fails_every_row(flows: pd.DataFrame) -> None:
    rep = check_flows(flows.drop(columns=["bytes"]), schema=False)
    assert not rep.ok.any() and rep.counts()["missing:bytes"] == len(flows)


def test_schema_validation_catches_what_numbers_cannot(flows: pd.DataFrame) -> None:
    df = _broken(flows, flow_id="")
    rep = check_flows(df)
    assert rep.reasons[-1] == ("schema",)
    assert check_flows(df, schema=False).ok[-1]


def test_repair_makes_random_numbers_physical() -> None:
    rng = np.random.default_rng(0)
    n = 500
    cols = ["src2dst_packets", "dst2src_packets", "src2dst_bytes", "dst2src_bytes", "min_ps", "max_ps",
            "stddev_ps", "duration_ms", "mean_piat_ms", "stddev_piat_ms", "max_piat_ms", "syn_packets",
            "ack_packets", "psh_packets", "rst_packets", "fin_packets", "urg_packets",
            "src2dst_syn_packets", "dst2src_syn_packets", "dst2src_rst_packets"]
    sign = rng.choice([-1, 1], (n, len(cols)), p=[.1, .9])
    raw = pd.DataFrame(np.exp(rng.normal(2, 3, (n, len(cols)))) * sign, columns=cols)
    raw["protocol"] = rng.choice([6, 17, 1], n)
    raw["src_port"], raw["dst_port"] = rng.integers(0, 65536, n), rng.integers(0, 65536, n)
    assert not check_flows(raw.assign(packets=1, bytes=1), schema=False).ok.all()
    fixed = repair_flows(raw)
    rep = check_flows(fixed, schema=False)
    assert rep.ok.all(), rep.counts()
    assert (fixed["packets"] == fixed["src2dst_packets"] + fixed["dst2src_packets"]).all()
    assert (fixed.loc[fixed["protocol"] != 6, "syn_packets"] == 0).all()

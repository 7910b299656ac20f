"""Which windows of a labelled lab capture carry an attack (principals), and which are collateral."""
from __future__ import annotations

import numpy as np
import pandas as pd

from inference.datasets.lab import (RUN_NET, labels_principals, run_hosts, separate_attack_runs, span_periods,
                                    span_principals)
from inference.openworld_captures import attacked_times
from inference.openworld_verdicts import judge_windows

SPANS = [
    {"label": "syn_scan", "attacker_ip": "10.77.0.9", "start_ms": 0, "end_ms": 1000, "match": "attacker"},
    {"label": "syn_flood", "attacker_ip": "10.77.0.9", "start_ms": 5000, "end_ms": 6000, "match": "victim",
     "victim_ip": "10.77.0.10"},
    {"label": "reflection", "attacker_ip": "10.77.0.9", "start_ms": 9000, "end_ms": 9500, "match": "pair",
     "victim_ip": "10.77.0.10", "peers": ["10.77.0.20"]},
    {"label": "syn_scan", "attacker_ip": "10.77.0.9", "start_ms": 20000, "end_ms": 21000, "match": "attacker"},
]
CLASSES = ["benign", "syn_scan", "syn_flood", "reflection"]


def test_principals_name_the_attacker_the_spoofed_victim_and_the_reflection_pair():
    p = span_principals(SPANS)
    assert p["syn_scan"] == {("src", "10.77.0.9")}
    assert p["syn_flood"] == {("dst", "10.77.0.10")}
    # A reflected request is spoofed as the victim, so its flows run victim -> reflector.
    assert p["reflection"] == {("src", "10.77.0.10"), ("dst", "10.77.0.20")}
    fresh = run_hosts(SPANS)
    assert fresh[1] is None and fresh[2] is None and fresh[0] != fresh[3]
    assert span_principals(SPANS, separated=True)["syn_scan"] == {("src", fresh[0]), ("src", fresh[3])}
    assert all(h is None or h.startswith(RUN_NET.split(".")[0]) for h in fresh)


def test_separated_runs_get_the_addresses_the_principals_name():
    flows = pd.DataFrame({"src_ip": ["10.77.0.9", "10.77.0.9", "10.77.0.5"], "dst_ip": ["10.77.0.10"] * 3,
                          "first_seen_ms": [500, 20500, 600], "label": ["syn_scan", "syn_scan", "benign"]})
    out = separate_attack_runs(flows, SPANS)
    fresh = run_hosts(SPANS)
    assert out["src_ip"].tolist() == [fresh[0], fresh[3], "10.77.0.5"]


def _win(view, key, label, lo, hi, predicted, uncertain=False):
    return {"view": view, "key": key, "label": label, "first_seen_ms": lo, "last_seen_ms": hi,
            "predicted": predicted, "uncertain": uncertain, "n_flows": 8}


def test_windows_that_name_no_attack_are_collateral_not_judged():
    w = pd.DataFrame([
        _win("src", "10.77.0.9", "syn_scan", 0, 900, "syn_scan"),          # the scanner: judged, ok
        _win("dst", "10.77.0.10", "syn_scan", 0, 900, "benign"),           # victim mixing the scan in: collateral
        _win("src", "203.0.113.7", "syn_flood", 5100, 5100, "benign"),     # one spoofed SYN: collateral
        _win("dst", "10.77.0.10", "syn_flood", 5000, 5400, "syn_flood"),   # the flooded victim: judged, ok
        _win("dst", "10.77.0.10", "benign", 5500, 5800, "syn_flood"),      # benign flows, host under attack
        _win("dst", "10.77.0.30", "benign", 5500, 5800, "benign"),         # another host: judged, ok
        _win("dst", "10.77.0.10", "benign", 60000, 61000, "syn_flood"),    # long after: a false alert
    ])
    flows = pd.DataFrame({"dst_ip": ["10.77.0.10"] * 3, "first_seen_ms": [5000, 5100, 5200],
                          "label": ["syn_flood"] * 3})
    j = judge_windows(w, expect=None, scope="labels", class_names=CLASSES,
                      principals=span_principals(SPANS), attacked=attacked_times(flows))
    assert j["collateral"].tolist() == [False, True, True, False, True, False, False]
    assert [v if isinstance(v, str) else None for v in j["verdict"]] == ["ok", None, None, "ok", None, "ok", "false_alert"]
    # Without principals, every window is judged by its label alone.
    plain = judge_windows(w, expect=None, scope="labels", class_names=CLASSES)
    assert plain["scoped"].all() and not plain["collateral"].any()
    assert np.array_equal(plain["verdict"].to_numpy()[[0, 3, 5]], np.array(["ok", "ok", "ok"], dtype=object))


def test_a_victim_carries_a_label_only_while_a_run_that_names_it_goes_on():
    spans = [
        {"label": "icmp_flood", "attacker_ip": "10.77.0.9", "start_ms": 0, "end_ms": 1000, "match": "victim",
         "victim_ip": "10.77.0.10", "tail_ms": 3000},                    # spoofed: the victim names it
        {"label": "icmp_flood", "attacker_ip": "10.77.0.9", "start_ms": 10000, "end_ms": 20000,
         "match": "attacker", "tail_ms": 5000},                          # one source: the source names it
    ]
    periods = span_periods(spans, grace_ms=1000)
    # As the label rule reads the spans: an attacker's (or a pair's) run has a tail, a spoofed one none.
    assert periods[("icmp_flood", "dst", "10.77.0.10")] == [(-1000.0, 2000.0)]
    assert periods[("icmp_flood", "src", "10.77.0.9")] == [(9000.0, 25000.0)]
    assert labels_principals({"spans": spans, "grace_ms": 1000}) == (span_principals(spans), periods)
    w = pd.DataFrame([
        _win("dst", "10.77.0.10", "icmp_flood", 100, 900, "benign"),        # the spoofed flood: judged, missed
        _win("dst", "10.77.0.10", "icmp_flood", 12000, 13000, "benign"),    # one ping -f flow among clients'
        _win("src", "10.77.0.9", "icmp_flood", 12000, 13000, "benign"),     # the pinging source: judged
    ])
    kw = dict(expect=None, scope="labels", class_names=CLASSES + ["icmp_flood"],
              principals=span_principals(spans))
    timed = judge_windows(w, periods=periods, **kw)
    assert timed["collateral"].tolist() == [False, True, False]
    assert [v if isinstance(v, str) else None for v in timed["verdict"]] == ["miss", None, "miss"]
    # Without periods, a victim of the label at any time is a principal all the time.
    assert judge_windows(w, **kw)["collateral"].tolist() == [False, False, False]

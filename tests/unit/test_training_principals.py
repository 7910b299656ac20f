"""Training labels a lab window as the open-world evaluation judges it: by who carries the attack.

A host sweep's target sees one probe among its clients' flows; a spoofed flood's sources
each send one SYN. Labelled by their raw flows, those windows teach that one SYN from a
new peer is an attack. With the CARRIES column (load_lab(carriers=True)) they are left out.
"""
from __future__ import annotations

from collections import Counter

import pandas as pd

from contracts.records import FlowRecord
from inference.datasets.lab import CARRIES, flow_carriers, span_principals
from inference.train import frame_windows

SWEEPER, TARGET, CLIENT, VICTIM = "10.77.0.9", "10.77.0.20", "10.77.0.5", "10.77.0.30"
SPANS = [
    {"label": "host_sweep", "attacker_ip": SWEEPER, "start_ms": 0, "end_ms": 2000, "match": "attacker"},
    {"label": "syn_flood", "attacker_ip": SWEEPER, "start_ms": 100_000, "end_ms": 102_000, "match": "victim",
     "victim_ip": VICTIM},
]


def _flow(i: int, src: str, dst: str, t: int, label: str, port: int = 80) -> dict:
    r = FlowRecord(flow_id=f"f{i}", first_seen_ms=t, last_seen_ms=t + 5, src_ip=src, dst_ip=dst, protocol=6,
                   dst_port=port, packets=1, bytes=54, src2dst_packets=1, dst2src_packets=0).model_dump()
    return {**r, "label": label}


def _capture() -> pd.DataFrame:
    rows = []
    # The sweeper probes 16 hosts once each; TARGET also serves a client, probed in the middle.
    for i in range(16):
        rows.append(_flow(i, SWEEPER, TARGET if i == 8 else f"10.77.1.{i}", 100 * i, "host_sweep"))
    rows += [_flow(100 + i, CLIENT, TARGET, 50 + 100 * i, "benign", port=443) for i in range(7)]
    # A spoofed flood: 40 SYNs, each from its own source, to VICTIM.
    rows += [_flow(200 + i, f"198.51.{i}.7", VICTIM, 100_000 + 40 * i, "syn_flood", port=22) for i in range(40)]
    df = pd.DataFrame(rows).sort_values("first_seen_ms", kind="stable").reset_index(drop=True)
    return df


def test_carriers_name_the_views_each_attack_flow_carries_in():
    df = _capture()
    c = pd.Series(flow_carriers(df, span_principals(SPANS)), index=df.index)
    assert set(c[df["label"] == "benign"]) == {"sd"}
    assert set(c[df["label"] == "host_sweep"]) == {"s"}       # the sweeper's own windows only
    assert set(c[df["label"] == "syn_flood"]) == {"d"}        # the victim's fan-in only


def test_training_leaves_out_windows_no_detector_can_be_right_about():
    df = _capture()
    raw = frame_windows(df, k=8, seconds=10.0, views=["src", "dst"])
    judged = frame_windows(df.assign(**{CARRIES: flow_carriers(df, span_principals(SPANS))}),
                           k=8, seconds=10.0, views=["src", "dst"])
    raw_n, got = Counter(raw.labels), Counter(judged.labels)
    # Raw labels: every spoofed source's one-SYN window is a "syn_flood", every probed
    # host's one-probe window a "host_sweep".
    assert raw_n["syn_flood"] >= 40 and raw_n["host_sweep"] >= 16
    # Judged: the victim's 5 windows of 8 SYNs, the sweeper's 2 windows of 8 probes and the
    # client's own window. TARGET's destination window (7 client flows and one probe) is
    # left out, as are the other probed hosts' and the spoofed sources' one-flow windows.
    assert dict(got) == {"benign": 1, "host_sweep": 2, "syn_flood": 5}
    assert len(judged.labels) == len(judged.x) == len(judged.mask)


def test_the_store_windows_a_lab_capture_as_training_does():
    """The retrainer trains on the store's windows (llm_agents.store.reference_frame): they
    must carry the labels training gives, or a challenger learns what the shipped recipe
    was kept from learning (a probed host's one-probe window as a sweep)."""
    from llm_agents.store import reference_frame

    df = _capture().assign(**{CARRIES: None})
    df[CARRIES] = flow_carriers(df, span_principals(SPANS))
    judged = frame_windows(df, k=8, seconds=10.0, views=["src", "dst"])
    stored = reference_frame(df, k=8, seconds=10.0, views=["src", "dst"]).drop_duplicates("window_id")
    assert Counter(stored["label"]) == Counter(judged.labels) == {"benign": 1, "host_sweep": 2, "syn_flood": 5}
    # Without carriers the store keeps raw labels, as before.
    raw = reference_frame(_capture(), k=8, seconds=10.0, views=["src", "dst"]).drop_duplicates("window_id")
    assert Counter(raw["label"])["syn_flood"] >= 40

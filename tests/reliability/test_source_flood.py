"""300,000 distinct sources within a minute into one `edgeloop detect` on the real broker,
with the worker's default window cap: it stays up, stays inside the deploy files' 1 GiB,
closes the least recently active windows early at its memory bound (closed_by "pressure",
counted) and loses no flow.

The sources arrive at 5,000 a second, and the worker runs the product's consumer timings.
Before the msgspec decode, the batched host history and the tick budget, the busy worker
was dropped from the group near 200,000 flows (UnknownMemberId: ticks of several seconds
starved it) and never got partitions back; it then needed a 30 s session. A worker that is
fenced anyway now rejoins (tests/reliability/test_at_least_once.py). Each source sends one flow (a spoofed-source flood seen from the source view: every
window holds one flow and never fills). Prints the peak RSS (VmHWM), the early closes and
how long the worker took.
"""
from __future__ import annotations

import time

import pytest

from streams.producer import FlowPublisher

pytestmark = pytest.mark.integration

SOURCES = 300_000
LIMIT_MB = 1024  # MemoryMax=1G / limits.memory: 1Gi in deploy/
BOUND_MB = 16


def flow(i: int) -> dict:
    t = 1_700_000_000_000 + i // 5  # 5,000 flows per second of event time: one minute in all
    return dict(schema="edgeloop.flow/1", flow_id=f"s-{i}", first_seen_ms=t, last_seen_ms=t + 1,
                src_ip=f"10.{100 + (i >> 16)}.{(i >> 8) & 255}.{i & 255}", dst_ip="10.99.0.1",
                src_port=1024 + i % 60000, dst_port=80, protocol=6, packets=1, bytes=60,
                src2dst_packets=1, dst2src_packets=0, min_ps=60, mean_ps=60, max_ps=60, syn_packets=1)


def rss_peak_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return 0.0


def test_300k_sources_in_a_minute_stay_inside_the_memory_bound(broker, topics, edge_worker, topic_reader,
                                                               decode_detections) -> None:
    from inference.bundle import DEFAULT_BUNDLE_DIR

    # The product's consumer timings (streams.settings): a 10 s session, 2 s heartbeats, 20 s
    # between polls at most.
    # Open windows bounded at 16 MB (the default is 192): the flood must reach the bound. At
    # 5,000 new sources a second with a 10 s idle close about 50,000 one-flow windows are open
    # at once, about 31 MB of the engine's estimate: under 64 MB, which this test used to set.
    w = edge_worker(topics, DEFAULT_BUNDLE_DIR, session_timeout_s=10, heartbeat_s=2, max_poll_interval_s=20,
                    window_memory_mb=BOUND_MB)
    w.wait_for("edgeloop_assigned_partitions", lambda v: v == 4, timeout=30)
    t0 = time.monotonic()
    with FlowPublisher(broker.bootstrap, topics.flows) as pub:  # 5,000 new sources a second
        for k, a in enumerate(range(0, SOURCES, 10_000)):
            pub.publish([flow(i) for i in range(a, a + 10_000)])
            pub.flush()
            time.sleep(max(0.0, t0 + (k + 1) * 2.0 - time.monotonic()))
    published = time.monotonic() - t0
    assert published < 65, f"publishing took {published:.0f} s: not a one-minute flood"
    est = []

    def in_and_bounded(v: float) -> bool:
        est.append(w.sample("edgeloop_open_window_bytes") or 0.0)
        return v >= SOURCES

    w.wait_for("edgeloop_flows_in_total", in_and_bounded, timeout=120)
    ids = {f"s-{i}" for i in range(SOURCES)}
    seen: set[str] = set()
    read = [0]

    def covered(values: list[bytes]) -> bool:  # decodes only what arrived since the last poll
        seen.update(f for d in decode_detections(values[read[0]:]) if d["view"] == "src" for f in d["flow_ids"])
        read[0] = len(values)
        return ids <= seen

    topic_reader(topics.detections, covered, timeout=120)  # the last windows close idle meanwhile
    took = time.monotonic() - t0
    peak = rss_peak_mb(w.proc.pid)
    pressure = w.sample("edgeloop_windows_scored_total", {"closed_by": "pressure"})
    by_close = {c: w.sample("edgeloop_windows_scored_total", {"closed_by": c}) for c in ("k", "idle", "pressure")}
    print(f"\n{SOURCES:,} sources published in {published:.1f} s, all scored {took:.1f} s after the first; "
          f"peak RSS {peak:.0f} MB (limit {LIMIT_MB}); open windows' estimate at most {max(est) / 2**20:.0f} MB "
          f"(bound {BOUND_MB}); windows by close {by_close}; "
          f"source-view flows scored {len(seen & ids):,}")
    w.assert_alive()
    assert len(ids - seen) == 0, f"{len(ids - seen)} flows lost"
    assert pressure > 0, "the window cap never closed a window early"
    assert peak < LIMIT_MB, f"peak RSS {peak:.0f} MB over the deploy limit"
    assert max(est) <= BOUND_MB * 2**20, "the open windows outgrew their memory bound"

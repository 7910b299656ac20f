"""A spoofed-source SYN flood, live: the alert must name the victim within 10 seconds.

Two private namespaces (attacker, victim) hang off a bridge in the root namespace that has
no address and no other port, so nothing crossing it can go anywhere else. The victim has
no default route: its SYN-ACKs to the spoofed sources are dropped at once (unreachable).
hping3 sends a bounded flood (25,000 SYNs from random sources, rate-capped, under
timeout(1)); NFStream meters the bridge live (`edgeloop capture`'s code) into Kafka; a
real `edgeloop detect` worker with the shipped bundle windows by destination too. The
test measures the time from the flood's first packet to the first alert on `alerts` whose
key is the victim.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import threading
import time

import pytest

from inference.bundle import DEFAULT_BUNDLE_DIR
from streams.producer import FlowPublisher

pytestmark = pytest.mark.e2e
TAG = os.getpid() % 10000
BR, ATT, VIC = f"elfb{TAG}", f"el-fa{TAG}", f"el-fv{TAG}"
ATT_IP, VIC_IP = "10.79.0.2", "10.79.0.3"
SOURCES = 25_000        # packets, each from a random source: the bound on the flood
RATE_US = 40            # one SYN every 40 us: about 25,000/s, so the flood lasts about a second
ALERT_WITHIN_S = 10.0


def sh(*cmd: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, check=check, capture_output=True, text=True, timeout=30)


@pytest.fixture
def bridge():
    if os.geteuid() != 0 or not shutil.which("ip") or not shutil.which("hping3"):
        pytest.skip("needs root, iproute2 and hping3 (scripts/setup-lab.sh)")
    made = []
    try:
        sh("ip", "link", "add", BR, "type", "bridge", "stp_state", "0")
        made.append(("link", BR))
        for ns, ip, port in ((ATT, ATT_IP, f"{BR}a"), (VIC, VIC_IP, f"{BR}v")):
            sh("ip", "netns", "add", ns)
            made.append(("netns", ns))
            sh("ip", "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", ns)
            sh("ip", "link", "set", port, "master", BR, "up")
            sh("ip", "-n", ns, "addr", "add", f"{ip}/24", "dev", "eth0")
            sh("ip", "-n", ns, "link", "set", "eth0", "up")
            sh("ip", "-n", ns, "link", "set", "lo", "up")
            sh("ip", "netns", "exec", ns, "ethtool", "-K", "eth0", "tso", "off", "gso", "off", "gro", "off",
               check=False)
        sh("ip", "link", "set", BR, "up")
        # A victim that owns no route but its own /24 cannot answer a spoofed source.
        assert "default" not in sh("ip", "-n", VIC, "route").stdout
        yield BR
    finally:
        for kind, name in reversed(made):
            sh("ip", "netns", "del", name, check=False) if kind == "netns" else sh("ip", "link", "del", name,
                                                                                    check=False)


def test_spoofed_flood_alert_names_the_victim_within_10s(broker, topics, edge_worker, topic_reader, bridge):
    pytest.importorskip("nfstream")
    from streams.sources.live import capture

    worker = edge_worker(topics, DEFAULT_BUNDLE_DIR)
    started: list[float] = []

    def meter() -> None:
        # A bridge port's traffic is seen on the bridge only in promiscuous mode. Bounded:
        # it ends at the flood's flows or 14 s (11 s after the flood began: its flows are out by then).
        with FlowPublisher(broker.bootstrap, topics.flows, sensor="flood-test") as pub:
            capture(bridge, pub, duration_s=14, max_flows=SOURCES, idle_timeout=1, active_timeout=5,
                    promiscuous=True)

    m = threading.Thread(target=meter, daemon=True)
    m.start()
    time.sleep(3.0)  # the live capture opens the bridge
    started.append(time.time())
    flood = sh("ip", "netns", "exec", ATT, "timeout", "20", "hping3", "-S", "--rand-source", "-p", "80",
               "-c", str(SOURCES), "-i", f"u{RATE_US}", "-q", VIC_IP, check=False)
    assert flood.returncode in (0, 1), flood.stderr[-500:]
    def victim_alert(values: list[bytes]) -> bool:
        return any(_is_victim_alert(json.loads(v)) for v in values)
    alerts = topic_reader(topics.alerts, victim_alert, timeout=30)
    arrived = time.time()
    m.join(60)
    hit = next(a for a in map(json.loads, alerts) if _is_victim_alert(a))
    took = arrived - started[0]
    print(f"\nspoofed flood: {SOURCES:,} SYNs; alert {hit['attack']} on {hit['key']} from {hit['sources']:,} "
          f"sources, {took:.1f} s after the flood started")
    # What the issue asks: an alert naming the victim within 10 s. The class of the first
    # one is not always syn_flood live (host_sweep was seen: a victim's fan-in of one-SYN
    # flows from new peers also looks like a sweep's probes); the offline replay of the
    # lab's 22k-source flood is checked for syn_flood in tests/unit/test_spoofed_flood_detection.py.
    # The first alert aggregates what had closed by then (504 to 22k sources seen, by how
    # fast the windows closed); 100 distinct sources already rule out one client's traffic.
    assert hit["attack"] != "benign" and hit["sources"] >= 100
    assert took <= ALERT_WITHIN_S
    worker.assert_alive()


def _is_victim_alert(a: dict) -> bool:
    return a.get("view") == "dst" and a.get("key") == VIC_IP

"""Packet capture at the lab's switch (tcpdump on br0), where every packet is seen once.

Lab traffic is not only to and from the victim: sweeps cross to many (often unowned)
addresses, reflectors answer the victim, clients use the servers. So tcpdump runs in the
switch namespace on the bridge itself, in promiscuous mode: the bridge then hands a copy
of every frame that enters it from any port to br0, before forwarding (so each frame is
seen exactly once, at the moment it reaches the switch; frames flooded to several ports
are still seen once). With emulated link conditions that is after the sender's uplink
and before the receiver's downlink, like a sensor in the middle of the path. tcpdump
runs with a large kernel buffer, a packet-count cap (`-c`, a bound on the whole capture)
and a snap length that keeps headers plus enough payload for nDPI (HTTP host, TLS SNI,
SSH banner). Sizes in the flows are wire sizes,
so cutting the snap length later (`trafficlab.trim`) changes no numeric flow feature.

    >>> cap = Capture(topo, procs, run_dir / "lab.pcap", snaplen=384)
    >>> cap.start(); ...; stats = cap.stop()     # packets captured / dropped by kernel
"""
from __future__ import annotations

import re
import signal
from dataclasses import dataclass
from pathlib import Path

from contracts.errors import LabError
from trafficlab.procs import Procs, wait_until
from trafficlab.topology import Topology

INTERFACE = "br0 in the switch namespace (promiscuous: every frame entering the bridge, once)"


@dataclass(frozen=True)
class CaptureStats:
    packets: int
    received: int
    dropped: int
    bytes: int


class Capture:
    def __init__(self, topo: Topology, procs: Procs, path: Path, snaplen: int = 384,
                 max_packets: int = 3_000_000) -> None:
        self.topo, self.procs, self.path = topo, procs, path
        self.snaplen, self.max_packets = snaplen, max_packets

    def start(self, timeout: float = 5.0) -> None:
        self.procs.start("tcpdump", self.topo.exec("sw", [
            "tcpdump", "-i", "br0", "-n", "-s", str(self.snaplen), "-B", "65536", "-U",
            "-Z", "root", "-c", str(self.max_packets), "-w", str(self.path)]))
        if not wait_until(lambda: "listening on" in self.procs.log("tcpdump"), timeout):
            raise LabError(f"tcpdump did not start: {self.procs.log('tcpdump')[-300:]}")

    def stop(self) -> CaptureStats:
        self.procs.stop("tcpdump", grace=5.0, sig=signal.SIGINT)
        log = self.procs.log("tcpdump")

        def count(what: str) -> int:
            m = re.search(rf"(\d+) packets? {what}", log)
            return int(m.group(1)) if m else 0
        size = self.path.stat().st_size if self.path.exists() else 0
        return CaptureStats(count("captured"), count("received by filter"),
                            count("dropped by kernel"), size)

"""Packet capture on the victim's interface (tcpdump), and shrinking a pcap for shipping.

Every lab host talks only to the victim, so its interface sees all lab traffic, once.
tcpdump runs inside the victim namespace with a large kernel buffer, a packet-count cap
(`-c`, a bound on the whole capture) and a snap length that keeps headers plus enough
payload for nDPI (HTTP host, TLS SNI, SSH banner). Sizes in the flows are wire sizes,
so cutting the snap length later (`streams.lab.trim`) changes no numeric flow feature.

    >>> cap = Capture(topo, procs, run_dir / "lab.pcap", snaplen=384)
    >>> cap.start(); ...; stats = cap.stop()     # packets captured / dropped by kernel
"""
from __future__ import annotations

import re
import signal
from dataclasses import dataclass
from pathlib import Path

from streams.errors import LabError
from streams.lab.procs import Procs, wait_until
from streams.lab.topology import Topology


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
        self.procs.start("tcpdump", self.topo.exec("vic", [
            "tcpdump", "-i", "eth0", "-n", "-s", str(self.snaplen), "-B", "32768", "-U",
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

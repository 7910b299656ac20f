"""A small crafted open-world set, for tests and a quick look at the report: SYNTHETIC.

Nothing here is real traffic and no figure measured on it says anything about a
detector. It exists so every path of `edgeloop evaluate --open-world` runs in seconds:
flow tables of each expectation kind and scope, a table holding two captures, a crafted
pcap of a SYN scan (built packet by packet, metered by NFStream), a file that is not a
capture and an entry whose file is missing (both counted as failures).

    >>> manifest = write_crafted_set(tmp_path)     # writes the files and crafted.toml
    $ edgeloop evaluate --open-world data/openworld/crafted/crafted.toml default   # shipped copy
"""
from __future__ import annotations

import struct
from pathlib import Path

SCANNER, VICTIM = "10.66.0.66", "10.66.0.10"

MANIFEST = '''# SYNTHETIC crafted set: exercises every path of the open-world evaluation.
schema = "edgeloop.openworld_manifest/1"
name = "crafted"
description = "SYNTHETIC flows and a crafted SYN-scan pcap; says nothing about a detector"

[[capture]]
path = "benign.csv"
expect = "benign"
group = "crafted benign"

[[capture]]
path = "two_captures.csv"
capture_column = "capture"
expect = "benign"
group = "crafted benign"

[[capture]]
path = "syn_scan.csv"
expect = "syn_scan"
scope = "top_key"
group = "crafted known"

[[capture]]
path = "portscan.pcap"
expect = "attack"
scope = "top_key"
group = "crafted unknown"

[[capture]]
path = "flood.csv"
expect = "attack"
group = "crafted unknown"

[[capture]]
path = "labelled.parquet"
scope = "labels"
group = "crafted labelled"

[[capture]]
path = "not_a_capture.pcap"
expect = "benign"
group = "crafted failures"

[[capture]]
path = "missing.parquet"
expect = "benign"
group = "crafted failures"
'''


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def _ip(addr: str) -> bytes:
    return bytes(int(x) for x in addr.split("."))


def tcp_frame(src: str, dst: str, sport: int, dport: int, flags: int, seq: int = 0, ack: int = 0) -> bytes:
    """One Ethernet/IPv4/TCP frame with valid checksums and no payload."""
    tcp = struct.pack("!HHIIBBHHH", sport, dport, seq, ack, 5 << 4, flags, 1024, 0, 0)
    pseudo = _ip(src) + _ip(dst) + struct.pack("!BBH", 0, 6, len(tcp))
    tcp = tcp[:16] + struct.pack("!H", _checksum(pseudo + tcp)) + tcp[18:]
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(tcp), 1, 0, 64, 6, 0, _ip(src), _ip(dst))
    ip = ip[:10] + struct.pack("!H", _checksum(ip)) + ip[12:]
    eth = b"\x02\x00\x00\x00\x00\x02" + b"\x02\x00\x00\x00\x00\x01" + b"\x08\x00"
    return eth + ip + tcp


def write_syn_scan_pcap(path: str | Path, ports: int = 30, start_s: int = 1_700_000_000,
                        gap_ms: int = 20) -> Path:
    """A pcap of SCANNER sending one SYN to each of `ports` ports of VICTIM, answered by RST."""
    out = [struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1)]
    for i in range(ports):
        for k, (src, dst, sp, dp, fl) in enumerate(((SCANNER, VICTIM, 40000, 20 + i, 0x02),
                                                    (VICTIM, SCANNER, 20 + i, 40000, 0x14))):
            t_us = (i * gap_ms + k) * 1000
            frame = tcp_frame(src, dst, sp, dp, fl, seq=1000 + i, ack=0 if k == 0 else 1001 + i)
            out.append(struct.pack("<IIII", start_s + t_us // 1_000_000, t_us % 1_000_000,
                                   len(frame), len(frame)) + frame)
    p = Path(path)
    p.write_bytes(b"".join(out))
    return p


def write_crafted_set(folder: str | Path, seed: int = 7) -> Path:
    """Write the crafted files and crafted.toml into folder; return the manifest's path."""
    import numpy as np

    from inference.datasets.synthetic import synthetic_flows

    d = Path(folder)
    d.mkdir(parents=True, exist_ok=True)
    flows = synthetic_flows(hosts_per_class=2, flows_per_host=24, seed=seed)
    benign = flows[flows["label"] == "benign"]
    benign.to_csv(d / "benign.csv", index=False)
    two = synthetic_flows(hosts_per_class=1, flows_per_host=16, seed=seed + 1,
                          classes=("benign", "ssh_bruteforce"))
    two.assign(capture=np.where(two["label"] == "benign", "office", "lab")).to_csv(
        d / "two_captures.csv", index=False)
    scan = flows[flows["label"].isin(["syn_scan", "benign"])].drop(columns=["label"])
    scan.to_csv(d / "syn_scan.csv", index=False)
    flows[flows["label"] == "syn_flood"].drop(columns=["label"]).to_csv(d / "flood.csv", index=False)
    labelled = flows.copy()
    labelled["label"] = labelled["label"].replace({"fin_scan": "dns_tunnel"})  # a label no bundle has
    labelled.to_parquet(d / "labelled.parquet", index=False)
    write_syn_scan_pcap(d / "portscan.pcap")
    (d / "not_a_capture.pcap").write_bytes(b"this is not a capture file\n")
    manifest = d / "crafted.toml"
    manifest.write_text(MANIFEST)
    return manifest

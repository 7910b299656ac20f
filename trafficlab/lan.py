"""LAN housekeeping every network has: mDNS, SSDP, DHCP and IPv6 neighbour chatter.

One process per lab host (not the attackers), until a deadline. It answers and sends
mDNS (224.0.0.251 and ff02::fb, port 5353: service browsing, announcements of its own
name), SSDP (239.255.255.250:1900: NOTIFY alive, M-SEARCH from clients, unicast answers
to searches), asks the LAN's DHCP server for a lease now and then (busybox udhcpc, which
never configures the address it is offered: hosts keep their static ones), and pings
the IPv6 all-nodes group, so neighbour discovery runs as it does on real links (the
kernel adds MLD reports and router solicitations on its own). Every packet stays on the
lab link: multicast, broadcast, or unicast to a lab host that asked.

The victim never searches (no M-SEARCH, no unicast answers it would draw from the lab
servers), so the only traffic between the victim and a server is a reflection attack.

    ip netns exec el-1-c1 python -m trafficlab.lan --name c1 --kind client --seed 3 \\
        --until 1790000000 --dhcp
"""
from __future__ import annotations

import argparse
import random
import re
import selectors
import socket
import struct
import subprocess
import sys
import time

MDNS4, MDNS6, SSDP = ("224.0.0.251", 5353), ("ff02::fb", 5353), ("239.255.255.250", 1900)
SERVICES = ("_http._tcp.local", "_ipp._tcp.local", "_smb._tcp.local", "_airplay._tcp.local",
            "_googlecast._tcp.local", "_workstation._tcp.local", "_ssh._tcp.local")
SSDP_TARGETS = ("ssdp:all", "upnp:rootdevice", "urn:schemas-upnp-org:device:MediaRenderer:1",
                "urn:dial-multiscreen-org:service:dial:1")


def _name(n: str) -> bytes:
    return b"".join(bytes([len(p)]) + p.encode() for p in n.split(".") if p) + b"\0"


def mdns_query(rng: random.Random) -> bytes:
    qs = rng.sample(SERVICES, rng.randint(1, 3))
    body = b"".join(_name(q) + struct.pack("!HH", 12, 1) for q in qs)
    return struct.pack("!HHHHHH", 0, 0, len(qs), 0, 0, 0) + body


def mdns_announce(host: str, addr: str) -> bytes:
    rr = _name(f"{host}.local") + struct.pack("!HHIH", 1, 0x8001, 120, 4) + socket.inet_aton(addr)
    return struct.pack("!HHHHHH", 0, 0x8400, 0, 1, 0, 0) + rr


def ssdp_notify(host: str, addr: str, rng: random.Random) -> bytes:
    return ("NOTIFY * HTTP/1.1\r\nHOST: 239.255.255.250:1900\r\nCACHE-CONTROL: max-age=1800\r\n"
            f"LOCATION: http://{addr}:49152/desc.xml\r\nNT: upnp:rootdevice\r\nNTS: ssdp:alive\r\n"
            f"SERVER: Linux/6.1 UPnP/1.0 {host}/1.0\r\nUSN: uuid:{rng.getrandbits(64):016x}::upnp:rootdevice\r\n\r\n"
            ).encode()


def ssdp_search(rng: random.Random) -> bytes:
    return ("M-SEARCH * HTTP/1.1\r\nHOST: 239.255.255.250:1900\r\nMAN: \"ssdp:discover\"\r\n"
            f"MX: {rng.randint(1, 3)}\r\nST: {rng.choice(SSDP_TARGETS)}\r\n\r\n").encode()


def _mcast_socket(group: str, port: int, addr: str) -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("", port))
    s.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, socket.inet_aton(group) + socket.inet_aton(addr))
    s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton(addr))
    s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 255 if port == 5353 else 2)
    s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, 0)
    s.setblocking(False)
    return s


class Lan:
    def __init__(self, name: str, kind: str, addr: str, rng: random.Random, dhcp: bool) -> None:
        self.name, self.kind, self.addr, self.rng, self.dhcp = name, kind, addr, rng, dhcp
        self.mdns = _mcast_socket(*MDNS4, addr)
        self.ssdp = _mcast_socket(*SSDP, addr)
        self.counts = {"mdns": 0, "ssdp": 0, "answers": 0, "dhcp": 0, "ping6": 0}
        self.lease = ""

    def tick(self, what: str) -> None:
        rng = self.rng
        try:
            if what == "mdns":
                msg = mdns_announce(self.name, self.addr) if rng.random() < 0.4 else mdns_query(rng)
                self.mdns.sendto(msg, MDNS4)
                if rng.random() < 0.3:
                    self._mdns6(msg)
            elif what == "ssdp":
                searching = self.kind == "client" and rng.random() < 0.6
                self.ssdp.sendto(ssdp_search(rng) if searching else ssdp_notify(self.name, self.addr, rng), SSDP)
            elif what == "dhcp":
                self._dhcp()
            elif what == "ping6":
                subprocess.run(["ping", "-6", "-c", "1", "-w", "2", "-q", "ff02::1%eth0"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=5, check=False)
            self.counts[what] += 1
        except (OSError, subprocess.TimeoutExpired):
            pass

    def _mdns6(self, msg: bytes) -> None:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as s:
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_IF, socket.if_nametoindex("eth0"))
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, 255)
            s.sendto(msg, (*MDNS6, 0, socket.if_nametoindex("eth0")))

    def _dhcp(self) -> None:
        argv = ["busybox", "udhcpc", "-i", "eth0", "-n", "-q", "-f", "-t", "3", "-T", "2",
                "-s", "/bin/true", "-x", f"hostname:{self.name}"]
        if self.lease:
            argv += ["-r", self.lease]       # ask for the previous lease again (a renewal)
        cp = subprocess.run(argv, capture_output=True, text=True, timeout=15, check=False)
        m = re.search(r"lease of (\d+\.\d+\.\d+\.\d+)", cp.stdout + cp.stderr)
        if m:
            self.lease = m.group(1)

    def answer(self, sock: socket.socket) -> None:
        """Answer an SSDP search (unicast, as devices do) and mDNS queries for our name."""
        try:
            data, peer = sock.recvfrom(2048)
        except OSError:
            return
        if sock is self.ssdp and data.startswith(b"M-SEARCH") and self.kind != "client":
            reply = ("HTTP/1.1 200 OK\r\nCACHE-CONTROL: max-age=1800\r\nEXT:\r\n"
                     f"LOCATION: http://{self.addr}:49152/desc.xml\r\nSERVER: Linux/6.1 UPnP/1.0 {self.name}/1.0\r\n"
                     "ST: upnp:rootdevice\r\n\r\n").encode()
            time.sleep(self.rng.uniform(0, 0.5))
            sock.sendto(reply, peer)
            self.counts["answers"] += 1
        elif sock is self.mdns and self.name.encode() in data and self.rng.random() < 0.8:
            self.mdns.sendto(mdns_announce(self.name, self.addr), MDNS4)
            self.counts["answers"] += 1


def run(lan: Lan, until: float) -> None:
    periods = {"mdns": (8, 40), "ssdp": (20, 90), "ping6": (45, 180)}
    if lan.dhcp:
        periods["dhcp"] = (30, 120)
    # A host that comes up asks DHCP and announces itself at once; the rest follows.
    first = {"mdns": 4, "ssdp": 6, "dhcp": 3, "ping6": 20}
    due = {k: time.monotonic() + lan.rng.uniform(0.5, first[k]) for k in periods}
    sel = selectors.DefaultSelector()
    sel.register(lan.mdns, selectors.EVENT_READ)
    sel.register(lan.ssdp, selectors.EVENT_READ)
    while time.time() < until:
        for key, _ in sel.select(timeout=0.5):
            lan.answer(key.fileobj)
        now = time.monotonic()
        for what, when in due.items():
            if when <= now:
                lan.tick(what)
                due[what] = now + lan.rng.uniform(*periods[what])


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="LAN housekeeping for one lab host.")
    ap.add_argument("--name", required=True)
    ap.add_argument("--kind", choices=("client", "victim", "server"), required=True)
    ap.add_argument("--addr", required=True)
    ap.add_argument("--seed", type=int, required=True)
    ap.add_argument("--until", type=float, required=True)
    ap.add_argument("--dhcp", action="store_true", help="also ask the LAN's DHCP server for leases")
    args = ap.parse_args(argv)
    lan = Lan(args.name, args.kind, args.addr, random.Random(args.seed), args.dhcp)
    run(lan, min(args.until, time.time() + 3600))
    print(f"lan {args.name}: {lan.counts}", flush=True)


if __name__ == "__main__":
    sys.exit(main())

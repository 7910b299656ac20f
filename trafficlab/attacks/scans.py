"""Port scans of the victim: TCP SYN, FIN/NULL/Xmas and UDP, with nmap, masscan and hping3.

Parameters sweep ranges from the seed (port ranges, rates, timing templates, retries,
payload lengths, source ports), so two seeds give different traffic for the same class.
"""
from __future__ import annotations

import random

from trafficlab.attacks.base import Scenario, Target, Variant, run


def _ports(rng: random.Random, n: int) -> str:
    n = min(n, 65000)
    if rng.random() < 0.35:
        return f"1-{n}"                       # the usual low-port sweep
    start = rng.randint(1, 65535 - n)
    return f"{start}-{start + n - 1}"


def nmap_ports(flag: str, top: bool = False, udp: bool = False):
    """nmap against the victim's ports: a range (or --top-ports), rate-capped from the seed."""
    def plan(rng: random.Random, n: int, t: Target):
        n = min(n, 4000 if top else 65000)
        template = rng.choice(["-T2", "-T3", "-T4", "-T4", "-T5"] if not udp else ["-T4", "-T5"])
        rate = rng.choice([300, 500, 800, 1200, 2000, 3000])
        retries = rng.choice([0, 1, 1, 2])
        dlen = rng.choice([0, 0, 0, 16, 40])
        # A floor on the rate too: on a busy 2-core lab nmap can mistake late replies for
        # drops and back off to 10 probes/s, which makes run time unpredictable.
        floor = max(50, rate // rng.choice([2, 3, 4]))
        ports = ["--top-ports", str(n)] if top else ["-p", _ports(rng, n)]
        argv = ["nmap", flag, "-Pn", "-n", "--disable-arp-ping", *ports, template,
                "--max-rate", str(rate), "--min-rate", str(floor), "--max-retries", str(retries),
                "--host-timeout", f"{int(n / floor * (retries + 1)) + 30}s"]
        if dlen:
            argv += ["--data-length", str(dlen)]
        if rng.random() < 0.3:
            argv += ["-g", str(rng.choice([53, 80, 123, rng.randint(1024, 65000)]))]
        return run(argv + [t.victim], n / floor * (retries + 1) + 40, n * (retries + 1) + 100, n,
                   {"ports": ports[1], "template": template, "max_rate": rate, "min_rate": floor,
                    "max_retries": retries, "data_length": dlen})
    return plan


def masscan_ports(udp: bool = False):
    """masscan against the victim: it frames its own packets, addressed to the victim's MAC."""
    def plan(rng: random.Random, n: int, t: Target):
        n = min(n, 60000)
        ports = _ports(rng, n)
        rate = rng.choice([500, 1000, 2000, 4000])
        retries = rng.choice([0, 0, 1])
        argv = ["masscan", t.victim, "-p", f"U:{ports}" if udp else ports, "--rate", str(rate),
                "--retries", str(retries), "--router-mac", t.victim_mac, "--adapter", "eth0",
                "--adapter-ip", t.attacker, "--wait", "2"]
        if rng.random() < 0.4:
            argv += ["--adapter-port", str(rng.randint(40000, 60000))]
        secs = n * (retries + 1) / rate
        return run(argv, secs * 2 + 20, n * (retries + 1) * 2 + 100, n,
                   {"ports": ports, "udp": udp, "rate": rate, "retries": retries})
    return plan


def hping3_scan(flags: list[str]):
    """hping3's scan mode (-8) over a port range (it paces itself; the range is the bound)."""
    def plan(rng: random.Random, n: int, t: Target):
        n = min(n, 20000)
        ports = _ports(rng, n)
        argv = ["hping3", *flags, "-n", "--scan", ports, "-w", str(rng.choice([512, 1024, 65535]))]
        if rng.random() < 0.5:
            argv += ["-s", str(rng.randint(1024, 60000))]
        return run(argv + [t.victim], n / 200 + 25, n * 3 + 100, n,
                   {"ports": ports, "flags": "".join(flags)})
    return plan


SYN_SCAN = Scenario("syn_scan", "TCP SYN (and connect) port scan of the victim", (
    Variant("nmap_sS", "train", "nmap -sS -p RANGE", "SYN scan over a seeded port range",
            nmap_ports("-sS"), ("nmap",)),
    Variant("nmap_sS_top", "train", "nmap -sS --top-ports N", "SYN scan of the most common ports",
            nmap_ports("-sS", top=True), ("nmap",)),
    Variant("masscan", "heldout", "masscan -p RANGE --rate R", "masscan's own stack, fixed source port",
            masscan_ports(), ("masscan",)),
    Variant("hping3_scan", "heldout", "hping3 -S --scan RANGE", "hping3 scan mode",
            hping3_scan(["-S"]), ("hping3",)),
    Variant("nmap_sT", "heldout", "nmap -sT", "connect scan: full handshakes to open ports",
            nmap_ports("-sT"), ("nmap",)),
))

FIN_SCAN = Scenario("fin_scan", "TCP FIN / NULL / Xmas port scan of the victim", (
    Variant("nmap_sF", "train", "nmap -sF", "FIN scan over a seeded port range",
            nmap_ports("-sF"), ("nmap",)),
    Variant("nmap_sN", "heldout", "nmap -sN", "NULL scan (no flags)", nmap_ports("-sN"), ("nmap",)),
    Variant("nmap_sX", "heldout", "nmap -sX", "Xmas scan (FIN, PSH, URG)", nmap_ports("-sX"), ("nmap",)),
    Variant("hping3_fin", "heldout", "hping3 -F --scan RANGE", "hping3 scan mode with FIN",
            hping3_scan(["-F"]), ("hping3",)),
))

UDP_SCAN = Scenario("udp_scan", "UDP port scan of the victim (closed ports answer ICMP, rate-limited)", (
    Variant("nmap_sU", "train", "nmap -sU -p RANGE", "UDP scan over a seeded port range",
            nmap_ports("-sU", udp=True), ("nmap",)),
    Variant("nmap_sU_top", "heldout", "nmap -sU --top-ports N", "UDP scan of common ports "
            "(service payloads)", nmap_ports("-sU", top=True, udp=True), ("nmap",)),
    Variant("masscan_udp", "heldout", "masscan -pU:RANGE", "masscan UDP probes",
            masscan_ports(udp=True), ("masscan",)),
))

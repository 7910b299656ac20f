"""Host discovery sweeps over many lab addresses: the LAN (live hosts answer) and darknet.

Kernel-sent probes (nmap, fping) reach dark addresses through the attacker's permanent
neighbour entries and its route to the darknet via a dead gateway (see topology), so
they cross the bridge like probes on a real LAN. zmap and masscan frame their own
packets, all to one next-hop MAC: they get the dead gateway's, so nobody answers them.
"""
from __future__ import annotations

import random

from trafficlab.attacks.base import Scenario, Target, Variant, run, sweep_range
from trafficlab.topology import DARK_MAC

TCP_PING_PORTS = ("22", "80", "443", "21,22,80", "80,443,8080", "445,3389", "25,110,143")


def nmap_sweep(kind: str):
    def plan(rng: random.Random, n: int, t: Target):
        blocks, count = sweep_range(rng, n)
        if kind == "icmp":
            probes = rng.choice([["-PE"], ["-PE", "-PP"], ["-PE", "-PM"]])
        else:
            probes = rng.choice([[f"-PS{rng.choice(TCP_PING_PORTS)}"], [f"-PA{rng.choice(TCP_PING_PORTS)}"],
                                 [f"-PS{rng.choice(TCP_PING_PORTS)}", "-PA80"]])
        rate = rng.choice([200, 400, 800, 1500])
        retries = rng.choice([0, 1])
        argv = ["nmap", "-sn", "-n", "--disable-arp-ping", *probes, rng.choice(["-T3", "-T4", "-T5"]),
                "--min-rate", str(rate // 2), "--max-rate", str(rate), "--max-retries", str(retries),
                *blocks]
        per = len(probes) + (probes[0].count(",") if kind == "tcp" else 0)
        secs = count * per * (retries + 1) / (rate // 2)
        return run(argv, secs + 40, count * per * (retries + 1) * 2 + 100, count * per,
                   {"blocks": blocks, "addresses": count, "probes": " ".join(probes), "max_rate": rate,
                    "max_retries": retries})
    return plan


def fping_sweep(rng: random.Random, n: int, t: Target):
    blocks, count = sweep_range(rng, n)
    interval = rng.choice([1, 2, 5])
    retries = rng.choice([0, 1])
    argv = ["fping", "-q", "-c", "1", "-r", str(retries), "-i", str(interval),
            "-t", str(rng.choice([200, 500])), "-b", str(rng.choice([12, 56, 56, 120]))]
    argv += [a for b in blocks for a in ("-g", b)]
    return run(argv, count * (retries + 1) * interval / 1000 * 2 + 30, count * (retries + 1) + 100,
               count, {"blocks": blocks, "addresses": count, "interval_ms": interval, "retries": retries})


def zmap_sweep(rng: random.Random, n: int, t: Target):
    blocks, count = sweep_range(rng, n)
    port = rng.choice([22, 23, 80, 443, 445, 3389, 8080])
    rate = rng.choice([300, 600, 1200, 2500])
    argv = ["zmap", "-p", str(port), "-i", "eth0", "-S", t.attacker, "--gateway-mac", DARK_MAC,
            "-b", "zmap-empty.txt", "-w", "zmap-allow.txt", "-r", str(rate), "-n", str(count),
            "--cooldown-time", "2", "-q", "-o", "/dev/null"]
    return run(argv, count / rate * 2 + 25, count + 100, count,
               {"blocks": blocks, "addresses": count, "port": port, "rate": rate},
               files={"zmap-empty.txt": "", "zmap-allow.txt": "\n".join(blocks) + "\n"})


def masscan_sweep(rng: random.Random, n: int, t: Target):
    blocks, count = sweep_range(rng, n)
    probe = rng.choice(["--ping", "-p80", "-p443", "-p22", "-p445"])
    rate = rng.choice([300, 600, 1200, 2500])
    argv = ["masscan", *blocks, probe, "--rate", str(rate), "--router-mac", DARK_MAC,
            "--adapter", "eth0", "--adapter-ip", t.attacker, "--wait", "2"]
    return run(argv, count / rate * 2 + 25, count + 100, count,
               {"blocks": blocks, "addresses": count, "probe": probe, "rate": rate})


HOST_SWEEP = Scenario("host_sweep", "host discovery over the lab LAN and darknet blocks", (
    Variant("nmap_sn_icmp", "train", "nmap -sn -PE/-PP/-PM", "ICMP echo/timestamp/netmask ping sweep",
            nmap_sweep("icmp"), ("nmap",)),
    Variant("nmap_sn_tcp", "train", "nmap -sn -PS/-PA PORTS", "TCP SYN/ACK ping sweep",
            nmap_sweep("tcp"), ("nmap",)),
    Variant("fping", "heldout", "fping -g CIDR -c 1", "fping ICMP sweep", fping_sweep, ("fping",)),
    Variant("zmap", "heldout", "zmap -p PORT", "one TCP port over many addresses", zmap_sweep, ("zmap",)),
    Variant("masscan_sweep", "heldout", "masscan CIDR --ping|-pPORT", "masscan ping/port sweep",
            masscan_sweep, ("masscan",)),
))

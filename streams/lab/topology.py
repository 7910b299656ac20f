"""The lab's network: private namespaces on one bridge, with no way out.

    el-<pid>-sw    holds bridge br0; each host's veth peer is a port on it
    el-<pid>-vic   the victim segment (nginx, sshd, dnsmasq, iperf3 servers)
    el-<pid>-c1..  benign clients
    el-<pid>-att   the attacker

<pid> is the process that built the lab, so a lab whose owner has died is recognisably
stale and `cleanup_stale()` removes it, while a lab still in use by another run is left
alone. Addresses come from LAB_NET (10.77.0.0/24). No namespace has a default route and
nothing is attached to the host's interfaces, so lab traffic cannot leave the lab. IPv6
and NIC offloads are off: no neighbour-discovery noise, and the capture sees packets as
they would be on a wire, not 64 KB GSO super-packets.

    >>> topo = Topology.plan(rng, n_clients=5)
    >>> topo.build()
    >>> subprocess.run(topo.exec("att", ["curl", f"http://{topo.victim.addr}/"]))
    >>> topo.teardown()        # idempotent; also run from `finally`
"""
from __future__ import annotations

import ipaddress
import os
import random
import re
import shutil
import signal
import time
from dataclasses import dataclass, field

from streams.errors import LabError
from streams.lab.procs import run

LAB_NET = ipaddress.ip_network("10.77.0.0/24")
PREFIX = "el-"
_NS_RE = re.compile(rf"^{PREFIX}(\d+)-([a-z0-9]+)$")


@dataclass(frozen=True)
class Host:
    role: str      # "vic", "att", "c1", ...
    ns: str        # namespace name
    addr: str      # IPv4 address inside LAB_NET


@dataclass
class Topology:
    owner: int
    hosts: dict[str, Host] = field(default_factory=dict)
    built: list[str] = field(default_factory=list)

    @property
    def switch(self) -> str:
        return f"{PREFIX}{self.owner}-sw"

    @property
    def victim(self) -> Host:
        return self.hosts["vic"]

    @property
    def attacker(self) -> Host:
        return self.hosts["att"]

    @property
    def clients(self) -> list[Host]:
        return [h for r, h in self.hosts.items() if r.startswith("c")]

    @classmethod
    def plan(cls, rng: random.Random, n_clients: int = 5, owner: int | None = None) -> "Topology":
        """Pick addresses for the victim, clients and attacker from the seed."""
        if not 1 <= n_clients <= 20:
            raise LabError(f"n_clients={n_clients}: must be 1..20")
        owner = os.getpid() if owner is None else owner
        pool = [str(a) for a in list(LAB_NET.hosts())[1:250]]
        addrs = rng.sample(pool, n_clients + 2)
        roles = ["vic", "att"] + [f"c{i + 1}" for i in range(n_clients)]
        topo = cls(owner=owner)
        for role, addr in zip(roles, addrs):
            topo.hosts[role] = Host(role, f"{PREFIX}{owner}-{role}", addr)
        return topo

    def exec(self, role: str, argv: list[str]) -> list[str]:
        """argv that runs `argv` inside the namespace of host `role`."""
        return ["ip", "netns", "exec", self.hosts[role].ns, *argv]

    def build(self) -> None:
        """Create the namespaces, bridge and veths. On any failure, tear down and raise."""
        try:
            self._add_ns(self.switch)
            sw = ["ip", "-n", self.switch]
            run([*sw, "link", "add", "br0", "type", "bridge", "stp_state", "0"], what="bridge")
            run([*sw, "link", "set", "br0", "up"], what="bridge up")
            for host in self.hosts.values():
                self._add_host(host)
        except BaseException:
            self.teardown()
            raise

    def _add_ns(self, ns: str) -> None:
        run(["ip", "netns", "add", ns], what=f"netns {ns}")
        self.built.append(ns)
        run(["ip", "-n", ns, "link", "set", "lo", "up"], what=f"{ns} lo")
        _sysctl(ns, "net.ipv6.conf.all.disable_ipv6=1", "net.ipv6.conf.default.disable_ipv6=1")

    def _add_host(self, host: Host) -> None:
        self._add_ns(host.ns)
        port = f"p-{host.role}"
        run(["ip", "-n", self.switch, "link", "add", port, "type", "veth",
             "peer", "name", "eth0", "netns", host.ns], what=f"veth {host.role}")
        run(["ip", "-n", self.switch, "link", "set", port, "master", "br0", "up"], what="port")
        run(["ip", "-n", host.ns, "addr", "add", f"{host.addr}/{LAB_NET.prefixlen}",
             "dev", "eth0"], what=f"addr {host.role}")
        run(["ip", "-n", host.ns, "link", "set", "eth0", "up"], what=f"up {host.role}")
        _sysctl(host.ns, "net.ipv6.conf.eth0.disable_ipv6=1")
        _no_offload(host.ns, "eth0")
        _no_offload(self.switch, port)

    def teardown(self) -> None:
        """Remove every namespace of this lab, killing anything left inside. Idempotent."""
        names = set(self.built) | {h.ns for h in self.hosts.values()} | {self.switch}
        existing = set(list_namespaces())
        for ns in sorted(names & existing):
            remove_namespace(ns)
        self.built.clear()


def _sysctl(ns: str, *settings: str) -> None:
    run(["ip", "netns", "exec", ns, "sysctl", "-q", "-w", *settings], what=f"sysctl in {ns}")


def _no_offload(ns: str, dev: str) -> None:
    if shutil.which("ethtool") is None:
        raise LabError("ethtool not found (run scripts/setup-lab.sh)")
    # Not every veth feature can be toggled; ethtool exits 0 for those it can.
    run(["ip", "netns", "exec", ns, "ethtool", "-K", dev, "tso", "off", "gso", "off",
         "gro", "off", "tx", "off", "rx", "off"], check=False, what=f"ethtool {dev}")


def list_namespaces() -> list[str]:
    cp = run(["ip", "netns", "list"], check=False, what="ip netns list")
    return [line.split()[0] for line in cp.stdout.splitlines() if line.strip()]


def remove_namespace(ns: str) -> None:
    """Kill the processes inside `ns` (all of them were started by a lab), then delete it."""
    if not _NS_RE.match(ns):
        raise LabError(f"refusing to remove {ns!r}: not a lab namespace ({PREFIX}<pid>-<role>)")
    for sig in (signal.SIGTERM, signal.SIGKILL):
        pids = _ns_pids(ns)
        for pid in pids:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        if pids and sig == signal.SIGTERM:
            _wait_empty(ns, 2.0)
    run(["ip", "netns", "del", ns], check=False, what=f"netns del {ns}")


def _ns_pids(ns: str) -> list[int]:
    cp = run(["ip", "netns", "pids", ns], check=False, what=f"netns pids {ns}")
    return [int(p) for p in cp.stdout.split() if p.isdigit() and int(p) != os.getpid()]


def _wait_empty(ns: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while _ns_pids(ns) and time.monotonic() < deadline:
        time.sleep(0.1)


def _owner_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def cleanup_stale(force: bool = False) -> list[str]:
    """Remove lab namespaces whose owning process is gone (or all of them with force).

    A crashed or SIGKILLed run leaves its namespaces behind; the next run calls this first.
    Returns the namespaces removed.
    """
    removed = []
    for ns in list_namespaces():
        m = _NS_RE.match(ns)
        if not m:
            continue
        owner = int(m.group(1))
        if force or (owner != os.getpid() and not _owner_alive(owner)):
            remove_namespace(ns)
            removed.append(ns)
    return removed


def can_create_namespaces() -> tuple[bool, str]:
    """Whether this process can build a lab: (ok, why not)."""
    if os.geteuid() != 0:
        return False, "network namespaces need root (euid is not 0)"
    if shutil.which("ip") is None:
        return False, "the `ip` command (iproute2) is not installed"
    ns = f"{PREFIX}{os.getpid()}-probe"
    cp = run(["ip", "netns", "add", ns], check=False, what="probe")
    if cp.returncode != 0:
        return False, f"`ip netns add` failed: {cp.stderr.strip()[:200]}"
    try:
        cp = run(["ip", "-n", ns, "link", "add", "v0", "type", "veth", "peer", "name", "v1"],
                 check=False, what="probe veth")
        if cp.returncode != 0:
            return False, f"veth pairs cannot be created: {cp.stderr.strip()[:200]}"
        cp = run(["ip", "-n", ns, "link", "add", "b0", "type", "bridge"], check=False)
        if cp.returncode != 0:
            return False, f"bridges cannot be created: {cp.stderr.strip()[:200]}"
    finally:
        remove_namespace(ns)
    return True, ""

"""The lab's network: private namespaces on one bridge, with no way out.

    el-<pid>-sw    holds bridge br0 (the capture point); each host's link ends here
    el-<pid>-vic   the victim (nginx, sshd, dnsmasq with DHCP, iperf3, vsftpd, smbd, ...)
    el-<pid>-r1..  servers: DNS, NTP, SNMP, memcached (the reflectors of `reflection`)
    el-<pid>-c1..  benign clients
    el-<pid>-att   the attacker (and att2, att3 ... with --attackers)

<pid> is the process that built the lab, so a lab whose owner has died is recognisably
stale and `cleanup_stale()` removes it, while a lab still in use by another run is left
alone. Addresses: hosts in LAB_NET (10.77.0.0/24, drawn from HOST_POOL), a DHCP pool that
nobody configures, and DARKNET (10.77.16.0/20), which nobody owns. No namespace has a
default route and nothing is attached to the host's interfaces, so lab traffic cannot
leave the lab; every address any run targets lies in LAB_SPACE (10.77.0.0/16).

Sweeps must put packets for unowned addresses on the wire, as on a real LAN. So each
attacker has permanent neighbour entries that point every unowned LAN_NET address at
DARK_MAC (a MAC nobody has: the bridge floods those frames, nobody accepts them) and a
route to DARKNET via DEAD_GATEWAY, itself one of those dark addresses.

Hosts run IPv6 link-local only (ND, MLD and router solicitations happen, as on any LAN);
the switch namespace has no IP at all. NIC offloads are off, so the capture sees packets
as they would be on a wire, not 64 KB GSO super-packets. With `emulate` links, a host's
veth ends in the switch as p-<role> and a second pair q-<role>/b-<role> joins the bridge;
`trafficlab.linkemu` shapes the traffic between p and q.

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

from contracts.errors import LabError
from trafficlab.procs import run

LAB_NET = ipaddress.ip_network("10.77.0.0/24")
LAB_SPACE = ipaddress.ip_network("10.77.0.0/16")
# Kept clear of 10.77.128.0/17, where inference.datasets.lab re-addresses attack runs.
DARKNET = ipaddress.ip_network("10.77.16.0/20")
HOST_POOL = [str(LAB_NET.network_address + i) for i in range(2, 200)]
DHCP_POOL = (str(LAB_NET.network_address + 200), str(LAB_NET.network_address + 239))
DEAD_GATEWAY = str(LAB_NET.network_address + 254)
DARK_MAC = "02:00:5e:77:de:ad"
# Where LAN housekeeping goes that is not one host: mDNS, SSDP, IGMPv3 reports, DHCP.
LAN_GROUPS = ("224.0.0.251", "239.255.255.250", "224.0.0.22", "224.0.0.1", "255.255.255.255",
              str(LAB_NET.broadcast_address), "0.0.0.0")
PREFIX = "el-"
_NS_RE = re.compile(rf"^{PREFIX}(\d+)-([a-z0-9]+)$")


@dataclass(frozen=True)
class Host:
    role: str      # "vic", "att", "att2", "r1", "c1", ...
    ns: str        # namespace name
    addr: str      # IPv4 address inside LAB_NET
    mac: str = ""  # eth0's MAC (drawn from the seed, so IPv6 link-local addresses are too)

    @property
    def kind(self) -> str:
        return {"v": "victim", "a": "attacker", "r": "server", "c": "client"}[self.role[0]]


@dataclass
class Topology:
    owner: int
    hosts: dict[str, Host] = field(default_factory=dict)
    built: list[str] = field(default_factory=list)
    emulated: set[str] = field(default_factory=set)   # roles whose link goes through linkemu
    mtu: int = 1500

    @property
    def switch(self) -> str:
        return f"{PREFIX}{self.owner}-sw"

    @property
    def victim(self) -> Host:
        return self.hosts["vic"]

    @property
    def attacker(self) -> Host:
        return self.hosts["att"]

    def _kind(self, kind: str) -> list[Host]:
        return [h for h in self.hosts.values() if h.kind == kind]

    @property
    def attackers(self) -> list[Host]:
        return self._kind("attacker")

    @property
    def servers(self) -> list[Host]:
        return self._kind("server")

    @property
    def clients(self) -> list[Host]:
        return self._kind("client")

    @property
    def addresses(self) -> list[str]:
        return [h.addr for h in self.hosts.values()]

    def unowned(self) -> list[str]:
        """Every LAB_NET host address no lab host has (what a sweep finds dark)."""
        owned = set(self.addresses)
        return [str(a) for a in LAB_NET.hosts() if str(a) not in owned]

    @classmethod
    def plan(cls, rng: random.Random, n_clients: int = 5, owner: int | None = None,
             n_servers: int = 2, n_attackers: int = 1) -> "Topology":
        """Pick addresses and MACs for every host from the seed."""
        if not 1 <= n_clients <= 20:
            raise LabError(f"n_clients={n_clients}: must be 1..20")
        if not 0 <= n_servers <= 4 or not 1 <= n_attackers <= 4:
            raise LabError(f"n_servers={n_servers}, n_attackers={n_attackers}: must be 0..4, 1..4")
        owner = os.getpid() if owner is None else owner
        roles = (["vic", "att"] + [f"c{i + 1}" for i in range(n_clients)]
                 + [f"r{i + 1}" for i in range(n_servers)]
                 + [f"att{i + 2}" for i in range(n_attackers - 1)])
        addrs = rng.sample(HOST_POOL, len(roles))
        topo = cls(owner=owner)
        for role, addr in zip(roles, addrs):
            mac = "02:77:" + ":".join(f"{rng.getrandbits(8):02x}" for _ in range(4))
            topo.hosts[role] = Host(role, f"{PREFIX}{owner}-{role}", addr, mac)
        return topo

    def exec(self, role: str, argv: list[str]) -> list[str]:
        """argv that runs `argv` inside the namespace of host `role` (or "sw": the switch)."""
        ns = self.switch if role == "sw" else self.hosts[role].ns
        return ["ip", "netns", "exec", ns, *argv]

    def build(self, emulate: set[str] | None = None, mtu: int = 1500) -> None:
        """Create the namespaces, bridge and links. On any failure, tear down and raise."""
        self.emulated, self.mtu = set(emulate or ()), mtu
        try:
            self._add_ns(self.switch)
            sw = ["ip", "-n", self.switch]
            run([*sw, "link", "add", "br0", "type", "bridge", "stp_state", "0"], what="bridge")
            run([*sw, "link", "set", "br0", "up"], what="bridge up")
            for host in self.hosts.values():
                self._add_host(host)
            for host in self.attackers:
                self._darken(host)
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
        port, sw = f"p-{host.role}", ["ip", "-n", self.switch]
        run([*sw, "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", host.ns],
            what=f"veth {host.role}")
        h = ["ip", "-n", host.ns]
        if host.mac:
            run([*h, "link", "set", "eth0", "address", host.mac], what=f"mac {host.role}")
        run([*h, "link", "set", "eth0", "mtu", str(self.mtu)], what=f"mtu {host.role}")
        run([*sw, "link", "set", port, "mtu", str(self.mtu)], what="port mtu")
        if host.role in self.emulated:
            q, b = f"q-{host.role}", f"b-{host.role}"
            run([*sw, "link", "add", q, "type", "veth", "peer", "name", b], what=f"veth {q}")
            for dev in (q, b):
                run([*sw, "link", "set", dev, "mtu", str(self.mtu)], what=f"{dev} mtu")
            run([*sw, "link", "set", b, "master", "br0", "up"], what=f"{b} port")
            run([*sw, "link", "set", q, "up"], what=f"{q} up")
            run([*sw, "link", "set", port, "up"], what=f"{port} up")
            for dev in (q, b):
                _no_offload(self.switch, dev)
        else:
            run([*sw, "link", "set", port, "master", "br0", "up"], what="port")
        # IPv6 link-local on the host's link only: ND, MLD, RS happen as on a real LAN.
        _sysctl(host.ns, "net.ipv6.conf.eth0.disable_ipv6=0")
        run([*h, "addr", "add", f"{host.addr}/{LAB_NET.prefixlen}", "dev", "eth0"],
            what=f"addr {host.role}")
        run([*h, "link", "set", "eth0", "up"], what=f"up {host.role}")
        # Multicast (mDNS, SSDP) needs a route; it stays on the link like everything else.
        run([*h, "route", "add", "224.0.0.0/4", "dev", "eth0"], what=f"mcast route {host.role}")
        _no_offload(host.ns, "eth0")
        _no_offload(self.switch, port)

    def _darken(self, host: Host) -> None:
        """Neighbour entries and a route that put packets for dark addresses on the wire."""
        lines = [f"neigh replace {a} lladdr {DARK_MAC} dev eth0 nud permanent"
                 for a in self.unowned()]
        lines.append(f"route add {DARKNET} via {DEAD_GATEWAY} dev eth0 onlink")
        batch = "\n".join(lines) + "\n"
        path = f"/tmp/{host.ns}.neigh"
        with open(path, "w") as f:
            f.write(batch)
        try:
            run(["ip", "-n", host.ns, "-batch", path], what=f"dark neighbours {host.role}")
        finally:
            os.unlink(path)

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

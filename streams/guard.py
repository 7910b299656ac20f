"""The guard: what no policy may do, checked at approval, at the enforcer and at the detector.

A policy is refused when

- a block, rate limit or isolation touches a protected network (never overridable);
- a suppression names a protected network: muting alerts about the brokers, the gateway
  or the scraper hides an attack on the monitoring itself (never overridable);
- it is broad: a block or rate limit wider than /16 (IPv4) or /48 (IPv6), a suppression
  of every class (no `attack`), of every address (no `key`) or wider than /24 or /64, a
  class threshold above 0.99 (the class is muted) or thresholds on every attack class.
  Broad actions pass only with an operator's reason given at approval
  (`edgeloop policy approve --broad "why"`), which the activation carries.

Protected by default (`Guard.build`): loopback, every broker of the bootstrap list and of
the cluster metadata, the management and own addresses of the node, the allow-list, and
what `discover_infrastructure` finds on the host: default gateways, the resolvers of
/etc/resolv.conf, the NTP servers of chrony, timesyncd and ntpd; plus the scraper and
core addresses from the settings (EDGELOOP_SCRAPER_ADDRS, EDGELOOP_CORE_ADDRS).

    >>> g = Guard.build(bootstrap="10.0.0.5:9092", mgmt_addrs=["10.0.0.2"])
    >>> g.problems(Policy(block_sources=["128.0.0.0/1"]))
    ['block 128.0.0.0/1 is wider than /16 (2147483648 addresses): broad actions need an operator reason']
"""
from __future__ import annotations

import ipaddress
import json
import logging
import re
import socket
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

from contracts.policy_model import Policy
from streams.kafka_security import kafka_python_options
from streams.nftables import AddressError, EnforceError, IPNetwork, parse_address, parse_network

log = logging.getLogger("edgeloop.guard")

ALWAYS_PROTECTED = {"127.0.0.0/8": "loopback", "::1/128": "loopback"}
# The widest prefix each kind of action may name without an operator's reason: (IPv4, IPv6).
MAX_BLOCK_PREFIX = (16, 48)
MAX_SUPPRESS_PREFIX = (24, 64)
MAX_THRESHOLD = 0.99
NTP_CONFIGS = ("/etc/chrony/chrony.conf", "/etc/chrony.conf", "/etc/systemd/timesyncd.conf", "/etc/ntp.conf",
               "/etc/ntpsec/ntp.conf")


class PolicyRefused(EnforceError):
    """The guard refused a policy; `problems` lists every reason."""

    def __init__(self, policy_id: str, problems: list[str]) -> None:
        self.policy_id, self.problems = policy_id, problems
        super().__init__(f"policy {policy_id} refused: " + "; ".join(problems))


def broker_hosts(bootstrap: str) -> list[str]:
    """The host part of each `host:port` in a bootstrap list ("[v6]:port" too)."""
    hosts = []
    for item in (x.strip() for x in bootstrap.split(",")):
        if not item:
            continue
        if item.startswith("[") and "]" in item:
            hosts.append(item[1:item.index("]")])
        else:  # host:port, or a bare host / bare IPv6 address
            hosts.append(item.rsplit(":", 1)[0] if item.count(":") == 1 else item)
    return hosts


def _resolve(host: str, what: str = "broker host") -> list[str]:
    try:
        return [str(parse_address(host))]
    except AddressError:
        pass
    try:
        infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise EnforceError(f"cannot resolve {what} {host!r} ({exc}); the guard must know its "
                           "addresses: give them with --protect") from exc
    addrs = {ipaddress.ip_address(i[4][0].split("%")[0]) for i in infos}
    return sorted(str(getattr(a, "ipv4_mapped", None) or a) for a in addrs)


def _ip(argv: list[str], netns: str | None) -> list[dict]:
    argv = ["ip", "netns", "exec", netns, *argv] if netns else argv
    try:
        cp = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=True)
    except (OSError, subprocess.SubprocessError) as exc:
        raise EnforceError(f"cannot read the node's network ({' '.join(argv)}): {exc}") from exc
    return json.loads(cp.stdout or "[]")


def local_addresses(netns: str | None = None) -> list[str]:
    """Every address configured on the node (or inside `netns`), from `ip -j addr`."""
    out = []
    for link in _ip(["ip", "-j", "addr", "show"], netns):
        for a in link.get("addr_info", []):
            if a.get("local"):
                out.append(str(ipaddress.ip_address(a["local"].split("%")[0])))
    return sorted(set(out))


def gateways(netns: str | None = None) -> list[str]:
    """The default routes' gateways, IPv4 and IPv6."""
    out = []
    for fam in ("-4", "-6"):
        try:
            routes = _ip(["ip", "-j", fam, "route", "show", "default"], netns)
        except EnforceError as exc:
            log.warning("%s", exc)
            continue
        out += [r["gateway"].split("%")[0] for r in routes if r.get("gateway")]
    return sorted(set(out))


def resolvers(path: Path = Path("/etc/resolv.conf")) -> list[str]:
    """The nameserver addresses of resolv.conf."""
    out = []
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return []
    for line in lines:
        parts = line.split()
        if len(parts) >= 2 and parts[0] == "nameserver":
            try:
                out.append(str(parse_address(parts[1].split("%")[0])))
            except AddressError:
                continue
    return out


def ntp_servers(paths: Iterable[str] = NTP_CONFIGS) -> list[str]:
    """NTP servers named in chrony, timesyncd or ntpd configuration (names are resolved)."""
    out = []
    for p in map(Path, paths):
        try:
            text = p.read_text(errors="replace")
        except OSError:
            continue
        names = re.findall(r"^\s*(?:server|pool|peer)\s+(\S+)", text, re.M)
        names += [n for m in re.findall(r"^\s*(?:NTP|FallbackNTP)\s*=\s*(.*)$", text, re.M) for n in m.split()]
        for name in names:
            try:
                out += _resolve(name, "NTP server")
            except EnforceError as exc:  # an unresolvable pool is not protected: say so, go on
                log.warning("%s", exc)
    return sorted(set(out))


def cluster_brokers(bootstrap: str, timeout_s: float = 5.0) -> list[str]:
    """The hosts of every broker in the cluster metadata (more than the bootstrap list names)."""
    if not bootstrap:
        return []
    from kafka import KafkaAdminClient
    from kafka.errors import KafkaError

    try:
        admin = KafkaAdminClient(bootstrap_servers=bootstrap, **kafka_python_options(),
                                 request_timeout_ms=int(timeout_s * 1000),
                                 client_id="edgeloop-guard")
    except (KafkaError, OSError, ValueError) as exc:
        raise EnforceError(f"cannot read the cluster metadata from {bootstrap}: {exc}") from exc
    try:
        return sorted({b["host"] for b in admin.describe_cluster().get("brokers", [])})
    except (KafkaError, OSError) as exc:
        raise EnforceError(f"cannot read the cluster metadata from {bootstrap}: {exc}") from exc
    finally:
        admin.close()


def discover_infrastructure(netns: str | None = None) -> dict[str, str]:
    """What the host itself depends on: gateways, resolvers, NTP servers -> why protected."""
    found: dict[str, str] = {}
    for a in gateways(netns):
        found.setdefault(a, "default gateway")
    for a in resolvers():
        found.setdefault(a, "DNS resolver")
    for a in ntp_servers():
        found.setdefault(a, "NTP server")
    return found


def _too_wide(net: IPNetwork, limits: tuple[int, int]) -> int | None:
    """The prefix limit `net` exceeds, or None."""
    limit = limits[0] if net.version == 4 else limits[1]
    return limit if net.prefixlen < limit else None


@dataclass
class Guard:
    """Protected networks and why each is protected; `check` refuses policies the guard forbids."""

    protected: dict[IPNetwork, str] = field(default_factory=dict)
    attack_classes: tuple[str, ...] = ()  # the model's attack classes: thresholds on all of them mute it

    @classmethod
    def build(cls, *, bootstrap: str = "", mgmt_addrs: Iterable[str] = (), allow_list: Iterable[str] = (),
              local_addrs: Iterable[str] = (), infrastructure: dict[str, str] | None = None,
              scrapers: Iterable[str] = (), core: Iterable[str] = (), metadata: bool = False,
              attack_classes: Iterable[str] = ()) -> "Guard":
        """`metadata=True` also asks the cluster for every broker (needs the broker up)."""
        g = cls(attack_classes=tuple(attack_classes))
        for text, why in ALWAYS_PROTECTED.items():
            g.add(text, why)
        hosts = broker_hosts(bootstrap)
        if metadata:  # best effort: the bootstrap brokers are protected whatever the cluster says
            try:
                hosts += [h for h in cluster_brokers(bootstrap) if h not in hosts]
            except EnforceError as exc:
                log.warning("guard: %s; protecting the bootstrap brokers only", exc)
        for host in hosts:
            for addr in _resolve(host):
                g.add(addr, f"broker {host}")
        for a in mgmt_addrs:
            g.add(str(parse_address(a)), "management address")
        for c in allow_list:
            g.add(c, "allow-list")
        for a in local_addrs:
            g.add(a, "an address of this node")
        for a, why in (infrastructure or {}).items():
            g.add(a, why)
        for host in scrapers:
            for addr in _resolve(host, "scraper"):
                g.add(addr, f"metrics scraper {host}")
        for host in core:
            for addr in _resolve(host, "core host"):
                g.add(addr, f"core host {host}")
        return g

    def add(self, text: str, why: str) -> None:
        self.protected.setdefault(parse_network(text), why)

    def _touches(self, net: IPNetwork) -> list[tuple[IPNetwork, str]]:
        return [(p, why) for p, why in self.protected.items() if net.version == p.version and net.overlaps(p)]

    def problems(self, policy: Policy, *, broad_reason: str = "") -> list[str]:
        """Every reason to refuse `policy`; broad actions pass when `broad_reason` is given."""
        out, broad = [], []
        network = [("block", s) for s in policy.block_sources]
        network += [("rate-limit", s) for r in policy.rate_limit_sources for s in r.sources]
        network += [("isolate", h) for h in policy.isolate_hosts]
        for action, text in network:
            net = parse_network(text)
            out += [f"{action} {text} would touch {p} ({why})" for p, why in self._touches(net)]
            limit = _too_wide(net, MAX_BLOCK_PREFIX)
            if limit is not None:
                broad.append(f"{action} {text} is wider than /{limit} ({net.num_addresses} addresses)")
        for m in policy.suppress_alerts:
            what = f"suppress {m.attack or 'every class'} for {m.key or 'every address'}"
            if m.key is not None:
                net = parse_network(m.key)
                out += [f"{what} would mute alerts about {p} ({why})" for p, why in self._touches(net)]
                limit = _too_wide(net, MAX_SUPPRESS_PREFIX)
                if limit is not None:
                    broad.append(f"{what} is wider than /{limit}")
            else:
                broad.append(f"{what}: a suppression must name the addresses it covers")
            if m.attack is None:
                broad.append(f"{what}: a suppression of every class hides any attack")
        muted = [t.attack for t in policy.class_thresholds if t.min_confidence > MAX_THRESHOLD]
        broad += [f"threshold {c} above {MAX_THRESHOLD} mutes the class" for c in muted]
        raised = {t.attack for t in policy.class_thresholds}
        if self.attack_classes and set(self.attack_classes) <= raised:
            broad.append("thresholds on every attack class at once")
        if broad and not broad_reason.strip():
            out += [f"{b}: broad actions need an operator reason" for b in broad]
        return out

    def check(self, policy_id: str, policy: Policy, *, broad_reason: str = "") -> None:
        problems = self.problems(policy, broad_reason=broad_reason)
        if problems:
            raise PolicyRefused(policy_id, problems)

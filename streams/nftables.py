"""nftables for the enforcer: one table of our own, rendered from the active policies.

The enforcer owns exactly one table (default `inet edgeloop`) and never reads or writes
any other. The table is always rendered whole from the set of active policies and
replaced in one `nft -f` transaction (`add table; delete table; table {...}`), so a
ruleset is either entirely in force or not at all, and taking a policy out (revocation,
expiry) is rendering the table without it. With no policy left the table is deleted.

    >>> text = render_ruleset([NftEntry("a1b2", policy, expires_ms)], now_ms=now, table="edgeloop")
    >>> nft = Nft(netns="el-123-vic")              # or Nft() for the host's own namespace
    >>> nft.check(text)                            # `nft -c -f`: NftError on anything wrong
    >>> nft.apply(text)
    >>> nft.delete_table("edgeloop")

Layout, per policy (a chain and sets named `p<10 hex of sha256(policy_id)>`):
- allow-listed services `return` first, both directions, so they are exempt from this
  policy's actions only (a later policy's chain still sees them);
- block: packets from the blocked sources are dropped unless they answer a connection
  this side opened (`ct direction reply`), so the sources' own flows stop, new or old;
- rate-limit: the sources of one entry share `limit rate over N/second` (per minute
  below 1 packet/s), excess packets dropped;
- isolate: everything from or to the hosts is dropped.
Every address lives in a set with `flags interval,timeout` and an element timeout equal
to the policy's remaining lifetime, so the kernel lifts a block at expiry even when the
enforcer is no longer running. Base chains hook input, forward and output at priority
-10 with policy accept: the table only ever drops.

Nothing from a policy reaches the ruleset as text. Every address is parsed with
`ipaddress` (strictly: no host bits, no hostnames, no zone ids, no IPv4-mapped IPv6)
and rendered from the parsed value; numbers are rendered from numbers; policy ids
become hashes. IPv4 and IPv6 go to separate sets.
"""
from __future__ import annotations

import hashlib
import ipaddress
import json
import math
import subprocess
import tempfile
from dataclasses import dataclass
from typing import Iterable, NamedTuple, Sequence

from contracts.errors import EdgeloopError
from contracts.policy_model import Policy

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
DEFAULT_TABLE = "edgeloop"
PRIORITY = -10
_ADDR_CHARS = frozenset("0123456789abcdefABCDEF.:/")
_TABLE_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789_")


class EnforceError(EdgeloopError):
    """Enforcement failed or was refused. The tree:

        EnforceError
         ├── AddressError     a policy address is not a strict IP address or CIDR
         ├── NftError         nft refused a ruleset (check or apply); `stderr` says why
         └── PolicyRefused    the guard refused a policy (streams.enforce)
    """


class AddressError(EnforceError, ValueError):
    def __init__(self, value: object, reason: str) -> None:
        self.value, self.reason = value, reason
        super().__init__(f"{value!r}: {reason}")


class NftError(EnforceError):
    def __init__(self, what: str, stderr: str, returncode: int | None = None) -> None:
        self.what, self.stderr, self.returncode = what, stderr, returncode
        super().__init__(f"nft {what} failed ({returncode}): {stderr.strip()[-800:]}")


def parse_network(text: object) -> IPNetwork:
    """A strictly parsed address or CIDR; AddressError for anything else.

    Accepted: "10.0.0.1", "10.0.0.0/24", "2001:db8::/32". Refused: hostnames, whitespace,
    host bits set ("10.0.0.1/24"), zone ids, IPv4-mapped IPv6, and any other character.
    """
    if not isinstance(text, str) or not text or len(text) > 64:
        raise AddressError(text, "not an IP address or CIDR")
    if not set(text) <= _ADDR_CHARS:
        raise AddressError(text, "characters other than hex digits, '.', ':' and '/'")
    try:
        net = ipaddress.ip_network(text, strict=True)
    except ValueError as exc:
        raise AddressError(text, str(exc)) from None
    if net.version == 6 and (net.network_address.ipv4_mapped is not None
                             or (net.prefixlen >= 96 and net.network_address.sixtofour is not None)):
        raise AddressError(text, "IPv4-mapped/6to4 IPv6 address: use the IPv4 form")
    return net


def parse_address(text: object) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    """A strictly parsed single address (a /32 or /128 written without the prefix)."""
    if isinstance(text, str) and "/" in text:
        raise AddressError(text, "a single address, not a CIDR, is needed here")
    net = parse_network(text)
    return net.network_address


def check_table_name(name: str) -> str:
    if not (isinstance(name, str) and 1 <= len(name) <= 32 and set(name) <= _TABLE_CHARS
            and name[0].isalpha()):
        raise EnforceError(f"table name {name!r}: lower-case letters, digits and '_', starting with a letter")
    return name


class NftEntry(NamedTuple):
    """One active policy to render: its id (hashed into names), the policy, when it ends."""

    policy_id: str
    policy: Policy
    expires_ms: int


def policy_tag(policy_id: str) -> str:
    """The chain/set prefix for a policy: never the id itself, which is not ours to trust."""
    return "p" + hashlib.sha256(policy_id.encode()).hexdigest()[:10]


def _split(texts: Iterable[str]) -> tuple[list[IPNetwork], list[IPNetwork]]:
    """Strictly parsed and collapsed (overlaps merged), IPv4 and IPv6 apart."""
    nets = [parse_network(t) for t in texts]
    v4 = list(ipaddress.collapse_addresses(n for n in nets if n.version == 4))
    v6 = list(ipaddress.collapse_addresses(n for n in nets if n.version == 6))
    return v4, v6


def _fmt(net: IPNetwork) -> str:
    full = 32 if net.version == 4 else 128
    return str(net.network_address) if net.prefixlen == full else str(net)


@dataclass
class _Chain:
    tag: str
    timeout_s: int
    sets: list[str]
    rules: list[str]

    def add_set(self, name: str, family: int, nets: Sequence[IPNetwork]) -> str:
        full = f"{self.tag}_{name}{family}"
        kind = "ipv4_addr" if family == 4 else "ipv6_addr"
        lines = [f"\tset {full} {{", f"\t\ttype {kind}", "\t\tflags interval,timeout"]
        if nets:
            elems = ", ".join(f"{_fmt(n)} timeout {self.timeout_s}s" for n in nets)
            lines.append(f"\t\telements = {{ {elems} }}")
        self.sets.append("\n".join(lines + ["\t}"]))
        return full


def _limit(pps: float) -> str:
    if not (math.isfinite(pps) and pps > 0):
        raise EnforceError(f"rate {pps!r} packets/s is not a positive number")
    if pps >= 1:
        return f"{max(1, round(pps))}/second"
    return f"{max(1, math.ceil(pps * 60))}/minute"


def _service_rules(policy: Policy) -> list[str]:
    rules = []
    for svc in policy.allow_services:
        addr = parse_address(svc.ip)
        ip = "ip" if addr.version == 4 else "ip6"
        port = int(svc.port)
        if not 0 <= port <= 65535:
            raise EnforceError(f"service port {port} out of range")
        l4 = {"tcp": "tcp", "udp": "udp", "any": "th"}[svc.proto]
        rules.append(f"{ip} daddr {addr} {l4} dport {port} return")
        rules.append(f"{ip} saddr {addr} {l4} sport {port} return")
    return rules


def _policy_chain(entry: NftEntry, timeout_s: int) -> _Chain:
    p = entry.policy
    ch = _Chain(policy_tag(entry.policy_id), timeout_s, [], _service_rules(p))
    for family, nets in zip((4, 6), _split(p.block_sources)):
        if nets:
            s, ip = ch.add_set("block", family, nets), "ip" if family == 4 else "ip6"
            ch.rules += [f"{ip} saddr @{s} ct direction reply return", f"{ip} saddr @{s} drop"]
    for i, rl in enumerate(p.rate_limit_sources):
        for family, nets in zip((4, 6), _split(rl.sources)):
            if nets:
                s, ip = ch.add_set(f"rate{i}_", family, nets), "ip" if family == 4 else "ip6"
                ch.rules.append(f"{ip} saddr @{s} limit rate over {_limit(rl.packets_per_s)} drop")
    for family, nets in zip((4, 6), _split(p.isolate_hosts)):
        if nets:
            s, ip = ch.add_set("isolate", family, nets), "ip" if family == 4 else "ip6"
            ch.rules += [f"{ip} saddr @{s} drop", f"{ip} daddr @{s} drop"]
    return ch


def network_actions(policy: Policy) -> bool:
    """Whether the policy asks anything of the network (else it is detector-side only)."""
    return bool(policy.block_sources or policy.rate_limit_sources or policy.isolate_hosts)


def render_ruleset(entries: Sequence[NftEntry], *, now_ms: int, table: str = DEFAULT_TABLE) -> str:
    """The whole table for these policies, as one atomic `nft -f` script.

    Policies already expired at `now_ms`, and policies with no network action, are left
    out. With none left the script only deletes the table.
    """
    check_table_name(table)
    chains = []
    for e in sorted(entries, key=lambda e: policy_tag(e.policy_id)):
        remaining = (e.expires_ms - now_ms) / 1000
        if remaining <= 0 or not network_actions(e.policy):
            continue
        chains.append(_policy_chain(e, max(1, math.ceil(remaining))))
    head = [f"# edgeloop enforcer, policies with network actions: {len(chains)}; replaced as a whole",
            f"table inet {table} {{}}", f"delete table inet {table}"]
    if not chains:
        return "\n".join(head) + "\n"
    body = [f"table inet {table} {{"]
    for ch in chains:
        body += ch.sets
    for ch in chains:
        body += [f"\tchain {ch.tag} {{"] + [f"\t\t{r}" for r in ch.rules] + ["\t}"]
    for hook in ("input", "forward", "output"):
        body += [f"\tchain {hook} {{", f"\t\ttype filter hook {hook} priority {PRIORITY}; policy accept;"]
        body += [f"\t\tjump {ch.tag}" for ch in chains] + ["\t}"]
    return "\n".join(head + body + ["}"]) + "\n"


class Nft:
    """Runs `nft` in the host's namespace or, with `netns`, inside a named network namespace."""

    def __init__(self, binary: str = "nft", netns: str | None = None, timeout_s: float = 15.0) -> None:
        self.binary, self.netns, self.timeout_s = binary, netns or None, timeout_s

    def argv(self, *args: str) -> list[str]:
        base = [self.binary, *args]
        return ["ip", "netns", "exec", self.netns, *base] if self.netns else base

    def _run(self, what: str, *args: str, stdin: str | None = None) -> str:
        try:
            cp = subprocess.run(self.argv(*args), input=stdin, capture_output=True, text=True,
                                timeout=self.timeout_s)
        except FileNotFoundError as exc:
            raise NftError(what, f"{exc.filename or self.binary} not found (apt-get install nftables)") from exc
        except subprocess.TimeoutExpired as exc:
            raise NftError(what, f"timed out after {self.timeout_s}s") from exc
        if cp.returncode != 0:
            raise NftError(what, cp.stderr or cp.stdout, cp.returncode)
        return cp.stdout

    def _script(self, what: str, flag: str | None, text: str) -> None:
        with tempfile.NamedTemporaryFile("w", prefix="edgeloop-", suffix=".nft") as fh:
            fh.write(text)
            fh.flush()
            self._run(what, *([flag] if flag else []), "-f", fh.name)

    def check(self, text: str) -> None:
        """`nft -c -f`: the kernel parses and validates the script, nothing is committed."""
        self._script("check", "-c", text)

    def apply(self, text: str) -> None:
        """`nft -f`: one transaction; on error nothing of it is in force."""
        self._script("apply", None, text)

    def delete_table(self, table: str = DEFAULT_TABLE) -> None:
        check_table_name(table)
        self._script("delete", None, f"table inet {table} {{}}\ndelete table inet {table}\n")

    def tables(self) -> list[tuple[str, str]]:
        """(family, name) of every table in the namespace."""
        doc = json.loads(self._run("list", "-j", "list", "tables") or "{}")
        return [(t["table"]["family"], t["table"]["name"]) for t in doc.get("nftables", []) if "table" in t]

    def list_table(self, table: str = DEFAULT_TABLE) -> str:
        """The table as nft prints it, or "" when there is none."""
        check_table_name(table)
        if ("inet", table) not in self.tables():
            return ""
        return self._run("list", "list", "table", "inet", table)

    def version(self) -> str:
        return self._run("version", "--version").strip()

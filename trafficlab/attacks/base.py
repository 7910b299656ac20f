"""What every attack is made of: a `Scenario` (the class, = the label) with `Variant`s
(a tool and its settings), each variant tagged `train` or `heldout`, each producing
bounded `Run`s aimed only at a `Target` inside the lab.

A variant's `plan(rng, n, target)` returns one run meant to cause about `n` flows. Every
run is bounded twice: by construction in packets (`max_packets`: ports scanned, packets
sent, passwords tried) and in wall-clock time (`timeout_s`, enforced with timeout(1) and
again by the runner). `check_run` refuses any run that aims outside LAB_SPACE or is not
bounded; the generator calls it on every run before anything starts.
"""
from __future__ import annotations

import ipaddress
import math
import random
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from contracts.errors import LabError
from trafficlab.topology import DARKNET, LAB_NET, LAB_SPACE

SPLITS = ("train", "heldout")
MAX_TIMEOUT_S = 600
# What a planner may ask for in one run: a tool that stalls (a brute-forcer waiting on a
# lost connection over a slow link) should cost a generation minutes, not ten of them.
RUN_CAP_S = 150
MAX_PACKETS = 500_000
OPEN_TCP = (21, 22, 80, 443, 445, 1883, 5201, 5202, 5203)
_IPV4 = re.compile(r"(?<![\w.])(\d{1,3}(?:\.\d{1,3}){3})(/\d{1,2})?(?![\w.])")


@dataclass(frozen=True)
class Target:
    """Everything a plan may aim at (all inside the lab), and where its files go."""
    victim: str
    attacker: str
    workdir: Path
    victim_mac: str = ""
    hosts: tuple[str, ...] = ()       # every lab host's address
    servers: tuple[str, ...] = ()     # the reflectors (DNS, NTP, SNMP, memcached)
    dark: tuple[str, ...] = ()        # LAB_NET addresses nobody owns
    slowdown: float = 1.0             # link conditions: tools take this much longer
    fragile: bool = False             # attacker or victim link is lossy or slow (< 8 Mbit/s)

    @property
    def live(self) -> tuple[str, ...]:
        return tuple(h for h in self.hosts if h != self.attacker)


@dataclass(frozen=True)
class Run:
    scenario: str
    index: int
    argv: list[str]
    timeout_s: float
    max_packets: int
    expected_flows: int
    params: dict
    files: dict[str, str | bytes] = field(default_factory=dict)  # name -> content, in workdir
    variant: str = ""
    tool: str = ""
    match: str = "attacker"            # how its flows are labelled (trafficlab.labelling)
    peers: tuple[str, ...] = ()        # match="pair": the reflectors


@dataclass(frozen=True)
class Variant:
    name: str
    split: str                          # "train" or "heldout"
    tool: str                           # the command line, in words, for the datasheet
    summary: str
    plan: Callable[[random.Random, int, Target], Run]
    needs: tuple[str, ...] = ()         # executables (trafficlab.tools checks them)

    def __post_init__(self) -> None:
        if self.split not in SPLITS:
            raise LabError(f"variant {self.name}: split {self.split!r} not in {SPLITS}")


@dataclass(frozen=True)
class Scenario:
    name: str
    summary: str
    variants: tuple[Variant, ...]
    runs: tuple[int, int] = (2, 3)

    @property
    def label(self) -> str:
        return self.name

    @property
    def tool(self) -> str:
        return ", ".join(sorted({v.tool.split()[0] for v in self.variants}))

    def variant(self, name: str) -> Variant:
        for v in self.variants:
            if v.name == name:
                return v
        raise LabError(f"{self.name}: no variant {name!r} (have {[v.name for v in self.variants]})")

    def plan(self, rng: random.Random, n_flows: int, target: Target,
             allowed: Callable[[str, Variant], bool] | None = None,
             n_runs: int | None = None) -> list[Run]:
        """Split about `n_flows` flows over a few runs (or exactly `n_runs`), cycling through
        the allowed variants (shuffled by the seed), so every allowed variant runs at least
        once when it can."""
        chosen = [v for v in self.variants if allowed is None or allowed(self.name, v)]
        if not chosen:
            return []
        rng.shuffle(chosen)
        k = n_runs or max(rng.randint(*self.runs), min(len(chosen), 4))
        runs = []
        for i, n in enumerate(split_flows(rng, n_flows, k)):
            v = chosen[i % len(chosen)]
            r = v.plan(rng, n, target)
            runs.append(Run(self.name, i, r.argv, round(min(RUN_CAP_S, r.timeout_s * target.slowdown), 1),
                            r.max_packets, r.expected_flows, r.params, r.files, v.name, v.tool,
                            r.match, r.peers))
        return runs


def run(argv: list[str], timeout_s: float, max_packets: int, expected: int, params: dict,
        files: dict | None = None, match: str = "attacker", peers: tuple = ()) -> Run:
    """What a variant's plan returns (Scenario.plan fills in scenario, index, variant)."""
    return Run("", 0, argv, timeout_s, max_packets, expected, params, files or {}, match=match,
               peers=tuple(peers))


def split_flows(rng: random.Random, total: int, n: int) -> list[int]:
    """Split `total` flows into n runs of random, not equal, sizes (at least 20 each)."""
    weights = [rng.uniform(0.5, 1.5) for _ in range(n)]
    return [max(20, round(total * w / sum(weights))) for w in weights]


def sweep_range(rng: random.Random, n: int) -> tuple[list[str], int]:
    """CIDR blocks holding about n addresses to sweep: the lab LAN (/24, where the live
    hosts are) and/or a block of the darknet. Returns (blocks, number of addresses)."""
    blocks, count = [], 0
    if n < 300 or rng.random() < 0.5:
        blocks, count = [str(LAB_NET)], 254
    left = n - count
    if left >= 32:
        bits = min(32 - DARKNET.prefixlen, max(5, round(math.log2(left))))
        block = rng.choice(list(DARKNET.subnets(new_prefix=32 - bits)))
        blocks.append(str(block))
        count += block.num_addresses
    return blocks, count


def addresses(run: Run) -> list[str]:
    """Every IPv4 address or CIDR in a run's argv and files (what it may send to)."""
    files = [c.decode("latin-1") if isinstance(c, bytes) else c for c in run.files.values()]
    text = " ".join(run.argv) + " " + " ".join(files)
    return [m.group(1) + (m.group(2) or "") for m in _IPV4.finditer(text)]


def check_run(run: Run, target: Target) -> None:
    """Refuse a run that is unbounded or aims at anything outside the lab."""
    if not 0 < run.timeout_s <= MAX_TIMEOUT_S or not 0 < run.max_packets <= MAX_PACKETS:
        raise LabError(f"{run.scenario}/{run.variant}: not bounded (timeout {run.timeout_s}s, "
                       f"max_packets {run.max_packets})")
    found = addresses(run)
    if not found:
        raise LabError(f"{run.scenario}/{run.variant}: no target address in {run.argv}")
    for a in found:
        net = ipaddress.ip_network(a, strict=False)
        if not net.subnet_of(LAB_SPACE):
            raise LabError(f"{run.scenario}/{run.variant}: {a} is outside the lab ({LAB_SPACE})")
    if run.match == "pair" and not set(run.peers) <= set(target.servers):
        raise LabError(f"{run.scenario}/{run.variant}: reflectors {run.peers} are not lab servers")

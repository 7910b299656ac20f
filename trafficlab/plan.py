"""Step 1 of a generation: everything drawn from the seed before the lab starts.

Addresses and MACs, link conditions (from their own stream of the seed, so switching
`--conditions` does not change the attack plan), the scenario order, the attacker of
each scenario, every run of every selected variant, and the benign client profiles.
Every run is checked (`check_run`: bounded, aimed only inside the lab) here, before any
namespace exists.

    >>> plan = plan_lab(GenerateOptions(seed=1, out_dir=Path("x")), work=Path("/tmp/w"))
    >>> [(s.name, [r.variant for r in runs]) for s, runs, _ in plan.attacks]
"""
from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

from trafficlab.benign import PROFILES
from trafficlab.conditions import Conditions, draw_conditions
from trafficlab.labelling import Span
from trafficlab.scenarios import Run, Scenario, Target, check_run, resolve, variant_filter
from trafficlab.topology import LAB_NET, LAN_GROUPS, Host, Topology

FLOWS_PER_ATTACK = 2000


@dataclass
class GenerateOptions:
    seed: int
    out_dir: Path
    name: str = "lab"
    scenarios: str | list[str] | None = None     # None/"all", "known", or names
    variants: str = "train"                      # train | heldout | all | scenario/variant,...
    conditions: str = "none"                     # none | train | train-slow | heldout
    scale: float = 1.0                            # x FLOWS_PER_ATTACK flows per attack class
    runs_per_class: int | None = None             # None: 2-4 runs per class, from the seed
    n_clients: int = 6
    n_servers: int = 2
    n_attackers: int = 1
    idle_timeout: int = 5
    active_timeout: int = 30
    snaplen: int = 384
    warmup_s: float = 5.0
    benign_only_s: float | None = None            # benign-only stretch; None = 20 s x scale
    gap_s: float = 3.0
    max_capture_packets: int = 4_000_000
    keep_pcap: bool = True
    pcap_max_bytes: int | None = None   # trim the kept pcap to fit (whole flows), if set
    lan_chatter: bool = True            # mDNS, SSDP, DHCP, IPv6 ping on every non-attacker


@dataclass
class LabPlan:
    rng: random.Random
    topo: Topology
    conditions: Conditions
    attacks: list[tuple[Scenario, list[Run], Host]]
    profiles: dict[str, dict]

    @property
    def topology(self) -> dict:
        t = self.topo
        return {"net": str(LAB_NET), "victim": t.victim.addr, "attacker": t.attacker.addr,
                "attackers": [h.addr for h in t.attackers],
                "servers": [{"role": h.role, "addr": h.addr} for h in t.servers],
                "clients": [{"role": r, "addr": t.hosts[r].addr, **p} for r, p in self.profiles.items()],
                "macs": {h.role: h.mac for h in t.hosts.values()}}


def target_for(topo: Topology, attacker: Host, work: Path, conditions: Conditions) -> Target:
    return Target(victim=topo.victim.addr, attacker=attacker.addr, workdir=work,
                  victim_mac=topo.victim.mac, hosts=tuple(topo.addresses),
                  servers=tuple(h.addr for h in topo.servers), dark=tuple(topo.unowned()),
                  slowdown=conditions.slowdown(attacker.role, "vic"),
                  fragile=conditions.fragile(attacker.role, "vic"))


def plan_lab(opts: GenerateOptions, work: Path) -> LabPlan:
    """Draw addresses, conditions, the scenario order, every attack run and the benign profiles."""
    rng = random.Random(opts.seed)
    topo = Topology.plan(rng, opts.n_clients, n_servers=opts.n_servers, n_attackers=opts.n_attackers)
    conditions = draw_conditions(opts.conditions, random.Random(f"{opts.seed}/conditions"), topo.hosts)
    order = resolve(opts.scenarios)
    rng.shuffle(order)
    allowed = variant_filter(opts.variants)
    n_flows = max(50, round(FLOWS_PER_ATTACK * opts.scale))
    attacks = []
    for scenario in order:
        attacker = rng.choice(topo.attackers)
        target = target_for(topo, attacker, work, conditions)
        runs = scenario.plan(rng, n_flows, target, allowed, opts.runs_per_class)
        for r in runs:
            check_run(r, target)
        if runs:
            attacks.append((scenario, runs, attacker))
    return LabPlan(rng, topo, conditions, attacks, client_profiles(rng, topo))


def client_profiles(rng: random.Random, topo: Topology) -> dict[str, dict]:
    names = sorted(PROFILES)
    rng.shuffle(names)
    return {h.role: {"profile": names[i % len(names)], "rate": round(rng.uniform(0.6, 1.6), 2),
                     "seed": rng.getrandbits(32)} for i, h in enumerate(topo.clients)}


def span_for(run: Run, topo: Topology, attacker: Host, start_ms: int, end_ms: int, extra: dict) -> Span:
    """The labelling span of one finished run (see trafficlab.labelling for the rules)."""
    victim = topo.victim.addr
    others = [a for a in topo.addresses if a != victim and a not in run.peers]
    not_with = tuple(others) + LAN_GROUPS if run.match != "attacker" else ()
    return Span(run.scenario, attacker.addr, start_ms, end_ms, run.scenario, run.index,
                {**run.params, **extra}, match=run.match,
                victim_ip=victim if run.match != "attacker" else "", peers=run.peers,
                not_with=not_with, variant=run.variant)

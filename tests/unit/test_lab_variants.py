"""The lab's class registry and variant selection: which tools a generation may run.

No root needed: these check plans, not traffic.
"""
from __future__ import annotations

import ipaddress
import random
from pathlib import Path

import pytest

from contracts.errors import LabError
from trafficlab.plan import GenerateOptions, plan_lab
from trafficlab.scenarios import (HELDOUT_KINDS, KNOWN, LABELS, SCENARIOS, TRAIN_LABELS, Run,
                                  Target, check_run, resolve, variant_filter)
from trafficlab.topology import LAB_SPACE, Topology


def _target(tmp_path: Path, seed: int = 1) -> Target:
    topo = Topology.plan(random.Random(seed), 6, owner=1)
    return Target(victim=topo.victim.addr, attacker=topo.attacker.addr, workdir=tmp_path,
                  victim_mac=topo.victim.mac, hosts=tuple(topo.addresses),
                  servers=tuple(h.addr for h in topo.servers), dark=tuple(topo.unowned()))


def test_registry_classes_and_held_out_kinds() -> None:
    assert LABELS[0] == "benign" and set(LABELS[1:]) == set(SCENARIOS)
    assert HELDOUT_KINDS == ("udp_flood", "icmp_flood", "ftp_bruteforce")
    assert set(HELDOUT_KINDS) <= set(SCENARIOS)
    assert set(KNOWN) == set(SCENARIOS) - set(HELDOUT_KINDS)
    assert TRAIN_LABELS == ("benign", *KNOWN)
    assert {s.name for s in resolve("known")} == set(KNOWN)
    assert {s.name for s in resolve("heldout-kinds")} == set(HELDOUT_KINDS)
    for new in ("udp_scan", "host_sweep", "udp_flood", "icmp_flood", "reflection",
                "ftp_bruteforce", "http_bruteforce"):
        assert new in SCENARIOS


def test_every_scenario_has_train_and_heldout_variants_with_distinct_tools() -> None:
    for s in SCENARIOS.values():
        splits = {v.split for v in s.variants}
        assert splits == {"train", "heldout"}, s.name
        names = [v.name for v in s.variants]
        assert len(names) == len(set(names)), s.name
        for v in s.variants:
            assert v.needs, (s.name, v.name)


@pytest.mark.parametrize("split", ["train", "heldout"])
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_a_split_plans_only_its_own_variants_and_every_one_of_them(split: str, seed: int,
                                                                   tmp_path: Path) -> None:
    rng, target = random.Random(seed), _target(tmp_path, seed)
    allowed = variant_filter(split)
    for s in SCENARIOS.values():
        runs = s.plan(rng, 2000, target, allowed)
        wanted = {v.name for v in s.variants if v.split == split}
        assert runs and {r.variant for r in runs} <= wanted, (s.name, [r.variant for r in runs])
        if len(wanted) <= 4:       # up to 4 variants: each one runs at least once
            assert {r.variant for r in runs} == wanted, s.name


def test_explicit_variant_list_and_unknown_names(tmp_path: Path) -> None:
    allowed = variant_filter("syn_flood/hping3_syn_spoofed,reflection/memcached")
    rng, target = random.Random(4), _target(tmp_path)
    runs = SCENARIOS["syn_flood"].plan(rng, 2000, target, allowed)
    assert {r.variant for r in runs} == {"hping3_syn_spoofed"}
    assert all(r.match == "victim" and "--rand-source" in r.argv for r in runs)
    assert SCENARIOS["syn_scan"].plan(rng, 2000, target, allowed) == []
    with pytest.raises(LabError, match="no variant"):
        variant_filter("syn_flood/nope")
    with pytest.raises(LabError, match="unknown scenario"):
        variant_filter("nope/hping3_syn")
    with pytest.raises(LabError, match="unknown scenario"):
        resolve("syn_scan,bogus")


def test_training_generation_never_plans_held_out_kinds_or_variants(tmp_path: Path) -> None:
    plan = plan_lab(GenerateOptions(seed=1, out_dir=tmp_path, scenarios="known", variants="train"),
                    tmp_path)
    classes = {s.name for s, _, _ in plan.attacks}
    assert classes == set(KNOWN)
    for scenario, runs, _ in plan.attacks:
        for r in runs:
            assert scenario.variant(r.variant).split == "train"
    held = plan_lab(GenerateOptions(seed=3, out_dir=tmp_path, scenarios="all", variants="heldout"),
                    tmp_path)
    assert {s.name for s, _, _ in held.attacks} == set(SCENARIOS)
    assert all(s.variant(r.variant).split == "heldout" for s, runs, _ in held.attacks for r in runs)


def test_check_run_refuses_unbounded_runs_and_targets_outside_the_lab(tmp_path: Path) -> None:
    target = _target(tmp_path)
    ok = Run("syn_scan", 0, ["nmap", "-sS", target.victim], 30, 1000, 900, {})
    check_run(ok, target)
    for bad in (Run("syn_scan", 0, ["nmap", "-sS", "10.78.0.1"], 30, 1000, 900, {}),
                Run("syn_scan", 0, ["nmap", "-sS", "10.0.0.0/8"], 30, 1000, 900, {}),
                Run("host_sweep", 0, ["zmap", "-w", "allow.txt"], 30, 1000, 900, {},
                    files={"allow.txt": "10.77.0.0/24\n192.168.1.0/24\n"}),
                Run("syn_scan", 0, ["nmap", target.victim], 0, 1000, 900, {}),
                Run("syn_scan", 0, ["nmap", target.victim], 30, 10**7, 900, {}),
                Run("syn_scan", 0, ["nmap"], 30, 1000, 900, {}),
                Run("reflection", 0, ["x", target.victim, "10.77.0.250"], 30, 10, 1, {},
                    match="pair", peers=("10.77.0.250",))):
        with pytest.raises(LabError):
            check_run(bad, target)


@pytest.mark.parametrize("spec", ["train", "heldout"])
def test_every_address_a_plan_targets_is_inside_the_lab(spec: str, tmp_path: Path) -> None:
    """Stronger than check_run's own scan: every dotted quad anywhere in argv and files."""
    import re
    quad = re.compile(r"\d{1,3}(?:\.\d{1,3}){3}(?:/\d{1,2})?")
    plan = plan_lab(GenerateOptions(seed=9, out_dir=tmp_path, scenarios="all", variants=spec,
                                    scale=2.0), tmp_path)
    for _, runs, attacker in plan.attacks:
        for r in runs:
            text = " ".join(r.argv) + " ".join(c.decode("latin-1") if isinstance(c, bytes) else c
                                               for c in r.files.values())
            found = quad.findall(text)
            assert found, r.argv
            for a in found:
                assert ipaddress.ip_network(a, strict=False).subnet_of(LAB_SPACE), (r.variant, a)
            if r.match == "pair":
                assert set(r.peers) <= {h.addr for h in plan.topo.servers}


def test_one_spoofed_flood_run_can_carry_20000_sources(tmp_path: Path) -> None:
    """`--runs 1 --scale 11`: a single bounded hping3 --rand-source run of 22,000 SYNs."""
    plan = plan_lab(GenerateOptions(seed=4, out_dir=tmp_path, scenarios="syn_flood",
                                    variants="syn_flood/hping3_syn_spoofed", scale=11,
                                    runs_per_class=1), tmp_path)
    [(_, [run], _)] = plan.attacks
    check_run(run, _target(tmp_path))
    assert run.match == "victim" and "--rand-source" in run.argv
    assert run.params["count"] >= 20_000 and run.max_packets == run.params["count"]
    assert run.argv[run.argv.index("-c") + 1] == str(run.params["count"]) and run.timeout_s <= 150


def test_the_idle_slowloris_goes_silent_past_the_meters_idle_timeout(tmp_path: Path) -> None:
    """slowhttptest_H_idle: follow-ups slower than NFStream's 5 s idle timeout (and within
    nginx's 30 s header timeout), held for at least two silences; the other -H
    variants stay below it, so each of their connections is one flow."""
    idle = variant_filter("slow_http_dos/slowhttptest_H_idle")
    plain = variant_filter("slow_http_dos/slowhttptest_H")
    for seed in range(8):
        rng, target = random.Random(seed), _target(tmp_path, seed)
        for r in SCENARIOS["slow_http_dos"].plan(rng, 2000, target, idle):
            assert r.variant == "slowhttptest_H_idle" and r.argv[:2] == ["slowhttptest", "-H"]
            assert 5 < r.params["interval_s"] <= 12
            assert r.params["length_s"] >= 2 * r.params["interval_s"]
        for r in SCENARIOS["slow_http_dos"].plan(rng, 2000, target, plain):
            assert r.params["interval_s"] < 5

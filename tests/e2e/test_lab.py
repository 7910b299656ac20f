"""The traffic lab, end to end: real namespaces, real tools, real packets, real labels.

The lab tests need root and `ip netns`; they are skipped (saying why) only when network
namespaces cannot be created. Missing tools are a failure, not a skip: run
`scripts/setup-lab.sh`. The plan checks at the top need neither and always run.
"""
from __future__ import annotations

import ipaddress
import json
import random
import subprocess
from pathlib import Path

import pandas as pd
import pytest

from streams.errors import LabError
from streams.lab import tools
from streams.lab.scenarios import LABELS, SCENARIOS
from streams.lab.topology import LAB_NET, PREFIX, cleanup_stale, list_namespaces

pytestmark = pytest.mark.e2e
FAST = ("syn_scan", "syn_flood", "ssh_bruteforce")
VICTIM = "10.77.0.10"


# -- plans: bounded, aimed only at the victim, seeded (no root needed) ----------------------

@pytest.mark.parametrize("seed", [1, 2, 3])
def test_every_planned_run_is_bounded_and_aimed_only_at_the_victim(seed: int, tmp_path: Path) -> None:
    rng = random.Random(seed)
    for scenario in SCENARIOS.values():
        for run in scenario.plan(rng, 2500, victim=VICTIM, workdir=tmp_path):
            assert 0 < run.timeout_s <= 600, run
            assert 0 < run.max_packets <= 500_000, run
            addrs = [a for a in run.argv if a.count(".") == 3 and a[0].isdigit()]
            urls = [a for a in run.argv if "://" in a]
            assert set(addrs) <= {VICTIM}, run.argv
            assert all(f"://{VICTIM}" in u for u in urls), run.argv
            assert addrs or urls, run.argv


def test_same_seed_same_plan_and_different_seeds_differ(tmp_path: Path) -> None:
    def plan(seed: int) -> list:
        rng = random.Random(seed)
        return [r.argv for s in SCENARIOS.values()
                for r in s.plan(rng, 2500, victim=VICTIM, workdir=tmp_path)]
    assert plan(5) == plan(5)
    assert plan(5) != plan(6)


# -- the lab itself (root) ------------------------------------------------------------------

@pytest.fixture(scope="module")
def netns_ok() -> None:
    from streams.lab.topology import can_create_namespaces
    ok, why = can_create_namespaces()
    if not ok:
        pytest.skip(f"traffic lab skipped: network namespaces cannot be created here ({why})")
    gone = tools.missing(*SCENARIOS)
    if gone:
        pytest.fail(f"lab tools missing: {', '.join(gone)}; run scripts/setup-lab.sh")


def _ours() -> list[str]:
    import os
    return [ns for ns in list_namespaces() if ns.startswith(f"{PREFIX}{os.getpid()}-")]


@pytest.fixture(scope="module")
def generated(netns_ok, tmp_path_factory: pytest.TempPathFactory):
    from streams.lab.generate import GenerateOptions, generate
    out = tmp_path_factory.mktemp("lab")
    opts = GenerateOptions(seed=7, out_dir=out, name="e2e", scenarios=",".join(FAST),
                           scale=0.06, n_clients=2, warmup_s=2.0, benign_only_s=0, gap_s=1.0)
    result = generate(opts)
    return result, pd.read_parquet(result.paths["parquet"]), json.loads(
        result.paths["datasheet_json"].read_text())


def test_lab_generates_flows_with_the_expected_labels_and_classes(generated) -> None:
    result, df, sheet = generated
    assert set(df["label"]) == {"benign", *FAST}
    assert set(df["label"]) <= set(LABELS)
    for run in sheet["runs"]:
        share = 0.5 if run["scenario"] == "ssh_bruteforce" else 0.8
        assert run["flows"] >= share * run["expected_flows"], run
    assert sheet["attacker_flows_labelled_benign"] == 0
    attacker = sheet["topology"]["attacker"]
    benign = df[df["label"] == "benign"]
    assert attacker not in set(benign["src_ip"]) | set(benign["dst_ip"])
    clients = {c["addr"] for c in sheet["topology"]["clients"]}
    assert clients <= set(benign["src_ip"])       # every benign host made traffic
    assert result.counts == {k: v for k, v in sheet["counts"].items() if v}


def test_attack_flows_look_like_their_attack(generated) -> None:
    _, df, sheet = generated
    scan = df[df["label"] == "syn_scan"]
    assert scan["dst_port"].nunique() > 0.8 * len(scan)            # one flow per port
    assert (scan["src2dst_syn_packets"] >= 1).all()
    flood = df[df["label"] == "syn_flood"]
    flood_ports = {r["params"]["dst_port"] for r in sheet["runs"] if r["scenario"] == "syn_flood"}
    assert set(flood["dst_port"]) <= flood_ports and flood["src_port"].is_unique
    brute = df[df["label"] == "ssh_bruteforce"]
    assert set(brute["dst_port"]) == {22} and brute["packets"].median() >= 10


def test_lab_traffic_stays_inside_the_lab_network(generated) -> None:
    _, df, _ = generated
    for addr in set(df["src_ip"]) | set(df["dst_ip"]):
        ip = ipaddress.ip_address(addr)
        assert ip in LAB_NET or ip.is_multicast or ip.is_unspecified, addr


def test_every_row_is_a_valid_flow_record_and_files_are_written(generated) -> None:
    from streams.records import FLOW_FIELDS, FlowRecord
    result, df, sheet = generated
    assert list(df.columns) == list(FLOW_FIELDS)
    for row in df.to_dict(orient="records"):
        FlowRecord.model_validate({k: v for k, v in row.items() if not pd.isna(v)})
    assert df["flow_id"].is_unique
    assert {"nmap", "hping3", "hydra", "python:nfstream"} <= set(sheet["tools"])
    assert sheet["metering"]["idle_timeout_s"] == 5 and sheet["seed"] == 7
    for key in ("parquet", "labels", "pcap", "datasheet_json", "datasheet_md"):
        assert result.paths[key].stat().st_size > 0
    assert _ours() == []                                            # torn down


def test_teardown_is_complete_after_a_failure(netns_ok, tmp_path: Path, monkeypatch) -> None:
    from streams.lab import generate as gen

    def boom(*args, **kwargs):
        assert len(_ours()) >= 3       # the lab is up when the failure hits
        raise LabError("injected failure in the middle of a scenario")
    monkeypatch.setattr(gen, "_attack", boom)
    opts = gen.GenerateOptions(seed=3, out_dir=tmp_path, scenarios="syn_scan", scale=0.02,
                               n_clients=1, warmup_s=0.5)
    with pytest.raises(LabError, match="injected"):
        gen.run_lab(opts, tmp_path)
    assert _ours() == []


def test_stale_lab_of_a_dead_run_is_cleaned_up(netns_ok) -> None:
    dead = subprocess.Popen(["true"])
    dead.wait()
    ns = f"{PREFIX}{dead.pid}-vic"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    sleeper = subprocess.Popen(["ip", "netns", "exec", ns, "sleep", "60"])
    try:
        removed = cleanup_stale()
        assert ns in removed and ns not in list_namespaces()
        assert sleeper.wait(timeout=5) != 0          # what ran inside was stopped
    finally:
        if sleeper.poll() is None:
            sleeper.kill()
        subprocess.run(["ip", "netns", "del", ns], check=False, capture_output=True)

"""The traffic lab, end to end: real namespaces, real tools, real packets, real labels.

The lab tests need root and `ip netns`; they are skipped (saying why) only when network
namespaces cannot be created. Missing tools are a failure, not a skip: run
`scripts/setup-lab.sh`. The plan checks at the top need neither and always run.
"""
from __future__ import annotations

import ipaddress
import json
import random
import re
import subprocess
from pathlib import Path

import pandas as pd
import pytest

from contracts.errors import LabError
from trafficlab import tools
from trafficlab.scenarios import LABELS, SCENARIOS, Target, variant_filter
from trafficlab.topology import (DARKNET, LAB_NET, LAB_SPACE, PREFIX, Topology, cleanup_stale,
                                 list_namespaces)

pytestmark = pytest.mark.e2e
FAST = ("syn_scan", "syn_flood", "ssh_bruteforce")


# -- plans: bounded, aimed only at the lab, seeded (no root needed) ----------------------------

def _target(seed: int, tmp_path: Path) -> Target:
    topo = Topology.plan(random.Random(seed), 6, owner=1)
    return Target(victim=topo.victim.addr, attacker=topo.attacker.addr, workdir=tmp_path,
                  victim_mac=topo.victim.mac, hosts=tuple(topo.addresses),
                  servers=tuple(h.addr for h in topo.servers), dark=tuple(topo.unowned()))


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_every_planned_run_is_bounded_and_aimed_only_at_the_lab(seed: int, tmp_path: Path) -> None:
    """Every run of every variant: bounded in time and packets; every address it names
    (targets, sweep blocks, spoofed sources, reflectors, zmap allow-lists) inside the lab."""
    rng, target = random.Random(seed), _target(seed, tmp_path)
    for scenario in SCENARIOS.values():
        for run in scenario.plan(rng, 2500, target, variant_filter("all")):
            assert 0 < run.timeout_s <= 600, run
            assert 0 < run.max_packets <= 500_000, run
            text = " ".join(run.argv) + " " + " ".join(
                c.decode("latin-1") if isinstance(c, bytes) else c for c in run.files.values())
            addrs = re.findall(r"\d{1,3}(?:\.\d{1,3}){3}(?:/\d{1,2})?", text)
            assert addrs, run.argv
            for a in addrs:
                assert ipaddress.ip_network(a, strict=False).subnet_of(LAB_SPACE), (run.variant, a)
            if "://" in text:
                assert all(LAB_SPACE.supernet_of(ipaddress.ip_network(u, strict=False))
                           for u in re.findall(r"://([\d.]+)", text)), run.argv
            if run.match == "pair":                       # reflectors are lab servers
                assert set(run.peers) <= set(target.servers), run
            if run.variant.endswith("_spoofed") or "--src" in run.argv:
                # spoofed sources: random ones only towards the victim, or the victim itself
                assert run.argv[-1] == target.victim or target.victim in run.argv, run.argv


def test_same_seed_same_plan_and_different_seeds_differ(tmp_path: Path) -> None:
    def plan(seed: int) -> list:
        rng, target = random.Random(seed), _target(1, tmp_path)
        return [r.argv for s in SCENARIOS.values()
                for r in s.plan(rng, 2500, target, variant_filter("all"))]
    assert plan(5) == plan(5)
    assert plan(5) != plan(6)


# -- the lab itself (root) ------------------------------------------------------------------

@pytest.fixture(scope="module")
def netns_ok() -> None:
    from trafficlab.topology import can_create_namespaces
    ok, why = can_create_namespaces()
    if not ok:
        pytest.skip(f"traffic lab skipped: network namespaces cannot be created here ({why})")
    gone = tools.missing(*SCENARIOS)
    if gone:
        pytest.fail(f"lab tools missing: {', '.join(gone)}; run scripts/setup-lab.sh")


def _ours() -> list[str]:
    import os
    return [ns for ns in list_namespaces() if ns.startswith(f"{PREFIX}{os.getpid()}-")]


class RootCapture:
    """tcpdump in the host's own namespace, on every interface, for the lab's address space
    (every lab packet, spoofed floods included, has a lab end) and a loopback canary that
    shows the capture was running. The lab has no link out, so it must see no lab packet."""

    def __init__(self, pcap: Path) -> None:
        import socket

        self.pcap = pcap
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind(("127.0.0.1", 0))
            self.canary_port = s.getsockname()[1]
        self.proc = subprocess.Popen(
            ["tcpdump", "-i", "any", "-n", "-U", "--immediate-mode", "-c", "5000", "-w", str(pcap),
             f"net {LAB_SPACE} or (udp and host 127.0.0.1 and port {self.canary_port})"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        lines: list[str] = []
        while len(lines) < 5 and not any("listening" in ln for ln in lines):
            lines.append(self.proc.stderr.readline())  # "listening on any, ..." once the filter is in place
        assert any("listening" in ln for ln in lines), lines

    def canary(self) -> None:
        import socket

        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.sendto(b"edgeloop-canary", ("127.0.0.1", self.canary_port))

    def stop(self) -> list[str]:
        """The packets seen, one tcpdump line each."""
        import time

        time.sleep(1.0)  # what the kernel holds reaches the file before tcpdump stops
        self.proc.terminate()
        self.proc.wait(10)
        out = subprocess.run(["tcpdump", "-r", str(self.pcap), "-n"], capture_output=True, text=True, timeout=30)
        return out.stdout.splitlines()


@pytest.fixture(scope="module")
def generated(netns_ok, tmp_path_factory: pytest.TempPathFactory):
    from trafficlab.generate import GenerateOptions, generate
    out = tmp_path_factory.mktemp("lab")
    opts = GenerateOptions(seed=7, out_dir=out, name="e2e", scenarios=",".join(FAST),
                           scale=0.06, n_clients=2, warmup_s=2.0, benign_only_s=0, gap_s=1.0)
    root = RootCapture(out / "root-namespace.pcap")
    try:
        root.canary()
        result = generate(opts)
        root.canary()
    finally:
        seen = root.stop()
        return result, pd.read_parquet(result.paths["parquet"]), json.loads(
        result.paths["datasheet_json"].read_text()), seen


def test_lab_generates_flows_with_the_expected_labels_and_classes(generated) -> None:
    result, df, sheet, _seen = generated
    assert set(df["label"]) == {"benign", *FAST}
    assert {r["variant"] for r in sheet["runs"]} <= {"nmap_sS", "nmap_sS_top", "hping3_syn", "hping3_syn_spoofed_train",
                                                     "hydra_ssh"}
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
    _, df, sheet, _seen = generated
    scan = df[df["label"] == "syn_scan"]
    assert scan["dst_port"].nunique() > 0.8 * len(scan)            # one flow per port
    assert (scan["src2dst_syn_packets"] >= 1).all()
    flood = df[df["label"] == "syn_flood"]
    flood_ports = {r["params"]["dst_port"] for r in sheet["runs"] if r["scenario"] == "syn_flood"}
    assert set(flood["dst_port"]) <= flood_ports and flood["src_port"].is_unique
    brute = df[df["label"] == "ssh_bruteforce"]
    assert set(brute["dst_port"]) == {22} and brute["packets"].median() >= 10


def _lab_or_local(addr: str) -> bool:
    ip = ipaddress.ip_address(addr)
    return (ip in LAB_NET or ip.is_multicast or ip.is_unspecified or ip.is_link_local
            or addr == "255.255.255.255")


def test_lab_traffic_stays_inside_the_lab_network(generated) -> None:
    """No lab packet reached the host's own namespace while the lab ran (a capture there on
    every interface, alive: it saw both loopback canaries). In the lab's own capture, every
    flow has a lab end; only a spoofed flood's flows name other addresses, as forged sources
    towards the lab's victim; no benign flow ever does."""
    _, df, sheet, seen = generated
    assert sum("127.0.0.1" in line for line in seen) >= 2, f"the capture was not running: {seen[:20]}"
    leaked = [line for line in seen if "127.0.0.1" not in line]
    assert not leaked, f"{len(leaked)} lab packets outside the lab: {leaked[:10]}"
    spoofed = any(r["variant"].endswith(("_spoofed", "_spoofed_train")) for r in sheet["runs"])
    for row in df[["src_ip", "dst_ip", "label"]].itertuples(index=False):
        src_ok, dst_ok = _lab_or_local(row.src_ip), _lab_or_local(row.dst_ip)
        assert src_ok or dst_ok, row
        if not (src_ok and dst_ok):
            assert spoofed and row.label != "benign", row
            assert ipaddress.ip_address(row.dst_ip if not src_ok else row.src_ip) in LAB_NET, row


def test_benign_side_has_lan_housekeeping_and_new_services(generated) -> None:
    """IPv6 ND/MLD, mDNS, SSDP, DHCP and the new services show up as benign flows."""
    _, df, _, _seen = generated
    benign = df[df["label"] == "benign"]
    assert (benign["ip_version"] == 6).sum() > 0 and (benign["protocol"] == 58).sum() > 0
    udp_ports = set(benign.loc[benign["protocol"] == 17, "dst_port"])
    assert {5353, 1900, 67} <= udp_ports, sorted(udp_ports)[:40]
    assert len(set(benign["dst_port"]) & {21, 445, 1883, 11211, 161, 123, 443}) >= 3


def test_every_row_is_a_valid_flow_record_and_files_are_written(generated) -> None:
    from contracts.records import FLOW_FIELDS, FlowRecord
    result, df, sheet, _seen = generated
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
    from trafficlab import generate as gen

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


def test_switch_capture_sees_every_frame_once_and_dark_addresses_appear(netns_ok, tmp_path: Path) -> None:
    """tcpdump on br0 sees forwarded unicast between two client ports exactly once per
    packet; the attacker's probes to unowned LAN addresses and to the darknet reach the
    wire (and nobody answers); no namespace has a default route."""
    from inference.flow_meter import meter_pcap
    from trafficlab.capture import Capture
    from trafficlab.procs import Procs

    cleanup_stale()
    topo = Topology.plan(random.Random(11), 2, n_servers=0)
    procs = Procs(tmp_path)
    dark, far = topo.unowned()[0], str(DARKNET.network_address + 77)
    try:
        topo.build()
        for h in topo.hosts.values():
            routes = subprocess.run(topo.exec(h.role, ["ip", "route"]), capture_output=True,
                                    text=True, check=True).stdout
            assert "default" not in routes, (h.role, routes)
        cap = Capture(topo, procs, tmp_path / "c.pcap", snaplen=96, max_packets=5000)
        cap.start()
        c2 = topo.hosts["c2"].addr
        for role, dst, n in (("c1", c2, 20), ("att", dark, 3), ("att", far, 3)):
            subprocess.run(topo.exec(role, ["ping", "-c", str(n), "-i", "0.05", "-W", "1", dst]),
                           capture_output=True, timeout=30)
        import time
        time.sleep(0.5)
        cap.stop()
        seen = subprocess.run(["tcpdump", "-n", "-r", str(tmp_path / "c.pcap"), "icmp"],
                              capture_output=True, text=True).stdout.splitlines()
        c1 = topo.hosts["c1"].addr
        assert sum(f"{c1} > {c2}: ICMP echo request" in line for line in seen) == 20
        assert sum(f"{c2} > {c1}: ICMP echo reply" in line for line in seen) == 20
        for addr in (dark, far):
            assert sum(f"> {addr}: ICMP echo request" in line for line in seen) == 3, addr
            assert not any(f"{addr} >" in line for line in seen)
        flows = meter_pcap(tmp_path / "c.pcap", sensor="t")
        assert {far, dark} <= set(flows["dst_ip"])
    finally:
        procs.stop_all()
        topo.teardown()
    assert _ours() == []

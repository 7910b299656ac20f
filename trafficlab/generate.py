"""`edgeloop lab generate`: build the lab, run the scenarios, meter, label, write a dataset.

One generation, for one seed:
 1. plan everything from the seed (`trafficlab.plan`): addresses, link conditions,
    benign client profiles, every attack run of the selected variants;
 2. build the namespaces (and the link emulator when conditions are on), start the
    victim's services, the lab servers and the capture at the switch;
 3. start LAN housekeeping and the benign clients, which run throughout;
 4. run the scenarios one at a time, each run bounded and recorded as a labelled span;
 5. stop everything and tear the lab down (always, in `finally`);
 6. meter the pcap with NFStream, label the flows from the spans, and write
    `<name>.parquet`, `<name>.labels.json`, `<name>.datasheet.{json,md}` (and the pcap).

    >>> result = generate(GenerateOptions(seed=1, out_dir=Path("data/lab"), name="train",
    ...                                   scenarios="known", variants="train", conditions="train"))
    >>> result.counts        # {'benign': ..., 'syn_scan': ..., ...}
"""
from __future__ import annotations

import json
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from contracts.errors import LabError
from trafficlab import tools
from trafficlab.capture import Capture, CaptureStats
from trafficlab.labelling import GRACE_MS, Span, apply_labels, save_spans, with_tails
from trafficlab.plan import (FLOWS_PER_ATTACK, GenerateOptions, LabPlan, client_profiles,  # noqa: F401
                             plan_lab, span_for)
from trafficlab.procs import Procs, terminate_raises, wait_until
from trafficlab.scenarios import Run, resolve
from trafficlab.servers import Servers
from trafficlab.services import Services
from trafficlab.topology import Host, Topology, can_create_namespaces, cleanup_stale
from trafficlab.trim import trim_capture

REPO_ROOT = Path(__file__).resolve().parents[1]
ENV = {"PATH": "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin", "PYTHONPATH": str(REPO_ROOT),
       "HOME": "/root", "LANG": "C.UTF-8"}


@dataclass
class RunRecord:
    run: Run
    span: Span
    exit_code: int | None
    seconds: float


@dataclass
class LabResult:
    """What one lab session produced, before metering."""
    pcap: Path
    spans: list[Span]
    runs: list[RunRecord]
    scenario_seconds: dict[str, float]
    capture: CaptureStats
    topology: dict
    seconds: float
    conditions: dict = field(default_factory=dict)
    link_counters: dict = field(default_factory=dict)


@dataclass
class GenerateResult:
    counts: dict[str, int]
    paths: dict[str, Path]
    scenario_seconds: dict[str, float]
    lab_seconds: float
    meter_seconds: float
    flows: int
    datasheet: dict = field(default_factory=dict)

    @property
    def flows_per_s(self) -> float:
        return self.flows / self.meter_seconds if self.meter_seconds else 0.0


Say = Callable[[str], None]


def run_lab(opts: GenerateOptions, work: Path, say: Say = lambda m: None) -> LabResult:
    """Steps 1-5: run the lab once and return the capture and the spans. Always tears down,
    also on Ctrl-C or SIGTERM; a SIGKILLed run is cleaned up by the next one."""
    tools.require(*(s.name for s in resolve(opts.scenarios)))
    ok, why = can_create_namespaces()
    if not ok:
        raise LabError(f"cannot build the lab: {why}")
    removed = cleanup_stale()
    if removed:
        say(f"removed stale lab namespaces: {', '.join(removed)}")
    plan = plan_lab(opts, work)
    procs = Procs(work)
    capture = Capture(plan.topo, procs, work / "capture.pcap", opts.snaplen, opts.max_capture_packets)
    t_start = time.monotonic()
    links: dict = {}
    with terminate_raises():
        try:
            _bring_up(opts, plan, procs, capture, work, say)
            records, seconds = _run_attacks(opts, plan, procs, work, say)
            # Let the last flows go idle so NFStream closes them inside the capture.
            time.sleep(max(opts.warmup_s, opts.idle_timeout + 1))
            for name in [n for n in procs.running if n.startswith(("benign-", "lan-"))]:
                procs.stop(name)
            time.sleep(0.5)
            stats = capture.stop()
            if "linkemu" in procs.running:
                procs.stop("linkemu")
                links = _last_json(procs.log("linkemu"))
        finally:
            procs.stop_all()
            plan.topo.teardown()
    for rec, span in zip(records, with_tails([r.span for r in records])):
        rec.span = span
    return LabResult(work / "capture.pcap", [r.span for r in records], records, seconds, stats,
                     plan.topology, time.monotonic() - t_start, plan.conditions.to_dict(), links)


def _bring_up(opts: GenerateOptions, plan: LabPlan, procs: Procs, capture: Capture, work: Path,
              say: Say) -> None:
    """Steps 2-3: namespaces, link emulator, services, capture, LAN chatter, benign clients."""
    topo, cond = plan.topo, plan.conditions
    quiet = opts.warmup_s + (20 * opts.scale if opts.benign_only_s is None else opts.benign_only_s)
    budget = sum(r.timeout_s + 3 for _, runs, _ in plan.attacks for r in runs) + 60 + 2 * quiet
    until = time.time() + budget
    topo.build(emulate=cond.emulated, mtu=cond.mtu)
    if cond.emulated:
        start_linkemu(topo, procs, cond, work, opts.seed, until)
    services = Services(topo, procs, work, plan.rng)
    services.start()
    Servers(topo, procs, work, plan.rng).start(until)
    capture.start()
    if opts.lan_chatter:
        start_lan(topo, procs, opts.seed, until)
    start_benign(topo, procs, services, plan.profiles, until)
    say(f"lab up: victim {topo.victim.addr}, attackers {[h.addr for h in topo.attackers]}, "
        f"servers {[h.addr for h in topo.servers]}, {len(plan.profiles)} benign clients, conditions "
        f"{cond.mode} (MTU {cond.mtu}); benign only for {quiet:.0f}s")
    time.sleep(quiet)


def start_linkemu(topo: Topology, procs: Procs, cond, work: Path, seed: int, until: float) -> None:
    links = []
    for role in sorted(cond.emulated):
        up, down = cond.link(role).shapes()
        links.append({"host_dev": f"p-{role}", "bridge_dev": f"q-{role}", "up": up, "down": down})
    path = work / "links.json"
    path.write_text(json.dumps({"seed": seed, "links": links}))
    procs.start("linkemu", topo.exec("sw", [sys.executable, "-m", "trafficlab.linkemu",
                                            "--config", str(path), "--until", f"{until:.0f}"]), env=ENV)
    if not wait_until(lambda: "linkemu ready" in procs.log("linkemu"), 10):
        raise LabError(f"link emulator did not start: {procs.log('linkemu')[-400:]}")


def start_lan(topo: Topology, procs: Procs, seed: int, until: float) -> None:
    for i, host in enumerate(h for h in topo.hosts.values() if h.kind != "attacker"):
        argv = [sys.executable, "-m", "trafficlab.lan", "--name", host.role, "--kind", host.kind,
                "--addr", host.addr, "--seed", str(seed * 1000 + i), "--until", f"{until:.0f}"]
        if host.kind == "client":
            argv.append("--dhcp")
        procs.start(f"lan-{host.role}", topo.exec(host.role, argv), env=ENV)


def start_benign(topo: Topology, procs: Procs, services: Services, profiles: dict,
                 until: float) -> None:
    servers = ",".join(h.addr for h in topo.servers)
    for role, p in profiles.items():
        procs.start(f"benign-{role}", topo.exec(role, [
            sys.executable, "-m", "trafficlab.benign", "--victim", topo.victim.addr,
            "--servers", servers, "--profile", p["profile"], "--seed", str(p["seed"]),
            "--rate", str(p["rate"]), "--until", f"{until:.3f}", "--key", str(services.client_key),
            "--admin-pass", str(services.admin_password_file)]), env=ENV)


def _run_attacks(opts: GenerateOptions, plan: LabPlan, procs: Procs, work: Path,
                 say: Say) -> tuple[list[RunRecord], dict[str, float]]:
    """Step 4: the scenarios one at a time, each run recorded as a span."""
    records: list[RunRecord] = []
    seconds: dict[str, float] = {}
    for scenario, runs, attacker in plan.attacks:
        t0 = time.monotonic()
        for i, run in enumerate(runs):
            rec = _attack(plan.topo, procs, work, run, attacker)
            say(f"{scenario.name}/{run.variant} run {run.index}: {rec.seconds:.1f}s "
                f"exit={rec.exit_code} {run.params}")
            records.append(rec)
            # Spans of different rules must not share their grace margins (see labelling).
            nxt = runs[i + 1] if i + 1 < len(runs) else None
            time.sleep(1.0 if nxt is None or nxt.match == run.match else 2 * GRACE_MS / 1000 + 0.5)
        seconds[scenario.name] = time.monotonic() - t0
        time.sleep(opts.gap_s)
    return records, seconds


def _attack(topo: Topology, procs: Procs, work: Path, run: Run, attacker: Host) -> RunRecord:
    for fname, content in run.files.items():
        (work / fname).write_bytes(content if isinstance(content, bytes) else content.encode())
    name = f"{run.scenario}-{run.index}"
    argv = [sys.executable if a == "python3" and i == 0 else a for i, a in enumerate(run.argv)]
    argv = ["timeout", "-k", "2", f"{run.timeout_s:.0f}", *argv]
    t0 = time.monotonic()
    start_ms = int(time.time() * 1000)
    procs.start(name, topo.exec(attacker.role, argv), cwd=work, env=ENV)
    code = procs.wait(name, run.timeout_s + 5)
    procs.stop(name)
    end_ms = int(time.time() * 1000)
    span = span_for(run, topo, attacker, start_ms, end_ms,
                    {"max_packets": run.max_packets, "timeout_s": round(run.timeout_s, 1)})
    return RunRecord(run, span, code, time.monotonic() - t0)


def _last_json(log: str) -> dict:
    for line in reversed(log.splitlines()):
        if line.startswith("{"):
            try:
                return json.loads(line)
            except ValueError:
                return {}
    return {}


def generate(opts: GenerateOptions, say: Say = lambda m: None) -> GenerateResult:
    """Run the lab, meter the capture and write the dataset files. See the module doc."""
    from trafficlab.datasheet import build_datasheet, write_datasheet
    from inference.flow_meter import meter_pcap

    opts.out_dir.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="el-lab-"))
    try:
        lab = run_lab(opts, work, say)
        say(f"capture: {lab.capture.packets} packets, {lab.capture.dropped} dropped, "
            f"{lab.capture.bytes / 1e6:.1f} MB; metering with NFStream")
        t0 = time.monotonic()
        df = meter_pcap(lab.pcap, sensor=f"lab-s{opts.seed}", idle_timeout=opts.idle_timeout,
                        active_timeout=opts.active_timeout)
        meter_s = time.monotonic() - t0
        apply_labels(df, lab.spans)
        paths, replay = _write_outputs(opts, lab, df)
        sheet = build_datasheet(opts, lab, df, meter_s, paths, replay)
        paths.update(write_datasheet(sheet, opts.out_dir, opts.name))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    counts = {k: int(v) for k, v in df["label"].value_counts().items()}
    return GenerateResult(counts, paths, lab.scenario_seconds, lab.seconds, meter_s, len(df), sheet)


def _write_outputs(opts: GenerateOptions, lab: LabResult, df) -> tuple[dict[str, Path], dict]:
    out, name = opts.out_dir, opts.name
    paths = {"parquet": out / f"{name}.parquet", "labels": out / f"{name}.labels.json"}
    df.to_parquet(paths["parquet"], index=False, compression="zstd")
    save_spans(paths["labels"], lab.spans, attacker_ip=lab.topology["attacker"],
               attackers=lab.topology["attackers"], victim_ip=lab.topology["victim"],
               seed=opts.seed, sensor=f"lab-s{opts.seed}", idle_timeout=opts.idle_timeout,
               active_timeout=opts.active_timeout, variants=opts.variants,
               conditions=lab.conditions.get("mode", "none"))
    replay: dict = {}
    if opts.keep_pcap:
        paths["pcap"] = out / f"{name}.pcap"
        if opts.pcap_max_bytes is None or lab.pcap.stat().st_size <= opts.pcap_max_bytes:
            shutil.copyfile(lab.pcap, paths["pcap"])
        else:
            replay = _trimmed(opts, lab, df, paths["pcap"])
    return paths, replay


def _trimmed(opts: GenerateOptions, lab: LabResult, df, dst: Path) -> dict:
    """Write a flow-exact trimmed pcap and check that replaying it gives dataset rows."""
    from inference.flow_meter import meter_pcap

    info = trim_capture(lab.pcap, dst, df, lab.spans, opts.pcap_max_bytes)
    rep = apply_labels(meter_pcap(dst, sensor=f"lab-s{opts.seed}", idle_timeout=opts.idle_timeout,
                                  active_timeout=opts.active_timeout), lab.spans)
    joined = rep.merge(df, on="flow_id", suffixes=("", "_full"))
    same = int((joined["label"] == joined["label_full"]).sum())
    return {"file": dst.name, "bytes": info.bytes, "packets": info.packets, "snaplen": info.snaplen,
            "fraction_of_each_run": info.fraction, "flows": int(len(rep)),
            "flows_in_dataset_with_same_label": same,
            "counts": {k: int(v) for k, v in rep["label"].value_counts().items()},
            "how": "whole flows starting in the first fraction of each attack run (and of the "
                   "benign warm-up), packets cut to snaplen; wire sizes kept"}

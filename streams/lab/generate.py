"""`edgeloop lab generate`: build the lab, run the scenarios, meter, label, write a dataset.

One generation, for one seed:
 1. plan everything from the seed: addresses, benign client profiles, every attack run;
 2. build the namespaces and start the victim's services and the capture;
 3. start the benign clients, which run throughout;
 4. run the scenarios one at a time, each run bounded and recorded as a labelled span;
 5. stop everything and tear the lab down (always, in `finally`);
 6. meter the pcap with NFStream, label the flows from the spans, and write
    `<name>.parquet`, `<name>.labels.json`, `<name>.datasheet.{json,md}` (and the pcap).

    >>> result = generate(GenerateOptions(seed=1, out_dir=Path("data/lab"), name="train"))
    >>> result.counts        # {'benign': ..., 'syn_scan': ..., ...}
"""
from __future__ import annotations

import random
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from streams.errors import LabError
from streams.lab import tools
from streams.lab.benign import PROFILES
from streams.lab.capture import Capture, CaptureStats
from streams.lab.labelling import Span, apply_labels, save_spans
from streams.lab.procs import Procs, terminate_raises
from streams.lab.scenarios import Run, Scenario, resolve
from streams.lab.services import Services
from streams.lab.topology import LAB_NET, Topology, can_create_namespaces, cleanup_stale
from streams.lab.trim import trim_capture

FLOWS_PER_ATTACK = 2500
REPO_ROOT = Path(__file__).resolve().parents[2]


@dataclass
class GenerateOptions:
    seed: int
    out_dir: Path
    name: str = "lab"
    scenarios: str | list[str] | None = None     # None/"all" = every scenario
    scale: float = 1.0                            # x FLOWS_PER_ATTACK flows per attack class
    n_clients: int = 6
    idle_timeout: int = 5
    active_timeout: int = 30
    snaplen: int = 384
    warmup_s: float = 5.0
    benign_only_s: float | None = None            # benign-only stretch; None = 20 s x scale
    gap_s: float = 3.0
    max_capture_packets: int = 4_000_000
    keep_pcap: bool = True
    pcap_max_bytes: int | None = None   # trim the kept pcap to fit (whole flows), if set


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


@dataclass
class LabPlan:
    """Everything drawn from the seed before the lab starts (step 1)."""
    rng: random.Random
    topo: Topology
    attacks: list[tuple[Scenario, list[Run]]]
    profiles: dict[str, dict]

    @property
    def topology(self) -> dict:
        return {"net": str(LAB_NET), "victim": self.topo.victim.addr,
                "attacker": self.topo.attacker.addr,
                "clients": [{"role": r, "addr": self.topo.hosts[r].addr, **p}
                            for r, p in self.profiles.items()]}


def plan_lab(opts: GenerateOptions, work: Path) -> LabPlan:
    """Draw addresses, the scenario order, every attack run and the benign profiles."""
    rng = random.Random(opts.seed)
    topo = Topology.plan(rng, opts.n_clients)
    order = resolve(opts.scenarios)
    rng.shuffle(order)
    target = max(50, round(FLOWS_PER_ATTACK * opts.scale))
    attacks = [(s, s.plan(rng, target, victim=topo.victim.addr, workdir=work)) for s in order]
    return LabPlan(rng, topo, attacks, client_profiles(rng, topo))


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
    capture = Capture(plan.topo, procs, work / "capture.pcap", opts.snaplen,
                      opts.max_capture_packets)
    t_start = time.monotonic()
    with terminate_raises():
        try:
            _bring_up(opts, plan, procs, capture, work, say)
            records, seconds = _run_attacks(opts, plan, procs, work, say)
            # Let the last flows go idle so NFStream closes them inside the capture.
            time.sleep(max(opts.warmup_s, opts.idle_timeout + 1))
            for role in plan.profiles:
                procs.stop(f"benign-{role}")
            time.sleep(0.5)
            stats = capture.stop()
        finally:
            procs.stop_all()
            plan.topo.teardown()
    return LabResult(work / "capture.pcap", [r.span for r in records], records, seconds, stats,
                     plan.topology, time.monotonic() - t_start)


def _bring_up(opts: GenerateOptions, plan: LabPlan, procs: Procs, capture: Capture, work: Path,
              say: Say) -> None:
    """Steps 2-3: namespaces, victim services, capture, benign clients, benign-only stretch."""
    topo = plan.topo
    topo.build()
    services = Services(topo, procs, work, plan.rng)
    services.start()
    capture.start()
    quiet = opts.warmup_s + (20 * opts.scale if opts.benign_only_s is None else opts.benign_only_s)
    budget = sum(r.timeout_s for _, runs in plan.attacks for r in runs) + 60 + 2 * quiet
    start_benign(topo, procs, services, plan.profiles, time.time() + budget)
    say(f"lab up: victim {topo.victim.addr}, attacker {topo.attacker.addr}, "
        f"{len(plan.profiles)} benign clients; benign only for {quiet:.0f}s")
    time.sleep(quiet)


def _run_attacks(opts: GenerateOptions, plan: LabPlan, procs: Procs, work: Path,
                 say: Say) -> tuple[list[RunRecord], dict[str, float]]:
    """Step 4: the scenarios one at a time, each run recorded as a span."""
    records: list[RunRecord] = []
    seconds: dict[str, float] = {}
    for scenario, runs in plan.attacks:
        t0 = time.monotonic()
        for run in runs:
            rec = _attack(plan.topo, procs, work, run, scenario.label)
            say(f"{scenario.name} run {run.index}: {rec.seconds:.1f}s exit={rec.exit_code} "
                f"{run.params}")
            records.append(rec)
            time.sleep(1.0)
        seconds[scenario.name] = time.monotonic() - t0
        time.sleep(opts.gap_s)
    return records, seconds


def client_profiles(rng: random.Random, topo: Topology) -> dict[str, dict]:
    names = sorted(PROFILES)
    rng.shuffle(names)
    return {h.role: {"profile": names[i % len(names)], "rate": round(rng.uniform(0.6, 1.6), 2),
                     "seed": rng.getrandbits(32)} for i, h in enumerate(topo.clients)}


def start_benign(topo: Topology, procs: Procs, services: Services, profiles: dict,
                 until: float) -> None:
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin", "PYTHONPATH": str(REPO_ROOT),
           "HOME": "/root", "LANG": "C.UTF-8"}
    for role, p in profiles.items():
        procs.start(f"benign-{role}", topo.exec(role, [
            sys.executable, "-m", "streams.lab.benign", "--victim", topo.victim.addr,
            "--profile", p["profile"], "--seed", str(p["seed"]), "--rate", str(p["rate"]),
            "--until", f"{until:.3f}", "--key", str(services.client_key)]), env=env)


def _attack(topo: Topology, procs: Procs, work: Path, run: Run, label: str) -> RunRecord:
    for fname, content in run.files.items():
        (work / fname).write_text(content)
    name = f"{run.scenario}-{run.index}"
    argv = ["timeout", "-k", "2", f"{run.timeout_s:.0f}", *run.argv]
    t0 = time.monotonic()
    start_ms = int(time.time() * 1000)
    procs.start(name, topo.exec("att", argv), cwd=work)
    code = procs.wait(name, run.timeout_s + 5)
    procs.stop(name)
    end_ms = int(time.time() * 1000)
    span = Span(label, topo.attacker.addr, start_ms, end_ms, run.scenario, run.index,
                {**run.params, "max_packets": run.max_packets, "timeout_s": round(run.timeout_s, 1)})
    return RunRecord(run, span, code, time.monotonic() - t0)


def generate(opts: GenerateOptions, say: Say = lambda m: None) -> GenerateResult:
    """Run the lab, meter the capture and write the dataset files. See the module doc."""
    from streams.lab.datasheet import build_datasheet, write_datasheet
    from streams.sources.pcap import meter_pcap

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
               victim_ip=lab.topology["victim"], seed=opts.seed, sensor=f"lab-s{opts.seed}",
               idle_timeout=opts.idle_timeout, active_timeout=opts.active_timeout)
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
    from streams.sources.pcap import meter_pcap

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

"""The cgroup of a sandbox run: every process of the run is in it, under its limits (memory
without swap, process count, one CPU), in both modes, and it is gone after the run.

Watched from the host while a step busy-loops: the run's cgroup directories are read
directly, so the test sees what the kernel enforces, not what the sandbox reports.
"""
from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest

from llm_agents.blueprints.cgroups import ROOT, RunCgroup
from llm_agents.blueprints.sandbox import Sandbox, SandboxLimits, StepSource

LIMITS = SandboxLimits(wall_s=20, cpu_s=15, memory_bytes=768 << 20, processes=24)
BUSY = StepSource("busy", "def busy():\n    n = 0\n    for i in range(60_000_000):\n        n += i & 1\n"
                          "    return {'policy': n}", [], ["policy"])


def _writable() -> str:
    probe = RunCgroup.create(f"edgeloop-probe-{os.getpid()}", memory_bytes=1 << 30, pids=8)
    probe.remove()
    return "" if probe.version else probe.why_not


def _run_dirs() -> list[Path]:
    return [p for p in ROOT.rglob("edgeloop-sbx-*") if p.is_dir()]


def _read(d: Path, knob: str) -> str:
    try:
        return (d / knob).read_text().strip()
    except OSError:
        return ""


@pytest.mark.parametrize("mode", ["root", "userns"])
def test_every_process_of_a_run_is_in_its_cgroup_under_the_limits_and_it_is_removed(mode: str) -> None:
    why = _writable()
    if why:
        pytest.skip(f"no writable cgroup here, the sandbox runs under rlimits only: {why}")
    assert os.geteuid() == 0
    sb = Sandbox(LIMITS, run_as=4242 if mode == "userns" else None)
    before = set(_run_dirs())
    seen: dict[str, str] = {}

    def watch() -> None:
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and "procs" not in seen:
            for d in set(_run_dirs()) - before:
                procs = _read(d, "cgroup.procs").split()
                for knob in ("memory.limit_in_bytes", "memory.max", "pids.max", "cpu.cfs_quota_us", "cpu.max"):
                    if _read(d, knob):
                        seen[knob] = _read(d, knob)
                if len(procs) >= 2 and ("pids.max" in seen):
                    seen["procs"] = " ".join(procs)
            time.sleep(0.05)

    t = threading.Thread(target=watch)
    t.start()
    res = sb.run([BUSY])
    t.join()
    assert res.ok, (res.status, res.error, res.stderr[-500:])
    assert res.isolation["cgroup"].startswith("v"), res.isolation["cgroup"]
    assert seen.get("procs"), f"no process of the run was seen in its cgroup: {seen}"
    assert seen.get("memory.limit_in_bytes", seen.get("memory.max")) == str(LIMITS.memory_bytes), seen
    assert seen["pids.max"] == str(LIMITS.processes)
    assert seen.get("cpu.cfs_quota_us") == "100000" or seen.get("cpu.max", "").startswith("100000 "), seen
    assert set(_run_dirs()) == before, "the run's cgroup was left behind"


def test_where_no_cgroup_can_be_made_the_run_goes_on_under_rlimits_and_says_so(tmp_path: Path) -> None:
    cg = RunCgroup.create("edgeloop-sbx-x", memory_bytes=1 << 30, pids=8, root=tmp_path)  # not a cgroup fs
    assert not cg.active and cg.wrap(["bwrap", "x"]) == ["bwrap", "x"]
    assert cg.describe().startswith("none (rlimits only): ")

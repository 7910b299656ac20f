"""A cgroup per sandbox run, where the host lets this process make one: memory (no swap),
process count and one CPU, enforced by the kernel on every process of the run together.

The rlimits the runner sets apply per process and count address space, not memory in use;
the cgroup bounds what the whole run holds (bubblewrap, the runner and anything they start)
and is what an OOM kill is charged to. Where cgroups are not writable (not root, a read-only
/sys/fs/cgroup, a cgroup v2 tree without the controllers delegated) the run goes on under
rlimits only, and `describe()` says so.

    >>> cg = RunCgroup.create("edgeloop-sbx-1a2b", memory_bytes=1 << 30, pids=32, cpus=1.0)
    >>> argv = cg.wrap(["bwrap", ...])   # the shell joins the cgroup, then execs bwrap
    >>> cg.oom_killed(); cg.remove()

Both layouts are handled: cgroup v2 (one tree at /sys/fs/cgroup) and v1 (one hierarchy per
controller, as on hosts and containers with the hybrid layout). A run's cgroup is made under
the agent's own, so the agent's limits still bound it.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path("/sys/fs/cgroup")
PERIOD_US = 100_000


def _own(controller: str | None) -> str:
    """This process's cgroup path in the v1 hierarchy of `controller` (None: the v2 tree)."""
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, ctrls, path = line.split(":", 2)
        if (controller is None and ctrls == "") or (controller is not None and controller in ctrls.split(",")):
            return path.lstrip("/")
    raise OSError(f"no {controller or 'v2'} cgroup in /proc/self/cgroup")


@dataclass
class RunCgroup:
    """The cgroup directories of one run (one per v1 controller, or one in v2)."""

    dirs: list[Path] = field(default_factory=list)
    version: int = 0
    why_not: str = ""

    @classmethod
    def create(cls, name: str, *, memory_bytes: int, pids: int, cpus: float = 1.0,
               owner: int | None = None, root: Path = ROOT) -> "RunCgroup":
        """Make the run's cgroup with its limits; on any refusal, an empty one saying why."""
        try:
            if (root / "cgroup.controllers").exists():
                return cls._v2(root, name, memory_bytes, pids, cpus, owner)
            return cls._v1(root, name, memory_bytes, pids, cpus, owner)
        except OSError as exc:
            return cls(why_not=f"{type(exc).__name__}: {exc}"[:200])

    @classmethod
    def _v2(cls, root: Path, name: str, memory: int, pids: int, cpus: float, owner: int | None) -> "RunCgroup":
        parent = root / _own(None)
        enabled = set((parent / "cgroup.subtree_control").read_text().split())
        missing = {"memory", "pids", "cpu"} - enabled
        if missing:
            raise OSError(f"cgroup v2 controllers not delegated to {parent}: {', '.join(sorted(missing))}")
        d = parent / name
        d.mkdir()
        cg = cls([d], 2)
        try:
            cg._write(d, "memory.max", memory)
            cg._write(d, "memory.swap.max", 0, optional=True)
            cg._write(d, "pids.max", pids)
            cg._write(d, "cpu.max", f"{int(cpus * PERIOD_US)} {PERIOD_US}")
            cg._chown(owner)
        except OSError:
            cg.remove()
            raise
        return cg

    @classmethod
    def _v1(cls, root: Path, name: str, memory: int, pids: int, cpus: float, owner: int | None) -> "RunCgroup":
        cg = cls([], 1)
        try:
            for ctrl in ("memory", "pids", "cpu"):
                base = root / ctrl
                if not (base / "cgroup.procs").exists():
                    raise OSError(f"no cgroup v1 {ctrl} hierarchy at {base}")
                d = base / _own(ctrl) / name
                d.mkdir()
                cg.dirs.append(d)
                if ctrl == "memory":
                    cg._write(d, "memory.limit_in_bytes", memory)
                    cg._write(d, "memory.memsw.limit_in_bytes", memory, optional=True)  # no swap either
                elif ctrl == "pids":
                    cg._write(d, "pids.max", pids)
                else:
                    cg._write(d, "cpu.cfs_period_us", PERIOD_US)
                    cg._write(d, "cpu.cfs_quota_us", int(cpus * PERIOD_US))
            cg._chown(owner)
        except OSError:
            cg.remove()
            raise
        return cg

    @staticmethod
    def _write(d: Path, knob: str, value: object, optional: bool = False) -> None:
        try:
            (d / knob).write_text(str(value))
        except OSError:
            if not optional:
                raise

    def _chown(self, owner: int | None) -> None:
        """A run started as another uid (user-namespace mode under root) joins by itself."""
        if owner is not None:
            for d in self.dirs:
                os.chown(d / "cgroup.procs", owner, -1)

    @property
    def active(self) -> bool:
        return bool(self.dirs)

    def wrap(self, argv: list[str]) -> list[str]:
        """`argv` started inside the cgroup: a host shell moves itself in, then execs it, so
        every process of the run is born there."""
        if not self.active:
            return argv
        joins = " && ".join(f'echo $$ > "{d / "cgroup.procs"}"' for d in self.dirs)
        return ["/bin/sh", "-c", f'{joins} && exec "$@"', "edgeloop-sandbox", *argv]

    def oom_killed(self) -> bool:
        """Whether the kernel killed a process of the run for the memory limit."""
        for d in self.dirs:
            for knob in ("memory.events", "memory.oom_control"):
                try:
                    text = (d / knob).read_text()
                except OSError:
                    continue
                for line in text.splitlines():
                    k, _, v = line.partition(" ")
                    if k == "oom_kill" and v.strip().isdigit() and int(v) > 0:
                        return True
        return False

    def remove(self) -> None:
        """Kill what is left in the run's cgroup and remove it."""
        for d in self.dirs:
            for _ in range(50):
                try:
                    pids = [int(p) for p in (d / "cgroup.procs").read_text().split()]
                except OSError:
                    pids = []
                for pid in pids:
                    try:
                        os.kill(pid, 9)
                    except ProcessLookupError:
                        pass
                try:
                    d.rmdir()
                    break
                except OSError:
                    time.sleep(0.02)
        self.dirs = []

    def describe(self) -> str:
        if not self.active:
            return f"none (rlimits only): {self.why_not}" if self.why_not else "none (rlimits only)"
        return f"v{self.version}: " + ", ".join(str(d) for d in self.dirs)

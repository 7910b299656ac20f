"""Run step functions written by an LLM (or the expert library) in a confined subprocess.

The only place generated code runs. The boundary is the kernel, set up by bubblewrap (a
well-kept, small setuid-free tool that Flatpak uses for the same job) and libseccomp, not
Python: step code may well reach `os` through an object's attributes, so what it can do
with it is what the kernel allows. Each run is a fresh process that

- sees a minimal root (`sandbox_root`): the interpreter, the stdlib modules the runner
  loads, numpy, read-only; its own /proc and a minimal /dev; a scratch directory as its
  working directory and the twin's data as a read-only `/data/view.npz`; nothing else of
  the host (no /etc, no /tmp, no repository, no agent files, no API key);
- has its own network (no interface but a down loopback), pid, ipc, uts and cgroup
  namespaces, and dies with its parent;
- runs as uid/gid 65534 with no groups, no capabilities and no_new_privs. In root mode
  (the agent is root) bubblewrap makes no user namespace and the runner drops to the host's
  uid 65534; in user-namespace mode (the agent is not root) bubblewrap maps the agent's uid
  to 65534 inside a user namespace and forbids nested ones;
- is under two seccomp filters (`syscall_filter`): no sockets of any family, ptrace, mount,
  namespaces, kernel modules, BPF, keyrings, signals to other processes from the start; no
  execve and no fork once the runner is up;
- has rlimits: CPU seconds, address space, processes, open files, file size, no core; a
  cgroup of its own where the host allows one (`cgroups`: memory without swap, process
  count and one CPU for the whole run, OOM kills reported as memory_limit); and a
  wall-clock limit that kills the whole sandbox;
- runs step code with restricted builtins (no open/exec/eval/compile, an `__import__` that
  hands out only the allowed, preloaded modules) and an empty import machinery.

    >>> sb = Sandbox(SandboxLimits(wall_s=5))
    >>> res = sb.run([StepSource("double", "def double(x):\\n    return {'y': 2 * x}", ["x"], ["y"])],
    ...              given={"x": 21}, final=("y",))
    >>> res.status, res.outputs
    ('ok', {'y': 42})

Where bubblewrap or libseccomp is missing, or the platform forbids the namespaces, `run`
returns status "isolation" and runs nothing; `sandbox_available()` says why, once.
`SandboxResult.problem()` is what goes back to the Coder: the step, the exception type,
the step's line and a short sanitised message, never a traceback, file contents or stderr.
"""
from __future__ import annotations

import base64
import dataclasses
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Mapping, Sequence

from llm_agents.blueprints import sandbox_root, syscall_filter
from llm_agents.blueprints._sandbox_runner import ALLOWED_MODULES, NOBODY
from llm_agents.blueprints.cgroups import RunCgroup

ENV = {"PATH": "/sbx/bin", "LANG": "C.UTF-8", "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1",
       "MKL_NUM_THREADS": "1"}
STATUSES = ("ok", "error", "timeout", "cpu_limit", "memory_limit", "crashed", "isolation", "bad_output")
Mode = Literal["auto", "root", "userns"]
__all__ = ["ALLOWED_MODULES", "Sandbox", "SandboxLimits", "SandboxResult", "StepSource", "sandbox_available"]


@dataclass(frozen=True)
class SandboxLimits:
    wall_s: float = 10.0             # from spawn to exit, interpreter start included
    cpu_s: int = 8
    memory_bytes: int = 1 << 30      # address space of the worker
    processes: int = 32              # RLIMIT_NPROC (fork is refused by seccomp anyway)
    open_files: int = 64
    file_bytes: int = 16 << 20       # largest file (and result) the worker may write
    cpus: float = 1.0                # CPU share of the run's cgroup (where one can be made)


@dataclass(frozen=True)
class StepSource:
    """One step function: its source defines `def <name>(<inputs>)` returning {output: value}."""

    name: str
    source: str
    inputs: Sequence[str]
    outputs: Sequence[str]


_PRINTABLE = re.compile(r"[^\x20-\x7e]")
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")


def sanitised(text: Any, limit: int = 200) -> str:
    """Printable ASCII only, one line, at most `limit` characters: safe to show and to send."""
    flat = _PRINTABLE.sub("?", str(text).replace("\n", " ").replace("\t", " "))
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


@dataclass(frozen=True)
class SandboxResult:
    status: str                      # one of STATUSES
    outputs: dict[str, Any] = field(default_factory=dict)
    error: dict[str, Any] | None = None
    trace: list[dict[str, Any]] = field(default_factory=list)
    isolation: dict[str, Any] = field(default_factory=dict)
    stderr: str = ""                 # for the operator's audit, never for the Coder
    seconds: float = 0.0
    exit_code: int | None = None

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def problem(self) -> str:
        """One line on what went wrong, for feedback to the Coder (and so to an LLM endpoint).

        The step, the exception type, the step's line and a short sanitised message: no
        traceback, no stderr, nothing longer than a sentence that code could fill with data.
        """
        if self.ok:
            return ""
        e = self.error or {}
        kind = e.get("type") if isinstance(e.get("type"), str) and _IDENT.fullmatch(e["type"]) else "Error"
        step = e.get("step") if isinstance(e.get("step"), str) and _IDENT.fullmatch(e["step"]) else "?"
        line = f" line {e['line']}" if isinstance(e.get("line"), int) else ""
        return f"{self.status} in step {step}{line}: {kind}: {sanitised(e.get('message', ''))}"


class Sandbox:
    """Runs programs of step functions against an optional read-only twin view.

    `mode` is "root" when the agent runs as root, "userns" otherwise ("auto" picks).
    `run_as` (root only) starts bubblewrap as that uid in user-namespace mode: what an
    agent running as that uid gets; the tests use it to check that mode under CI's root.
    """

    def __init__(self, limits: SandboxLimits | None = None, *, python: str = sys.executable,
                 workdir: Path | None = None, mode: Mode = "auto", run_as: int | None = None,
                 root_cache: Path | None = None, bwrap: str | None = None) -> None:
        self.limits = limits or SandboxLimits()
        self.python, self.workdir, self.root_cache = python, workdir, root_cache
        if run_as is not None and os.geteuid() != 0:
            raise ValueError("run_as needs root")
        self.run_as = run_as
        self.mode: str = (("root" if _privileged() and run_as is None else "userns") if mode == "auto" else mode)
        self.bwrap = bwrap or shutil.which("bwrap") or "bwrap"

    def run(self, program: Sequence[StepSource], *, given: Mapping[str, Any] | None = None,
            view: Path | None = None, final: Sequence[str] = ("policy",),
            limits: SandboxLimits | None = None) -> SandboxResult:
        """Run the steps in order, each reading earlier outputs; return the `final` outputs."""
        lim = limits or self.limits
        try:
            root = sandbox_root.ensure_root(self.python, self.root_cache)
            filters = syscall_filter.startup_filter(), syscall_filter.steps_filter()
        except (sandbox_root.RootError, syscall_filter.SeccompUnavailable, OSError) as exc:
            return _isolation_failure(f"{type(exc).__name__}: {exc}")
        if not Path(self.bwrap).exists() and not shutil.which(self.bwrap):
            return _isolation_failure("bubblewrap (bwrap) is not installed: apt-get install bubblewrap")
        base = Path(tempfile.mkdtemp(prefix="edgeloop-sbx-", dir=self.workdir))
        try:
            req, binds = self._prepare(base, program, given or {}, view, final, lim, filters[1])
            return self._execute(base, root, binds, req, lim, filters[0])
        except OSError as exc:  # e.g. root without CAP_CHOWN, or bwrap not executable
            return _isolation_failure(f"{self.mode} mode: {type(exc).__name__}: {exc}")
        finally:
            shutil.rmtree(base, ignore_errors=True)

    def _owner(self) -> int | None:
        """Who must own the scratch directory on the host: the uid that is 65534 inside."""
        if self.run_as is not None:
            return self.run_as
        return NOBODY if self.mode == "root" else None

    def _prepare(self, base: Path, program: Sequence[StepSource], given: Mapping[str, Any],
                 view: Path | None, final: Sequence[str], lim: SandboxLimits,
                 steps_bpf: bytes) -> tuple[dict[str, Any], list[str]]:
        base.chmod(0o711)
        scratch = base / "scratch"
        scratch.mkdir(mode=0o700)
        owner = self._owner()
        if owner is not None:
            os.chown(scratch, owner, owner)
        binds = ["--bind", str(scratch), "/scratch"]
        if view is not None:
            data = base / "data"
            data.mkdir(mode=0o755)
            shutil.copyfile(view, data / "view.npz")
            (data / "view.npz").chmod(0o444)
            data.chmod(0o555)
            binds += ["--ro-bind", str(data), "/data"]
        req = {"program": [{"name": s.name, "source": s.source, "inputs": list(s.inputs),
                            "outputs": list(s.outputs)} for s in program],
               "given": dict(given), "view": "/data/view.npz" if view is not None else None,
               "scratch": "/scratch", "final": list(final), "sys_path": ["/sbx/site"],
               "steps_filter": base64.b64encode(steps_bpf).decode(),
               "limits": dataclasses.asdict(lim)}
        return req, binds

    def _command(self, root: Path, binds: Sequence[str], seccomp_fd: int) -> list[str]:
        """The bubblewrap command line for one run."""
        if self.mode == "root":
            # no user namespace: the runner is real root with only the two capabilities it
            # needs to become the host's uid 65534, and loses them doing so
            identity = ["--unshare-ipc", "--unshare-pid", "--unshare-net", "--unshare-uts", "--unshare-cgroup-try",
                        "--cap-drop", "ALL", "--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID"]
        else:
            identity = ["--unshare-all", "--unshare-user", "--uid", str(NOBODY), "--gid", str(NOBODY),
                        "--disable-userns", "--cap-drop", "ALL"]
        env: list[str] = ["--clearenv"]
        for k, v in ENV.items():
            env += ["--setenv", k, v]
        return [self.bwrap, *identity, "--die-with-parent", "--new-session", "--hostname", "sandbox",
                "--ro-bind", str(root), "/", "--proc", "/proc", "--dev", "/dev", "--remount-ro", "/dev", *binds, "--chdir", "/",
                *env, "--seccomp", str(seccomp_fd), "/sbx/bin/python3", "-I", "-S", "-B", "/sbx/runner.py"]

    def _execute(self, base: Path, root: Path, binds: list[str], req: dict[str, Any], lim: SandboxLimits,
                 startup_bpf: bytes) -> SandboxResult:
        payload = json.dumps(req, allow_nan=False).encode()
        if self.run_as is not None:
            os.chown(base, self.run_as, self.run_as)
        with tempfile.TemporaryFile(dir=base) as bpf:
            bpf.write(startup_bpf)
            bpf.flush()
            bpf.seek(0)
            t0 = time.monotonic()
            cg = RunCgroup.create(base.name, memory_bytes=lim.memory_bytes, pids=lim.processes,
                                  cpus=lim.cpus, owner=self.run_as)
            cgroup, oom = cg.describe(), False
            try:
                with open(base / "result", "wb+") as out, open(base / "stderr", "wb+") as err:
                    user = {} if self.run_as is None else {"user": self.run_as, "group": self.run_as,
                                                           "extra_groups": []}
                    proc = subprocess.Popen(cg.wrap(self._command(root, binds, bpf.fileno())), stdin=subprocess.PIPE,
                                            stdout=out, stderr=err, env={"PATH": "/usr/bin:/bin"}, cwd="/",
                                            start_new_session=True, close_fds=True, pass_fds=(bpf.fileno(),), **user)
                    timed_out = False
                    try:
                        proc.communicate(payload, timeout=lim.wall_s)
                    except subprocess.TimeoutExpired:
                        timed_out = True
                        _kill_group(proc)
                    seconds = time.monotonic() - t0
                    out.seek(0)
                    raw = out.read(lim.file_bytes + 1)
                    err.seek(0)
                    stderr = err.read(64 * 1024).decode("utf-8", "replace")
            finally:
                oom = cg.oom_killed()
                cg.remove()
        res = _result(raw, stderr, proc.returncode, timed_out, seconds)
        if oom and res.status in ("crashed", "error", "bad_output"):
            res = dataclasses.replace(res, status="memory_limit", outputs={}, error={
                "step": "?", "type": "MemoryError", "message": "killed by the run's cgroup memory limit"})
        iso = {"tool": "bubblewrap", "mode": self.mode, "host_uid": self.run_as if self.run_as is not None
               else (NOBODY if self.mode == "root" else os.geteuid()), "netns": True, "pidns": True,
               "mountns": True, "ipcns": True, "minimal_root": str(root), "cgroup": cgroup, **res.isolation}
        return SandboxResult(res.status, res.outputs, res.error, res.trace, iso, res.stderr, res.seconds,
                             res.exit_code)


CAP_CHOWN, CAP_SETGID, CAP_SETUID, CAP_SYS_ADMIN = 0, 6, 7, 21


def _privileged() -> bool:
    """Root with the capabilities root mode uses (not, say, root in a capability-less container)."""
    if os.geteuid() != 0:
        return False
    try:
        eff = int(next(line.split()[1] for line in Path("/proc/self/status").read_text().splitlines()
                       if line.startswith("CapEff:")), 16)
    except (OSError, StopIteration, ValueError):
        return False
    return all(eff >> c & 1 for c in (CAP_CHOWN, CAP_SETGID, CAP_SETUID, CAP_SYS_ADMIN))


_AVAILABLE: list[str] = []


def sandbox_available() -> tuple[bool, str]:
    """Whether this process can confine step code (checked once per process); else why not.

    With EDGELOOP_SANDBOX_SOCKET set, that is whether the sandbox service answers and confines."""
    if not _AVAILABLE:
        if not sys.platform.startswith("linux"):
            _AVAILABLE.append(f"the sandbox needs Linux namespaces, not {sys.platform}")
        else:
            from llm_agents.blueprints.sandbox_service import make_sandbox

            res = make_sandbox(limits=SandboxLimits(wall_s=20)).run(
                [StepSource("probe", "def probe():\n    return {'ok': 1}", [], ["ok"])], final=("ok",))
            why = res.problem() if res.error else f"{res.status}: {sanitised(res.stderr, 300)}"
            _AVAILABLE.append("" if res.ok else why[:300])
    return not _AVAILABLE[0], _AVAILABLE[0]


def _isolation_failure(message: str) -> SandboxResult:
    return SandboxResult("isolation", error={"step": "sandbox", "type": "IsolationError", "message": message})


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


def _result(raw: bytes, stderr: str, code: int | None, timed_out: bool, seconds: float) -> SandboxResult:
    common = {"stderr": stderr, "seconds": round(seconds, 4), "exit_code": code}
    if timed_out:
        return SandboxResult("timeout", error={"step": "?", "type": "Timeout",
                                               "message": f"killed at the wall-clock limit after {seconds:.1f} s"},
                             **common)
    try:
        doc = json.loads(raw) if raw else None
    except ValueError:
        doc = None
    if not isinstance(doc, dict):
        status = {128 + signal.SIGXCPU: "cpu_limit", -signal.SIGXCPU: "cpu_limit",
                  128 + signal.SIGKILL: "cpu_limit"}.get(code or 0, "crashed")
        if "bwrap:" in stderr and code == 1:
            return SandboxResult("isolation", error={"step": "sandbox", "type": "IsolationError",
                                                     "message": sanitised(stderr.strip().splitlines()[-1], 300)},
                                 **common)
        return SandboxResult(status, error={"step": "?", "type": "NoResult",
                                            "message": f"worker ended with code {code} and no result"}, **common)
    error = doc.get("error")
    if doc.get("ok"):
        status = "ok"
    elif error and error.get("type") == "IsolationError":
        status = "isolation"
    elif error and error.get("type") == "MemoryError":
        status = "memory_limit"
    elif error and error.get("step") == "output":
        status = "bad_output"
    else:
        status = "error"
    return SandboxResult(status, outputs=doc.get("outputs") or {}, error=error, trace=doc.get("trace") or [],
                         isolation=doc.get("isolation") or {}, **common)

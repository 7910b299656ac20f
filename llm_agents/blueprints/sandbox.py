"""Run step functions written by an LLM (or the expert library) in a confined subprocess.

The only place generated code runs. Each run is a fresh `python -I -S -B` process (no
site-packages, no environment variables, no bytecode written) that confines itself before
any step code runs (see `_sandbox_runner.py`):

- its own network namespace with loopback down: no connection to anything, 127.0.0.1 included;
- its own mount namespace with every mount read-only except a scratch directory, which is
  its working directory; the twin's data is a read-only copy (`view.npz`) it can read;
- its own pid namespace, killed as a whole at the wall-clock limit (fork bombs included);
- uid/gid nobody with no supplementary groups and no_new_privs, so file permissions apply;
- rlimits: CPU seconds, address space, processes (per uid), open files, file size, no core;
- a scrubbed environment (PATH and locale only).

    >>> sb = Sandbox(SandboxLimits(wall_s=5))
    >>> res = sb.run([StepSource("double", "def double(x):\\n    return {'y': 2 * x}", ["x"], ["y"])],
    ...              given={"x": 21}, final=("y",))
    >>> res.status, res.outputs
    ('ok', {'y': 42})

It needs root (or unprivileged user namespaces) on Linux. Where the namespaces cannot be
made, `run` refuses (status "isolation") unless the Sandbox was built with
`require_isolation=False`, and `SandboxResult.isolation` always says what was in force.
Step code may import only modules preloaded before privileges are dropped
(`ALLOWED_MODULES`: numpy and a few pure stdlib modules); others are unreadable to nobody.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from llm_agents.blueprints._sandbox_runner import ALLOWED_MODULES, NOBODY

RUNNER = Path(__file__).with_name("_sandbox_runner.py")
ENV = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1",
       "MKL_NUM_THREADS": "1"}
STATUSES = ("ok", "error", "timeout", "cpu_limit", "memory_limit", "crashed", "isolation", "bad_output")
__all__ = ["ALLOWED_MODULES", "Sandbox", "SandboxLimits", "SandboxResult", "StepSource", "sandbox_available"]


@dataclass(frozen=True)
class SandboxLimits:
    wall_s: float = 10.0             # from spawn to exit, interpreter start included
    cpu_s: int = 8
    memory_bytes: int = 1 << 30      # address space of the worker
    processes: int = 32              # RLIMIT_NPROC for uid nobody
    open_files: int = 64
    file_bytes: int = 16 << 20       # largest file (and result) the worker may write


@dataclass(frozen=True)
class StepSource:
    """One step function: its source defines `def <name>(<inputs>)` returning {output: value}."""

    name: str
    source: str
    inputs: Sequence[str]
    outputs: Sequence[str]


@dataclass(frozen=True)
class SandboxResult:
    status: str                      # one of STATUSES
    outputs: dict[str, Any] = field(default_factory=dict)
    error: dict[str, Any] | None = None
    trace: list[dict[str, Any]] = field(default_factory=list)
    isolation: dict[str, Any] = field(default_factory=dict)
    stderr: str = ""
    seconds: float = 0.0
    exit_code: int | None = None

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def problem(self) -> str:
        """One paragraph on what went wrong, for feedback to the Coder."""
        if self.ok:
            return ""
        if self.error:
            e = self.error
            return (f"{self.status} in step {e.get('step')}: {e.get('type')}: {e.get('message')}\n"
                    f"{e.get('traceback', '')}").strip()
        return f"{self.status} (exit code {self.exit_code}); stderr: {self.stderr[-800:]}"


class Sandbox:
    """Runs programs of step functions against an optional read-only twin view."""

    def __init__(self, limits: SandboxLimits | None = None, *, python: str = sys.executable,
                 require_isolation: bool = True, workdir: Path | None = None) -> None:
        self.limits = limits or SandboxLimits()
        self.python, self.require_isolation, self.workdir = python, require_isolation, workdir
        self.sys_path = [str(Path(np.__file__).resolve().parent.parent)]

    def run(self, program: Sequence[StepSource], *, given: Mapping[str, Any] | None = None,
            view: Path | None = None, final: Sequence[str] = ("policy",),
            limits: SandboxLimits | None = None) -> SandboxResult:
        """Run the steps in order, each reading earlier outputs; return the `final` outputs."""
        lim = limits or self.limits
        base = Path(tempfile.mkdtemp(prefix="edgeloop-sbx-", dir=self.workdir))
        try:
            req = self._prepare(base, program, given or {}, view, final, lim)
            return self._execute(base, req, lim)
        finally:
            shutil.rmtree(base, ignore_errors=True)

    def _prepare(self, base: Path, program: Sequence[StepSource], given: Mapping[str, Any],
                 view: Path | None, final: Sequence[str], lim: SandboxLimits) -> dict[str, Any]:
        base.chmod(0o711)
        scratch = base / "scratch"
        scratch.mkdir(mode=0o700)
        if os.geteuid() == 0:
            os.chown(scratch, NOBODY, NOBODY)
        view_copy = None
        if view is not None:
            data = base / "data"
            data.mkdir(mode=0o755)
            view_copy = data / "view.npz"
            shutil.copyfile(view, view_copy)
            view_copy.chmod(0o444)
            data.chmod(0o555)
        return {"program": [{"name": s.name, "source": s.source, "inputs": list(s.inputs),
                             "outputs": list(s.outputs)} for s in program],
                "given": dict(given), "view": str(view_copy) if view_copy else None,
                "scratch": str(scratch), "final": list(final), "sys_path": self.sys_path,
                "require_isolation": self.require_isolation,
                "limits": {"cpu_s": lim.cpu_s, "memory_bytes": lim.memory_bytes, "processes": lim.processes,
                           "open_files": lim.open_files, "file_bytes": lim.file_bytes}}

    def _execute(self, base: Path, req: dict[str, Any], lim: SandboxLimits) -> SandboxResult:
        payload = json.dumps(req, allow_nan=False).encode()
        t0 = time.monotonic()
        with open(base / "result", "wb+") as out, open(base / "stderr", "wb+") as err:
            proc = subprocess.Popen([self.python, "-I", "-S", "-B", str(RUNNER)], stdin=subprocess.PIPE,
                                    stdout=out, stderr=err, env=dict(ENV), cwd="/", start_new_session=True,
                                    close_fds=True)
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
        return _result(raw, stderr, proc.returncode, timed_out, seconds)


_AVAILABLE: list[str] = []


def sandbox_available() -> tuple[bool, str]:
    """Whether this machine can confine step code (checked once per process); else why not."""
    if not _AVAILABLE:
        if not sys.platform.startswith("linux"):
            _AVAILABLE.append(f"the sandbox needs Linux namespaces, not {sys.platform}")
        else:
            res = Sandbox(SandboxLimits(wall_s=10)).run(
                [StepSource("probe", "def probe():\n    return {'ok': 1}", [], ["ok"])], final=("ok",))
            _AVAILABLE.append("" if res.ok else res.problem()[:300])
    return not _AVAILABLE[0], _AVAILABLE[0]


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
        status = {128 + signal.SIGXCPU: "cpu_limit", 128 + signal.SIGKILL: "cpu_limit"}.get(code or 0, "crashed")
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

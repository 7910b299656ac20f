"""Processes the lab starts, and the guarantee that it stops every one of them.

Each process gets its own session (process group), so stopping it also stops whatever
it spawned (a benign client's curl, hydra's workers). Stopping is SIGTERM, a short
grace period, then SIGKILL, always by process-group id of a process this object
started; it never signals anything by name.

    >>> procs = Procs(log_dir)
    >>> procs.start("nginx", ns_argv("el-1-vic", ["nginx", ...]))
    >>> procs.stop_all()
"""
from __future__ import annotations

import contextlib
import os
import resource
import threading
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from contracts.errors import LabError


def raise_nofile(limit: int = 65536) -> None:
    """Raise this process's open-file soft limit (children inherit it): nginx and
    slowhttptest hold thousands of sockets. Done here rather than in a preexec_fn, which
    is unsafe once threads (rich's progress display) are running."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = limit if hard == resource.RLIM_INFINITY else min(limit, hard)
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))


def run(argv: Sequence[str], *, check: bool = True, timeout: float = 30.0,
        what: str = "", stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run a short command to completion; a failure becomes a LabError naming it.

    Secrets go in on ``stdin``, never in ``argv``: an argument shows in ``ps`` and in this
    error, and one that starts with a dash is read as an option."""
    try:
        cp = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout,
                            input=stdin)
    except FileNotFoundError as exc:
        raise LabError(f"{what or argv[0]}: {argv[0]} not found (run scripts/setup-lab.sh)") from exc
    except subprocess.TimeoutExpired as exc:
        raise LabError(f"{what or argv[0]}: timed out after {timeout}s: {' '.join(argv)}") from exc
    if check and cp.returncode != 0:
        raise LabError(f"{what or argv[0]}: exit {cp.returncode}: {' '.join(argv)}: "
                       f"{cp.stderr.strip()[-400:]}")
    return cp


@dataclass
class Procs:
    """The long-running processes of one lab, keyed by a unique name."""

    log_dir: Path
    running: dict[str, subprocess.Popen] = field(default_factory=dict)

    def __post_init__(self) -> None:
        raise_nofile()

    def start(self, name: str, argv: Sequence[str], *, env: dict[str, str] | None = None,
              cwd: Path | None = None) -> subprocess.Popen:
        if name in self.running and self.running[name].poll() is None:
            raise LabError(f"process {name!r} is already running")
        log = open(self.log_dir / f"{name}.log", "ab")
        try:
            proc = subprocess.Popen(
                list(argv), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                env=env, cwd=cwd, start_new_session=True)
        except FileNotFoundError as exc:
            raise LabError(f"{name}: {argv[0]} not found (run scripts/setup-lab.sh)") from exc
        finally:
            log.close()
        self.running[name] = proc
        return proc

    def alive(self, name: str) -> bool:
        proc = self.running.get(name)
        return proc is not None and proc.poll() is None

    def log(self, name: str) -> str:
        path = self.log_dir / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def wait(self, name: str, timeout: float) -> int | None:
        """Wait for a process to end by itself; on timeout stop it. Returns its exit code."""
        proc = self.running[name]
        try:
            return proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.stop(name)
            return None

    def stop(self, name: str, grace: float = 3.0, sig: int = signal.SIGTERM) -> int | None:
        proc = self.running.pop(name, None)
        if proc is None:
            return None
        if proc.poll() is None:
            _signal_group(proc.pid, sig)
            try:
                proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                _signal_group(proc.pid, signal.SIGKILL)
                proc.wait(timeout=5)
        # Children of a process that exited on its own may linger in its group.
        _signal_group(proc.pid, signal.SIGKILL)
        return proc.returncode

    def stop_all(self, grace: float = 3.0) -> None:
        for name in list(self.running):
            self.stop(name, grace=grace)


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def wait_until(predicate, timeout: float, interval: float = 0.1) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()


@contextlib.contextmanager
def terminate_raises():
    """Turn SIGTERM/SIGHUP into an exception for the duration, so `finally` blocks (the
    lab's teardown) run when a CI job or `timeout` stops the process."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        raise LabError(f"terminated by signal {signal.Signals(signum).name}")
    old = {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for sig, h in old.items():
            signal.signal(sig, h)

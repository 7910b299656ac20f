"""The sandbox as a separate service, so the agent itself needs no namespaces.

The agent holds the LLM API key and talks to the network; the sandbox needs to create user,
mount, network and pid namespaces. Giving one process both is more than either needs. So
in the shipped deployments the agent keeps `RestrictNamespaces=yes` (systemd) or
RuntimeDefault seccomp (Kubernetes) and sends each program over a Unix socket to
`edgeloop sandbox serve`, which runs under its own unit or container: no network at all,
no agent files, its own uid, allowed the namespaces and nothing else. The program still
runs inside bubblewrap and both seccomp filters there (llm_agents.blueprints.sandbox).

    server:  edgeloop sandbox serve --socket /run/edgeloop-sandbox/sandbox.sock --group edgeloop
    agent:   EDGELOOP_SANDBOX_SOCKET=/run/edgeloop-sandbox/sandbox.sock edgeloop agent

Protocol, one request per connection, each message a 4-byte big-endian length and JSON:
the client sends the header (program, given, final, limits, view_bytes); the service answers
`{"accepted": true}` or, refusing, the result at once; then the client sends view_bytes raw
bytes of the twin's view (.npz) and the service answers the SandboxResult. The service clamps
every limit to its own maxima, refuses headers over 8 MiB and views over --max-view-mb,
and logs each client's uid (SO_PEERCRED). Who may connect is the socket's mode and group.
"""
from __future__ import annotations

import dataclasses
import grp
import json
import logging
import os
import socket
import socketserver
import struct
import tempfile
import threading
from pathlib import Path
from typing import Any, Mapping, Sequence

from llm_agents.blueprints.sandbox import Sandbox, SandboxLimits, SandboxResult, StepSource

log = logging.getLogger("edgeloop.sandbox")
MAX_HEADER = 8 << 20
_LEN = struct.Struct(">I")


def _send(sock: socket.socket, payload: bytes) -> None:
    sock.sendall(_LEN.pack(len(payload)) + payload)


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    chunks, got = [], 0
    while got < n:
        chunk = sock.recv(min(1 << 20, n - got))
        if not chunk:
            raise ConnectionError(f"connection closed after {got} of {n} bytes")
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


def _recv(sock: socket.socket, limit: int) -> bytes:
    (n,) = _LEN.unpack(_recv_exact(sock, _LEN.size))
    if n > limit:
        raise ValueError(f"message of {n} bytes is over the limit of {limit}")
    return _recv_exact(sock, n)


def _result_from(doc: Mapping[str, Any]) -> SandboxResult:
    names = {f.name for f in dataclasses.fields(SandboxResult)}
    return SandboxResult(**{k: v for k, v in doc.items() if k in names})


class SandboxClient:
    """Sandbox.run, on the far side of a Unix socket (same arguments, same result)."""

    def __init__(self, socket_path: str | Path, limits: SandboxLimits | None = None, *,
                 connect_timeout_s: float = 5.0) -> None:
        self.socket_path, self.limits = str(socket_path), limits or SandboxLimits()
        self.connect_timeout_s = connect_timeout_s
        self.mode = "service"

    def run(self, program: Sequence[StepSource], *, given: Mapping[str, Any] | None = None,
            view: Path | None = None, final: Sequence[str] = ("policy",),
            limits: SandboxLimits | None = None) -> SandboxResult:
        lim = limits or self.limits
        data = Path(view).read_bytes() if view is not None else b""
        header = {"program": [{"name": s.name, "source": s.source, "inputs": list(s.inputs),
                               "outputs": list(s.outputs)} for s in program],
                  "given": dict(given or {}), "final": list(final), "limits": dataclasses.asdict(lim),
                  "view_bytes": len(data) if view is not None else None}
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                sock.settimeout(self.connect_timeout_s)
                sock.connect(self.socket_path)
                sock.settimeout(lim.wall_s + 30)
                _send(sock, json.dumps(header, allow_nan=False).encode())
                answer = json.loads(_recv(sock, 64 << 20))
                if answer.get("accepted") is True:  # the view is sent only once the service takes it
                    if data:
                        sock.sendall(data)
                    answer = json.loads(_recv(sock, 64 << 20))
                return _result_from(answer)
        except (OSError, ValueError, ConnectionError) as exc:
            return SandboxResult("isolation", error={"step": "sandbox", "type": "IsolationError",
                                                     "message": f"the sandbox service at {self.socket_path} "
                                                                f"did not answer: {exc}"})


def make_sandbox(socket_path: str | None = None, limits: SandboxLimits | None = None) -> Sandbox | SandboxClient:
    """The sandbox this process should use: the service when a socket is configured
    (argument, else EDGELOOP_SANDBOX_SOCKET), else a local bubblewrap sandbox."""
    path = socket_path if socket_path is not None else os.environ.get("EDGELOOP_SANDBOX_SOCKET", "")
    return SandboxClient(path, limits) if path else Sandbox(limits)


def _clamp(asked: Mapping[str, Any], most: SandboxLimits) -> SandboxLimits:
    out = {}
    for f in dataclasses.fields(SandboxLimits):
        cap = getattr(most, f.name)
        try:
            v = type(cap)(asked.get(f.name, cap))
        except (TypeError, ValueError):
            v = cap
        out[f.name] = min(max(v, type(cap)(1)), cap)
    return SandboxLimits(**out)


class _Handler(socketserver.BaseRequestHandler):
    server: "SandboxServer"

    def handle(self) -> None:
        sock: socket.socket = self.request
        sock.settimeout(30)
        try:
            uid = struct.unpack("3i", sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12))[1]
        except OSError:
            uid = -1
        try:
            with self.server.slots:
                res = self._run(sock)
        except (OSError, ValueError, ConnectionError, KeyError, TypeError) as exc:
            res = SandboxResult("error", error={"step": "request", "type": type(exc).__name__,
                                                "message": str(exc)[:300]})
        log.info("sandbox run for uid %s: %s in %.3f s", uid, res.status, res.seconds)
        self.server.runs += 1
        try:
            _send(sock, json.dumps(dataclasses.asdict(res), allow_nan=False, default=str).encode())
        except OSError as exc:
            log.warning("could not answer uid %s: %s", uid, exc)

    def _run(self, sock: socket.socket) -> SandboxResult:
        req = json.loads(_recv(sock, MAX_HEADER))
        program = [StepSource(str(s["name"]), str(s["source"]), [str(x) for x in s["inputs"]],
                              [str(x) for x in s["outputs"]]) for s in req["program"]]
        size = req.get("view_bytes")
        if size is not None and (not isinstance(size, int) or size < 0 or size > self.server.max_view_bytes):
            raise ValueError(f"a view of {size} bytes is over the limit of {self.server.max_view_bytes}")
        _send(sock, b'{"accepted": true}')
        with tempfile.TemporaryDirectory(prefix="edgeloop-sbx-view-") as tmp:
            view = None
            if size is not None:
                view = Path(tmp) / "view.npz"
                sock.settimeout(60)
                view.write_bytes(_recv_exact(sock, size))
            return self.server.sandbox.run(program, given=req.get("given") or {}, view=view,
                                           final=[str(x) for x in req.get("final", ["policy"])],
                                           limits=_clamp(req.get("limits") or {}, self.server.sandbox.limits))


class SandboxServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    """`edgeloop sandbox serve`: runs programs from local clients, `parallel` at a time."""

    daemon_threads = True

    def __init__(self, socket_path: str | Path, sandbox: Sandbox, *, group: str | None = None, mode: int = 0o660,
                 parallel: int = 2, max_view_bytes: int = 256 << 20) -> None:
        path = Path(socket_path)
        if path.is_socket():
            path.unlink()  # a stale socket of a previous run
        super().__init__(str(path), _Handler)
        if group:
            os.chown(path, -1, int(group) if group.isdigit() else grp.getgrnam(group).gr_gid)
        path.chmod(mode)
        self.sandbox, self.max_view_bytes = sandbox, max_view_bytes
        self.slots = threading.BoundedSemaphore(parallel)
        self.runs = 0

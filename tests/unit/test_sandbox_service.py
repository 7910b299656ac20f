"""The sandbox service: a program sent over the Unix socket runs in the sandbox; limits are clamped."""
from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest

from llm_agents.blueprints.sandbox import Sandbox, SandboxLimits, StepSource, sandbox_available
from llm_agents.blueprints.sandbox_service import SandboxClient, SandboxServer, _clamp, make_sandbox

_OK, _WHY = sandbox_available()
pytestmark = pytest.mark.skipif(not _OK, reason=f"the sandbox cannot confine code here: {_WHY}")


@pytest.fixture
def service(tmp_path: Path):
    server = SandboxServer(tmp_path / "s.sock", Sandbox(SandboxLimits(wall_s=5, memory_bytes=512 << 20)),
                           max_view_bytes=1 << 20)
    t = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
    t.start()
    yield tmp_path / "s.sock", server
    server.shutdown()
    server.server_close()


def test_a_program_and_its_view_run_in_the_sandbox_behind_the_socket(service, tmp_path):
    sock, server = service
    view = tmp_path / "view.npz"
    np.savez(view, packets=np.array([3, 4]), w_key=np.array(["10.0.0.1"]))
    res = SandboxClient(sock).run([StepSource("f", "def f(flows, x):\n    return {'y': int(flows['packets'].sum()) + x}",
                                              ["flows", "x"], ["y"])], given={"x": 1}, view=view, final=("y",))
    assert res.ok, res.problem()
    assert res.outputs == {"y": 8} and res.isolation["uid"] == 65534 and res.isolation["seccomp_filters"] == 2
    bad = SandboxClient(sock).run([StepSource("f", "def f():\n    return {'y': 1 / 0}", [], ["y"])], final=("y",))
    assert bad.status == "error" and bad.error["type"] == "ZeroDivisionError"
    assert server.runs == 2


def test_the_service_clamps_limits_and_refuses_oversized_views(service, tmp_path):
    sock, _ = service
    greedy = SandboxLimits(wall_s=600, memory_bytes=64 << 30)
    res = SandboxClient(sock, greedy).run([StepSource("f", "def f():\n    return {'y': len(bytearray(1 << 30))}",
                                                      [], ["y"])], final=("y",))
    assert res.status == "memory_limit"  # 1 GiB is over the service's 512 MiB whatever the client asked
    assert _clamp({"wall_s": 600, "cpu_s": "x", "processes": -5}, SandboxLimits(wall_s=5)) == \
        SandboxLimits(wall_s=5, processes=1)
    big = tmp_path / "big.npz"
    np.savez(big, a=np.random.default_rng(0).random(300_000))  # ~2.4 MB > the 1 MiB limit
    res = SandboxClient(sock).run([StepSource("f", "def f():\n    return {'y': 1}", [], ["y"])], view=big, final=("y",))
    assert res.status == "error" and "over the limit" in res.error["message"]


def test_an_unreachable_service_is_an_isolation_failure_that_names_the_socket(tmp_path, monkeypatch):
    res = SandboxClient(tmp_path / "none.sock").run([StepSource("f", "def f():\n    return {'y': 1}", [], ["y"])],
                                                    final=("y",))
    assert res.status == "isolation" and "none.sock" in res.problem()
    monkeypatch.setenv("EDGELOOP_SANDBOX_SOCKET", str(tmp_path / "x.sock"))
    assert isinstance(make_sandbox(), SandboxClient)
    monkeypatch.delenv("EDGELOOP_SANDBOX_SOCKET")
    assert isinstance(make_sandbox(), Sandbox)

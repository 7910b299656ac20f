"""The sandbox holds its limits: time, processes, network, file system, memory, environment."""
from __future__ import annotations

import socket
import time
import uuid
from pathlib import Path

import numpy as np
import pytest

from llm_agents.blueprints.sandbox import Sandbox, SandboxLimits, StepSource, sandbox_available

FAST = SandboxLimits(wall_s=3, cpu_s=3)
_OK, _WHY = sandbox_available()
pytestmark = pytest.mark.skipif(not _OK, reason=f"the sandbox cannot confine code here: {_WHY}")


def run(src: str, inputs=(), given=None, limits=FAST, **kw):
    return Sandbox(limits).run([StepSource("f", src, list(inputs), ["y"])], given=given or {}, final=("y",), **kw)


def nobody_processes() -> int:
    n = 0
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                if (d / "status").read_text().split("Uid:")[1].split()[0] == "65534":
                    n += 1
            except (OSError, IndexError):
                continue
    return n


def test_a_good_function_returns_its_result_as_nobody_with_a_scrubbed_environment():
    res = run("import os\nimport numpy as np\n"
              "def f(x):\n    return {'y': {'sum': np.arange(x).sum(), 'uid': os.getuid(), 'env': sorted(os.environ)}}",
              inputs=["x"], given={"x": 5})
    assert res.status == "ok", res.problem()
    assert res.outputs["y"] == {"sum": 10, "uid": 65534,
                                "env": ["LANG", "MKL_NUM_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "PATH"]}
    assert res.isolation["netns"] and res.isolation["readonly_fs"] and res.isolation["pidns"]


def test_an_infinite_loop_is_killed_at_the_wall_clock_limit():
    t0 = time.monotonic()
    res = run("def f():\n    while True:\n        pass", limits=SandboxLimits(wall_s=1.5, cpu_s=30))
    assert res.status == "timeout"
    assert time.monotonic() - t0 < 5


def test_cpu_limit_holds_when_the_wall_limit_is_generous():
    res = run("def f():\n    while True:\n        pass", limits=SandboxLimits(wall_s=20, cpu_s=1))
    assert res.status == "cpu_limit" and res.seconds < 10


def test_a_fork_bomb_is_contained_and_leaves_nothing_behind():
    before = nobody_processes()
    src = ("import os\n"
           "def f():\n"
           "    n = 0\n"
           "    while True:\n"
           "        try:\n"
           "            if os.fork() == 0:\n"
           "                os.setsid()\n"  # tries to escape the process group
           "            n += 1\n"
           "        except OSError:\n"
           "            pass\n")
    res = run(src, limits=SandboxLimits(wall_s=2, cpu_s=5, processes=16))
    assert res.status in ("timeout", "cpu_limit", "crashed")
    deadline = time.monotonic() + 5
    while nobody_processes() > before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert nobody_processes() <= before


def test_the_process_limit_refuses_forks():
    src = ("import os\n"
           "def f():\n"
           "    kids = []\n"
           "    try:\n"
           "        for _ in range(50):\n"
           "            pid = os.fork()\n"
           "            if pid == 0:\n"
           "                import time\n"
           "                while True:\n"
           "                    pass\n"
           "            kids.append(pid)\n"
           "    except OSError as exc:\n"
           "        return {'y': ['refused', len(kids), exc.errno]}\n"
           "    return {'y': ['forked all', len(kids), 0]}\n")
    res = run(src, limits=SandboxLimits(wall_s=5, cpu_s=5, processes=8))
    assert res.status == "ok", res.problem()
    verdict, forked, _ = res.outputs["y"]
    assert verdict == "refused" and forked < 8


def test_a_network_call_fails_even_to_a_listening_loopback_port():
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    server.settimeout(0.2)
    port = server.getsockname()[1]
    try:
        res = run(f"import socket\ndef f():\n    socket.create_connection(('127.0.0.1', {port}), timeout=2)\n"
                  "    return {'y': 'connected'}")
        assert res.status == "error"
        assert res.error["type"] == "OSError" and "unreachable" in res.error["message"].lower()
        with pytest.raises(socket.timeout):
            server.accept()  # nothing ever arrived
    finally:
        server.close()


@pytest.mark.parametrize("target", ["/tmp/edgeloop-sbx-escape-{}", "{repo}/escape-{}", "/dev/shm/escape-{}"])
def test_a_write_outside_the_scratch_directory_fails(target):
    path = target.format(uuid.uuid4().hex, repo=Path(__file__).resolve().parents[2])
    res = run(f"def f():\n    open({path!r}, 'w').write('x')\n    return {{'y': 'written'}}")
    assert res.status == "error"
    assert res.error["type"] in ("OSError", "PermissionError")
    assert not Path(path).exists()


def test_the_scratch_directory_is_writable_and_private_to_the_run():
    res = run("import os\ndef f():\n    open('notes.txt', 'w').write('kept')\n"
              "    return {'y': [open('notes.txt').read(), os.listdir('.')]}")
    assert res.outputs["y"] == ["kept", ["notes.txt"]]


def test_the_twin_view_is_readable_but_not_writable(tmp_path):
    view = tmp_path / "view.npz"
    np.savez(view, src_ip=np.array(["10.0.0.1", "10.0.0.2"]), packets=np.array([3, 4]), w_key=np.array(["10.0.0.1"]))
    res = run("def f(flows, windows):\n"
              "    try:\n"
              "        flows['packets'][0] = 99\n"
              "        mutable = True\n"
              "    except ValueError:\n"
              "        mutable = False\n"
              "    try:\n"
              "        open('../data/view.npz', 'wb').write(b'x')\n"
              "        overwritten = True\n"
              "    except OSError:\n"
              "        overwritten = False\n"
              "    return {'y': [int(flows['packets'].sum()), list(windows['key']), mutable, overwritten]}",
              inputs=["flows", "windows"], view=view)
    assert res.status == "ok", res.problem()
    assert res.outputs["y"] == [7, ["10.0.0.1"], False, False]


def test_memory_is_limited():
    res = run("def f():\n    block = bytearray(3 << 30)\n    return {'y': len(block)}",
              limits=SandboxLimits(wall_s=5, memory_bytes=1 << 30))
    assert res.status == "memory_limit"


def test_modules_outside_the_allowed_set_cannot_be_imported():
    res = run("def f():\n    import subprocess\n    return {'y': 1}")
    assert res.status == "error" and res.error["type"] in ("ModuleNotFoundError", "ImportError", "PermissionError")


def test_errors_and_bad_outputs_are_reported_as_data():
    res = Sandbox(FAST).run([StepSource("a", "def a():\n    return {'v': 2}", [], ["v"]),
                             StepSource("b", "def b(v):\n    return {'w': 1 / (v - 2)}", ["v"], ["w"])], final=("w",))
    assert res.status == "error" and res.error["step"] == "b" and res.error["type"] == "ZeroDivisionError"
    assert [t["step"] for t in res.trace] == ["a"]
    res = run("def f():\n    return {'y': object()}")
    assert res.status == "bad_output"
    res = run("def f():\n    return {'z': 1}")
    assert res.status == "error" and "did not return outputs ['y']" in res.error["message"]

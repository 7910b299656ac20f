"""The sandbox's own contract: results, limits, restricted builtins, what goes back to the Coder.

The escape attempts (network, files, exec, fork, ptrace, signals, imports through the object
graph) are in tests/security/test_sandbox_escape.py, in both modes.
"""
from __future__ import annotations

import time

import numpy as np
import pytest

from llm_agents.blueprints.sandbox import Sandbox, SandboxLimits, SandboxResult, StepSource, sandbox_available

FAST = SandboxLimits(wall_s=3, cpu_s=3)
_OK, _WHY = sandbox_available()
pytestmark = pytest.mark.skipif(not _OK, reason=f"the sandbox cannot confine code here: {_WHY}")


def run(src: str, inputs=(), given=None, limits=FAST, **kw):
    return Sandbox(limits).run([StepSource("f", src, list(inputs), ["y"])], given=given or {}, final=("y",), **kw)


def test_a_good_function_returns_its_result_as_nobody_under_two_filters_with_no_capabilities():
    res = run("from __future__ import annotations\nimport numpy as np\n"
              "def f(x):\n    return {'y': np.arange(x).sum()}", inputs=["x"], given={"x": 5})
    assert res.status == "ok", res.problem()
    assert res.outputs["y"] == 10
    iso = res.isolation
    assert (iso["uid"], iso["gid"], iso["groups"]) == (65534, 65534, "")
    assert iso["cap_eff"] == iso["cap_prm"] == "0000000000000000"
    assert iso["no_new_privs"] == 1 and iso["seccomp_filters"] == 2
    assert iso["tool"] == "bubblewrap" and iso["netns"] and iso["pidns"] and iso["pid"] == 2


def test_an_infinite_loop_is_killed_at_the_wall_clock_limit():
    t0 = time.monotonic()
    res = run("def f():\n    while True:\n        pass", limits=SandboxLimits(wall_s=1.5, cpu_s=30))
    assert res.status == "timeout"
    assert time.monotonic() - t0 < 5


def test_cpu_limit_holds_when_the_wall_limit_is_generous():
    res = run("def f():\n    while True:\n        pass", limits=SandboxLimits(wall_s=20, cpu_s=1))
    assert res.status == "cpu_limit" and res.seconds < 10


def test_step_builtins_have_no_open_eval_exec_or_foreign_imports():
    res = run("def f():\n"
              "    out = {}\n"
              "    for name in ('open', 'eval', 'exec', 'compile', 'globals', 'vars', 'input', 'breakpoint'):\n"
              "        out[name] = 'present' if name in __builtins__ else 'missing'\n"
              "    try:\n"
              "        getattr(1, '__class__')\n"
              "        out['dunder getattr'] = 'allowed'\n"
              "    except AttributeError:\n"
              "        out['dunder getattr'] = 'refused'\n"
              "    import math, ipaddress\n"
              "    out['math'] = math.sqrt(16)\n"
              "    return {'y': out}")
    assert res.status == "ok", res.problem()
    out = res.outputs["y"]
    assert [out[k] for k in ("open", "eval", "exec", "compile", "globals", "vars", "input", "breakpoint")] == \
        ["missing"] * 8
    assert out["dunder getattr"] == "refused"
    assert out["math"] == 4.0
    res = run("def f():\n    import os\n    return {'y': 1}")
    assert res.status == "error" and res.error["type"] == "ImportError" and "not allowed" in res.error["message"]
    res = run("def f():\n    from . import x\n    return {'y': 1}")
    assert res.status == "error" and res.error["type"] == "ImportError"


def test_the_coder_gets_one_sanitised_line_and_never_the_traceback_or_stderr():
    res = SandboxResult("error", error={"step": "measure", "type": "ValueError", "line": 7,
                                        "message": "bad\n\x1b[31mred\x1b[0m " + "x" * 500,
                                        "traceback": "Traceback (most recent call last): secret"},
                        stderr="root:x:0:0:root:/root:/bin/bash")
    p = res.problem()
    assert p.startswith("error in step measure line 7: ValueError: bad ?[31mred?[0m xxx")
    assert len(p) < 260 and "\n" not in p and "\x1b" not in p
    assert "Traceback" not in p and "root:x" not in p
    odd = SandboxResult("error", error={"step": "a b", "type": "Value Error<script>", "message": "m"}).problem()
    assert odd == "error in step ?: Error: m"


def test_a_missing_bubblewrap_refuses_to_run_and_says_why():
    res = Sandbox(FAST, bwrap="/nonexistent/bwrap").run([StepSource("f", "def f():\n    return {'y': 1}", [], ["y"])],
                                                         final=("y",))
    assert res.status == "isolation" and "bubblewrap" in res.problem()


def test_the_scratch_directory_is_private_to_the_run():
    src = ("def f():\n"
           "    os = [c for c in ().__class__.__mro__[1].__subclasses__() if c.__name__ == '_wrap_close'][0]"
           ".__init__.__globals__['sys'].modules['os']\n"
           "    before = os.listdir('/scratch')\n"
           "    fd = os.open('/scratch/notes.txt', os.O_WRONLY | os.O_CREAT)\n"
           "    os.write(fd, b'kept')\n"
           "    return {'y': [before, os.listdir('/scratch'), os.getcwd()]}")
    first, second = run(src), run(src)
    assert first.outputs["y"] == [[], ["notes.txt"], "/scratch"]
    assert second.outputs["y"][0] == []  # nothing left by the first run


def test_the_twin_view_is_readable_but_not_writable(tmp_path):
    view = tmp_path / "view.npz"
    np.savez(view, src_ip=np.array(["10.0.0.1", "10.0.0.2"]), packets=np.array([3, 4]), w_key=np.array(["10.0.0.1"]))
    res = run("def f(flows, windows):\n"
              "    try:\n"
              "        flows['packets'][0] = 99\n"
              "        mutable = True\n"
              "    except ValueError:\n"
              "        mutable = False\n"
              "    return {'y': [int(flows['packets'].sum()), list(windows['key']), mutable]}",
              inputs=["flows", "windows"], view=view)
    assert res.status == "ok", res.problem()
    assert res.outputs["y"] == [7, ["10.0.0.1"], False]


def test_memory_is_limited():
    res = run("def f():\n    block = bytearray(3 << 30)\n    return {'y': len(block)}",
              limits=SandboxLimits(wall_s=5, memory_bytes=1 << 30))
    assert res.status == "memory_limit"


def test_errors_and_bad_outputs_are_reported_as_data():
    res = Sandbox(FAST).run([StepSource("a", "def a():\n    return {'v': 2}", [], ["v"]),
                             StepSource("b", "def b(v):\n    return {'w': 1 / (v - 2)}", ["v"], ["w"])], final=("w",))
    assert res.status == "error" and res.error["step"] == "b" and res.error["type"] == "ZeroDivisionError"
    assert [t["step"] for t in res.trace] == ["a"]
    res = run("def f():\n    return {'y': object()}")
    assert res.status == "bad_output"
    res = run("def f():\n    return {'z': 1}")
    assert res.status == "error" and "did not return outputs ['y']" in res.error["message"]

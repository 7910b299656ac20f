"""The escape suite: step code that tries to get out of the blueprint sandbox, and stays in.

Each case is code an LLM could write. It does not go through the Coder's source check: it
reaches `os`, `sys` and the runner's own `ctypes` through `().__class__.__mro__` and frame
globals, as real escape code would, so what holds it is the kernel (bubblewrap's
namespaces and minimal root, the seccomp filters, uid 65534, rlimits), not Python.

Every case runs in both modes: root (CI runs as root: bubblewrap without a user namespace,
the runner drops to the host's uid 65534) and user namespace (bubblewrap started as an
unprivileged uid, 4242 under CI's root, as an agent running as that uid would). A case that
cannot run fails; nothing here skips. The verdicts are printed at the end of the run.
"""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from llm_agents.blueprints.sandbox import Sandbox, SandboxLimits, StepSource

REPO = Path(__file__).resolve().parents[2]
USERNS_UID = 4242
LIMITS = SandboxLimits(wall_s=8, cpu_s=6)
NS = f"el-sec{os.getpid() % 10000}"
HOST_IF, HOST_IP, NS_IP = f"els{os.getpid() % 10000}h", "10.78.11.1", "10.78.11.2"

# What escape code does first: find os, sys and a ctypes module without importing anything.
POWERS = '''
def _powers():
    g = None
    for c in ().__class__.__mro__[1].__subclasses__():
        if c.__name__ == "_wrap_close":
            g = c.__init__.__globals__
            break
    sys = g["sys"]
    os = sys.modules["os"]
    ctypes, f = None, sys._getframe()
    while f is not None:
        if "ctypes" in f.f_globals:
            ctypes = f.f_globals["ctypes"]
            break
        f = f.f_back
    return os, sys, ctypes, g["__builtins__"]


def _try(fn):
    try:
        return ["done", repr(fn())[:200]]
    except BaseException as e:
        return ["refused", type(e).__name__ + ": " + str(e)[:160]]


def _c(ctypes, libc, name, *args):
    r = getattr(libc, name)(*args)
    return ["refused", ctypes.get_errno()] if r == -1 else ["done", r]


def _sockaddr_in(ctypes, ip, port):
    a = [int(x) for x in ip.split(".")]
    return ctypes.create_string_buffer(bytes([2, 0, port >> 8, port & 255] + a + [0] * 8), 16)


def _net(ctypes, libc, kind, ip, port):
    fd = libc.socket(2, kind, 0)
    if fd < 0:
        return ["refused", "socket errno %d" % ctypes.get_errno()]
    sa = _sockaddr_in(ctypes, ip, port)
    if kind == 1:
        r = libc.connect(fd, sa, 16)
        return ["refused", "connect errno %d" % ctypes.get_errno()] if r < 0 else ["done", "connected"]
    r = libc.sendto(fd, b"escaped", 7, 0, sa, 16)
    return ["refused", "sendto errno %d" % ctypes.get_errno()] if r < 0 else ["done", "sent"]
'''


def case(body: str) -> str:
    return POWERS + "\n\ndef f():\n    os, sys, ctypes, B = _powers()\n    libc = ctypes.CDLL(None, use_errno=True)\n" + \
        "\n".join("    " + line for line in body.strip("\n").splitlines()) + "\n"


def sandbox_for(mode: str) -> Sandbox:
    if not shutil.which("bwrap"):
        pytest.fail("bubblewrap is not installed: the sandbox cannot be tested (make setup installs it)")
    if mode == "root":
        if os.geteuid() != 0:
            pytest.fail("root mode needs the suite to run as root (CI does)")
        return Sandbox(LIMITS, mode="root")
    return Sandbox(LIMITS, run_as=USERNS_UID) if os.geteuid() == 0 else Sandbox(LIMITS, mode="userns")


def run(mode: str, body: str, limits: SandboxLimits = LIMITS, *, raw: bool = False):
    src = body if raw else case(body)
    res = sandbox_for(mode).run([StepSource("f", src, [], ["y"])], final=("y",), limits=limits)
    if res.status == "isolation":
        pytest.fail(f"the sandbox did not start: {res.problem()} / {res.stderr[-300:]}")
    return res


def record(verdicts: list, mode: str, name: str, contained: bool, detail: str) -> None:
    verdicts.append((name, mode, "contained" if contained else "ESCAPED", detail[:110]))
    assert contained, f"{name} ({mode}) escaped: {detail}"


def sandbox_processes() -> list[int]:
    """Live processes of the sandbox uids or of bubblewrap, on the whole host."""
    pids = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                status = (d / "status").read_text()
                uid = int(status.split("Uid:")[1].split()[0])
            except (OSError, IndexError, ValueError):
                continue
            if "State:\tZ" in status:  # exited, waiting for the host's init to reap it: nothing runs
                continue
            if uid in (65534, USERNS_UID) or (d / "comm").read_text().strip() == "bwrap":
                pids.append(int(d.name))
    return pids


MODES = pytest.mark.parametrize("mode", ["root", "userns"])


class Listener:
    """TCP and UDP listeners that count whatever reaches them."""

    def __init__(self, ip: str, netns: str | None = None) -> None:
        self.ip, self.netns, self.got = ip, netns, []
        if netns is None:
            self.tcp, self.udp = socket.socket(), socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            self.tcp.bind((ip, 0))
            self.tcp.listen(4)
            self.udp.bind((ip, 0))
            self.port, self.uport = self.tcp.getsockname()[1], self.udp.getsockname()[1]
            for s in (self.tcp, self.udp):
                s.settimeout(0.3)

    def received(self) -> int:
        n = 0
        for s, op in ((self.tcp, "accept"), (self.udp, "recv")):
            try:
                getattr(s, op)(*(() if op == "accept" else (64,)))
                n += 1
            except OSError:
                pass
        return n

    def close(self) -> None:
        self.tcp.close()
        self.udp.close()


@pytest.fixture(scope="module")
def lab_ns():
    """A network namespace of the test's own with a TCP and a UDP listener counting arrivals."""
    if os.geteuid() != 0 or not shutil.which("ip"):
        pytest.fail("the lab-namespace cases need root and iproute2 (CI has both)")
    sh = lambda *c, check=True: subprocess.run(c, check=check, capture_output=True, text=True, timeout=20)  # noqa: E731
    log = Path(f"/tmp/{NS}-arrivals")
    log.unlink(missing_ok=True)
    server = None
    try:
        sh("ip", "netns", "add", NS)
        sh("ip", "link", "add", HOST_IF, "type", "veth", "peer", "name", "elstmp", "netns", NS)
        sh("ip", "-n", NS, "link", "set", "elstmp", "name", "eth0")
        sh("ip", "addr", "add", f"{HOST_IP}/30", "dev", HOST_IF)
        sh("ip", "link", "set", HOST_IF, "up")
        sh("ip", "-n", NS, "addr", "add", f"{NS_IP}/30", "dev", "eth0")
        sh("ip", "-n", NS, "link", "set", "eth0", "up")
        code = ("import socket,select\n"
                f"t=socket.socket();t.bind(('{NS_IP}',9000));t.listen(4)\n"
                f"u=socket.socket(2,2);u.bind(('{NS_IP}',9001))\n"
                f"open('{log}','w').write('ready\\n')\n"
                "while True:\n"
                "    r,_,_=select.select([t,u],[],[],120)\n"  # bounded: exits after 120 s of quiet
                "    if not r: break\n"
                "    for s in r:\n"
                "        (s.accept() if s is t else s.recv(64))\n"
                f"        open('{log}','a').write('arrival\\n')\n")
        server = subprocess.Popen(["ip", "netns", "exec", NS, sys.executable, "-c", code])
        deadline = time.monotonic() + 10
        while not (log.exists() and "ready" in log.read_text()):
            assert time.monotonic() < deadline and server.poll() is None, "the namespace listener did not start"
            time.sleep(0.05)
        with socket.create_connection((NS_IP, 9000), timeout=2):  # the host itself can reach it
            pass
        time.sleep(0.2)
        yield log
    finally:
        if server:
            server.kill()
            server.wait(5)
        sh("ip", "link", "del", HOST_IF, check=False)
        sh("ip", "netns", "del", NS, check=False)
        log.unlink(missing_ok=True)


@MODES
def test_af_unix_connect_to_a_socket_outside(mode, tmp_path, verdicts):
    d = Path(f"/tmp/el-sec-{uuid.uuid4().hex[:8]}")
    d.mkdir(mode=0o777)
    d.chmod(0o777)
    path, abstract = d / "agent.sock", f"\0edgeloop-sec-{uuid.uuid4().hex[:8]}"
    servers = []
    for addr in (str(path), abstract):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.bind(addr)
        s.listen(2)
        s.settimeout(0.3)
        servers.append(s)
    os.chmod(path, 0o777)
    try:
        res = run(mode, f"""
out = {{}}
fd = libc.socket(1, 1, 0)
out["socket"] = ["refused", ctypes.get_errno()] if fd < 0 else ["done", fd]
for name, addr in (("path", {str(path).encode()!r}), ("abstract", {abstract.encode()!r})):
    if fd >= 0:
        sa = ctypes.create_string_buffer(b"\\x01\\x00" + addr, 110)
        out[name] = _c(ctypes, libc, "connect", fd, sa, 110)
out["visible"] = os.path.exists({str(path)!r})
return {{"y": out}}""")
        out = res.outputs.get("y", {})
        arrivals = 0
        for s in servers:
            try:
                s.accept()
                arrivals += 1
            except OSError:
                pass
        record(verdicts, mode, "AF_UNIX connect (path and abstract)",
               res.ok and out["socket"][0] == "refused" and not out["visible"] and arrivals == 0,
               f"{out} arrivals={arrivals}")
    finally:
        for s in servers:
            s.close()
        shutil.rmtree(d, ignore_errors=True)


@MODES
def test_tcp_and_udp_to_loopback(mode, verdicts):
    lis = Listener("127.0.0.1")
    try:
        res = run(mode, f"""
return {{"y": {{"tcp": _net(ctypes, libc, 1, "127.0.0.1", {lis.port}),
               "udp": _net(ctypes, libc, 2, "127.0.0.1", {lis.uport})}}}}""")
        out, got = res.outputs.get("y", {}), lis.received()
        record(verdicts, mode, "TCP and UDP to loopback",
               res.ok and out["tcp"][0] == out["udp"][0] == "refused" and got == 0, f"{out} arrivals={got}")
    finally:
        lis.close()


@MODES
def test_tcp_and_udp_to_a_lab_namespace(mode, lab_ns, verdicts):
    before = lab_ns.read_text().count("arrival")
    res = run(mode, f"""
return {{"y": {{"tcp": _net(ctypes, libc, 1, "{NS_IP}", 9000), "udp": _net(ctypes, libc, 2, "{NS_IP}", 9001)}}}}""")
    time.sleep(0.3)
    out, got = res.outputs.get("y", {}), lab_ns.read_text().count("arrival") - before
    record(verdicts, mode, "TCP and UDP to a lab namespace",
           res.ok and out["tcp"][0] == out["udp"][0] == "refused" and got == 0, f"{out} arrivals={got}")


@MODES
def test_reading_host_secrets_and_the_repository(mode, tmp_path, monkeypatch, verdicts):
    secret = f"sk-edgeloop-{uuid.uuid4().hex}"
    monkeypatch.setenv("EDGELOOP_LLM_API_KEY", secret)  # in the agent's environment
    env_dir = Path(f"/tmp/el-sec-env-{uuid.uuid4().hex[:8]}")
    env_dir.mkdir(mode=0o755)
    env_file = env_dir / "agent.env"
    env_file.write_text(f"EDGELOOP_LLM_API_KEY={secret}\n")
    env_file.chmod(0o644)  # even a readable file is out of reach: it is not in the sandbox's root
    try:
        res = run(mode, f"""
out = {{}}
rd = lambda p: B["open"](p, "rb").read(4096).decode("latin-1")
for p in ("/etc/passwd", "/etc/shadow", "/proc/1/environ", "/proc/self/environ", "/proc/1/cmdline",
          {str(env_file)!r}, "/etc/edgeloop/agent.env", {str(REPO / "README.md")!r}, "/root/.bashrc"):
    out[p] = _try(lambda: rd(p))
for d in ("/", {str(REPO)!r}, "/sbx", "/proc"):
    out["ls " + d] = _try(lambda: sorted(os.listdir(d))[:40])
out["environ"] = sorted(os.environ)
return {{"y": out}}""")
        out = res.outputs.get("y", {})
        text = repr(out) + res.stderr
        leaked = [k for k, v in out.items() if isinstance(v, list) and v and v[0] == "done"
                  and ("root:x:0" in v[1] or secret in v[1] or "edgeloop" in v[1].lower() and "README" in k)]
        root_listing = out.get("ls /", ["", ""])[1]
        contained = (res.ok and secret not in text and "root:x:0:0" not in text and not leaked
                     and out[str(env_file)][0] == "refused" and out["/etc/passwd"][0] == "refused"
                     and out[f"ls {REPO}"][0] == "refused"
                     and root_listing == repr(["data", "dev", "lib", "lib64", "proc", "sbx", "scratch"])
                     and "EDGELOOP_LLM_API_KEY" not in out["environ"])
        record(verdicts, mode, "read /etc/passwd, /proc/1/environ, the agent's env file, the repo", contained,
               f"/ = {root_listing}; env file {out[str(env_file)][1][:40]}")
    finally:
        shutil.rmtree(env_dir, ignore_errors=True)


@MODES
def test_writing_outside_scratch(mode, verdicts):
    tag = uuid.uuid4().hex[:8]
    host = [f"/tmp/el-sec-{tag}", str(REPO / f"escape-{tag}"), f"/dev/shm/el-sec-{tag}", f"/var/tmp/el-sec-{tag}"]
    res = run(mode, f"""
out = {{}}
for p in {host!r} + ["/sbx/escape", "/escape", "/data/escape", "/proc/sys/kernel/hostname", "/dev/escape"]:
    out[p] = _try(lambda: B["open"](p, "w").write("x"))
out["scratch"] = _try(lambda: B["open"]("/scratch/ok", "w").write("x"))
return {{"y": out}}""")
    out = res.outputs.get("y", {})
    written = [p for p, v in out.items() if p != "scratch" and v[0] == "done"]
    on_host = [p for p in host if Path(p).exists()]
    for p in on_host:
        Path(p).unlink()
    record(verdicts, mode, "write outside scratch", res.ok and not written and not on_host and out["scratch"][0] == "done",
           f"written={written} on_host={on_host}")


@MODES
def test_execve_of_a_shell_and_of_the_interpreter(mode, verdicts):
    res = run(mode, """
out = {}
out["execv /bin/sh"] = _try(lambda: os.execv("/bin/sh", ["sh", "-c", "true"]))
out["execv python"] = _try(lambda: os.execv("/sbx/bin/python3", ["python3", "-c", "open('/scratch/ran','w')"]))
out["system"] = _try(lambda: os.system("/sbx/bin/python3 -c \\"open('/scratch/ran','w')\\""))
out["posix_spawn"] = _try(lambda: os.posix_spawn("/sbx/bin/python3", ["python3", "-c", "open('/scratch/ran','w')"], {}))
out["ran"] = os.path.exists("/scratch/ran")
return {"y": out}""")
    out = res.outputs.get("y", {})
    # os.system answers -1 when it could not start a shell: that is refused too
    started = [k for k, v in out.items() if k != "ran" and v[0] == "done" and v[1] not in ("-1", "32512")]
    record(verdicts, mode, "execve /bin/sh, the interpreter, os.system, posix_spawn",
           res.ok and not started and out["ran"] is False, f"{out}")


@MODES
def test_fork_bomb(mode, verdicts):
    before = set(sandbox_processes())
    res = run(mode, """
made, errors = 0, set()
for _ in range(2000):
    try:
        if os.fork() == 0:
            os.setsid()
            while True:
                os.fork()
        made += 1
    except OSError as e:
        errors.add(e.errno)
return {"y": {"forked": made, "errors": sorted(errors)}}""")
    time.sleep(0.5)
    left = set(sandbox_processes()) - before
    out = res.outputs.get("y", {})
    record(verdicts, mode, "fork bomb", res.ok and out["forked"] == 0 and not left, f"{out} left={sorted(left)}")


@MODES
def test_infinite_loop(mode, verdicts):
    before = set(sandbox_processes())
    t0 = time.monotonic()
    res = run(mode, "while True:\n    pass", limits=SandboxLimits(wall_s=2, cpu_s=30))
    took = time.monotonic() - t0
    time.sleep(0.5)
    left = set(sandbox_processes()) - before
    record(verdicts, mode, "infinite loop", res.status == "timeout" and took < 5 and not left,
           f"{res.status} after {took:.1f} s, left={sorted(left)}")


@MODES
def test_memory_bomb(mode, verdicts):
    res = run(mode, "keep = []\nwhile True:\n    keep.append(bytearray(64 << 20))",
              limits=SandboxLimits(wall_s=10, cpu_s=8, memory_bytes=512 << 20))
    big = run(mode, "return {'y': len(bytearray(3 << 30))}", limits=SandboxLimits(wall_s=10, memory_bytes=1 << 30))
    record(verdicts, mode, "memory bomb", res.status == "memory_limit" and big.status == "memory_limit",
           f"growing: {res.status}, one 3 GiB block: {big.status}")


@MODES
def test_ctypes_system_calls(mode, verdicts):
    res = run(mode, """
out = {}
out["mount"] = _c(ctypes, libc, "mount", b"none", b"/scratch", b"tmpfs", 0, None)
out["unshare user"] = _c(ctypes, libc, "unshare", 0x10000000)
out["unshare net"] = _c(ctypes, libc, "unshare", 0x40000000)
out["setuid 0"] = _c(ctypes, libc, "setuid", 0)
out["chroot"] = _c(ctypes, libc, "chroot", b"/scratch")
out["bpf"] = _c(ctypes, libc, "syscall", 321, 0, None, 0)
out["keyctl"] = _c(ctypes, libc, "syscall", 250, 0, 0, 0, 0, 0)
out["init_module"] = _c(ctypes, libc, "syscall", 175, None, 0, b"")
out["io_uring_setup"] = _c(ctypes, libc, "syscall", 425, 1, None)
out["clone3"] = _c(ctypes, libc, "syscall", 435, None, 0)
out["seccomp off"] = _c(ctypes, libc, "prctl", 22, 0, 0, 0, 0)
return {"y": out}""")
    out = res.outputs.get("y", {})
    done = [k for k, v in out.items() if v[0] == "done"]
    record(verdicts, mode, "ctypes: mount, unshare, setuid, chroot, bpf, keyctl, modules, io_uring",
           res.ok and not done, f"done={done} {out}")


@MODES
def test_imports_through_the_object_graph(mode, verdicts):
    res = run(mode, """
out = {}
out["__import__ subprocess"] = _try(lambda: __import__("subprocess"))
out["real __import__ subprocess"] = _try(lambda: B["__import__"]("subprocess"))
out["importlib socket"] = _try(lambda: sys.modules["importlib"].import_module("socket"))
machinery = sys.modules["importlib.machinery"]
sys.meta_path.append(machinery.PathFinder)
sys.path_hooks.append(machinery.FileFinder.path_hook((machinery.SourceFileLoader, [".py"])))
sys.path.extend(["/sbx/lib/python3.11", "/usr/lib/python3.11", "/usr/lib/python3/dist-packages"])
out["rearmed subprocess"] = _try(lambda: B["__import__"]("subprocess"))
out["rearmed socket"] = _try(lambda: B["__import__"]("socket"))
out["rearmed pty"] = _try(lambda: B["__import__"]("pty"))
out["eval"] = _try(lambda: eval("1"))
out["open"] = _try(lambda: open("/scratch/x", "w"))
return {"y": out}""")
    out = res.outputs.get("y", {})
    done = [k for k, v in out.items() if v[0] == "done"]
    record(verdicts, mode, "__import__, importlib and builtins via ().__class__.__mro__", res.ok and not done,
           f"done={done}")


@MODES
def test_signalling_the_parent(mode, verdicts):
    res = run(mode, """
out = {"ppid": os.getppid(), "pid": os.getpid()}
for name, pid in (("parent", os.getppid()), ("pid 1", 1), ("everyone", -1), ("group", 0)):
    out[name] = _try(lambda: os.kill(pid, 9))
return {"y": out}""")
    out = res.outputs.get("y", {})
    done = [k for k in ("parent", "pid 1", "everyone", "group") if out[k][0] == "done"]
    record(verdicts, mode, "signal the parent, pid 1, everyone", res.ok and not done and os.getpid() > 0,
           f"done={done} sandbox pid {out.get('pid')} ppid {out.get('ppid')}")


@MODES
def test_ptrace(mode, verdicts):
    res = run(mode, """
out = {}
out["traceme"] = _c(ctypes, libc, "ptrace", 0, 0, None, None)
out["attach 1"] = _c(ctypes, libc, "ptrace", 16, 1, None, None)
out["seize ppid"] = _c(ctypes, libc, "ptrace", 0x4206, os.getppid(), None, None)
out["process_vm_readv"] = _c(ctypes, libc, "syscall", 310, 1, None, 0, None, 0, 0)
out["/proc/1/mem"] = _try(lambda: B["open"]("/proc/1/mem", "rb").read(1))
return {"y": out}""")
    out = res.outputs.get("y", {})
    done = [k for k, v in out.items() if v[0] == "done"]
    record(verdicts, mode, "ptrace, process_vm_readv, /proc/1/mem", res.ok and not done, f"done={done} {out}")


@MODES
def test_only_a_short_sanitised_message_reaches_the_coder(mode, verdicts):
    secret = uuid.uuid4().hex
    res = run(mode, f"""
data = B["open"]("/sbx/runner.py").read()
raise ValueError("{secret}\\n" + data)""")
    problem = res.problem()
    record(verdicts, mode, "exception text back to the Coder",
           res.status == "error" and len(problem) <= 260 and "\n" not in problem and "Traceback" not in problem
           and "ALLOWED_MODULES" not in problem and "ValueError" in problem, problem)


def test_every_case_ran_in_both_modes(verdicts):
    """Placed last: fails if a case above was dropped or failed before recording its verdict."""
    names = {n for n, _, _, _ in verdicts}
    for name in names:
        assert {m for n, m, _, _ in verdicts if n == name} == {"root", "userns"}, name
    assert len(names) == 14, sorted(names)

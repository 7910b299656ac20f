"""The trusted half of the sandbox: runs as `python -I -S -B _sandbox_runner.py`, standalone.

It is started as root by llm_agents.blueprints.sandbox with a JSON request on stdin, and
confines itself before any step code runs:

    outer (root)   unshare mount + network + pid namespaces; make mounts private
     └─ init (root, pid 1 of the new pid namespace)
          mounts: the whole tree read-only, the scratch directory writable
          └─ worker: imports the allowed modules, sets rlimits (processes, files, file
             size, core), drops to nobody (uid/gid 65534, no groups, no_new_privs), loads
             the twin's read-only view, sets the memory and CPU limits, then runs the steps

When the parent kills the outer process group at the wall-clock limit, init dies with it
and the kernel kills everything left in the pid namespace, forked children included. The
network namespace has only a loopback interface that is down: every connect fails.
The result is one JSON object written to the original stdout; the steps' own prints go
to stderr. Nothing here imports edgeloop: this file must run on a bare interpreter.
"""
import ctypes
import json
import os
import resource
import sys
import time
import traceback

CLONE_NEWNS, CLONE_NEWPID, CLONE_NEWNET, CLONE_NEWUSER = 0x00020000, 0x20000000, 0x40000000, 0x10000000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = (
    1, 2, 4, 8, 32, 4096, 16384, 1 << 18)
AT_FDCWD, AT_RECURSIVE, MOUNT_ATTR_RDONLY, SYS_MOUNT_SETATTR = -100, 0x8000, 0x1, 442
PR_SET_PDEATHSIG, PR_SET_NO_NEW_PRIVS = 1, 38
NOBODY = 65534
ALLOWED_MODULES = ("math", "statistics", "ipaddress", "json", "collections", "itertools", "functools",
                   "re", "bisect", "heapq", "operator", "dataclasses", "typing", "socket", "numpy")

_libc = ctypes.CDLL(None, use_errno=True)
_libc.mount.argtypes = (ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_void_p)
_libc.syscall.restype = ctypes.c_long


class MountAttr(ctypes.Structure):
    _fields_ = [("attr_set", ctypes.c_uint64), ("attr_clr", ctypes.c_uint64),
                ("propagation", ctypes.c_uint64), ("userns_fd", ctypes.c_uint64)]


def _check(rc, what):
    if rc != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def _mount(src, target, fstype, flags):
    enc = lambda s: s.encode() if s is not None else None  # noqa: E731
    _check(_libc.mount(enc(src), enc(target), enc(fstype), flags, None), f"mount {target}")


def _set_readonly(path, readonly, recursive):
    attr = MountAttr(MOUNT_ATTR_RDONLY if readonly else 0, 0 if readonly else MOUNT_ATTR_RDONLY, 0, 0)
    rc = _libc.syscall(SYS_MOUNT_SETATTR, AT_FDCWD, path.encode(), AT_RECURSIVE if recursive else 0,
                       ctypes.byref(attr), ctypes.sizeof(attr))
    _check(0 if rc == 0 else -1, f"mount_setattr {path}")


def _readonly_tree(scratch):
    """Everything read-only except the scratch directory (its own bind mount, left writable)."""
    _mount(scratch, scratch, None, MS_BIND | MS_REC)
    _set_readonly("/", True, recursive=True)
    _set_readonly(scratch, False, recursive=False)


def _isolate(req):
    """Namespaces for the outer process; returns what was achieved."""
    iso = {"user": os.geteuid() == 0 and "root" or "unprivileged", "netns": False, "mountns": False,
           "pidns": False, "readonly_fs": False, "uid": None, "errors": []}
    flags = CLONE_NEWNS | CLONE_NEWNET | CLONE_NEWPID
    if os.geteuid() != 0:
        flags |= CLONE_NEWUSER
    if _libc.unshare(flags) != 0:
        iso["errors"].append(f"unshare: {os.strerror(ctypes.get_errno())}")
        return iso
    if flags & CLONE_NEWUSER:
        _map_user(iso)
    iso.update(netns=True, mountns=True, pidns=True)
    try:
        _mount(None, "/", None, MS_REC | MS_PRIVATE)
    except OSError as exc:
        iso["errors"].append(str(exc))
    return iso


def _map_user(iso):
    uid, gid = os.getuid(), os.getgid()
    try:
        with open("/proc/self/setgroups", "w") as f:
            f.write("deny")
        with open("/proc/self/uid_map", "w") as f:
            f.write(f"0 {uid} 1")
        with open("/proc/self/gid_map", "w") as f:
            f.write(f"0 {gid} 1")
    except OSError as exc:
        iso["errors"].append(f"user namespace map: {exc}")


def _preload():
    for name in ALLOWED_MODULES:
        __import__(name)
    for name in ("numpy.lib.format", "zipfile", "encodings.idna", "encodings.cp437"):
        __import__(name)


def _limits(req, stage):
    lim = req["limits"]
    if stage == "early":
        resource.setrlimit(resource.RLIMIT_NPROC, (lim["processes"], lim["processes"]))
        resource.setrlimit(resource.RLIMIT_NOFILE, (lim["open_files"], lim["open_files"]))
        resource.setrlimit(resource.RLIMIT_FSIZE, (lim["file_bytes"], lim["file_bytes"]))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    else:
        resource.setrlimit(resource.RLIMIT_AS, (lim["memory_bytes"], lim["memory_bytes"]))
        cpu = int(lim["cpu_s"])
        resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))


def _drop_privileges(iso):
    if os.geteuid() == 0 and iso["user"] == "root":
        os.setgroups([])
        os.setgid(NOBODY)
        os.setuid(NOBODY)
    _libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)
    iso["uid"] = os.getuid()


def _load_view(path):
    import numpy as np
    if not path:
        return {}, {}
    with np.load(path, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    for a in arrays.values():
        a.setflags(write=False)
    flows = {k: v for k, v in arrays.items() if not k.startswith("w_")}
    windows = {k[2:]: v for k, v in arrays.items() if k.startswith("w_")}
    return flows, windows


def _jsonable(v, depth=0):
    import numpy as np
    if depth > 20:
        raise ValueError("output nested too deeply")
    if isinstance(v, np.ndarray):
        return _jsonable(v.tolist(), depth + 1)
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, dict):
        return {str(k): _jsonable(x, depth + 1) for k, x in v.items()}
    if isinstance(v, (list, tuple, set, frozenset)):
        items = sorted(v, key=repr) if isinstance(v, (set, frozenset)) else v
        return [_jsonable(x, depth + 1) for x in items]
    if v is None or isinstance(v, (bool, int, float, str)):
        return v
    raise TypeError(f"output of type {type(v).__name__} is not JSON data")


def _summary(v):
    text = repr(v)
    size = len(v) if hasattr(v, "__len__") else None
    return {"type": type(v).__name__, "len": size, "repr": text[:300]}


def _run_steps(req, flows, windows):
    import builtins
    env = dict(req.get("given", {}))
    env.update(flows=flows, windows=windows)
    trace = []
    for step in req["program"]:
        t0 = time.perf_counter()
        name = step["name"]
        try:
            ns = {"__builtins__": builtins, "__name__": f"step_{name}"}
            exec(compile(step["source"], f"<step {name}>", "exec"), ns)
            fn = ns.get(name)
            if not callable(fn):
                raise NameError(f"the code defines no function named {name!r}")
            out = fn(**{k: env[k] for k in step["inputs"]})
            if not isinstance(out, dict):
                raise TypeError(f"{name} returned {type(out).__name__}, not a dict of outputs")
            missing = [k for k in step["outputs"] if k not in out]
            if missing:
                raise KeyError(f"{name} did not return outputs {missing}")
        except BaseException as exc:  # noqa: BLE001 - every failure is reported as data
            tb = traceback.format_exception(type(exc), exc, exc.__traceback__)
            return env, trace, {"step": name, "type": type(exc).__name__, "message": str(exc)[:1000],
                                "traceback": "".join(tb[-6:])[-3000:]}
        for k in step["outputs"]:
            env[k] = out[k]
        trace.append({"step": name, "seconds": round(time.perf_counter() - t0, 4),
                      "outputs": {k: _summary(out[k]) for k in step["outputs"]}})
    return env, trace, None


def _worker(req, iso, result_fd):
    _preload()
    _limits(req, "early")
    _drop_privileges(iso)
    os.chdir(req["scratch"])
    flows, windows = _load_view(req.get("view"))
    _limits(req, "late")
    for name in ("ctypes", "_ctypes", "resource"):
        sys.modules.pop(name, None)
    env, trace, error = _run_steps(req, flows, windows)
    result = {"ok": error is None, "isolation": iso, "trace": trace, "error": error}
    if error is None:
        try:
            result["outputs"] = {k: _jsonable(env[k]) for k in req["final"]}
        except (TypeError, ValueError) as exc:
            result.update(ok=False, error={"step": "output", "type": type(exc).__name__, "message": str(exc)})
    with os.fdopen(result_fd, "w") as out:
        json.dump(result, out, allow_nan=False, default=str)


def _init(req, iso, result_fd):
    """pid 1 of the sandbox: set up the mounts, run the worker, reap, exit with its status."""
    _libc.prctl(PR_SET_PDEATHSIG, 9, 0, 0, 0)
    if iso["mountns"]:
        try:  # a /proc of our own: the worker sees only the sandbox's processes
            _mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
        except OSError as exc:
            iso["errors"].append(str(exc))
        try:
            _readonly_tree(req["scratch"])
            iso["readonly_fs"] = True
        except OSError as exc:
            iso["errors"].append(str(exc))
    if req.get("require_isolation") and not (iso["netns"] and iso["readonly_fs"]):
        os.write(result_fd, json.dumps({"ok": False, "isolation": iso, "trace": [], "error": {
            "step": "sandbox", "type": "IsolationError", "message": "; ".join(iso["errors"])}}).encode())
        os._exit(3)
    pid = os.fork()
    if pid == 0:
        try:
            _worker(req, iso, result_fd)
            os._exit(0)
        except BaseException as exc:  # noqa: BLE001 - the sandbox itself failed: say how
            tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))[-3000:]
            os.write(result_fd, json.dumps({"ok": False, "isolation": iso, "trace": [], "error": {
                "step": "sandbox", "type": type(exc).__name__, "message": str(exc)[:1000],
                "traceback": tb}}).encode())
            os._exit(2)
    status = 0
    while True:
        try:
            done, st = os.wait()
        except ChildProcessError:
            break
        if done == pid:
            status = st
            break
    os._exit(os.waitstatus_to_exitcode(status) & 0xFF if os.WIFEXITED(status) else 128 + os.WTERMSIG(status))


def main():
    req = json.loads(sys.stdin.buffer.read())
    for p in req.get("sys_path", []):
        sys.path.append(p)
    result_fd = os.dup(1)
    os.dup2(2, 1)
    iso = _isolate(req)
    pid = os.fork() if iso["pidns"] else 0
    if pid == 0:
        _init(req, iso, result_fd)
    _, status = os.waitpid(pid, 0)
    sys.exit(os.waitstatus_to_exitcode(status) & 0xFF if os.WIFEXITED(status) else 128 + os.WTERMSIG(status))


if __name__ == "__main__":
    main()

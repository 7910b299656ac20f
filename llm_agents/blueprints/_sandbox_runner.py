"""The trusted half of the sandbox: runs inside bubblewrap as `/sbx/bin/python3 -I -S -B /sbx/runner.py`.

llm_agents.blueprints.sandbox starts it in a minimal read-only root (the interpreter, the
stdlib modules listed by `--probe`, numpy) with its own network, pid, ipc, uts and mount
namespaces and the startup seccomp filter already loaded. It reads one JSON request on
stdin and, before any step code runs:

1. imports every module a step may use (`_preload`), so nothing is imported later;
2. sets rlimits (processes, open files, file size, no core dump);
3. in root mode (bubblewrap run by root, no user namespace, only CAP_SETUID/CAP_SETGID
   kept) drops to uid/gid 65534 with no groups; in user-namespace mode it already is 65534;
4. loads the twin's read-only view, then the memory (address space) and CPU limits;
5. loads the second seccomp filter (no execve, no fork; from the request) and checks in
   /proc/self/status that it runs as 65534 with no capabilities, no_new_privs and both
   filters, refusing to go on otherwise;
6. empties the import machinery (no finder is left) and runs each step with a restricted
   builtins dict whose `__import__` hands out only the allowed, already loaded modules.

The result is one JSON object written to the original stdout; the steps' own prints go to
stderr. Nothing here imports edgeloop: this file runs on a bare interpreter.
"""
import base64
import ctypes
import json
import os
import resource
import sys
import time
import traceback

NOBODY = 65534
ALLOWED_MODULES = ("math", "statistics", "ipaddress", "json", "collections", "itertools", "functools",
                   "re", "bisect", "heapq", "operator", "dataclasses", "typing", "numpy")
# Loaded before the steps so that nothing needs the (then empty) import machinery: lazy numpy
# submodules, the codecs steps may name, and what the runner itself uses after the freeze.
PRELOAD = ALLOWED_MODULES + ("__future__", "numpy.lib.format", "numpy.linalg", "numpy.fft", "numpy.random",
                             "numpy.polynomial", "numpy.ma", "zipfile", "traceback", "linecache",
                             "encodings.idna", "encodings.cp437", "encodings.latin_1", "encodings.ascii",
                             "encodings.utf_16", "encodings.utf_32", "encodings.unicode_escape")
SAFE_BUILTINS = (
    "abs", "all", "any", "ascii", "bin", "bool", "bytearray", "bytes", "callable", "chr", "complex",
    "dict", "divmod", "enumerate", "filter", "float", "format", "frozenset", "hash", "hex", "int",
    "isinstance", "issubclass", "iter", "len", "list", "map", "max", "min", "next", "object", "oct",
    "ord", "pow", "print", "range", "repr", "reversed", "round", "set", "slice", "sorted", "str", "sum",
    "tuple", "zip", "type", "super", "property", "staticmethod", "classmethod", "hasattr",
    "__build_class__", "True", "False", "None", "Ellipsis", "NotImplemented")
PR_SET_SECCOMP, SECCOMP_MODE_FILTER = 22, 2


class SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_char_p)]


def _preload():
    for name in PRELOAD:
        __import__(name)


def _limits(lim, stage):
    if stage == "early":
        resource.setrlimit(resource.RLIMIT_NPROC, (lim["processes"], lim["processes"]))
        resource.setrlimit(resource.RLIMIT_NOFILE, (lim["open_files"], lim["open_files"]))
        resource.setrlimit(resource.RLIMIT_FSIZE, (lim["file_bytes"], lim["file_bytes"]))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    else:
        resource.setrlimit(resource.RLIMIT_AS, (lim["memory_bytes"], lim["memory_bytes"]))
        cpu = int(lim["cpu_s"])
        resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))


def _drop_privileges():
    if os.getuid() == 0:  # root mode: bubblewrap kept CAP_SETUID and CAP_SETGID for this
        os.setgroups([])
        os.setgid(NOBODY)
        os.setuid(NOBODY)


def _load_filter(bpf):
    libc = ctypes.CDLL(None, use_errno=True)
    prog = SockFprog(len(bpf) // 8, bpf)
    if libc.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.byref(prog), 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "loading the steps' seccomp filter failed")


def _status():
    fields = {}
    with open("/proc/self/status") as f:
        for line in f:
            k, _, v = line.partition(":")
            fields[k] = v.strip()
    return {"uid": int(fields["Uid"].split()[0]), "euid": int(fields["Uid"].split()[1]),
            "gid": int(fields["Gid"].split()[0]), "groups": fields.get("Groups", ""),
            "cap_eff": fields["CapEff"], "cap_prm": fields["CapPrm"], "no_new_privs": int(fields["NoNewPrivs"]),
            "seccomp_filters": int(fields.get("Seccomp_filters", "0")), "pid": os.getpid()}


def _check(st):
    wrong = []
    if st["uid"] != NOBODY or st["euid"] != NOBODY or st["gid"] != NOBODY or st["groups"]:
        wrong.append(f"runs as uid {st['uid']} gid {st['gid']} groups [{st['groups']}], not {NOBODY}")
    if int(st["cap_eff"], 16) or int(st["cap_prm"], 16):
        wrong.append(f"holds capabilities {st['cap_eff']}")
    if st["no_new_privs"] != 1:
        wrong.append("no_new_privs is not set")
    if st["seccomp_filters"] < 2:
        wrong.append(f"{st['seccomp_filters']} seccomp filters in force, not 2")
    if wrong:
        raise PermissionError("; ".join(wrong))


def _freeze_imports():
    for name in ("ctypes", "_ctypes", "resource", "base64"):
        sys.modules.pop(name, None)
    sys.meta_path[:] = []
    sys.path_hooks[:] = []
    sys.path_importer_cache.clear()
    sys.path[:] = []


def _step_builtins():
    import builtins
    real_import = builtins.__import__

    def guarded_import(name, globals=None, locals=None, fromlist=(), level=0):  # noqa: A002
        if level != 0 or (name.split(".")[0] not in ALLOWED_MODULES and name != "__future__"):
            raise ImportError(f"module {name!r} is not allowed in a step; allowed: {', '.join(ALLOWED_MODULES)}")
        return real_import(name, globals, locals, fromlist, 0)

    def guarded_getattr(obj, name, *default):
        if isinstance(name, str) and name.startswith("__"):
            raise AttributeError(f"dunder attribute {name!r} is not available in a step")
        return getattr(obj, name, *default)

    safe = {k: getattr(builtins, k) for k in SAFE_BUILTINS}
    safe.update({k: v for k, v in vars(builtins).items()
                 if isinstance(v, type) and issubclass(v, BaseException)})
    safe.update(__import__=guarded_import, getattr=guarded_getattr)
    return safe


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
    size = len(v) if hasattr(v, "__len__") else None
    return {"type": type(v).__name__, "len": size, "repr": repr(v)[:300]}


def _step_line(exc, name):
    """The line of the step's own code where it failed (no other frame is reported)."""
    line = None
    for frame in traceback.extract_tb(exc.__traceback__):
        if frame.filename == f"<step {name}>":
            line = frame.lineno
    return line


def _run_steps(req, flows, windows, safe_builtins):
    env = dict(req.get("given", {}))
    env.update(flows=flows, windows=windows)
    trace = []
    for step in req["program"]:
        t0 = time.perf_counter()
        name = step["name"]
        try:
            ns = {"__builtins__": dict(safe_builtins), "__name__": f"step_{name}"}
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
                                "line": _step_line(exc, name), "traceback": "".join(tb[-6:])[-3000:]}
        for k in step["outputs"]:
            env[k] = out[k]
        trace.append({"step": name, "seconds": round(time.perf_counter() - t0, 4),
                      "outputs": {k: _summary(out[k]) for k in step["outputs"]}})
    return env, trace, None


def _confine(req):
    t0 = time.perf_counter()
    _preload()
    _limits(req["limits"], "early")
    _drop_privileges()
    os.chdir(req["scratch"])
    flows, windows = _load_view(req.get("view"))
    _limits(req["limits"], "late")
    _load_filter(base64.b64decode(req["steps_filter"]))
    st = _status()
    _check(st)
    safe = _step_builtins()
    _freeze_imports()
    st["confine_s"] = round(time.perf_counter() - t0, 4)
    return st, flows, windows, safe


def _write(fd, doc):
    data = json.dumps(doc, allow_nan=False, default=str).encode()
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


def probe():
    """`runner.py --probe SITE`: the files of every module the sandbox loads, for its root."""
    sys.path.append(sys.argv[2])
    _preload()
    files = sorted({f for m in list(sys.modules.values()) if (f := getattr(m, "__file__", None))})
    print(json.dumps({"files": files, "prefix": sys.prefix, "version": f"{sys.version_info[0]}.{sys.version_info[1]}"}))


def main():
    req = json.loads(sys.stdin.buffer.read())
    sys.path[:0] = req.get("sys_path", [])
    result_fd = os.dup(1)
    os.dup2(2, 1)
    try:
        st, flows, windows, safe = _confine(req)
    except BaseException as exc:  # noqa: BLE001 - the sandbox could not confine itself: say how, run nothing
        _write(result_fd, {"ok": False, "isolation": {}, "trace": [], "error": {
            "step": "sandbox", "type": "IsolationError", "message": f"{type(exc).__name__}: {exc}"[:1000]}})
        os._exit(3)
    env, trace, error = _run_steps(req, flows, windows, safe)
    result = {"ok": error is None, "isolation": st, "trace": trace, "error": error}
    if error is None:
        try:
            result["outputs"] = {k: _jsonable(env[k]) for k in req["final"]}
        except (TypeError, ValueError, RecursionError) as exc:
            result.update(ok=False, error={"step": "output", "type": type(exc).__name__, "message": str(exc)[:1000]})
    _write(result_fd, result)
    os._exit(0)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--probe"]:
        probe()
    else:
        main()

"""The sandbox's minimal root file system: the interpreter, the stdlib modules it loads, numpy.

Built once per interpreter, numpy and runner (a content key names the directory) and then
bound read-only as `/` of every sandbox. Nothing else of the host is in it: no /etc, no
/usr, no /tmp, no site-packages but numpy, no repository, no agent files. A module not
copied here does not exist for step code, whatever it does to the import machinery.

    /sbx/bin/python3            the interpreter (its prefix is /sbx)
    /sbx/lib/python3.X/...      the stdlib modules the runner's `--probe` loads, encodings/
    /sbx/site/numpy, numpy.libs numpy and its bundled libraries (no tests)
    /sbx/runner.py              _sandbox_runner.py
    /lib/<multiarch>/, /lib64/  the shared libraries all of the above link to (from ldd)
    /proc /dev /scratch /data   empty mount points for bubblewrap
    /sbx/BUILD                  written last: the root is complete

The default cache is /var/tmp/edgeloop-sandbox-<uid> (`EDGELOOP_SANDBOX_ROOT`): a directory
this user owns that no one else may write to; the build refuses any other.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import stat
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np

BUILD_VERSION = "1"
RUNNER = Path(__file__).with_name("_sandbox_runner.py")
_LDD_LINE = re.compile(r"(?:\S+ => )?(/\S+) \(0x")


class RootError(RuntimeError):
    """The minimal root could not be built."""


def default_cache() -> Path:
    return Path(os.environ.get("EDGELOOP_SANDBOX_ROOT") or f"/var/tmp/edgeloop-sandbox-{os.geteuid()}")


def numpy_site() -> Path:
    return Path(np.__file__).resolve().parent.parent


def _key(python: str) -> str:
    h = hashlib.sha256(BUILD_VERSION.encode())
    for part in (Path(python).resolve(), Path(np.__file__).resolve()):
        st = part.stat()
        h.update(f"{part}:{st.st_size}:{st.st_mtime_ns}".encode())
    h.update(np.__version__.encode())
    h.update(RUNNER.read_bytes())
    return h.hexdigest()[:16]


def _safe_cache(cache: Path) -> None:
    cache.mkdir(mode=0o755, parents=True, exist_ok=True)
    st = os.lstat(cache)
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.geteuid() or st.st_mode & 0o022:
        raise RootError(f"{cache} must be a directory owned by uid {os.geteuid()} that no one else can write "
                        f"(mode {stat.filemode(st.st_mode)}, owner {st.st_uid})")
    if not st.st_mode & 0o005:
        cache.chmod(0o755)  # the sandbox user must be able to reach it


def ensure_root(python: str, cache: Path | None = None) -> Path:
    """The root for this interpreter: built if missing (about a second), else reused."""
    cache = cache or default_cache()
    _safe_cache(cache)
    dest = cache / _key(python)
    if (dest / "sbx" / "BUILD").exists():
        os.utime(dest)  # in use: _prune goes by this time
        return dest
    work = Path(tempfile.mkdtemp(prefix=".build-", dir=cache))
    try:
        _build(python, work)
        work.chmod(0o755)
        if dest.exists() and not (dest / "sbx" / "BUILD").exists():
            shutil.rmtree(dest)  # a build that died half way
        try:
            work.rename(dest)
        except OSError:  # another process built it first
            if not (dest / "sbx" / "BUILD").exists():
                raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
    _prune(cache, keep=dest)
    return dest


def _prune(cache: Path, keep: Path, older_than_s: float = 3600) -> None:
    """Roots of other interpreters or runner versions, unused for an hour, are removed
    (`ensure_root` touches a root each time a run uses it)."""
    now = time.time()
    for d in cache.iterdir():
        if d != keep and d.is_dir() and not d.is_symlink() and now - d.stat().st_mtime > older_than_s:
            shutil.rmtree(d, ignore_errors=True)


def _probe(python: str) -> dict:
    res = subprocess.run([python, "-I", "-S", "-B", str(RUNNER), "--probe", str(numpy_site())],
                         capture_output=True, text=True, timeout=60, env={"PATH": "/usr/bin:/bin"})
    if res.returncode != 0:
        raise RootError(f"probing the interpreter failed: {res.stderr[-500:]}")
    return json.loads(res.stdout)


def _copy(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(src, dst)
    dst.chmod(0o755 if os.access(src, os.X_OK) else 0o644)


def _libraries(binary: Path) -> list[Path]:
    res = subprocess.run(["ldd", str(binary)], capture_output=True, text=True, timeout=30)
    if res.returncode != 0:  # "not a dynamic executable": a pure data file or a static object
        return []
    return [Path(m.group(1)) for line in res.stdout.splitlines() if (m := _LDD_LINE.search(line.strip()))]


def _build(python: str, root: Path) -> None:
    info = _probe(python)
    prefix, ver = Path(info["prefix"]), info["version"]
    stdlib, site = prefix / "lib" / f"python{ver}", numpy_site()
    sbx = root / "sbx"
    binaries = [Path(python).resolve()]
    _copy(binaries[0], sbx / "bin" / "python3")
    (sbx / "lib" / f"python{ver}" / "lib-dynload").mkdir(parents=True)
    for f in map(Path, info["files"]):
        if f.is_relative_to(stdlib) and "site-packages" not in f.parts:
            rel = f.relative_to(stdlib)
            _copy(f, sbx / "lib" / f"python{ver}" / rel)
            cached = f.parent / "__pycache__"
            for pyc in cached.glob(f"{f.stem}.*.pyc") if cached.is_dir() else []:
                _copy(pyc, sbx / "lib" / f"python{ver}" / rel.parent / "__pycache__" / pyc.name)
            if f.suffix == ".so":
                binaries.append(f)
    shutil.copytree(stdlib / "encodings", sbx / "lib" / f"python{ver}" / "encodings", dirs_exist_ok=True)
    for pkg in ("numpy", "numpy.libs"):
        if (site / pkg).is_dir():
            shutil.copytree(site / pkg, sbx / "site" / pkg, ignore=shutil.ignore_patterns("tests", "*.pyi"))
    binaries += [p for p in (sbx / "site").rglob("*.so*") if p.is_file()]
    _copy(RUNNER, sbx / "runner.py")
    seen: set[Path] = set()
    for binary in binaries:
        for lib in _libraries(binary):
            if lib in seen or lib.resolve().is_relative_to(site) or (sbx / "site") in lib.parents:
                continue  # numpy's own libraries come with its tree ($ORIGIN run paths)
            seen.add(lib)
            # the loader at its own path; every other library where the loader's default path finds
            # it, whatever run path the binary names (pyenv's libpython has an absolute one)
            where = root / lib.relative_to("/") if lib.parent == Path("/lib64") else root / "lib" / _multiarch()
            _copy(lib.resolve(), where if where.name == lib.name else where / lib.name)
    for mount_point in ("proc", "dev", "scratch", "data"):
        (root / mount_point).mkdir()
    (sbx / "BUILD").write_text(json.dumps({"build": BUILD_VERSION, "python": info["version"], "numpy": np.__version__}))
    for d in [root, *[p for p in root.rglob("*") if p.is_dir()]]:
        d.chmod(0o755)


def _multiarch() -> str:
    for cand in ("x86_64-linux-gnu", "aarch64-linux-gnu"):
        if Path("/lib", cand).is_dir():
            return cand
    return "."

"""The sandbox's seccomp filters, compiled to BPF by libseccomp (Debian's libseccomp2).

Two filters, both "allow by default, refuse a list": the list is what no blueprint step
needs and every escape uses, and a refused call fails with EPERM so the step sees an
ordinary `PermissionError` instead of a kill.

- `startup_filter()` is handed to bubblewrap (`--seccomp FD`) and is in force from the
  interpreter's first instruction: no sockets of any family, no ptrace or reading other
  processes' memory, no mount, namespace, module, BPF, perf, keyring, io_uring or clock
  calls, no signals to other processes.
- `steps_filter()` is loaded by the runner itself once the interpreter and the allowed
  modules are up and before any step code runs: no execve/execveat, no fork/vfork, and
  clone only for threads (clone3 answers ENOSYS so libc falls back to clone, whose flags a
  filter can read). It cannot be in the first filter: bubblewrap's own exec of the
  interpreter comes after that one is loaded.

Filters stack (the kernel applies both) and cannot be removed. Calls from another
architecture's ABI (x32, i386) are killed: libseccomp's default for a foreign arch.

    >>> len(startup_filter()) % 8 == 0          # BPF: 8-byte instructions
    True
"""
from __future__ import annotations

import ctypes
import ctypes.util
import errno
import functools
import os
import tempfile

SCMP_ACT_ALLOW = 0x7FFF0000
SCMP_CMP_MASKED_EQ = 7
CLONE_THREAD = 0x00010000

# Refused from the interpreter's start (EPERM unless said otherwise).
STARTUP_DENY = (
    # network, any family: AF_UNIX included
    "socket", "socketpair", "connect", "bind", "listen", "accept", "accept4",
    # other processes: tracing, memory, signals
    "ptrace", "process_vm_readv", "process_vm_writev", "kcmp", "pidfd_open", "pidfd_getfd",
    "pidfd_send_signal", "kill", "tkill", "rt_sigqueueinfo", "rt_tgsigqueueinfo",
    # file systems and namespaces
    "mount", "umount2", "pivot_root", "chroot", "unshare", "setns", "fsopen", "fsconfig",
    "fsmount", "fspick", "move_mount", "open_tree", "mount_setattr", "name_to_handle_at",
    "open_by_handle_at", "swapon", "swapoff", "mknod", "mknodat",
    # the kernel itself
    "init_module", "finit_module", "delete_module", "kexec_load", "kexec_file_load", "reboot",
    "bpf", "perf_event_open", "userfaultfd", "add_key", "request_key", "keyctl",
    "io_uring_setup", "io_uring_enter", "io_uring_register", "acct", "quotactl", "syslog",
    "lookup_dcookie", "fanotify_init", "iopl", "ioperm", "personality",
    "settimeofday", "clock_settime", "clock_adjtime", "adjtimex", "sethostname", "setdomainname",
)
# Refused once the runner is up: no new programs, no new processes.
STEPS_DENY = ("execve", "execveat", "fork", "vfork")


class _ArgCmp(ctypes.Structure):
    _fields_ = [("arg", ctypes.c_uint), ("op", ctypes.c_int), ("datum_a", ctypes.c_uint64),
                ("datum_b", ctypes.c_uint64)]


class SeccompUnavailable(RuntimeError):
    """libseccomp is not installed or refused to build a filter."""


@functools.lru_cache(maxsize=1)
def _lib() -> ctypes.CDLL:
    name = ctypes.util.find_library("seccomp") or "libseccomp.so.2"
    try:
        lib = ctypes.CDLL(name, use_errno=True)
    except OSError as exc:
        raise SeccompUnavailable(f"libseccomp not found ({exc}); install Debian's libseccomp2") from exc
    lib.seccomp_init.restype = ctypes.c_void_p
    lib.seccomp_init.argtypes = (ctypes.c_uint32,)
    lib.seccomp_release.argtypes = (ctypes.c_void_p,)
    lib.seccomp_syscall_resolve_name.restype = ctypes.c_int
    lib.seccomp_syscall_resolve_name.argtypes = (ctypes.c_char_p,)
    lib.seccomp_rule_add_array.restype = ctypes.c_int
    lib.seccomp_rule_add_array.argtypes = (ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int, ctypes.c_uint,
                                           ctypes.POINTER(_ArgCmp))
    lib.seccomp_export_bpf.restype = ctypes.c_int
    lib.seccomp_export_bpf.argtypes = (ctypes.c_void_p, ctypes.c_int)
    return lib


def _errno_action(code: int) -> int:
    return 0x00050000 | (code & 0xFFFF)


def compile_rules(rules: list[tuple[str, int, tuple[tuple[int, int, int, int], ...]]]) -> bytes:
    lib = _lib()
    ctx = lib.seccomp_init(SCMP_ACT_ALLOW)
    if not ctx:
        raise SeccompUnavailable("seccomp_init failed")
    try:
        for name, action, cmps in rules:
            nr = lib.seccomp_syscall_resolve_name(name.encode())
            if nr < 0:  # not a system call on this architecture (e.g. iopl elsewhere): nothing to refuse
                continue
            arr = (_ArgCmp * max(1, len(cmps)))(*[_ArgCmp(*c) for c in cmps])
            rc = lib.seccomp_rule_add_array(ctx, action, nr, len(cmps), arr)
            if rc != 0:
                raise SeccompUnavailable(f"seccomp rule for {name}: {os.strerror(-rc)}")
        with tempfile.TemporaryFile() as f:
            rc = lib.seccomp_export_bpf(ctx, f.fileno())
            if rc != 0:
                raise SeccompUnavailable(f"seccomp_export_bpf: {os.strerror(-rc)}")
            f.seek(0)
            return f.read()
    finally:
        lib.seccomp_release(ctx)


@functools.lru_cache(maxsize=1)
def startup_filter() -> bytes:
    """BPF for bubblewrap's --seccomp: in force before the interpreter starts."""
    return compile_rules([(name, _errno_action(errno.EPERM), ()) for name in STARTUP_DENY])


@functools.lru_cache(maxsize=1)
def steps_filter() -> bytes:
    """BPF the runner loads before step code: no exec, no new processes (threads allowed)."""
    rules = [(name, _errno_action(errno.EPERM), ()) for name in STEPS_DENY]
    # clone without CLONE_THREAD makes a process: refused. (arg0 & CLONE_THREAD) == 0
    rules.append(("clone", _errno_action(errno.EPERM), ((0, SCMP_CMP_MASKED_EQ, CLONE_THREAD, 0),)))
    rules.append(("clone3", _errno_action(errno.ENOSYS), ()))
    return compile_rules(rules)

"""Run a command under the kernel-level restrictions a shipped systemd unit sets.

    python tests/security/unit_restrictions.py deploy/systemd/edgeloop-agent.service -- CMD ...

systemd is not PID 1 on CI's machines, so `systemd-run -p ...` cannot start a transient unit
there. This applies the unit's own values of the properties that decide whether a sandbox
can start, the way systemd implements them (seccomp and prctl), and then execs CMD:

    NoNewPrivileges=yes           PR_SET_NO_NEW_PRIVS
    RestrictNamespaces=           unshare, setns and clone with CLONE_NEW* flags refused (EPERM);
                                  clone3 answers ENOSYS, as systemd does, so libc falls back
    RestrictAddressFamilies=      socket() of any other family refused (EAFNOSUPPORT)
    SystemCallArchitectures=native  calls of a foreign ABI killed (libseccomp's default)
    CapabilityBoundingSet=        run it under `setpriv --bounding-set=-all --inh-caps=-all`

Filesystem properties (ProtectSystem, PrivateTmp, ...) are not emulated: they do not decide
whether namespaces can be made.
"""
from __future__ import annotations

import ctypes
import errno
import os
import socket
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from llm_agents.blueprints.syscall_filter import compile_rules  # noqa: E402

NS_FLAGS = {"cgroup": 0x02000000, "ipc": 0x08000000, "net": 0x40000000, "mnt": 0x00020000, "pid": 0x20000000,
            "user": 0x10000000, "uts": 0x04000000}
CMP_EQ, CMP_MASKED_EQ = 4, 7
ERRNO = lambda e: 0x00050000 | e  # noqa: E731


def unit_properties(path: Path) -> dict[str, str]:
    props = {}
    for line in path.read_text().splitlines():
        if "=" in line and not line.lstrip().startswith(("#", ";", "[")):
            k, _, v = line.partition("=")
            props[k.strip()] = v.strip()
    return props


def rules_for(props: dict[str, str]) -> list:
    rules = []
    ns = props.get("RestrictNamespaces", "no")
    allowed = set() if ns == "yes" else set(NS_FLAGS) if ns in ("no", "") else set(ns.split())
    denied = [f for name, f in NS_FLAGS.items() if name not in allowed]
    for flag in denied:  # systemd: one rule per namespace flag the unit does not allow
        rules.append(("unshare", ERRNO(errno.EPERM), ((0, CMP_MASKED_EQ, flag, flag),)))
        rules.append(("clone", ERRNO(errno.EPERM), ((0, CMP_MASKED_EQ, flag, flag),)))
        rules.append(("setns", ERRNO(errno.EPERM), ((1, CMP_MASKED_EQ, flag, flag),)))
    if denied:
        rules.append(("setns", ERRNO(errno.EPERM), ((1, CMP_EQ, 0, 0),)))  # nstype 0: any namespace
        rules.append(("clone3", ERRNO(errno.ENOSYS), ()))
    families = props.get("RestrictAddressFamilies", "")
    if families and not families.startswith("~"):
        keep = {getattr(socket, f) for f in families.split() if hasattr(socket, f)}
        keep |= {16} if "AF_NETLINK" in families else set()
        for fam in range(0, 46):
            if fam not in keep:
                rules.append(("socket", ERRNO(errno.EAFNOSUPPORT), ((0, CMP_EQ, fam, 0),)))
    return rules


def main() -> None:
    unit, sep, *cmd = sys.argv[1:]
    assert sep == "--" and cmd, __doc__
    props = unit_properties(Path(unit))
    libc = ctypes.CDLL(None, use_errno=True)
    assert props.get("NoNewPrivileges") == "yes", "every shipped unit sets NoNewPrivileges=yes"
    libc.prctl(38, 1, 0, 0, 0)  # PR_SET_NO_NEW_PRIVS
    bpf = compile_rules(rules_for(props))

    class Prog(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_char_p)]

    if libc.prctl(22, 2, ctypes.byref(Prog(len(bpf) // 8, bpf)), 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "loading the unit's seccomp filter failed")
    print(f"[unit {Path(unit).name}] RestrictNamespaces={props.get('RestrictNamespaces', '')} "
          f"RestrictAddressFamilies={props.get('RestrictAddressFamilies', '')} NoNewPrivileges=yes", file=sys.stderr)
    os.execvp(cmd[0], cmd)


if __name__ == "__main__":
    main()

"""Which external tools the lab needs, whether they are here, and their versions.

    >>> require("syn_scan", "ssh_bruteforce")   # LabError listing what is missing
    >>> versions()                              # for the datasheet
"""
from __future__ import annotations

import platform
import shutil
import subprocess
from importlib import metadata

from streams.errors import LabError

# Needed by every lab run: topology, victim services, benign clients, capture.
BASE = ("ip", "ethtool", "sysctl", "ss", "tcpdump", "nginx", "sshd", "dnsmasq", "iperf3",
        "curl", "ssh", "ssh-keygen", "openssl", "timeout")
SCENARIO_TOOLS = {"syn_scan": ("nmap",), "fin_scan": ("nmap",), "syn_flood": ("hping3",),
                  "slow_http_dos": ("slowhttptest",), "ssh_bruteforce": ("hydra",)}
OPTIONAL = ("wrk",)
PACKAGES = ("iproute2", "ethtool", "tcpdump", "nginx", "openssh-server", "dnsmasq-base",
            "iperf3", "curl", "wrk", "nmap", "hping3", "slowhttptest", "hydra", "openssl")
PY_PACKAGES = ("nfstream", "pandas", "pyarrow", "numpy")
_SBIN = "/usr/sbin:/sbin"


def which(tool: str) -> str | None:
    return shutil.which(tool) or shutil.which(tool, path=_SBIN)


def missing(*scenarios: str) -> list[str]:
    tools = list(BASE)
    for name in scenarios:
        tools += SCENARIO_TOOLS.get(name, ())
    return sorted({t for t in tools if which(t) is None})


def require(*scenarios: str) -> None:
    gone = missing(*scenarios)
    if gone:
        raise LabError(f"lab tools missing: {', '.join(gone)} (run: sudo scripts/setup-lab.sh)")


def versions() -> dict[str, str]:
    """Debian package versions of the lab tools, Python package versions, kernel."""
    out: dict[str, str] = {}
    try:
        cp = subprocess.run(["dpkg-query", "-W", "-f", "${Package} ${Version}\n", *PACKAGES],
                            capture_output=True, text=True, timeout=10)
        for line in cp.stdout.splitlines():
            pkg, _, ver = line.partition(" ")
            if ver:
                out[pkg] = ver
    except (OSError, subprocess.TimeoutExpired):
        pass
    for pkg in PY_PACKAGES:
        try:
            out[f"python:{pkg}"] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            pass
    out["python"] = platform.python_version()
    out["kernel"] = platform.release()
    return out

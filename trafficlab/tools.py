"""Which external tools the lab needs, whether they are here, and their versions.

    >>> require("syn_scan", "ssh_bruteforce")   # LabError listing what is missing
    >>> versions()                              # for the datasheet

A scenario needs the tools of every one of its variants (`Variant.needs`).
"""
from __future__ import annotations

import platform
import shutil
import subprocess
from importlib import metadata

from contracts.errors import LabError

# Needed by every lab run: topology, victim services, benign clients, capture.
BASE = ("ip", "ethtool", "sysctl", "ss", "tcpdump", "nginx", "sshd", "dnsmasq", "iperf3",
        "curl", "ssh", "scp", "ssh-keygen", "openssl", "timeout", "vsftpd", "smbd", "smbclient",
        "mosquitto", "mosquitto_pub", "mosquitto_sub", "memcached", "snmpd", "snmpget",
        "snmpbulkwalk", "busybox", "ping")
OPTIONAL = ("wrk",)
PACKAGES = ("iproute2", "ethtool", "tcpdump", "nginx", "openssh-server", "dnsmasq-base",
            "iperf3", "curl", "wrk", "nmap", "hping3", "slowhttptest", "hydra", "openssl",
            "masscan", "zmap", "medusa", "patator", "ncrack", "fping", "iputils-ping", "busybox",
            "vsftpd", "memcached", "snmpd", "snmp", "samba", "smbclient", "mosquitto",
            "mosquitto-clients")
PY_PACKAGES = ("nfstream", "pandas", "pyarrow", "numpy")
_SBIN = "/usr/sbin:/sbin"


def which(tool: str) -> str | None:
    return shutil.which(tool) or shutil.which(tool, path=_SBIN)


def scenario_tools(name: str) -> tuple[str, ...]:
    from trafficlab.scenarios import SCENARIOS
    scenario = SCENARIOS.get(name)
    return tuple(t for v in scenario.variants for t in v.needs) if scenario else ()


def missing(*scenarios: str) -> list[str]:
    tools = list(BASE)
    for name in scenarios:
        tools += scenario_tools(name)
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

"""A benign client: runs inside one client namespace until a deadline, then exits.

Each client has a profile (what it mostly does) and a rate multiplier, both drawn from
the generation seed. Between them the profiles cover what a small office network does:
web browsing over HTTP/1.1, TLS and HTTP/2, page loads over parallel short connections, API
calls and wrk bursts, admin logins (and the odd mistyped password), DNS lookups against the
victim and the corp resolvers, SSH sessions, consoles with typed keystrokes, scp, SMB file
shares, anonymous FTP, MQTT telemetry, NTP, SNMP polling, memcached lookups, bulk transfers
(iperf3, large files) and long idle connections (an MQTT subscriber, an idle SSH session).
Every action is bounded by a timeout and talks only to lab addresses.

    ip netns exec el-123-c1 python -m trafficlab.benign --victim 10.77.0.10 \\
        --servers 10.77.0.80,10.77.0.91 --profile office --seed 7 --until 1790000000.0 \\
        --key /tmp/el-lab-x/client_key --admin-pass /tmp/el-lab-x/admin-password

The orchestrator (`trafficlab.generate`) starts one per client and stops it by process
group, so any curl/ssh/smbclient it spawned stops with it.
"""
from __future__ import annotations

import argparse
import os
import random
import shutil
import socket
import struct
import subprocess
import threading
import time
from pathlib import Path

from trafficlab.benign_more import MoreActions, background
from trafficlab.services import ASSETS, DOWNLOADS, IPERF_PORTS, PAGES

# Action weights and base actions per second for each profile.
PROFILES: dict[str, tuple[dict[str, float], float]] = {
    "browser": ({"web": 0.3, "tls": 0.15, "http2": 0.15, "page_load": 0.15, "dns": 0.15, "wrk": 0.05,
                 "download": 0.05, "login_page": 0.05}, 5.0),
    "api": ({"api": 0.45, "tls": 0.1, "http2": 0.1, "wrk": 0.1, "dns": 0.1, "memcached": 0.15}, 6.0),
    "admin": ({"ssh": 0.2, "console": 0.15, "scp": 0.1, "admin": 0.15, "dns": 0.15, "snmp": 0.1,
               "web": 0.05, "ntp": 0.1}, 3.0),
    "bulk": ({"iperf": 0.1, "download": 0.15, "bulk": 0.05, "ssh_upload": 0.1, "scp": 0.1, "smb": 0.15,
              "ftp": 0.1, "dns": 0.25}, 2.0),
    "resolver": ({"dns": 0.4, "resolver": 0.3, "web": 0.1, "tls": 0.1, "ntp": 0.1}, 4.0),
    "office": ({"smb": 0.35, "http2": 0.15, "web": 0.15, "page_load": 0.05, "ftp": 0.1, "dns": 0.1,
                "admin": 0.05, "resolver": 0.05}, 3.0),
    "iot": ({"mqtt": 0.6, "ntp": 0.15, "resolver": 0.15, "dns": 0.1}, 3.0),
    "monitor": ({"snmp": 0.45, "ntp": 0.15, "api": 0.15, "resolver": 0.15, "admin": 0.1}, 3.0),
}
USER_AGENTS = (
    "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/126.0 Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_5) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/17.5 Safari/605.1.15",
    "curl/7.88.1", "python-requests/2.32.3", "Go-http-client/1.1",
)
LAB_NAMES = ("www", "api", "files", "ssh", "mail", "cdn", "static", "intranet", "")
QTYPES = {"A": 1, "AAAA": 28, "MX": 15, "TXT": 16, "SRV": 33, "CNAME": 5}
MAX_CONCURRENT = 4


class Client(MoreActions):
    def __init__(self, victim: str, profile: str, rng: random.Random, key: Path,
                 rate: float, servers: list[str] | None = None, admin_pass: str = "") -> None:
        self.victim, self.rng, self.key, self.profile = victim, rng, key, profile
        self.servers = servers or []
        self.admin_pass = admin_pass
        self.weights, base = PROFILES[profile]
        self.rate = base * rate
        self.ua = rng.choice(USER_AGENTS)
        self.has_wrk = shutil.which("wrk") is not None
        self.lock = threading.Lock()

    def pick(self) -> str:
        names = list(self.weights)
        with self.lock:
            action = self.rng.choices(names, [self.weights[n] for n in names])[0]
        if action in ("resolver", "ntp", "snmp", "memcached") and not self.servers:
            return "dns"
        return "web" if action == "wrk" and not self.has_wrk else action

    def run(self, action: str) -> None:
        with self.lock:  # random.Random is not thread-safe; draw every parameter up front
            self.lookups: list[tuple[str, str, int, int]] = []
            self.calls: list = []
            argv, env, stdin = getattr(self, f"_{action}")()
            lookups, calls = self.lookups, self.calls
        for server, name, qtype, qid in lookups:
            dns_query(server, name, qtype, qid)
        for fn in calls:
            fn()
        if argv:
            _call(argv, env=env, stdin=stdin)

    # Each builder returns (argv or None, env, bytes for stdin) and may queue DNS lookups
    # or plain Python calls (self.calls) made outside the lock.
    def _web(self):
        if self.rng.random() < 0.4:
            self._dns_lookup("www.lab.internal", "A")
        pages = self.rng.sample(sorted(PAGES), self.rng.randint(1, 5))
        if self.rng.random() < 0.1:
            pages.append(f"missing-{self.rng.randint(1, 999)}.html")
        urls = [f"http://{self.victim}/{p}" for p in pages]
        return self._curl(urls, rate=self.rng.random() < 0.2), None, None

    def _tls(self):
        pages = self.rng.sample(sorted(PAGES), self.rng.randint(1, 4))
        host = self.rng.choice(["www.lab.internal", "lab.internal", "api.lab.internal"])
        urls = [f"https://{host}/{p}" for p in pages]
        argv = self._curl(urls, rate=False) + ["-k", "--http1.1", "--resolve", f"{host}:443:{self.victim}"]
        return argv, None, None

    def _api(self):
        url = f"http://{self.victim}/api/{self.rng.choice(['status', 'items', 'user', 'metrics'])}"
        argv = self._curl([url], rate=False)
        if self.rng.random() < 0.3:
            body = os.urandom(self.rng.randint(200, 64_000)).hex()[: self.rng.randint(100, 60_000)]
            argv = self._curl([f"http://{self.victim}/upload"], rate=False) + [
                "-X", "POST", "-H", "Content-Type: application/octet-stream", "--data-binary", "@-"]
            return argv, None, body.encode()
        return argv, None, None

    def _download(self):
        name = self.rng.choice(["report.bin", "backup.bin", "hero.png", "docs.html"])
        argv = self._curl([f"http://{self.victim}/{name}"], rate=False)
        argv += ["--limit-rate", f"{self.rng.randint(100, 4000)}k"]
        return argv, None, None

    def _wrk(self):
        lo = self.rng.randint(30, 300)
        env = {**os.environ, "EL_THINK_MIN_MS": str(lo), "EL_THINK_MAX_MS": str(lo * self.rng.randint(2, 5))}
        argv = ["wrk", "-t1", f"-c{self.rng.randint(1, 3)}", f"-d{self.rng.randint(1, 4)}s",
                "--timeout", "2s", "-s", str(ASSETS / "wrk-think.lua"), f"http://{self.victim}/"]
        return argv, env, None

    def _dns(self):
        for _ in range(self.rng.randint(1, 3)):
            self._dns_lookup(self._dns_name(), self.rng.choices(list(QTYPES), [6, 2, 1, 1, 1, 1])[0])
        return None, None, None

    def _ssh(self):
        if self.rng.random() < 0.5:
            cmd = ["emit", str(min(int(self.rng.lognormvariate(9.0, 1.5)), 1_000_000) + 100)]
        else:
            cmd = ["interactive", str(self.rng.randint(1, 8))]
        return self._ssh_argv(cmd), None, None

    def _ssh_upload(self):
        size = self.rng.randint(5_000, 600_000)
        return self._ssh_argv(["sink"]), None, os.urandom(size)

    def _iperf(self):
        argv = ["iperf3", "-c", self.victim, "-p", str(self.rng.choice(IPERF_PORTS)),
                "-n", f"{self.rng.randint(128, 2048)}K", "-b", f"{self.rng.randint(2, 40)}M",
                "--connect-timeout", "2000"]
        if self.rng.random() < 0.4:
            argv.append("-R")
        return argv, None, None

    def _curl(self, urls: list[str], rate: bool) -> list[str]:
        argv = ["curl", "-s", "-o", "/dev/null", "--max-time", "15", "--connect-timeout", "3",
                "-A", self.ua]
        for _ in urls[1:]:
            argv += ["-o", "/dev/null"]
        if rate:
            argv += ["--limit-rate", f"{self.rng.randint(50, 2000)}k"]
        return argv + urls

    def _ssh_opts(self) -> list[str]:
        return ["-F", "/dev/null", "-i", str(self.key), "-o", "BatchMode=yes",
                "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
                "-o", "ConnectTimeout=3", "-o", "LogLevel=ERROR"]

    def _ssh_argv(self, cmd: list[str]) -> list[str]:
        return ["ssh", *self._ssh_opts(), f"root@{self.victim}", *cmd]

    def _dns_name(self) -> str:
        roll = self.rng.random()
        if roll < 0.75:
            sub = self.rng.choice(LAB_NAMES)
            return f"{sub}.lab.internal" if sub else "lab.internal"
        if roll < 0.92:
            return f"host{self.rng.randint(1, 400)}.lab.internal"  # NXDOMAIN
        return self.rng.choice(["example.org", "updates.example.com", "time.example.net"])

    def _dns_lookup(self, name: str, qtype: str, server: str | None = None) -> None:
        self.lookups.append((server or self.victim, name, QTYPES[qtype], self.rng.getrandbits(16)))


def dns_query(server: str, name: str, qtype: int, qid: int, timeout: float = 1.0) -> bytes:
    """One DNS query over UDP from a fresh socket (a fresh source port: one flow)."""
    header = struct.pack("!HHHHHH", qid, 0x0100, 1, 0, 0, 0)
    qname = b"".join(bytes([len(p)]) + p.encode() for p in name.split(".") if p) + b"\0"
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(timeout)
        sock.sendto(header + qname + struct.pack("!HH", qtype, 1), (server, 53))
        try:
            return sock.recv(4096)
        except (socket.timeout, OSError):
            return b""


def _call(argv: list[str], env=None, stdin: bytes | None = None, timeout: float = 25.0) -> None:
    try:
        subprocess.run(argv, input=stdin, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                       env=env, timeout=timeout, check=False)
    except (subprocess.TimeoutExpired, OSError):
        pass


def drive(client: Client, until: float) -> int:
    """Start actions at Poisson times until the deadline; returns how many were started."""
    slots = threading.BoundedSemaphore(MAX_CONCURRENT)
    started = 0
    while True:
        with client.lock:
            wait = client.rng.expovariate(client.rate)
        if time.time() + wait >= until:
            break
        time.sleep(wait)
        if not slots.acquire(blocking=False):
            continue  # busy: a real user would not pile up requests either
        action = client.pick()

        def work(a: str = action) -> None:
            try:
                client.run(a)
            finally:
                slots.release()

        threading.Thread(target=work, daemon=True).start()
        started += 1
    return started


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="A lab benign client (runs inside a namespace).")
    ap.add_argument("--victim", required=True)
    ap.add_argument("--servers", default="", help="comma-separated lab servers (DNS, NTP, SNMP, cache)")
    ap.add_argument("--profile", choices=sorted(PROFILES), required=True)
    ap.add_argument("--seed", type=int, required=True)
    ap.add_argument("--rate", type=float, default=1.0, help="multiplier on the profile's rate")
    ap.add_argument("--until", type=float, required=True, help="epoch seconds to stop at")
    ap.add_argument("--key", type=Path, required=True, help="SSH client key for the victim")
    ap.add_argument("--admin-pass", type=Path, default=None, help="file with the web admin password")
    args = ap.parse_args(argv)
    password = args.admin_pass.read_text().strip() if args.admin_pass and args.admin_pass.exists() else ""
    client = Client(args.victim, args.profile, random.Random(args.seed), args.key, args.rate,
                    [s for s in args.servers.split(",") if s], password)
    until = min(args.until, time.time() + 3600)
    threads = background(client, until)
    n = drive(client, until)
    for t in threads:
        t.join(timeout=5)
    print(f"benign {args.profile}: {n} actions", flush=True)


if __name__ == "__main__":
    main()

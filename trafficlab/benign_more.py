"""More benign client actions: HTTP/2, page loads over parallel connections, admin logins,
FTP, SMB, MQTT, scp, typed SSH consoles, NTP, SNMP, memcached, the corp resolvers, bulk
downloads, and the long-lived idle connections some profiles hold open for the whole run.

A mixin of `trafficlab.benign.Client`: each `_name` builder draws its parameters under
the client's lock and returns (argv or None, env, stdin bytes); work that is not one
command (a socket exchange, keystrokes typed with human timing) goes to `self.calls`.
"""
from __future__ import annotations

import os
import socket
import struct
import subprocess
import threading
import time

from trafficlab.services import PAGES

CONSOLE_COMMANDS = ("ls -la", "uptime", "df -h", "ps aux", "cat /etc/motd", "tail -n 20 app.log",
                    "top -bn1", "systemctl status app", "cd /var/log", "grep error app.log", "")
RESOLVER_NAMES = ("corp.internal", "www.corp.internal", "files.corp.internal", "mqtt.corp.internal",
                  "ns.corp.internal", "printer.corp.internal", "vpn.corp.internal")
SNMP_OIDS = ("1.3.6.1.2.1.1.3.0", "1.3.6.1.2.1.1.5.0", "1.3.6.1.2.1.2.2.1.10.2",
             "1.3.6.1.2.1.2.2.1.16.2", "1.3.6.1.2.1.25.1.1.0")
SNMP_ENV = {**os.environ, "MIBS": "", "MIBDIRS": "/nonexistent"}


class MoreActions:
    def _http2(self):
        pages = self.rng.sample(["index.html", "style.css", "app.js", "logo.png", "news.html",
                                 "docs.html", "hero.png"], self.rng.randint(2, 6))
        host = self.rng.choice(["www.lab.internal", "lab.internal"])
        argv = self._curl([f"https://{host}/{p}" for p in pages], rate=False)
        return argv + ["-k", "--http2", "--resolve", f"{host}:443:{self.victim}"], None, None

    def _page_load(self):
        """A browser loading a page from a server without HTTP/2: 4-12 assets over up to
        six parallel HTTP/1.1 connections at once (browsers' per-host limit), each a short
        connection with its own TLS handshake. One client's burst of short connections to
        one server is what a page load looks like from the server's side."""
        assets = sorted(PAGES)
        pages = [self.rng.choice(assets) for _ in range(self.rng.randint(4, 12))]
        host = self.rng.choice(["www.lab.internal", "lab.internal", "static.lab.internal"])
        scheme = "https" if self.rng.random() < 0.8 else "http"
        argv = self._curl([f"{scheme}://{host}/{p}" for p in pages], rate=False)
        return argv + ["-k", "--http1.1", "--parallel", "--parallel-immediate",
                       "--parallel-max", str(self.rng.randint(2, 6)),
                       "--resolve", f"{host}:443:{self.victim}", "--resolve", f"{host}:80:{self.victim}"], None, None

    def _admin(self):
        wrong = self.rng.random() < 0.12 or not self.admin_pass
        password = "Summer2024!" if wrong else self.admin_pass
        scheme = self.rng.choice(["http", "https"])
        argv = self._curl([f"{scheme}://{self.victim}/admin/"], rate=False) + ["-k", "-u", f"admin:{password}"]
        return argv, None, None

    def _login_page(self):
        argv = self._curl([f"http://{self.victim}/login"], rate=False)
        if self.rng.random() < 0.5:      # a person signing in (and mistyping)
            argv += ["--data", f"user=jdoe&pass=pw{self.rng.randint(1, 99)}"]
        return argv, None, None

    def _ftp(self):
        name = self.rng.choice(["readme.txt", "report.bin", "backup.bin"])
        argv = ["curl", "-s", "-o", "/dev/null", "--max-time", "20", "--connect-timeout", "3",
                f"ftp://{self.victim}/{name}"]
        if self.rng.random() < 0.3:
            argv.append("--ftp-port")
            argv.append("-")    # active mode now and then
        return argv, None, None

    def _smb(self):
        files = ["budget.xlsx", "minutes.docx", "plan.pdf", "photos.zip"]
        roll = self.rng.random()
        if roll < 0.5:
            cmd = f"ls; get {self.rng.choice(files)} /dev/null"
        elif roll < 0.8:
            cmd = f"put /etc/services upload-{self.rng.randint(1, 999)}.txt; ls"
        else:
            cmd = "ls; " + "; ".join(f"get {f} /dev/null" for f in self.rng.sample(files, 2))
        argv = ["smbclient", f"//{self.victim}/files", "-N", "-m", self.rng.choice(["SMB3", "SMB3", "SMB2"]),
                "-s", "/dev/null", "-t", "10", "-c", cmd]
        return argv, None, None

    def _mqtt(self):
        sensor = self.rng.randint(1, 40)
        metric = self.rng.choice(["temp", "humidity", "power", "door", "co2"])
        n = self.rng.randint(1, 6)
        lines = "\n".join(f'{{"v": {self.rng.uniform(0, 100):.2f}, "seq": {i}}}' for i in range(n)) + "\n"
        argv = ["mosquitto_pub", "-h", self.victim, "-t", f"site/{sensor}/{metric}",
                "-q", str(self.rng.choice([0, 0, 1])), "-i", f"sensor-{sensor}-{self.rng.getrandbits(16)}",
                "-k", str(self.rng.choice([10, 30, 60])), "-l"]
        return argv, None, lines.encode()

    def _scp(self):
        base = ["scp", "-O", "-q", *self._ssh_opts()]
        if self.rng.random() < 0.6:
            name = self.rng.choice(["report.bin", "backup.bin", "docs.html", "hero.png"])
            return base + [f"root@{self.victim}:/srv/{name}", "/dev/null"], None, None
        path = f"/tmp/el-scp-{os.getpid()}-{self.rng.getrandbits(20)}.bin"
        size = self.rng.randint(20_000, 800_000)

        def upload() -> None:
            with open(path, "wb") as f:
                f.write(os.urandom(size))
            try:
                subprocess.run(base + [path, f"root@{self.victim}:/upload/"], stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, timeout=25, check=False)
            except (subprocess.TimeoutExpired, OSError):
                pass
            finally:
                os.unlink(path)
        self.calls.append(upload)
        return None, None, None

    def _console(self):
        keys = []
        for _ in range(self.rng.randint(2, 8)):
            cmd = self.rng.choice(CONSOLE_COMMANDS)
            keys += [(c, self.rng.uniform(0.05, 0.3)) for c in cmd]
            keys.append(("\n", self.rng.uniform(0.5, 4.0)))
        keys.append(("exit\n", 0.2))
        argv = ["ssh", "-tt", *self._ssh_opts(), f"root@{self.victim}", "console"]
        self.calls.append(lambda: _type(argv, keys))
        return None, None, None

    def _ntp(self):
        server = self.rng.choice(self.servers)
        port = 123 if self.rng.random() < 0.4 else 0      # ntpd-style or SNTP-style client
        polls = self.rng.randint(1, 4)
        self.calls.append(lambda: ntp_query(server, port, polls))
        return None, None, None

    def _snmp(self):
        server = self.rng.choice(self.servers)
        if self.rng.random() < 0.7:
            oids = self.rng.sample(SNMP_OIDS, self.rng.randint(1, 4))
            return ["snmpget", "-v2c", "-c", "public", "-t", "1", "-r", "1", "-On", server, *oids], SNMP_ENV, None
        return (["snmpbulkwalk", "-v2c", "-c", "public", "-t", "1", "-r", "1", "-On",
                 f"-Cr{self.rng.choice([5, 10, 20])}", server, "1.3.6.1.2.1.2"], SNMP_ENV, None)

    def _memcached(self):
        server = self.rng.choice(self.servers)
        ops = [(self.rng.choice(["get", "get", "get", "set"]), f"session:{self.rng.randint(1, 300)}",
                self.rng.randint(20, 2000)) for _ in range(self.rng.randint(1, 8))]
        self.calls.append(lambda: memcached_ops(server, ops))
        return None, None, None

    def _resolver(self):
        server = self.rng.choice(self.servers)
        for _ in range(self.rng.randint(1, 3)):
            self._dns_lookup(self.rng.choice(RESOLVER_NAMES), self.rng.choice(["A", "A", "AAAA", "MX", "TXT"]),
                             server=server)
        return None, None, None

    def _bulk(self):
        argv = self._curl([f"http://{self.victim}/bulk.iso"], rate=False)
        argv[argv.index("15")] = "40"      # --max-time: a large file
        if self.rng.random() < 0.5:
            argv += ["--limit-rate", f"{self.rng.randint(1, 8)}M"]
        return argv, None, None


def _type(argv: list[str], keys: list[tuple[str, float]]) -> None:
    """An interactive session: keystrokes with human timing into ssh -tt (a pty)."""
    try:
        proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
    except OSError:
        return
    try:
        time.sleep(0.8)
        for text, pause in keys:
            proc.stdin.write(text.encode())
            proc.stdin.flush()
            time.sleep(pause)
        proc.stdin.close()
        proc.wait(timeout=10)
    except (OSError, subprocess.TimeoutExpired, ValueError):
        proc.kill()
        proc.wait()


def ntp_query(server: str, port: int, polls: int, timeout: float = 1.0) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        try:
            sock.bind(("", port))
        except OSError:
            sock.bind(("", 0))
        sock.settimeout(timeout)
        for i in range(polls):
            now = time.time() + 2208988800
            pkt = bytes([0x23, 0, 6, 0xEC]) + b"\0" * 36 + struct.pack("!II", int(now), int((now % 1) * 2**32))
            try:
                sock.sendto(pkt, (server, 123))
                sock.recv(512)
            except OSError:
                pass
            if i < polls - 1:
                time.sleep(1.0)   # iburst-like


def memcached_ops(server: str, ops: list[tuple[str, str, int]]) -> None:
    try:
        with socket.create_connection((server, 11211), timeout=2) as s:
            for op, key, size in ops:
                if op == "set":
                    s.sendall(f"set {key} 0 300 {size}\r\n".encode() + b"x" * size + b"\r\n")
                else:
                    s.sendall(f"get {key}\r\n".encode())
                s.recv(65536)
    except OSError:
        pass


def background(client, until: float) -> list[threading.Thread]:
    """The long-lived, mostly idle connections a profile keeps for the whole run."""
    left = max(1.0, until - time.time())
    argvs = []
    if client.profile == "iot":
        argvs.append((["mosquitto_sub", "-h", client.victim, "-t", "site/#", "-k",
                       str(client.rng.choice([15, 20, 30, 45])), "-i", f"dash-{client.rng.getrandbits(16)}"], None))
    if client.profile in ("admin", "monitor"):
        argvs.append((["ssh", "-o", f"ServerAliveInterval={client.rng.choice([10, 15, 25])}",
                       *client._ssh_opts(), f"root@{client.victim}", "sink"], subprocess.PIPE))
    threads = []
    for argv, stdin in argvs:
        def hold(a=argv, s=stdin) -> None:
            try:   # Popen, not run: run() would close a piped stdin at once
                proc = subprocess.Popen(a, stdin=s or subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL)
            except OSError:
                return
            try:
                proc.wait(timeout=left)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        t = threading.Thread(target=hold, daemon=True)
        t.start()
        threads.append(t)
    return threads

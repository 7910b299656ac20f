"""The victim's services: nginx (HTTP and HTTPS), sshd, dnsmasq and iperf3 servers.

Configuration lives in `deploy/lab/` as templates; this module renders them into the
run's scratch directory, creates what they need (web content, a self-signed TLS
certificate, SSH host and client keys) and starts each daemon in the foreground inside
the victim namespace, under the lab's `Procs` so teardown stops it. Nothing listens
outside the victim namespace.

    >>> svc = Services(topo, procs, run_dir, rng)
    >>> svc.start()             # raises LabError naming the daemon that did not come up
"""
from __future__ import annotations

import os
import random
import shutil
from dataclasses import dataclass
from pathlib import Path

from streams.errors import LabError
from streams.lab.procs import Procs, run, wait_until
from streams.lab.topology import Topology

ASSETS = Path(__file__).resolve().parents[2] / "deploy" / "lab"
IPERF_PORTS = (5201, 5202, 5203)
TCP_PORTS = (22, 80, 443, *IPERF_PORTS)

# What the benign browsers and wrk fetch, and the larger downloads; sizes in bytes
# (randomised +-30% per seed). Kept modest so a capture stays small enough to ship.
PAGES = {
    "index.html": 12_000, "news.html": 40_000, "about.html": 6_000, "docs.html": 90_000,
    "style.css": 18_000, "app.js": 120_000, "logo.png": 35_000, "hero.png": 300_000,
}
DOWNLOADS = {"report.bin": 400_000, "backup.bin": 1_200_000}


def asset(name: str) -> Path:
    path = ASSETS / name
    if not path.exists():
        raise LabError(f"lab asset {path} is missing (deploy/lab/ must be next to streams/)")
    return path


def render(template: str, out: Path, **values: str) -> Path:
    text = asset(template).read_text()
    for key, value in values.items():
        text = text.replace("{{" + key + "}}", value)
    if "{{" in text:
        raise LabError(f"{template}: unrendered placeholder left in {out}")
    out.write_text(text)
    return out


@dataclass
class Services:
    topo: Topology
    procs: Procs
    run_dir: Path
    rng: random.Random

    @property
    def client_key(self) -> Path:
        return self.run_dir / "client_key"

    def start(self, timeout: float = 10.0) -> None:
        self._prepare()
        vic = self.topo.victim
        self.procs.start("nginx", self.topo.exec("vic", [
            "nginx", "-p", str(self.run_dir), "-c", str(self.run_dir / "nginx.conf")]))
        self.procs.start("sshd", self.topo.exec("vic", [
            shutil.which("sshd") or "/usr/sbin/sshd", "-D", "-e",
            "-f", str(self.run_dir / "sshd_config")]))
        self.procs.start("dnsmasq", self.topo.exec("vic", [
            "dnsmasq", "--keep-in-foreground", "--conf-file=" + str(self.run_dir / "dnsmasq.conf"),
            "--pid-file=" + str(self.run_dir / "dnsmasq.pid"), "--user=nobody",
            "--group=nogroup"]))
        for port in IPERF_PORTS:
            self.procs.start(f"iperf3-{port}", self.topo.exec("vic", [
                "iperf3", "-s", "-B", vic.addr, "-p", str(port)]))
        if not wait_until(self._listening, timeout):
            dead = [n for n in ("nginx", "sshd", "dnsmasq") if not self.procs.alive(n)]
            detail = "; ".join(f"{n}: {self.procs.log(n)[-300:]}" for n in dead)
            raise LabError(f"victim services did not come up within {timeout}s "
                           f"(missing: {sorted(self._missing())}) {detail}")

    def _missing(self) -> set[str]:
        cp = run(self.topo.exec("vic", ["ss", "-Hltun"]), check=False, what="ss")
        have = set()
        for line in cp.stdout.splitlines():
            parts = line.split()
            if len(parts) >= 5:
                proto, local = parts[0], parts[4]
                have.add(f"{proto}:{local.rsplit(':', 1)[-1]}")
        want = {f"tcp:{p}" for p in TCP_PORTS} | {"udp:53"}
        return want - have

    def _listening(self) -> bool:
        return not self._missing()

    def _prepare(self) -> None:
        rd, addr = self.run_dir, self.topo.victim.addr
        os.chmod(rd, 0o755)  # nginx workers run as nobody and read www/
        for sub in ("body", "proxy", "fastcgi", "uwsgi", "scgi"):
            (rd / "nginx-tmp" / sub).mkdir(parents=True, exist_ok=True)
        render("nginx.conf", rd / "nginx.conf", run_dir=str(rd), addr=addr)
        render("dnsmasq.conf", rd / "dnsmasq.conf", addr=addr)
        session = rd / "ssh-session.sh"
        shutil.copy(asset("ssh-session.sh"), session)
        session.chmod(0o755)
        render("sshd_config", rd / "sshd_config", run_dir=str(rd), addr=addr, session=str(session))
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege-separation dir
        self._keys()
        self._web_content()

    def _keys(self) -> None:
        rd = self.run_dir
        run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(rd / "ssh_host_ed25519_key")],
            what="ssh host key")
        run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(self.client_key)],
            what="ssh client key")
        (rd / "authorized_keys").write_text((rd / "client_key.pub").read_text())
        run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
             "-nodes", "-days", "2", "-subj", "/CN=www.lab.internal",
             "-addext", "subjectAltName=DNS:www.lab.internal,DNS:lab.internal,DNS:api.lab.internal",
             "-keyout", str(rd / "tls.key"), "-out", str(rd / "tls.crt")], what="TLS certificate")

    def _web_content(self) -> None:
        www = self.run_dir / "www"
        www.mkdir(exist_ok=True)
        for name, size in {**PAGES, **DOWNLOADS}.items():
            n = int(size * self.rng.uniform(0.7, 1.3))
            data = self.rng.randbytes(n) if name.endswith((".bin", ".png")) else _text(self.rng, n)
            (www / name).write_bytes(data)
        (www / "api").mkdir(exist_ok=True)


def _text(rng: random.Random, n: int) -> bytes:
    words = [b"edge", b"loop", b"flow", b"lab", b"<p>", b"</p>", b"network", b"report", b"\n"]
    out = bytearray()
    while len(out) < n:
        out += rng.choice(words) + b" "
    return bytes(out[:n])

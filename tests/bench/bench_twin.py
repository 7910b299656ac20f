"""Twin evaluation time against the number of flows (10k, 100k, 1M): a plain script.

    .venv/bin/python tests/bench/bench_twin.py [--sizes 10000,100000,1000000] [--repeats 5]

Flows come from a seeded generator (40 x 250 sources, one server, 10% attack), with one
detector window per 8 flows. Prints build time (once per twin: parsing, factorising,
mapping windows to flows) and evaluation time (per policy: what the blueprint loop pays),
median of the repeats, for a policy that uses every action.
"""
from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import pandas as pd

from contracts.policy_model import Policy
from llm_agents.twin.model import DigitalTwin

POLICY = Policy(block_sources=["10.1.3.0/24", "10.1.4.7"], isolate_hosts=["10.1.5.5"],
                rate_limit_sources=[{"sources": ["10.1.7.0/24"], "packets_per_s": 50},
                                    {"sources": ["10.1.8.9"], "packets_per_s": 5}],
                class_thresholds=[{"attack": "dos", "min_confidence": 0.8}],
                suppress_alerts=[{"key": "10.1.9.0/24"}, {"attack": "dos", "key": "10.1.10.1"}],
                allow_services=[{"ip": "10.2.0.1", "port": 80, "proto": "tcp"}])


def frames(n: int, seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    rng = np.random.default_rng(seed)
    src = np.char.add("10.1.", np.char.add(rng.integers(0, 40, n).astype(str),
                                           np.char.add(".", rng.integers(0, 250, n).astype(str))))
    ids = np.char.add("f", np.arange(n).astype(str))
    flows = pd.DataFrame({"flow_id": ids, "first_seen_ms": np.sort(rng.integers(0, 3_600_000, n)),
                          "src_ip": src, "dst_ip": "10.2.0.1", "dst_port": rng.integers(1, 1024, n),
                          "protocol": 6, "packets": rng.integers(1, 50, n), "bytes": rng.integers(60, 50_000, n),
                          "label": np.where(rng.random(n) < 0.1, "dos", "benign")})
    w = n // 8
    det = pd.DataFrame({"window_id": np.arange(w).astype(str), "key": src[: 8 * w: 8],
                        "flow_ids": list(ids[: 8 * w].reshape(w, 8)),
                        "predicted": np.where(rng.random(w) < 0.1, "dos", "benign"),
                        "confidence": rng.uniform(0.5, 1, w)})
    return flows, det


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="10000,100000,1000000")
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    print(f"{'flows':>10} {'windows':>9} {'build_s':>9} {'evaluate_s':>11} {'flows/s':>12}")
    for n in (int(x) for x in args.sizes.split(",")):
        flows, det = frames(n)
        t0 = time.perf_counter()
        twin = DigitalTwin(flows, det)
        build = time.perf_counter() - t0
        times = []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            twin.evaluate(POLICY)
            times.append(time.perf_counter() - t0)
        ev = statistics.median(times)
        print(f"{n:>10} {twin.n_windows:>9} {build:>9.3f} {ev:>11.4f} {n / ev:>12,.0f}", flush=True)


if __name__ == "__main__":
    main()

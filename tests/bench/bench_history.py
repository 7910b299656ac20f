"""Host history at its bounds: bytes per table entry and flows/s, with the tables full.

Fills one view's host history (`--max-hosts`, pairs 4x) with flows from more sources than it
holds, in wire-sized batches whose strings are made inside the measured region (as the
worker's decode makes them), and prints the bytes tracemalloc sees held per entry once the
input is dropped, for numpy's HostHistory and the compiled kernel (CompiledHistory, whose
arrays are allocated at their bounds), then flows/s of numpy's batch path, of the
flow-by-flow reference and of the compiled kernel on the same flows, alternated best of
--repeat (tracemalloc off). Prints figures; no pass or fail.

    .venv/bin/python tests/bench/bench_history.py [--flows 400000] [--max-hosts 50000] [--repeat 3]
"""
from __future__ import annotations

import argparse
import gc
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from inference.history import CompiledHistory, HostHistory  # noqa: E402

BATCH = 500


def batches(flows: int, seed: int = 0):
    """Batches of (keys, peers, ports, ts, failed, bytes): sources and peers from a pool
    3x the host bound, so every table fills and evicts."""
    rng = np.random.default_rng(seed)
    for lo in range(0, flows, BATCH):
        n = min(BATCH, flows - lo)
        src, dst = rng.integers(0, 1 << 24, n), rng.integers(0, 1 << 16, n)
        keys = [f"10.{a >> 16}.{(a >> 8) & 255}.{a & 255}" for a in src.tolist()]
        peers = [f"172.16.{b >> 8}.{b & 255}" for b in dst.tolist()]
        yield (keys, peers, rng.integers(1, 65535, n).tolist(), np.arange(lo, lo + n, dtype=np.float64),
               (rng.random(n) < 0.3).tolist(), rng.integers(40, 5000, n).astype(float).tolist())


def held_bytes(flows: int, max_hosts: int, cls: type = HostHistory) -> tuple[HostHistory, int]:
    gc.collect()
    tracemalloc.start()
    h = cls(max_hosts)
    for b in batches(flows):
        h.update(*b)
    del b
    gc.collect()
    held = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    return h, held


def rate(flows: int, max_hosts: int, path: str) -> float:
    data = list(batches(flows, seed=1))
    h = (CompiledHistory if path == "compiled" else HostHistory)(max_hosts)
    step = h._update_rows if path == "flow by flow" else h.update
    t0 = time.perf_counter()
    for b in data:
        step(*b)
    return flows / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--flows", type=int, default=400_000)
    ap.add_argument("--max-hosts", type=int, default=50_000)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    h, held = held_bytes(args.flows, args.max_hosts)
    print(f"{args.flows:,} flows, max_hosts {args.max_hosts:,}: hosts {len(h):,}, pairs {len(h._peers):,}, "
          f"services {len(h._services):,}")
    print(f"numpy: held {held / 2**20:.1f} MiB, {held / h.entries:.0f} B per entry (hosts + pairs + services)")
    del h
    h, held = held_bytes(args.flows, args.max_hosts, CompiledHistory)
    print(f"compiled: held {held / 2**20:.1f} MiB, {held / h.entries:.0f} B per entry ({h.entries:,} entries)")
    del h
    best = {"batch": 0.0, "flow by flow": 0.0, "compiled": 0.0}
    for _ in range(args.repeat):
        for path in best:
            best[path] = max(best[path], rate(args.flows // 4, args.max_hosts // 4, path))
    for path, r in best.items():
        print(f"{path:<13} {r:>10,.0f} flows/s (best of {args.repeat}, {args.flows // 4:,} flows, full tables)")


if __name__ == "__main__":
    main()

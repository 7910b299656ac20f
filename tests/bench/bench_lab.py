"""Benchmark: lab generation time per scenario, and NFStream metering throughput.

    .venv/bin/python tests/bench/bench_lab.py                 # scale 0.3, all scenarios
    .venv/bin/python tests/bench/bench_lab.py --scale 1.0     # a full-size generation
    .venv/bin/python tests/bench/bench_lab.py --meter-only    # no root needed

Prints figures; it does not pass or fail on them. The lab part needs root (network
namespaces); without it only the metering of the shipped replay pcap is measured.
"""
from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from inference.flow_meter import meter_pcap  # noqa: E402
from trafficlab.topology import can_create_namespaces  # noqa: E402

SHIPPED_PCAP = REPO / "data" / "lab" / "eval.pcap"


def bench_generate(scale: float, seed: int, scenarios: str) -> None:
    from trafficlab.generate import GenerateOptions, generate

    out = Path(tempfile.mkdtemp(prefix="el-bench-"))
    try:
        opts = GenerateOptions(seed=seed, out_dir=out, name="bench", scale=scale,
                               scenarios=scenarios, keep_pcap=False)
        t0 = time.monotonic()
        result = generate(opts)
        total = time.monotonic() - t0
    finally:
        shutil.rmtree(out, ignore_errors=True)
    sheet = result.datasheet
    print(f"\nlab generation, seed {seed}, scale {scale} ({sheet['flows']} flows, "
          f"{sheet['capture']['packets']} packets, {sheet['capture']['dropped_by_kernel']} "
          "dropped by the kernel)")
    print(f"{'scenario':<16}{'seconds':>9}{'runs':>6}{'flows':>8}{'flows/s':>9}")
    for name, sec in result.scenario_seconds.items():
        runs = [r for r in sheet["runs"] if r["scenario"] == name]
        flows = sum(r["flows"] for r in runs)
        print(f"{name:<16}{sec:>9.1f}{len(runs):>6}{flows:>8}{flows / sec:>9.0f}")
    print(f"{'benign (throughout)':<22}{'':>3}{sheet['counts']['benign']:>14}")
    print(f"lab session {result.lab_seconds:.1f}s (build, warm-up, scenarios, gaps, tail); "
          f"metering {result.meter_seconds:.2f}s = {result.flows_per_s:.0f} flows/s; "
          f"whole generate {total:.1f}s")


def bench_meter(pcap: Path, repeats: int) -> None:
    if not pcap.exists():
        print(f"\n{pcap} not found; skipping the metering benchmark")
        return
    times, flows = [], 0
    for _ in range(repeats):
        t0 = time.monotonic()
        flows = len(meter_pcap(pcap, sensor="bench"))
        times.append(time.monotonic() - t0)
    packets = _count_packets(pcap)
    best, med = min(times), statistics.median(times)
    print(f"\nNFStream metering of {pcap.relative_to(REPO) if pcap.is_relative_to(REPO) else pcap}"
          f" ({pcap.stat().st_size / 1e6:.1f} MB, {packets} packets, {flows} flows), "
          f"{repeats} runs, one meter:")
    print(f"  median {med:.2f}s: {flows / med:.0f} flows/s, {packets / med:.0f} packets/s "
          f"(best {flows / best:.0f} flows/s)")


def _count_packets(pcap: Path) -> int:
    import struct
    data = pcap.read_bytes()
    endian = "<" if data[:4] in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1") else ">"
    pos, n = 24, 0
    while pos + 16 <= len(data):
        pos += 16 + struct.unpack_from(endian + "I", data, pos + 8)[0]
        n += 1
    return n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scale", type=float, default=0.3)
    ap.add_argument("--seed", type=int, default=101)
    ap.add_argument("--scenarios", default="all")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--meter-only", action="store_true")
    ap.add_argument("--pcap", type=Path, default=SHIPPED_PCAP)
    args = ap.parse_args()
    if not args.meter_only:
        ok, why = can_create_namespaces()
        if ok:
            bench_generate(args.scale, args.seed, args.scenarios)
        else:
            print(f"lab generation not measured: {why}")
    bench_meter(args.pcap, args.repeats)


if __name__ == "__main__":
    main()

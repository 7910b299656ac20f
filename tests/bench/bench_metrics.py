"""Observability cost benchmark: prints figures side by side; it does not pass or fail.

    .venv/bin/python tests/bench/bench_metrics.py [--flows 200000] [--policies 1000] [--scrapes 200]

  1. publishing flows to the embedded broker with a bare FlowPublisher (the baseline) and
     with SensorMetrics (a callback per acknowledged message): flows/s, alternated runs;
  2. the cost of one scrape of each service's registry (generate_latest): detector,
     sensor, enforcer, agent without and with the policy store read at scrape time
     (`--policies` proposals, about four audit rows each): p50/p99 ms and exposition size;
  3. one HTTP scrape of the agent's /metrics through `metrics_server` (what Prometheus pays).
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from prometheus_client import CollectorRegistry, generate_latest  # noqa: E402

from inference.datasets.synthetic import synthetic_flows  # noqa: E402
from llm_agents.agent_metrics import PolicyStoreCollector, build_agent_metrics  # noqa: E402
from llm_agents.policies.store import PolicyStore  # noqa: E402
from llm_agents.experiments.twin_scenarios import library_proposal, synthetic_scenario  # noqa: E402
from streams.broker import EmbeddedBroker, free_port  # noqa: E402
from streams.metrics import EdgeMetrics, EnforcerMetrics, SensorMetrics, metrics_server  # noqa: E402
from streams.producer import FlowPublisher  # noqa: E402
from streams.sources.replay import replay_frame  # noqa: E402
from streams.topics import Topics, ensure_topics  # noqa: E402


def publish_rates(bootstrap: str, n_flows: int, rounds: int) -> dict[str, list[float]]:
    """flows/s of the bare publisher and the metered one, alternating so drift hits both."""
    hosts = max(1, n_flows // (4 * 64))
    df = synthetic_flows(hosts_per_class=hosts, flows_per_host=64, seed=5).iloc[:n_flows]
    rates: dict[str, list[float]] = {"bare": [], "with SensorMetrics": []}
    for r in range(rounds):
        for name in rates:
            topics = Topics(f"bench-metrics-{r}-{len(rates[name])}-{name[:4]}.")
            ensure_topics(bootstrap, topics, 4)
            metrics = SensorMetrics(CollectorRegistry()) if name != "bare" else None
            with FlowPublisher(bootstrap, topics.flows, metrics=metrics) as pub:
                st = replay_frame(df, pub, progress=False)
            if metrics is not None:
                acked = metrics.registry.get_sample_value("edgeloop_sensor_flows_sent_total")
                assert acked == len(df), f"metrics counted {acked} of {len(df)} acknowledged flows"
            rates[name].append(st.rate)
    return rates


def populated_store(directory: Path, n: int) -> PolicyStore:
    """n proposals: a quarter rejected, a quarter approved and active, the rest waiting."""
    store = PolicyStore(directory)
    base = library_proposal(synthetic_scenario("syn_scan", seed=3, n_benign=300))
    for i in range(n):
        p = base.model_copy(update={"policy_id": f"bench-{i:06d}"})
        store.add(p)
        if i % 4 == 0:
            store.reject(p.policy_id, "bench", "bench")
        elif i % 4 == 1:
            store.approve(p.policy_id, "bench")
            store.mark_active(p.policy_id, "bench")
    return store


def registries(store: PolicyStore) -> dict[str, CollectorRegistry]:
    det = EdgeMetrics(CollectorRegistry())
    det.set_model("abc123")
    for part in range(4):
        det.consumer_lag.labels(partition=str(part)).set(10)
    for c in ("benign", "syn_scan", "syn_flood", "fin_scan", "slow_http_dos", "ssh_bruteforce"):
        det.detections.labels(predicted=c).inc(100)
    for _ in range(1000):
        det.inference_seconds.observe(0.004)
        det.batch_windows.observe(64)
    sensor, enforcer = SensorMetrics(CollectorRegistry()), EnforcerMetrics(CollectorRegistry())
    agent = CollectorRegistry()
    build_agent_metrics(agent)
    agent_store = CollectorRegistry()
    build_agent_metrics(agent_store)
    agent_store.register(PolicyStoreCollector(store))
    return {"detector": det.registry, "sensor": sensor.registry, "enforcer": enforcer.registry,
            "agent (no store)": agent, "agent + policy store": agent_store}


def timed(fn, n: int) -> tuple[float, float, int]:  # noqa: ANN001
    times, size = [], 0
    for _ in range(n):
        t0 = time.perf_counter()
        size = len(fn())
        times.append((time.perf_counter() - t0) * 1000)
    times.sort()
    return statistics.median(times), times[min(len(times) - 1, int(0.99 * len(times)))], size


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--flows", type=int, default=200_000)
    ap.add_argument("--rounds", type=int, default=3, help="Alternated publishing runs per variant.")
    ap.add_argument("--policies", type=int, default=1000)
    ap.add_argument("--scrapes", type=int, default=200)
    args = ap.parse_args()

    with EmbeddedBroker(free_port()) as b:
        rates = publish_rates(b.bootstrap, args.flows, args.rounds)
    print(f"1. publishing {args.flows:,} flows to the embedded broker, {args.rounds} alternated runs (median):")
    base = statistics.median(rates["bare"])
    for name, rs in rates.items():
        med = statistics.median(rs)
        print(f"   {name:<20} {med:>10,.0f} flows/s  ({med / base:.2f}x bare; runs {', '.join(f'{r:,.0f}' for r in rs)})")

    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        store = populated_store(Path(tmp) / "policies", args.policies)
        print(f"\n2. one scrape (generate_latest), {args.scrapes} times; store: {args.policies:,} policies, "
              f"{sum(store.counts().actions.values()):,} audit rows (built in {time.perf_counter() - t0:.1f}s)")
        print(f"   {'registry':<22} {'p50 ms':>8} {'p99 ms':>8} {'bytes':>8}")
        regs = registries(store)
        for name, reg in regs.items():
            p50, p99, size = timed(lambda r=reg: generate_latest(r), args.scrapes)
            print(f"   {name:<22} {p50:>8.3f} {p99:>8.3f} {size:>8,}")

        with metrics_server(regs["agent + policy store"], 0) as port:
            url = f"http://127.0.0.1:{port}/metrics"

            def get() -> bytes:
                with urllib.request.urlopen(url, timeout=5) as r:
                    return r.read()
            p50, p99, size = timed(get, args.scrapes)
        print(f"\n3. HTTP GET /metrics of the agent with its policy store: p50 {p50:.2f} ms, p99 {p99:.2f} ms, "
              f"{size:,} bytes")


if __name__ == "__main__":
    main()

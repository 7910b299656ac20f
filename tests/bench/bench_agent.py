"""Windows per second through the agent service, against the bare Labeler on the same windows.

Three ways to label the same made-up uncertain windows (tests.support.scripted_windows) with
the scripted oracle over HTTP (the real openai client), batch size 20:

  labeler   Labeler.label_batch alone: prompt, HTTP, parse. The ceiling.
  decider   plus acceptance (neighbours in a store of 800 reference windows), the dataset
            store, the review queue and the ledger: everything but Kafka.
  agent     `LabelAgent` on the embedded broker: consume `uncertain` in a group, decide,
            publish `labels`, commit. Timed from the first window received to the last
            commit (the group join, ~half the session timeout on Tansu, is shown apart).

    .venv/bin/python tests/bench/bench_agent.py [--windows 400] [--latency-ms 0 50]

A benchmark: it prints a table, it does not pass or fail.
"""
from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # tests.support

import openai
import pandas as pd

from contracts.records import encode
from llm_agents.agent import AgentConfig, AgentState, LabelAgent
from llm_agents.cli import single_threaded_blas
from llm_agents.client import LLMClient
from llm_agents.labeling.decider import Decider, strip_truth
from llm_agents.labeling.labeler import Labeler
from llm_agents.store import window_rows
from streams.broker import EmbeddedBroker, free_port
from streams.topics import Topics, ensure_topics
from tests.support.scripted_server import serve  # noqa: E402
from tests.support.scripted_windows import DETECTOR_CLASSES, synthetic_windows  # noqa: E402


def data(n: int):
    return synthetic_windows({"benign": n // 2, "dos": n // 4, "portscan": n - n // 2 - n // 4}, seed=5)


def state(root: Path) -> AgentState:
    st = AgentState.open(root)
    ref = synthetic_windows({c: 200 for c in DETECTOR_CLASSES}, seed=11, id_prefix="r")
    st.store.append("reference", pd.concat([window_rows(w, y, label_source="dataset:bench", confidence=1.0)
                                            for w, y in zip(ref.windows, ref.labels)], ignore_index=True))
    return st


def client(llm) -> LLMClient:
    return LLMClient(openai.OpenAI(base_url=llm.base_url, api_key="bench", max_retries=0), "scripted",
                     max_requests=10**6, max_tokens=10**9)


def bench_labeler(n: int, latency_s: float) -> float:
    d = data(n)
    with serve("oracle", truth=d.truth, delay_s=latency_s) as llm:
        lab = Labeler(client(llm), DETECTOR_CLASSES)
        lab.label_batch(d.windows[:1])  # warm up
        t0 = time.perf_counter()
        out = lab.label_batch(d.windows)
        wall = time.perf_counter() - t0
    assert len(out.proposals) == n
    return n / wall


def bench_decider(n: int, latency_s: float) -> float:
    d = data(n)
    with serve("oracle", truth=d.truth, delay_s=latency_s) as llm:
        dec = Decider(state(Path(tempfile.mkdtemp())), client(llm))
        warm = synthetic_windows({"benign": 2}, seed=6, id_prefix="warm")  # store index, connection
        dec.decide(warm.windows, {}, 4)
        t0 = time.perf_counter()
        for i in range(0, n, 20):
            dec.decide([strip_truth(w) for w in d.windows[i:i + 20]], {}, 4)
        wall = time.perf_counter() - t0
    return n / wall


def bench_agent(broker: EmbeddedBroker, n: int, latency_s: float) -> tuple[float, float]:
    from kafka import KafkaProducer

    d = data(n)
    topics = Topics(f"b{uuid.uuid4().hex[:8]}.")
    ensure_topics(broker.bootstrap, topics)
    p = KafkaProducer(bootstrap_servers=broker.bootstrap, acks="all")
    for w in d.windows:
        p.send(topics.uncertain, encode(w), key=w.key.encode())
    p.flush()
    p.close()
    with serve("oracle", truth=d.truth, delay_s=latency_s) as llm:
        agent = LabelAgent(AgentConfig(group_id=f"bench-{topics.prefix}", session_timeout_s=6, heartbeat_s=1,
                                       batch_wait_ms=50), broker.bootstrap, topics,
                           state(Path(tempfile.mkdtemp())), client(llm))
        first: list[float] = []
        ingest = agent._ingest

        async def timed(partition, msg):  # the clock starts at the first window, after the join
            if not first:
                first.append(time.perf_counter())
            await ingest(partition, msg)

        agent._ingest = timed
        t0 = time.perf_counter()
        stats = asyncio.run(agent.run(once=True))
        end = time.perf_counter()
    assert sum(stats.outcomes.values()) == n, stats
    return n / (end - first[0]), first[0] - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--windows", type=int, default=400)
    ap.add_argument("--latency-ms", type=float, nargs="+", default=[0.0, 50.0])
    args = ap.parse_args()
    single_threaded_blas()  # as `edgeloop agent` does; without it acceptance is ~15x slower here
    broker = EmbeddedBroker(free_port()).start()
    try:
        print(f"{args.windows} windows of 8 flows, batch 20, scripted oracle over HTTP")
        print(f"{'LLM latency':>11} {'labeler w/s':>12} {'decider w/s':>12} {'agent w/s':>10} "
              f"{'agent/labeler':>14} {'group join s':>13}")
        for ms in args.latency_ms:
            lab = bench_labeler(args.windows, ms / 1e3)
            dec = bench_decider(args.windows, ms / 1e3)
            ag, join = bench_agent(broker, args.windows, ms / 1e3)
            print(f"{ms:>9.0f}ms {lab:>12.1f} {dec:>12.1f} {ag:>10.1f} {ag / lab:>14.2f} {join:>13.2f}")
    finally:
        broker.stop()


if __name__ == "__main__":
    main()

"""Edge pipeline benchmark: prints figures side by side; it does not pass or fail.

    .venv/bin/python tests/bench/bench_edge.py [--flows 200000] [--rate 5000]

In one process tree, on the embedded broker:
  1. a bare aiokafka consume-and-decode loop on the flows topic (the ceiling);
  2. one `edgeloop detect` worker end to end on the same topic (flows/s, batch sizes, RSS);
  3. bare ONNX Runtime on the same windows, and OnnxDetector.score (normalise + calibrate);
  4. latency from flow produced to detection produced at a paced rate (default 5,000 flows/s),
     for windows closed by K (windows held open by the T horizon are excluded), and the
     worker's full garbage collections meanwhile (--gc-compare: with the startup freeze off
     and on, alternated; --coalesce-compare: messages windowed one at a time and coalesced,
     alternated), beside a bare consumer's produced->decoded on the same paced flows;
  5. two workers in one group on the same flows, beside one (scaling on this machine's cores);
  6. where the engine's time goes, by stage (cProfile of the engine in this process).
The bare consumer and the worker are alternated `--repeat` times; the best of each is shown.
With --int8, a worker serving the bundle's int8 model (EDGELOOP_INT8=1) joins the alternation.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from streams.broker import EmbeddedBroker, free_port  # noqa: E402
from streams.producer import FlowPublisher  # noqa: E402
from streams.sources.files import iter_flow_dicts  # noqa: E402
from streams.settings import Settings  # noqa: E402
from streams.topics import Topics, ensure_topics  # noqa: E402


# Uncertain windows a worker sends per second (--uncertain-rate): each carries its flows, so
# the output grows with it. Figures before 2026-12-05 were taken at 1,000/s.
UNCERTAIN_RATE = "50"


def bench_flows(n: int, seed: int = 0):
    from inference.datasets.synthetic import synthetic_flows

    per_host = 400
    hosts = max(1, n // (6 * per_host))
    return synthetic_flows(hosts_per_class=hosts, flows_per_host=per_host, seed=seed).iloc[:n]


def model_path(tmp: Path) -> Path:
    from inference.bundle import DEFAULT_BUNDLE_DIR

    if (DEFAULT_BUNDLE_DIR / "bundle.json").is_file():
        return DEFAULT_BUNDLE_DIR
    from inference.train import train_bundle

    print("(no default bundle yet: training a small model on synthetic flows)")
    return train_bundle(bench_flows(20_000, seed=1), epochs=5, progress=False, out_dir=tmp / "model").path


async def bare_consumer(bootstrap: str, topic: str, expect: int, arrow: bool = False) -> tuple[float, int]:
    """Read and decode every flows message, nothing else: JSON to dicts, or (`arrow`) Arrow
    IPC to a table."""
    from aiokafka import AIOKafkaConsumer
    import pyarrow as pa

    c = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=None, auto_offset_reset="earliest",
                         enable_auto_commit=False, max_partition_fetch_bytes=8 << 20)
    await c.start()
    n, t0 = 0, None
    try:
        while n < expect:
            batches = await c.getmany(timeout_ms=500, max_records=1000)
            for msgs in batches.values():
                for m in msgs:
                    t0 = t0 or time.perf_counter()
                    n += (pa.ipc.open_stream(m.value).read_all().num_rows if arrow
                          else len(json.loads(m.value)["records"]))
    finally:
        await c.stop()
    return time.perf_counter() - t0, n


def metric(port: int, name: str, **labels: str) -> float:
    sys.path.insert(0, str(REPO))
    from edgeloop_app.demo import metric as m

    return m(port, name, **labels)


def start_worker(bootstrap: str, topics: Topics, model: Path, tmp: Path, group: str, wait: bool = True,
                 log: str | None = None, **settings: str) -> tuple[subprocess.Popen, int]:
    """An `edgeloop detect` process and its metrics port; with `wait`, once it holds partitions."""
    port = free_port()
    env = {**os.environ, "EDGELOOP_KAFKA_BOOTSTRAP": bootstrap, "EDGELOOP_TOPIC_PREFIX": topics.prefix,
           "EDGELOOP_MODEL": str(model), "EDGELOOP_METRICS_PORT": str(port), "EDGELOOP_GROUP_ID": group,
           "EDGELOOP_DATA_DIR": str(tmp / "var"), "EDGELOOP_UNCERTAIN_RATE_PER_S": UNCERTAIN_RATE,
           **{f"EDGELOOP_{k.upper()}": v for k, v in settings.items()}}
    p = subprocess.Popen([sys.executable, "-m", "edgeloop_app.cli", "detect"], env=env, cwd=REPO,
                         stdout=open(tmp / f"{log or group}.log", "wb"), stderr=subprocess.STDOUT)
    while wait and metric(port, "edgeloop_assigned_partitions") == 0:
        if p.poll() is not None:
            raise SystemExit((tmp / f"{log or group}.log").read_text())
        time.sleep(0.1)
    return p, port


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process, all its threads (from /proc/PID/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def worker_throughput(bootstrap, topics, model, tmp, n, group: str = "bench-throughput", poll_s: float = 0.25,
                      **settings: str) -> dict:
    """One worker's intake from its first flow to the last poll before the flows ran out, so
    that the span ends while it is still busy, polled every `poll_s` (one worker leaves a
    core free: polls every 50 and 250 ms gave the same flows/s, three alternated runs)."""
    p, port = start_worker(bootstrap, topics, model, tmp, group, **settings)
    t0 = None
    last = None  # the last poll that found the worker still reading: (time, flows, CPU seconds)
    while True:
        v = metric(port, "edgeloop_flows_in_total")
        if v > 0 and t0 is None:
            t0, v0, c0 = time.perf_counter(), v, cpu_seconds(p.pid)
        elif t0 is not None and v < n:
            last = (time.perf_counter(), v, cpu_seconds(p.pid))
        if v >= n:
            break
        time.sleep(poll_s)
    if last is None:  # all of it between two polls: the span ends at the poll that saw it done
        last = (time.perf_counter(), v, cpu_seconds(p.pid))
    t1, v, c1 = last
    dt, cpu = t1 - t0, c1 - c0
    out = {"flows_per_s": (v - v0) / dt, "flows_per_cpu_s": (v - v0) / max(cpu, 1e-9),
           "rss_mb": peak_rss_mb(p.pid),
           "batches": metric(port, "edgeloop_inference_batch_windows_count"),
           "windows": metric(port, "edgeloop_inference_batch_windows_sum"),
           "infer_s": metric(port, "edgeloop_inference_seconds_sum"),
           "pushes": metric(port, "edgeloop_window_push_messages_count"),
           "pushed_messages": metric(port, "edgeloop_window_push_messages_sum")}
    p.terminate()
    p.wait(15)
    return out


def two_workers(bootstrap, topics, model, tmp, n, seconds: float = 3.0, broker_pid: int | None = None,
                group: str = "bench-two") -> dict:
    """Two workers in one group on the same flows (2 partitions each): their summed intake
    over `seconds` once both own partitions, beside one worker's over the same span, and
    the CPU each process (workers, broker, this poller) used meanwhile: on a machine with
    as many cores as workers, the broker's share is what two workers cannot have."""
    # Both started at once, so that they join the group together and split the partitions
    # before either has read much (one started after the other found the first far ahead).
    procs = [start_worker(bootstrap, topics, model, tmp, group, wait=False, log=f"{group}-{i}")
             for i in range(2)]
    ports = [port for _, port in procs]
    deadline = time.monotonic() + 60
    while any(metric(port, "edgeloop_assigned_partitions") != 2 for port in ports):
        if time.monotonic() > deadline:
            raise SystemExit("two workers never split the partitions")
        time.sleep(0.05)
    # The span starts once both take flows: a worker that owns its partitions may still be
    # loading its model, and a span that starts then measures one worker, not two.
    while any(metric(port, "edgeloop_flows_in_total") < 1 for port in ports):
        if time.monotonic() > deadline:
            raise SystemExit("one of two workers never took a flow")
        time.sleep(0.05)
    pids = {"worker 1": procs[0][0].pid, "worker 2": procs[1][0].pid}
    if broker_pid:
        pids["broker"] = broker_pid
    c0 = {k: cpu_seconds(pid) for k, pid in pids.items()}
    me0 = sum(os.times()[:2])
    v0, t0 = sum(metric(port, "edgeloop_flows_in_total") for port in ports), time.perf_counter()
    # Over a span that ends before the flows run out, polled seldom: each poll costs the
    # workers a /metrics scrape and this process CPU that the workers would otherwise have
    # (polled every 50 ms, the poller took 0.10 of a core).
    # It ends before either runs out of its half of the flows (each owns 2 of 4 partitions),
    # so that both work until the end.
    while time.perf_counter() - t0 < seconds:
        if max(metric(port, "edgeloop_flows_in_total") for port in ports) >= 0.4 * n:
            break
        time.sleep(0.25)
    v1, dt = sum(metric(port, "edgeloop_flows_in_total") for port in ports), time.perf_counter() - t0
    cores = {k: (cpu_seconds(pid) - c0[k]) / dt for k, pid in pids.items()}
    cores["bench (poller)"] = (sum(os.times()[:2]) - me0) / dt
    for p, _ in procs:
        p.terminate()
        p.wait(15)
    worker_cpu = (cores["worker 1"] + cores["worker 2"]) * dt
    return {"flows_per_s": (v1 - v0) / dt, "flows": v1 - v0, "secs": dt, "cores": cores,
            "flows_per_cpu_s": (v1 - v0) / max(worker_cpu, 1e-9)}


def _spin(n: int) -> float:
    t = time.perf_counter()
    s = 0
    for i in range(n):
        s += i * i % 7
    return time.perf_counter() - t


def core_scaling(n: int = 4_000_000, repeat: int = 3) -> float:
    """The raw baseline for two workers: a pure-Python loop in one process, then in two
    processes side by side (best of `repeat`): how close to 2x two busy processes get on
    this machine's cores, with nothing shared between them."""
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    with ctx.Pool(2) as pool:
        one = min(pool.map(_spin, [n])[0] for _ in range(repeat))
        two = min(max(pool.map(_spin, [n, n])) for _ in range(repeat))
    return 2 * one / two


def multiply_adds(onnx_path: Path) -> int | None:
    """Multiply-adds one window costs in the graph's Conv, Gemm and MatMul nodes (their
    shapes from ONNX shape inference with a batch of one); None without the `onnx` package."""
    try:
        import onnx
        from onnx import numpy_helper, shape_inference
    except ImportError:
        return None
    m = onnx.load(str(onnx_path))
    for inp in m.graph.input:              # a batch of one, so every inferred shape is concrete
        inp.type.tensor_type.shape.dim[0].dim_value = 1
    m = shape_inference.infer_shapes(m)
    shapes = {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim]
              for v in [*m.graph.value_info, *m.graph.output, *m.graph.input]}
    weights = {i.name: numpy_helper.to_array(i).shape for i in m.graph.initializer}
    total = 0
    for node in m.graph.node:
        w = next((weights[x] for x in node.input[1:2] if x in weights), None)
        out = shapes.get(node.output[0])
        if w is None or not out or 0 in out:
            continue
        if node.op_type == "Conv":          # each output value: in_channels/groups x kernel products
            total += int(np.prod(out)) * int(np.prod(w[1:]))
        elif node.op_type in ("Gemm", "MatMul"):
            total += int(np.prod(out)) * int(w[0] if node.op_type == "MatMul" or not _transposed(node) else w[1])
    return total


def _transposed(node) -> bool:
    return any(a.name == "transB" and a.i == 1 for a in node.attribute)


def onnx_raw(model: Path, df) -> dict:
    from inference.bundle import Bundle
    from inference.onnx_detector import OnnxDetector
    from inference.windowing import stack_windows, windows_from_frame

    b = Bundle.load(model)
    det = OnnxDetector(b)
    spec = b.meta.window   # the worker's windows: every view the bundle was trained with
    closed = windows_from_frame(df, k=spec.k, seconds=spec.seconds, views=spec.views)
    x, mask = stack_windows(closed, spec.k)
    xn = b.feature_schema.normalise(x, mask)
    res = {}
    for bs in (32, 256):
        t0 = time.perf_counter()
        for i in range(0, len(x), bs):
            det.run(xn[i:i + bs], mask[i:i + bs])
        raw = time.perf_counter() - t0
        t0 = time.perf_counter()
        for i in range(0, len(x), bs):
            det.score(x[i:i + bs], mask[i:i + bs])
        full = time.perf_counter() - t0
        res[bs] = (len(x) / raw, len(x) / full)
    # The graph as exported (1-D convolutions as Conv nodes), alternated with the edge's
    # rewrite (inference.conv_matmul) on the same batches: best of 3 each.
    from inference.onnx_detector import make_session

    as_written = OnnxDetector(b, session=make_session(str(b.onnx_path(False)), conv_matmul=False))
    conv = {"as exported (Conv)": as_written, "convolutions as MatMul (served)": det}
    conv_best = {name: 0.0 for name in conv}
    for _ in range(3):
        for name, d in conv.items():
            t0 = time.perf_counter()
            for i in range(0, len(x), 256):
                d.run(xn[i:i + 256], mask[i:i + 256])
            conv_best[name] = max(conv_best[name], len(x) / (time.perf_counter() - t0))
    flows_per_window = mask.sum() / len(mask)
    return {"windows": len(x), "by_batch": res, "flows_per_window": flows_per_window, "conv": conv_best,
            "views": list(spec.views), "windows_per_flow": len(x) / len(df),
            "macs": multiply_adds(b.onnx_path(False))}


def gc_pauses(port: int) -> dict[str, float]:
    """The worker's full (generation 2) collections so far: how many and their seconds."""
    return {"full_collections": metric(port, "edgeloop_gc_pause_seconds_count", generation="2"),
            "full_seconds": metric(port, "edgeloop_gc_pause_seconds_sum", generation="2")}


def paced_publish(bootstrap: str, topic: str, df, rate: int) -> float:
    """Publish the flows at `rate` a second, one message every 20 ms; returns the seconds taken."""
    step = max(1, rate // 50)
    with FlowPublisher(bootstrap, topic, batch_records=step) as pub:
        t0 = time.perf_counter()
        for i, start in enumerate(range(0, len(df), step)):
            pub.publish(iter_flow_dicts(df.iloc[start:start + step]))
            pub.producer.flush()
            delay = t0 + (i + 1) * step / rate - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
        return time.perf_counter() - t0


def bare_latency(bootstrap: str, rate: int, seconds: float) -> dict:
    """The baseline of the latency step: the same paced flows read by a bare aiokafka consumer
    with the worker's 5 ms fetch wait, decoded, nothing else. Its latency is produced -> the
    message decoded in the consumer (each message's flows share one produced_ms): what the
    broker, the producer's linger and the fetch cost before any engine runs."""
    import threading

    from aiokafka import AIOKafkaConsumer

    topics = Topics("benchbarelat.")
    ensure_topics(bootstrap, topics, 4)
    df = bench_flows(int(rate * seconds), seed=3)
    lat: list[float] = []
    ready, done = threading.Event(), threading.Event()

    async def consume() -> None:
        c = AIOKafkaConsumer(topics.flows, bootstrap_servers=bootstrap, group_id=None, auto_offset_reset="earliest",
                             enable_auto_commit=False, fetch_max_wait_ms=5)
        await c.start()
        ready.set()
        n = 0
        try:
            while n < len(df):
                for msgs in (await c.getmany(timeout_ms=500)).values():
                    for m in msgs:
                        recs = json.loads(m.value)["records"]
                        lat.append(time.time() * 1000 - recs[0]["produced_ms"])
                        n += len(recs)
        finally:
            done.set()
            await c.stop()

    t = threading.Thread(target=lambda: asyncio.run(consume()), daemon=True)
    t.start()
    ready.wait(30)
    paced_publish(bootstrap, topics.flows, df, rate)
    done.wait(60)
    t.join(10)
    a = np.array(lat, dtype=float)
    return {"n": len(a), "p50": np.percentile(a, 50), "p99": np.percentile(a, 99), "max": a.max()}


def latency(bootstrap, model, tmp, rate: int, seconds: float, run: int = 0, **settings: str) -> dict:
    from kafka import KafkaConsumer

    topics = Topics(f"benchlat{run}.")
    ensure_topics(bootstrap, topics, 4)
    p, port = start_worker(bootstrap, topics, model, tmp, f"bench-latency-{run}", **settings)
    df = bench_flows(int(rate * seconds), seed=3)
    sent_s = paced_publish(bootstrap, topics.flows, df, rate)
    while metric(port, "edgeloop_flows_in_total") < len(df):
        time.sleep(0.1)
    time.sleep(1)
    c = KafkaConsumer(topics.detections, bootstrap_servers=bootstrap, group_id=None,
                      auto_offset_reset="earliest", consumer_timeout_ms=2000)
    lat, scored = [], []
    for m in c:
        for d in json.loads(m.value)["detections"]:
            if d["closed_by"] == "k" and d.get("produced_ms"):
                lat.append(m.timestamp - d["produced_ms"])
                scored.append(d["scored_ms"] - d["produced_ms"])
    c.close()
    gc_figures = gc_pauses(port)
    p.terminate()
    p.wait(15)
    a = np.array(lat, dtype=float)
    return {"rate": len(df) / sent_s, "n": len(a), "p50": np.percentile(a, 50), "p99": np.percentile(a, 99),
            "max": a.max(), "scored_p50": np.percentile(scored, 50), "scored_p99": np.percentile(scored, 99),
            **gc_figures}


def alternate_latency(bootstrap, model, tmp, a, setting: str, values: tuple[str, str], run_base: int) -> None:
    """The paced latency step `a.repeat` times with EDGELOOP_<SETTING> at each of `values`,
    alternated; each run's percentiles and the worker's full collections."""
    print(f"latency at {a.rate:,} fl/s for {a.seconds:.0f} s, EDGELOOP_{setting.upper()} "
          f"{' and '.join(values)} alternated:")
    for r in range(a.repeat):
        for i, v in enumerate(values):
            g = latency(bootstrap, model, tmp, a.rate, a.seconds, run=run_base + len(values) * r + i, **{setting: v})
            print(f"  run {r + 1} {setting} {v:<5}: p50 {g['p50']:5.1f} ms, p99 {g['p99']:5.1f} ms, "
                  f"max {g['max']:5.1f} ms; full collections {g['full_collections']:.0f}, "
                  f"{1000 * g['full_seconds']:.1f} ms in all", flush=True)


STAGES = (("decode (msgspec, masks)", ("records.py", "msgspec")), ("host history", ("history.py",)),
          ("windowing", ("windowing.py", "features.py")), ("ONNX Runtime", ("onnxruntime",)),
          ("scoring, routing, encoding", ("detector.py", "routing.py", "onnx_detector.py", "calibrat")))


def where_time_goes(model: Path, df, messages: int = 500) -> dict[str, float]:
    """The engine in this process on the same flows (decoded from the wire, ingested, ticked),
    under cProfile: own time per stage, as shares of the total."""
    import cProfile
    import pstats

    from contracts.records import decode_flow_rows, encode_flow_batch
    from inference.bundle import Bundle
    from inference.onnx_detector import OnnxDetector
    from streams.detector import DetectorConfig, EdgeDetector

    rows = list(iter_flow_dicts(df))
    raws = [encode_flow_batch(rows[a:a + messages]) for a in range(0, len(rows), messages)]
    eng = EdgeDetector(OnnxDetector(Bundle.load(model)), DetectorConfig())
    prof = cProfile.Profile()
    prof.enable()
    for raw in raws:
        eng.ingest(decode_flow_rows(raw))
        if eng.due():
            eng.tick()
    eng.flush_all()
    prof.disable()
    stats = pstats.Stats(prof).stats  # type: ignore[attr-defined]
    total = sum(v[2] for v in stats.values())
    out = {name: 0.0 for name, _ in STAGES}
    out["other (numpy, lists, dicts)"] = 0.0
    for (fname, _, func), v in stats.items():
        where = f"{fname}:{func}"
        stage = next((name for name, keys in STAGES if any(k in where for k in keys)), "other (numpy, lists, dicts)")
        out[stage] += v[2]
    return {k: v / total for k, v in out.items()}


def stage_times(model: Path, df, messages: int = 500, repeat: int = 3,
                host_history: str = "auto", by_length: bool = True) -> tuple[float, dict[str, float]]:
    """The engine in this process on the same flows, timed by the wall clock per stage (no
    profiler: cProfile's per-call cost inflates the many small Python calls it counts):
    microseconds a flow, best total of `repeat` runs, and each stage's own time in that run
    (a stage's time net of the stages it calls)."""
    from collections import defaultdict
    from contextlib import ExitStack
    from unittest import mock

    import inference.windowing as windowing
    from contracts.records import decode_flow_rows, encode_flow_batch
    from inference.bundle import Bundle
    from inference.history import CompiledHistory, HostHistory
    from inference.onnx_detector import OnnxDetector
    from streams.detector import DetectorConfig, EdgeDetector

    rows = list(iter_flow_dicts(df))
    raws = [encode_flow_batch(rows[a:a + messages]) for a in range(0, len(rows), messages)]
    det = OnnxDetector(Bundle.load(model), by_length=by_length)
    own: dict[str, float] = defaultdict(float)
    inside: list[float] = []  # per open timed call: time spent in the timed calls it made

    def timed(owner, name: str, stage: str):
        f = getattr(owner, name)

        def run(*a, **k):
            inside.append(0.0)
            t = time.perf_counter()
            try:
                return f(*a, **k)
            finally:
                took = time.perf_counter() - t
                own[stage] += took - inside.pop()
                if inside:
                    inside[-1] += took
        return mock.patch.object(owner, name, run)

    stages = ((det.session, "run", "ONNX Runtime"),
              (OnnxDetector, "score_windows", "scoring: stack, normalise, calibrate, gates"),
              (HostHistory, "update", "host history (both views)"),
              (CompiledHistory, "update", "host history (both views)"),
              (windowing.Windower, "_assign", "window assignment"),
              (windowing.Windower, "_close", "window closing: gather, features"),
              (windowing, "raw_matrix", "records to columns"), (windowing, "extra_columns", "records to columns"),
              (windowing.Windower, "push", "windowing: the rest of a push"),
              (EdgeDetector, "score_pending", "per window: detections, routing, alerts, encoding"))
    best, kept = float("inf"), {}
    for _ in range(repeat):
        own.clear()
        with ExitStack() as stack:
            for owner, name, stage in stages:
                stack.enter_context(timed(owner, name, stage))
            eng = EdgeDetector(det, DetectorConfig(host_history=host_history))
            t0 = time.perf_counter()
            for raw in raws:
                t = time.perf_counter()
                recs = decode_flow_rows(raw)
                own["decode (msgspec, physical masks)"] += time.perf_counter() - t
                eng.ingest(recs)
                if eng.due():
                    eng.tick()
            eng.flush_all()
            total = time.perf_counter() - t0
        if total < best:
            best, kept = total, dict(own)
    kept["other (ticks, expiry, metrics, the loop)"] = best - sum(kept.values())
    us = 1e6 / len(rows)
    return best * us, {k: v * us for k, v in kept.items()}


def push_costs(model: Path, df, sizes: tuple[int, ...] = (50, 100, 500), host_history: str = "auto") -> None:
    """The engine in this process, one message a push then a tick (as a worker at a modest
    rate): milliseconds a push to window it and to tick, per message size, over the second
    half of the flows (the first half fills the windows and host history), and the fixed
    part of each, fitted as a + b * flows between the smallest and largest size."""
    from contracts.records import decode_flow_rows, encode_flow_batch
    from inference.bundle import Bundle
    from inference.onnx_detector import OnnxDetector
    from streams.detector import DetectorConfig, EdgeDetector

    rows = list(iter_flow_dicts(df))
    det = OnnxDetector(Bundle.load(model))
    got = {}
    for size in sizes:
        msgs = [decode_flow_rows(encode_flow_batch(rows[a:a + size])) for a in range(0, len(rows), size)]
        eng = EdgeDetector(det, DetectorConfig(host_history=host_history))
        half = len(msgs) // 2
        for m in msgs[:half]:
            eng.ingest(m)
            eng.tick(now=True)
        win = tick = 0.0
        for m in msgs[half:]:
            t0 = time.perf_counter()
            eng.ingest(m)
            t1 = time.perf_counter()
            eng.tick(now=True)
            win, tick = win + t1 - t0, tick + time.perf_counter() - t1
        n = len(msgs) - half
        got[size] = (1e3 * win / n, 1e3 * tick / n)
        print(f"  {size:>5}-flow pushes: window {got[size][0]:6.2f} ms, tick {got[size][1]:6.2f} ms a push")
    lo, hi = min(sizes), max(sizes)
    for i, what in enumerate(("window", "tick")):
        per_flow = (got[hi][i] - got[lo][i]) / (hi - lo)
        print(f"  {what}: {1000 * per_flow:.1f} us a flow + {got[lo][i] - per_flow * lo:.2f} ms a push")


def print_stages(model: Path, df, messages: int = 500, engines: tuple[str, ...] = ("auto",),
                 repeat: int = 1) -> None:
    """The stage table per host-history engine; with several, alternated `repeat` times and
    the best run of each printed."""
    best: dict[str, tuple[float, dict[str, float]]] = {}
    for r in range(repeat):
        for engine in engines:
            got = stage_times(model, df, messages=messages, host_history=engine)
            if len(engines) > 1:
                print(f"  run {r + 1}, host history {engine}: {got[0]:.2f} us a flow", flush=True)
            if engine not in best or got[0] < best[engine][0]:
                best[engine] = got
    for engine, (total, stages) in best.items():
        print(f"\nwhere the engine's time goes (wall clock, the same flows in this process in messages of "
              f"{messages}, best of {3 * repeat}, host history {engine}): {total:.2f} us a flow, "
              f"{1e6 / total:,.0f} flows/s")
        for stage, us in sorted(stages.items(), key=lambda kv: -kv[1]):
            print(f"  {stage:<50}{us:>14.2f} us/flow {us / total:>6.1%}")
    if len(best) > 1:
        (a, (ta, _)), (b, (tb, _)) = list(best.items())[:2]
        print(f"\nhost history {b} against {a}: {ta / tb:.2f}x the flows/s")


def main() -> None:
    global UNCERTAIN_RATE
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--flows", type=int, default=200_000)
    ap.add_argument("--rate", type=int, default=5000)
    ap.add_argument("--seconds", type=float, default=10)
    ap.add_argument("--repeat", type=int, default=2, help="alternated runs of the bare consumer and the worker; best of each")
    ap.add_argument("--uncertain-rate", default=UNCERTAIN_RATE, help="EDGELOOP_UNCERTAIN_RATE_PER_S of the "
                    "workers (default: the product's default; 0 sends every uncertain window)")
    ap.add_argument("--int8", action="store_true", help="also alternate a worker serving the bundle's int8 "
                    "model (EDGELOOP_INT8=1)")
    ap.add_argument("--arrow", action="store_true", help="also alternate a bare consumer and a worker on the "
                    "same flows sent as Arrow IPC payloads (EDGELOOP_FLOW_PAYLOAD=arrow)")
    ap.add_argument("--message-flows", type=int, default=500, help="flows a message per partition, as "
                    "FlowPublisher's batch_records (a live sensor sends about 50: 200 a batch over 4 partitions)")
    ap.add_argument("--coalesce-compare", action="store_true", help="also alternate a worker that windows "
                    "each message alone (EDGELOOP_COALESCE_FLOWS=0) against the default, which windows the "
                    "messages read between two ticks together, in the throughput and the latency steps")
    ap.add_argument("--stages-only", action="store_true", help="only the engine in this process, its time per "
                    "flow by stage (wall clock), then stop: no broker, no workers")
    ap.add_argument("--history-compare", action="store_true", help="also alternate a worker counting host history with "
                    "numpy (EDGELOOP_HOST_HISTORY=numpy) against the default compiled kernel; with --stages-only "
                    "or --push-cost, the engine in process both ways")
    ap.add_argument("--push-cost", action="store_true", help="only the engine in this process, one message "
                    "a push then a tick, at 50, 100 and 500 flows a message: the cost a push, then stop")
    ap.add_argument("--gc-compare", action="store_true", help="also run the latency step --repeat times with "
                    "EDGELOOP_GC_FREEZE off and on alternated, printing each run's full collections")
    a = ap.parse_args()
    UNCERTAIN_RATE = str(a.uncertain_rate)
    tmp = Path(tempfile.mkdtemp(prefix="edgeloop-bench-"))
    model = model_path(tmp)
    df = bench_flows(a.flows)
    if a.stages_only:
        if a.history_compare:
            print_stages(model, df, a.message_flows, ("numpy", "compiled"), a.repeat)
        else:
            print_stages(model, df, a.message_flows)
        return
    if a.push_cost:
        for engine in ("numpy", "compiled") if a.history_compare else ("auto",):
            print(f"the engine's cost a push ({len(df):,} flows in this process, one message a push then a tick, "
                  f"host history {engine}):")
            push_costs(model, df, host_history=engine)
        return
    with EmbeddedBroker(free_port()) as b:
        topics = Topics("bench.")
        ensure_topics(b.bootstrap, topics, 4)
        with FlowPublisher(b.bootstrap, topics.flows, batch_records=a.message_flows) as pub:
            pub.publish(iter_flow_dicts(df))
        st = pub.stats
        print(f"produced {st.records:,} flows in {st.messages} messages: {st.rate:,.0f} flows/s")
        if a.arrow:   # the same flows again as Arrow payloads, on topics of their own
            arrow_topics = Topics("bencharrow.")
            ensure_topics(b.bootstrap, arrow_topics, 4)
            with FlowPublisher(b.bootstrap, arrow_topics.flows, payload="arrow") as apub:
                apub.publish(iter_flow_dicts(df))
            print(f"produced them again as Arrow: {apub.stats.bytes / st.bytes:.2f}x the JSON bytes "
                  f"({apub.stats.bytes / 1e6:.1f} MB against {st.bytes / 1e6:.1f} MB before compression)")
            bare_a, wa = float("inf"), {"flows_per_s": 0.0}
        bare_s, w, w8, w1 = float("inf"), {"flows_per_s": 0.0}, {"flows_per_s": 0.0}, {"flows_per_s": 0.0}
        wn = {"flows_per_s": 0.0}
        for r in range(a.repeat):
            secs, n = asyncio.run(bare_consumer(b.bootstrap, topics.flows, len(df)))
            got = worker_throughput(b.bootstrap, topics, model, tmp, len(df), group=f"bench-throughput-{r}")
            print(f"  run {r + 1}: bare consumer {n / secs:,.0f} fl/s, worker {got['flows_per_s']:,.0f} fl/s", flush=True)
            bare_s = min(bare_s, secs)
            w = got if got["flows_per_s"] > w["flows_per_s"] else w
            if a.coalesce_compare:
                g1 = worker_throughput(b.bootstrap, topics, model, tmp, len(df), group=f"bench-alone-{r}",
                                       coalesce_flows="0")
                print(f"         worker windowing each message alone {g1['flows_per_s']:,.0f} fl/s; the default "
                      f"windowed {got['pushed_messages'] / max(got['pushes'], 1):.1f} messages a push", flush=True)
                w1 = g1 if g1["flows_per_s"] > w1["flows_per_s"] else w1
            if a.history_compare:
                gn = worker_throughput(b.bootstrap, topics, model, tmp, len(df), group=f"bench-numpy-{r}",
                                       host_history="numpy")
                print(f"         worker with host history in numpy {gn['flows_per_s']:,.0f} fl/s", flush=True)
                wn = gn if gn["flows_per_s"] > wn["flows_per_s"] else wn
            if a.int8:
                g8 = worker_throughput(b.bootstrap, topics, model, tmp, len(df), group=f"bench-int8-{r}", int8="1")
                print(f"         worker int8 {g8['flows_per_s']:,.0f} fl/s", flush=True)
                w8 = g8 if g8["flows_per_s"] > w8["flows_per_s"] else w8
            if a.arrow:
                sa, na = asyncio.run(bare_consumer(b.bootstrap, arrow_topics.flows, len(df), arrow=True))
                ga = worker_throughput(b.bootstrap, arrow_topics, model, tmp, len(df), group=f"bench-arrow-{r}")
                print(f"         Arrow: bare consumer {na / sa:,.0f} fl/s, worker {ga['flows_per_s']:,.0f} fl/s",
                      flush=True)
                bare_a = min(bare_a, sa)
                wa = ga if ga["flows_per_s"] > wa["flows_per_s"] else wa
        o = onnx_raw(model, df)
        bare_lat = bare_latency(b.bootstrap, a.rate, a.seconds)
        lat = latency(b.bootstrap, model, tmp, a.rate, a.seconds)
        if a.gc_compare:   # the same paced run, alternated, with the startup freeze off and on
            alternate_latency(b.bootstrap, model, tmp, a, "gc_freeze", ("false", "true"), run_base=1)
        if a.coalesce_compare:   # the same paced run, each message windowed alone and coalesced
            alternate_latency(b.bootstrap, model, tmp, a, "coalesce_flows",
                              ("0", str(Settings.model_fields["coalesce_flows"].default)), run_base=10)
        if a.history_compare:   # the same paced run, host history in numpy and compiled
            alternate_latency(b.bootstrap, model, tmp, a, "host_history", ("numpy", "compiled"), run_base=20)
        two = two_workers(b.bootstrap, topics, model, tmp, len(df), broker_pid=b.proc.pid if b.proc else None)  # last: its hand-overs load the broker
    print(f"\nmodel {model}")
    print(f"{'stage':<52}{'figure':>22}")
    print(f"best of {a.repeat} alternated runs each")
    print(f"{'bare aiokafka getmany + json decode':<52}{n / bare_s:>16,.0f} fl/s")
    print(f"{f'edge worker, 1 process, {UNCERTAIN_RATE} uncertain/s':<52}{w['flows_per_s']:>16,.0f} fl/s")
    print(f"{'  ratio worker / bare consumer':<52}{w['flows_per_s'] / (n / bare_s):>21.2f}x")
    print(f"{'  flows a message; messages windowed a push':<52}{n / st.messages:>16,.0f}"
          f"{w['pushed_messages'] / max(w['pushes'], 1):>6.1f}")
    if a.coalesce_compare:
        print(f"{'edge worker windowing each message alone':<52}{w1['flows_per_s']:>16,.0f} fl/s")
        print(f"{'  ratio default (coalesced) / alone':<52}{w['flows_per_s'] / w1['flows_per_s']:>21.2f}x")
    if a.history_compare:
        print(f"{'edge worker, EDGELOOP_HOST_HISTORY=numpy':<52}{wn['flows_per_s']:>16,.0f} fl/s")
        print(f"{'  ratio default (compiled) / numpy':<52}{w['flows_per_s'] / wn['flows_per_s']:>21.2f}x")
        print(f"{'  peak RSS, compiled / numpy':<52}{w['rss_mb']:>13.0f} / {wn['rss_mb']:.0f} MB")
    if a.int8:
        print(f"{'edge worker, EDGELOOP_INT8=1':<52}{w8['flows_per_s']:>16,.0f} fl/s")
        print(f"{'  ratio int8 worker / bare consumer':<52}{w8['flows_per_s'] / (n / bare_s):>21.2f}x")
        print(f"{'  share of int8 worker time in ONNX Runtime':<52}{w8['infer_s'] * w8['flows_per_s'] / len(df):>21.1%}")
    if a.arrow:
        print(f"{'bare aiokafka getmany + Arrow IPC read':<52}{n / bare_a:>16,.0f} fl/s")
        print(f"{'edge worker on Arrow payloads':<52}{wa['flows_per_s']:>16,.0f} fl/s")
        print(f"{'  ratio Arrow worker / JSON worker':<52}{wa['flows_per_s'] / w['flows_per_s']:>21.2f}x")
        print(f"{'  ratio Arrow worker / bare JSON consumer':<52}{wa['flows_per_s'] / (n / bare_s):>21.2f}x")
    if two["flows"] > 0:
        label = f"two workers, one group ({two['flows']:,.0f} flows in {two['secs']:.1f} s)"
        print(f"{label:<52}{two['flows_per_s']:>16,.0f} fl/s")
        print(f"{'  ratio two workers / one':<52}{two['flows_per_s'] / w['flows_per_s']:>21.2f}x")
        print(f"{'  baseline: two pure-Python processes / one':<52}{core_scaling():>21.2f}x")
        used = ", ".join(f"{k} {v:.2f}" for k, v in two["cores"].items())
        print(f"{'  cores used meanwhile':<52}{used:>40}  (of {os.cpu_count()})")
        print(f"{'  flows per worker CPU-second, one worker':<52}{w['flows_per_cpu_s']:>16,.0f}")
        print(f"{'  flows per worker CPU-second, two workers':<52}{two['flows_per_cpu_s']:>16,.0f}")
    else:   # small --flows: the first worker took them all before the second held its partitions
        print(f"{'two workers, one group':<52}{'not measured: every flow was taken before both':>40}")
        print(f"{'':<52}{'held partitions (use more --flows)':>40}")
    print(f"{'  mean inference batch':<52}{w['windows'] / max(w['batches'], 1):>15.1f} windows")
    print(f"{'  share of worker time in ONNX Runtime':<52}{w['infer_s'] * w['flows_per_s'] / len(df):>21.1%}")
    print(f"{'  peak RSS of the worker':<52}{w['rss_mb']:>19.0f} MB")
    for bs, (raw, full) in o["by_batch"].items():
        print(f"{f'bare ONNX Runtime, batch {bs}':<52}{raw:>12,.0f} windows/s")
        print(f"{f'OnnxDetector.score (normalise+calibrate), batch {bs}':<52}{full:>12,.0f} windows/s")
    for name, v in o["conv"].items():
        print(f"{f'  bare ONNX Runtime, batch 256, {name}':<52}{v:>12,.0f} windows/s")
    print(f"{'  flows per window (mean)':<52}{o['flows_per_window']:>22.2f}")
    label = f"  windows scored per flow (views {','.join(o['views'])})"
    print(f"{label:<52}{o['windows_per_flow']:>22.2f}")
    if o["macs"]:   # how close bare ONNX Runtime runs to the core's arithmetic: compute-bound or not
        best = max(raw for raw, _ in o["by_batch"].values())
        print(f"{'  model multiply-adds per window (Conv, Gemm, MatMul)':<52}{o['macs']:>16,.0f}")
        print(f"{'  bare ONNX Runtime arithmetic at its best batch':<52}{2 * o['macs'] * best / 1e9:>17.1f} GFLOP/s")
        # Every flow is scored once per view: the cap is windows/s over windows per flow.
        cap = best / o["windows_per_flow"]
        print(f"{'  ONNX Runtime alone caps a worker at':<52}{cap:>16,.0f} fl/s")
        both = 1 / (1 / cap + bare_s / n)   # a worker that only consumes, decodes and infers
        print(f"{'  bare consumer + ONNX Runtime, nothing else':<52}{both:>16,.0f} fl/s")
        print(f"{'    ratio to the bare consumer':<52}{both / (n / bare_s):>21.2f}x")
    label = f"latency produced->detection at {lat['rate']:,.0f} fl/s: p50"
    print(f"{label:<52}{lat['p50']:>19.1f} ms")
    print(f"{'  p99':<52}{lat['p99']:>19.1f} ms")
    print(f"{'  max':<52}{lat['max']:>19.1f} ms  ({lat['n']:,} windows closed by K)")
    print(f"{'  of which produced->scored (fetch, batch wait, score): p50':<52}{lat['scored_p50']:>19.1f} ms")
    print(f"{'  p99':<52}{lat['scored_p99']:>19.1f} ms")
    print(f"{'  baseline: bare consumer, produced->decoded: p50':<52}{bare_lat['p50']:>19.1f} ms")
    print(f"{'  p99':<52}{bare_lat['p99']:>19.1f} ms")
    print(f"{'  max':<52}{bare_lat['max']:>19.1f} ms  ({bare_lat['n']:,} messages)")
    print(f"{'  full garbage collections in the worker (frozen startup)':<52}{lat['full_collections']:>16.0f}"
          f"     {1000 * lat['full_seconds']:.1f} ms in all")
    print_stages(model, df, a.message_flows)
    print("\nwhere the engine's time goes (cProfile, own time, the same flows in this process):")
    for stage, share in where_time_goes(model, df).items():
        print(f"  {stage:<50}{share:>21.1%}")


if __name__ == "__main__":
    main()

"""The worker's coalescing of small messages (`EDGELOOP_COALESCE_FLOWS`), without a broker:
messages read between two ticks wait unwindowed, and a hand-over (a rebalance or a
shutdown) must window them before it closes the windows and commits, so that none of their
flows is left behind in a worker that no longer owns their partitions."""
from __future__ import annotations

import asyncio
import json
from types import SimpleNamespace

from prometheus_client import CollectorRegistry

from contracts.arrow_flows import ARROW_HEADERS, encode_flow_arrow
from contracts.records import encode_flow_batch
from inference.datasets.synthetic import synthetic_flows
from streams.settings import Settings
from streams.sources.files import iter_flow_dicts
from streams.worker import EdgeWorker


def _worker(bundle, tmp_path, **settings) -> tuple[EdgeWorker, list]:
    w = EdgeWorker(Settings(model=str(bundle.path), data_dir=tmp_path, **settings), "127.0.0.1:9", bundle,
                   CollectorRegistry())
    produced: list = []

    async def emit(outputs):
        produced.extend(outputs)

    async def commit():
        return True

    w.emit, w.commit, w._fenced = emit, commit, lambda: False
    w.assigned = {0, 1}
    return w, produced


def _rows(n_flows: int = 120) -> list[dict]:
    return list(iter_flow_dicts(synthetic_flows(hosts_per_class=2, flows_per_host=n_flows // 10, seed=4)))[:n_flows]


def _messages(n_flows: int = 120, per_message: int = 6) -> list[bytes]:
    rows = _rows(n_flows)
    return [encode_flow_batch(rows[a:a + per_message]) for a in range(0, len(rows), per_message)]


def _windowed_flows(produced, view: str) -> list[str]:
    return sorted(f for o in produced if o.topic == "detections"
                  for d in json.loads(o.value)["detections"] if d["view"] == view for f in d["flow_ids"])


def test_a_hand_over_windows_the_messages_read_since_the_last_tick(tiny_bundle, tmp_path):
    w, produced = _worker(tiny_bundle, tmp_path)
    values = _messages()
    flow_ids = sorted(r["flow_id"] for v in values for r in json.loads(v)["records"])

    async def run():
        for off, value in enumerate(values):
            await w.handle(SimpleNamespace(partition=off % 2, offset=off // 2, headers=None), value)
        assert w._unwindowed_flows == len(flow_ids)  # read, not windowed: under coalesce_flows
        await w._hand_over({0, 1}, "test")

    asyncio.run(run())
    assert not w._unwindowed
    for view in tiny_bundle.meta.window.views:
        assert _windowed_flows(produced, view) == flow_ids, view
    assert w.ledger.held() == 0


def test_messages_are_windowed_at_once_past_coalesce_flows_or_with_it_off(tiny_bundle, tmp_path):
    values = _messages()
    for limit, left in ((0, 0), (30, 0), (10_000, 120)):
        w, _ = _worker(tiny_bundle, tmp_path, coalesce_flows=limit)

        async def run():
            for off, value in enumerate(values):
                await w.handle(SimpleNamespace(partition=0, offset=off, headers=None), value)

        asyncio.run(run())
        assert w._unwindowed_flows == left, limit
        assert (w.metrics.registry.get_sample_value("edgeloop_flows_in_total") or 0) == 120 - left, limit


def test_a_fenced_worker_drops_what_it_read_with_its_windows(tiny_bundle, tmp_path):
    """Dropped from the group, the partitions already belong to another member, which reads
    these flows again from the last commit: nothing read here may reach a window later."""
    w, produced = _worker(tiny_bundle, tmp_path)
    w._fenced = lambda: True

    async def run():
        for off, value in enumerate(_messages()):
            await w.handle(SimpleNamespace(partition=0, offset=off, headers=None), value)
        await w._hand_over({0, 1}, "test")

    asyncio.run(run())
    assert not w._window_unwindowed() and len(w.engine.windower) == 0 and not w.engine.pending
    assert not produced and w.ledger.held() == 0


def test_json_and_arrow_messages_read_together_are_all_windowed_in_order(tiny_bundle, tmp_path):
    """Runs of JSON and of Arrow payloads (two sensors: their schemas' metadata differ) go to
    the windows in the order read, one push per run, every flow in one window of each view."""
    w, produced = _worker(tiny_bundle, tmp_path)
    rows = _rows()
    chunks = [rows[a:a + 6] for a in range(0, len(rows), 6)]
    kinds = ["json", "json", "arrow", "arrow", "arrow", "json"] * 4  # 24 >= 20 chunks

    async def run():
        for off, (chunk, kind) in enumerate(zip(chunks, kinds)):
            if kind == "json":
                msg, value = SimpleNamespace(partition=0, offset=off, headers=None), encode_flow_batch(chunk)
            else:
                value = encode_flow_arrow(chunk, sensor=f"s{off % 2}")
                msg = SimpleNamespace(partition=0, offset=off, headers=ARROW_HEADERS)
            await w.handle(msg, value)
        assert w._unwindowed_flows == len(rows)
        await w._hand_over({0, 1}, "test")

    asyncio.run(run())
    flow_ids = sorted(r["flow_id"] for r in rows)
    for view in tiny_bundle.meta.window.views:
        assert _windowed_flows(produced, view) == flow_ids, view
    # 20 messages in runs of 2 JSON, 3 Arrow, 1 JSON, ...: one push per run.
    sample = w.metrics.registry.get_sample_value
    runs = sum(1 for i, k in enumerate(kinds[:20]) if i == 0 or k != kinds[i - 1])
    assert sample("edgeloop_window_push_messages_sum") == 20 and sample("edgeloop_window_push_messages_count") == runs
    assert w.ledger.held() == 0

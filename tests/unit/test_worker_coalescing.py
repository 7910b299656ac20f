"""The worker's coalescing of small messages (`EDGELOOP_COALESCE_FLOWS`), without a broker:
messages read between two ticks wait unwindowed, and a hand-over (a rebalance or a
shutdown) must window them before it closes the windows and commits, so that none of their
flows is left behind in a worker that no longer owns their partitions."""
from __future__ import annotations

import asyncio
import json
from types import SimpleNamespace

from prometheus_client import CollectorRegistry

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


def _messages(n_flows: int = 120, per_message: int = 6) -> list[bytes]:
    rows = list(iter_flow_dicts(synthetic_flows(hosts_per_class=2, flows_per_host=n_flows // 10, seed=4)))[:n_flows]
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
        assert len(w.engine.windower) > 0 or left  # the windowed flows are in open windows

"""The offset ledger: an offset is committable only once every flow before it is in a
scored window, whatever order windows close in."""
from __future__ import annotations

import random

from prometheus_client import CollectorRegistry

from inference.datasets.synthetic import synthetic_flows
from inference.onnx_detector import OnnxDetector
from streams.detector import DetectorConfig, EdgeDetector
from streams.metrics import EdgeMetrics
from streams.offsets import OffsetLedger
from streams.sources.files import records_from_frame


def test_commit_waits_for_the_oldest_message_with_open_windows():
    led = OffsetLedger()
    a = led.consumed(0, 10, refs=2)
    b = led.consumed(0, 11, refs=1)
    led.consumed(1, 5, refs=0)                    # only bad records: nothing to wait for
    assert led.committable() == {0: 10, 1: 6}
    led.release([b])                              # a later message done first: still held by 10
    assert led.safe_offset(0) == 10 and led.held(0) == 1
    led.release([a])
    assert led.safe_offset(0) == 10               # one of its two memberships is still open
    led.release([a])
    assert led.committable() == {0: 12, 1: 6}
    led.committed({0: 12, 1: 6})
    assert led.committable() == {} and led.held() == 0


def test_dropped_partitions_are_forgotten_and_late_releases_ignored():
    led = OffsetLedger()
    a = led.consumed(3, 100, refs=1)
    led.consumed(4, 7, refs=1)
    led.drop([3])
    led.release([a])                              # a window closed after the hand-over
    assert led.partitions() == [4] and led.committable() == {4: 7}


def test_random_close_order_never_commits_past_an_open_flow():
    rng = random.Random(5)
    led, open_refs = OffsetLedger(), {}
    for off in range(300):
        tok = led.consumed(0, off, refs=rng.randint(0, 4))
        open_refs[off] = [tok] * led._open[tok][2] if tok in led._open else []
    pending = [(off, t) for off, toks in open_refs.items() for t in toks]
    rng.shuffle(pending)
    remaining = {off: len(t) for off, t in open_refs.items()}
    for off, tok in pending:
        led.release([tok])
        remaining[off] -= 1
        first_open = min((o for o, n in remaining.items() if n), default=300)
        assert led.safe_offset(0) == first_open


def test_engine_releases_each_flow_once_per_view_only_when_its_window_is_scored(tiny_bundle):
    now = [0.0]
    eng = EdgeDetector(OnnxDetector(tiny_bundle), DetectorConfig(batch_max=16, batch_wait_ms=0),
                       EdgeMetrics(CollectorRegistry()), clock=lambda: now[0])
    records, _ = records_from_frame(synthetic_flows(hosts_per_class=2, flows_per_host=20, seed=3))
    led, views = OffsetLedger(), len(eng.windower.views)
    for off in range(0, len(records), 25):
        part = records[off:off + 25]
        eng.ingest(part, led.consumed(0, off, len(part) * views))
        eng.tick()
        led.release(eng.take_released())
    assert 0 < led.held() and led.safe_offset(0) < len(records)   # flows still in open windows
    eng.flush_all(closed_by="revoke")
    led.release(eng.take_released())
    assert led.held() == 0 and led.committable() == {0: (len(records) - 1) // 25 * 25 + 1}
    assert eng.take_released() == []

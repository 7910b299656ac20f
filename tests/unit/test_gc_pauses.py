"""The worker's garbage-collector hooks (streams.metrics): every collection's pause is
observed by generation, and `freeze_startup` takes what is alive at startup out of the
full collection's walk (a full pass over a worker's imports took 52-67 ms, after the freeze
6-10 ms: README, "Garbage-collector pauses")."""
from __future__ import annotations

import gc

from prometheus_client import CollectorRegistry

from streams.metrics import EdgeMetrics, freeze_startup, watch_gc


def _count(registry: CollectorRegistry, generation: int) -> float:
    return registry.get_sample_value("edgeloop_gc_pause_seconds_count", {"generation": str(generation)}) or 0.0


def test_each_collection_is_observed_by_generation_until_stopped() -> None:
    reg = CollectorRegistry()
    stop = watch_gc(EdgeMetrics(reg).gc_pause)
    try:
        gc.collect(0)
        gc.collect(2)
        gc.collect(2)
    finally:
        stop()
    assert _count(reg, 0) >= 1 and _count(reg, 2) >= 2
    assert reg.get_sample_value("edgeloop_gc_pause_seconds_sum", {"generation": "2"}) > 0
    before = _count(reg, 2)
    gc.collect(2)
    assert _count(reg, 2) == before, "a stopped watch still observes"
    stop()  # twice is harmless


def test_freeze_takes_what_is_alive_out_of_the_full_collections_walk() -> None:
    kept = [[i] for i in range(20_000)]  # tracked containers alive at "startup"
    gc.collect()
    walked_before = len(gc.get_objects(generation=2))
    try:
        frozen = freeze_startup()
        assert frozen >= len(kept) and gc.get_freeze_count() == frozen
        walked_after = len(gc.get_objects(generation=2))
        # What a full collection walks: none of the frozen objects, kept's lists included.
        assert walked_after < walked_before - len(kept), (walked_before, walked_after)
        assert not any(o is kept[0] for o in gc.get_objects(generation=2))
    finally:
        gc.unfreeze()
    assert gc.get_freeze_count() == 0


def test_metric_reads_a_labelled_series_from_a_live_endpoint() -> None:
    """`edgeloop_app.demo.metric`, which the benchmark reads full collections with: the sum of
    the samples whose labels include the ones asked for."""
    from edgeloop_app.demo import metric
    from streams.broker import free_port
    from streams.metrics import metrics_server

    reg = CollectorRegistry()
    m = EdgeMetrics(reg)
    m.gc_pause.labels(generation="2").observe(0.004)
    m.gc_pause.labels(generation="0").observe(0.001)
    m.gc_pause.labels(generation="0").observe(0.001)
    port = free_port()
    with metrics_server(reg, port, "127.0.0.1"):
        assert metric(port, "edgeloop_gc_pause_seconds_count", generation="2") == 1
        assert metric(port, "edgeloop_gc_pause_seconds_count", generation="0") == 2
        assert metric(port, "edgeloop_gc_pause_seconds_count") == 3
        assert abs(metric(port, "edgeloop_gc_pause_seconds_sum", generation="2") - 0.004) < 1e-9

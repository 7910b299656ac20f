"""Host history's compiled kernel (inference/_history_kernel.pyx, `CompiledHistory`) against
the flow-by-flow reference (`HostHistory._update_rows`): the same float32 features bit for
bit, the same hosts and pairs held and evicted in the same order (a long stream that fills
the tables: tests/unit/test_history.py, on both engines)."""
from __future__ import annotations

import numpy as np
import pytest

import inference.history as history
from contracts.errors import ConfigError
from inference.history import CompiledHistory, HostHistory, history_engine, new_history
from inference.windowing import Windower


def test_the_kernel_is_built_by_the_install():
    """`make setup` (pip install -e .) compiles it: a worker counting with numpy is ~10x slower."""
    assert history.KERNEL_MISSING is None, history.KERNEL_MISSING
    assert history_engine("auto") == "compiled" and isinstance(new_history(), CompiledHistory)


def random_stream(rng: np.random.Generator):
    n, hosts, peers = int(rng.integers(1, 400)), int(rng.integers(1, 30)), int(rng.integers(1, 10))
    keys = [f"h{rng.integers(hosts)}" for _ in range(n)]
    peer = [f"p{rng.integers(peers)}" for _ in range(n)]
    ports = [float(rng.integers(0, 5)) for _ in range(n)]
    ts = 1.7e12 + np.sort(rng.uniform(0, rng.choice([1e3, 1e5, 1e7]), n))
    ts = (ts + rng.normal(0, 3000, n) * (rng.random(n) < 0.2)).round().tolist()  # some out of order
    failed = (rng.random(n) < 0.3).tolist()
    nbytes = rng.integers(0, 10**6, n).astype(float).tolist()
    return keys, peer, ports, ts, failed, nbytes


def same_tables(ref: HostHistory, fast: CompiledHistory) -> None:
    hosts, pairs, services = fast.order()
    assert hosts == [hash(k) for k in ref._hosts]
    assert pairs == ref._peers.order() and services == ref._services.order()
    for k in ref._hosts:
        assert np.array_equal(ref.state(k), fast.state(k))


@pytest.mark.parametrize("seed", range(6))
def test_compiled_counts_exactly_like_the_flow_by_flow_reference(seed):
    """Random batches (repeats, out-of-order times, hours apart, tables small enough to
    evict), cut at a random flow: every feature equal, not close."""
    rng = np.random.default_rng(seed)
    evicted = 0
    for _ in range(40):
        cols = random_stream(rng)
        cap_hosts, cap_pairs = int(rng.integers(1, 40)), int(rng.integers(1, 80))
        ref, fast = HostHistory(cap_hosts, cap_pairs), CompiledHistory(cap_hosts, cap_pairs)
        cut = int(rng.integers(0, len(cols[0]) + 1))
        for s in (slice(0, cut), slice(cut, None)):
            a = ref._update_rows(*(c[s] for c in cols))
            b = fast.update(*(c[s] for c in cols))
            assert b.dtype == np.float32 and np.array_equal(a, b)
        same_tables(ref, fast)
        evicted += fast._kernel.peers.evictions
    assert evicted > 10  # the eviction path ran


def test_windows_are_the_same_with_either_engine():
    from inference.datasets.synthetic import synthetic_flows
    from inference.features import raw_matrix_from_frame

    df = synthetic_flows(hosts_per_class=3, flows_per_host=40, seed=3).sort_values("first_seen_ms")
    got = {}
    for engine in ("numpy", "compiled"):
        w = Windower(k=8, seconds=10.0, views=("src", "dst"), keep_items=False, host_history=engine)
        assert type(w._views[0].history) is (HostHistory if engine == "numpy" else CompiledHistory)
        closed = []
        for lo in range(0, len(df), 37):  # pushes of 37: the numpy batch path, not the reference
            part = df.iloc[lo:lo + 37]
            closed += w.push(part["src_ip"].tolist(), part["dst_ip"].tolist(), part["flow_id"].tolist(),
                             raw_matrix_from_frame(part))
        got[engine] = {c.window_id: c.features for c in closed + w.flush()}
    assert got["numpy"].keys() == got["compiled"].keys() and len(got["numpy"]) > 50
    for wid, f in got["numpy"].items():
        np.testing.assert_allclose(f, got["compiled"][wid], rtol=1e-6, atol=1e-7)


def test_engine_choice_and_its_errors(monkeypatch):
    assert isinstance(new_history(engine="numpy"), HostHistory)
    assert isinstance(new_history(10, engine="compiled"), CompiledHistory)
    with pytest.raises(ValueError, match="one of auto, compiled, numpy"):
        new_history(engine="c")
    with pytest.raises(ValueError, match="different lengths"):
        CompiledHistory(10)._kernel.update(["a"], ["b", "c"], np.zeros(1, np.int64), np.zeros(1),
                                           np.zeros(1, np.uint8), np.zeros(1), np.empty((1, 18), np.float32))
    monkeypatch.setattr(history, "_HistoryKernel", None)
    monkeypatch.setattr(history, "KERNEL_MISSING", "ImportError: no module")
    assert isinstance(new_history(), HostHistory)  # auto falls back
    with pytest.raises(ConfigError, match="EDGELOOP_HOST_HISTORY.*not built here"):
        new_history(engine="compiled")


def test_the_setting_reaches_the_engine(monkeypatch, tiny_bundle):
    from inference.onnx_detector import OnnxDetector
    from prometheus_client import CollectorRegistry

    from streams.detector import DetectorConfig, EdgeDetector
    from streams.metrics import EdgeMetrics
    from streams.settings import Settings

    for engine, cls in (("numpy", HostHistory), ("compiled", CompiledHistory)):
        monkeypatch.setenv("EDGELOOP_HOST_HISTORY", engine)
        reg = CollectorRegistry()
        eng = EdgeDetector(OnnxDetector(tiny_bundle), DetectorConfig.from_settings(Settings()), EdgeMetrics(reg))
        assert {type(v.history) for v in eng.windower._views} == {cls}
        # what EdgeloopHostHistoryInNumpy alerts on
        assert reg.get_sample_value("edgeloop_host_history_info", {"engine": engine}) == 1.0
        assert reg.get_sample_value("edgeloop_host_history_info",
                                    {"engine": "numpy" if engine == "compiled" else "compiled"}) is None
    monkeypatch.setenv("EDGELOOP_HOST_HISTORY", "fast")
    with pytest.raises(Exception, match="host_history"):
        Settings()

"""The edge pipeline on the real embedded broker: replay, detections, dead letters, scaling."""
from __future__ import annotations

import json
import time
from pathlib import Path

import pandas as pd
import pytest

from contracts.records import encode_flow_batch
from inference.datasets.synthetic import synthetic_flows
from inference.windowing import windows_from_frame
from streams.detector import DetectorConfig
from streams.producer import FlowPublisher
from streams.score import score_frame
from streams.sources.files import iter_flow_dicts, load_flows
from streams.sources.replay import replay_frame

pytestmark = pytest.mark.integration
VIEWS = ("src", "dst")  # the tiny bundle's, as the product's default


def _flows(seed: int = 7, hosts: int = 6, per_host: int = 64) -> pd.DataFrame:
    return synthetic_flows(hosts_per_class=hosts, flows_per_host=per_host, seed=seed)


def test_replay_gives_one_detection_per_window_matching_offline_score(
        broker, topics, edge_worker, tiny_bundle, topic_reader, decode_detections):
    df = _flows()
    expected = {w.window_id for w in windows_from_frame(df, k=8, seconds=10.0, views=VIEWS) if w.view == "src"}
    w = edge_worker(topics, tiny_bundle.path, window_idle_s=10, alert_interval_s=1)
    with FlowPublisher(broker.bootstrap, topics.flows) as pub:
        replay_frame(df, pub, progress=False)
    w.wait_for("edgeloop_flows_in_total", lambda v: v == len(df))
    # Open windows close by the idle rule (10 s of wall-clock silence).
    dets = _all_windows(topic_reader, decode_detections, topics, len(df))
    ids = [d["window_id"] for d in dets]
    assert len(ids) == len(set(ids)), "a window was scored twice"
    src, dst = _by_view(dets, df)
    assert {d["window_id"] for d in src} == expected
    # The file path gives identical verdicts on the same input (source windows: each
    # source's flows keep their order in its partition, so the windows are the same).
    offline = score_frame(df, tiny_bundle, DetectorConfig()).windows.set_index("window_id")
    for d in src:
        row = offline.loc[d["window_id"]]
        assert d["predicted"] == row["predicted"]
        assert d["flow_ids"] == list(row["flow_ids"])
        assert abs(d["confidence"] - row["confidence"]) < 1e-4
    assert w.sample("edgeloop_windows_scored_total") == len(dets)
    assert w.sample("edgeloop_inference_seconds_count") > 0
    assert w.sample("edgeloop_model_info", {"version": tiny_bundle.version}) == 1
    alerts = topic_reader(topics.alerts, lambda vs: len(vs) > 0, timeout=20)
    attacks = {json.loads(a)["attack"] for a in alerts}
    assert attacks and "benign" not in attacks


def test_a_worker_under_edgeloop_int8_serves_the_bundles_int8_model(
        broker, topics, edge_worker, topic_reader, decode_detections):
    """EDGELOOP_INT8=1: the worker scores with the int8 session (its confidences are int8's,
    as `EDGELOOP_INT8=1 edgeloop score` gives them, not fp32's) and says so in
    edgeloop_model_info{precision="int8"}."""
    from inference.bundle import DEFAULT_BUNDLE_DIR, Bundle
    from inference.onnx_detector import OnnxDetector

    bundle = Bundle.load(DEFAULT_BUNDLE_DIR)
    df = load_flows(Path(__file__).resolve().parents[2] / "data" / "lab" / "eval.parquet").iloc[:1200]
    w = edge_worker(topics, DEFAULT_BUNDLE_DIR, int8=1, window_idle_s=3)
    assert w.sample("edgeloop_model_info", {"version": bundle.version, "precision": "int8"}) == 1
    with FlowPublisher(broker.bootstrap, topics.flows) as pub:
        replay_frame(df, pub, progress=False)
    src, _ = _by_view(_all_windows(topic_reader, decode_detections, topics, len(df)), df)
    scored = {m: score_frame(df, bundle, DetectorConfig(), model=OnnxDetector(bundle, int8=m == "int8"))
              .windows.set_index("window_id")["confidence"] for m in ("int8", "fp32")}
    close = {m: sum(abs(d["confidence"] - c.loc[d["window_id"]]) < 1e-5 for d in src) for m, c in scored.items()}
    assert close["int8"] == len(src) > 100 and close["fp32"] < len(src)


def _all_windows(topic_reader, decode_detections, topics, n_flows: int) -> list[dict]:
    """Detections until every flow is in a window of each view."""
    return decode_detections(topic_reader(
        topics.detections, lambda vs: sum(len(d["flow_ids"]) for d in decode_detections(vs)) >= len(VIEWS) * n_flows,
        timeout=90))


def _by_view(dets: list[dict], df: pd.DataFrame) -> tuple[list[dict], list[dict]]:
    """Source and destination windows; each view holds every flow exactly once.

    A destination's flows come from sources in different partitions, so the stream
    interleaves them in arrival order, not file order: destination windows can differ
    from offline scoring's, but no flow is lost or windowed twice."""
    src = [d for d in dets if d["view"] == "src"]
    dst = [d for d in dets if d["view"] == "dst"]
    for part in (src, dst):
        assert sorted(f for d in part for f in d["flow_ids"]) == sorted(df["flow_id"])
    return src, dst


BAD_VALUES = {
    "bad_json": b'{"schema": "edgeloop.flow/1", "flow_id": ',
    "schema_version": json.dumps({"schema": "edgeloop.flow/9", "flow_id": "x"}).encode(),
    "missing_field": json.dumps({"schema": "edgeloop.flow/1", "flow_id": "m1", "src_ip": "10.0.0.1"}).encode(),
    "non_finite": b'{"schema":"edgeloop.flow/1","flow_id":"n1","packets":NaN}',
    "too_large": b'{"x":"' + b"a" * (9 * 1024 * 1024) + b'"}',
}


def test_malformed_records_go_to_deadletter_and_good_ones_keep_flowing(
        broker, topics, edge_worker, tiny_bundle, topic_reader, decode_detections):
    df = _flows(seed=3, hosts=2, per_host=16)
    good = list(iter_flow_dicts(df))
    absurd = dict(good[0], flow_id="absurd", packets=10**15, bytes=10**15)
    w = edge_worker(topics, tiny_bundle.path)
    with FlowPublisher(broker.bootstrap, topics.flows) as pub:
        pub.producer.config["max_request_size"] = 16 << 20
        for v in BAD_VALUES.values():
            pub.send_raw(v, partition=0)
        pub.send_raw(encode_flow_batch([absurd, good[0]]), partition=1)  # one bad inside a batch
        pub.publish(good[1:])
    w.wait_for("edgeloop_flows_in_total", lambda v: v == len(good))
    dl = [json.loads(v) for v in topic_reader(topics.deadletter, lambda vs: len(vs) >= 6)]
    reasons = sorted(d["reason"] for d in dl)
    assert reasons == sorted([*BAD_VALUES, "invalid"])
    for d in dl:
        assert d["source_topic"] == topics.flows and d["offset"] is not None and d["partition"] in (0, 1)
        assert d["error"]
    assert any('"absurd"' in d["value"] for d in dl)
    assert w.sample("edgeloop_deadletter_records_total") == 6
    dets = decode_detections(topic_reader(topics.detections, lambda vs: len(decode_detections(vs)) >= 4))
    assert dets, "good flows stopped after bad input"
    w.assert_alive()


def test_hot_swap_under_load_loses_and_repeats_no_window(
        broker, topics, edge_worker, tiny_bundle, tiny_bundle_b, topic_reader, decode_detections, tmp_path):
    from inference.registry import Registry
    from streams.hotswap import publish_release

    df = _flows(seed=11, hosts=40, per_host=48)  # 11,520 flows
    expected = {w.window_id for w in windows_from_frame(df, k=8, seconds=10.0, views=VIEWS) if w.view == "src"}
    w = edge_worker(topics, tiny_bundle.path, window_idle_s=3, allow_unsigned="true")  # unsigned releases: a lab
    half = len(df) // 2
    with FlowPublisher(broker.bootstrap, topics.flows, batch_records=100) as pub:
        replay_frame(df.iloc[:half], pub, progress=False)
        w.wait_for("edgeloop_windows_scored_total", lambda v: v > 100)
        Registry(tmp_path / "var" / "registry").add(tiny_bundle_b.path)  # the worker's model store
        publish_release(broker.bootstrap, topics.models, tiny_bundle_b, reason="test swap")
        # Keep the load on while the new model loads.
        for start in range(half, len(df), 500):
            pub.publish(iter_flow_dicts(df.iloc[start:start + 500]))
            time.sleep(0.05)
    w.wait_for("edgeloop_model_swaps_total", lambda v: v == 1)
    w.wait_for("edgeloop_flows_in_total", lambda v: v == len(df))
    dets = _all_windows(topic_reader, decode_detections, topics, len(df))
    ids = [d["window_id"] for d in dets]
    assert len(ids) == len(set(ids)), "a window was scored twice"
    src, _ = _by_view(dets, df)
    assert {d["window_id"] for d in src} == expected, "a window was lost"
    versions = [d["model_version"] for d in dets]
    assert {tiny_bundle.version, tiny_bundle_b.version} == set(versions)
    old = [d["scored_ms"] for d in dets if d["model_version"] == tiny_bundle.version]
    new = [d["scored_ms"] for d in dets if d["model_version"] == tiny_bundle_b.version]
    assert max(old) <= min(new), "old model used after the swap"
    assert w.sample("edgeloop_model_info", {"version": tiny_bundle_b.version}) == 1


def test_only_signed_releases_of_untampered_stored_bundles_are_swapped_in(
        broker, topics, edge_worker, tiny_bundle, tiny_bundle_b, topic_reader, tmp_path):
    """Signed releases, fetched by content hash: a tampered bundle in the store and an unsigned
    release are refused, dead-lettered with their reason and counted; the release the
    registry's key signed is swapped in."""
    import shutil

    from inference.registry import Registry
    from streams.hotswap import publish_release
    from streams.signing import SigningKey

    key = SigningKey.generate("registry")
    key.save(tmp_path / "trusted")
    store = tmp_path / "store"
    shutil.copytree(tiny_bundle_b.path, store / tiny_bundle_b.version)
    onnx = store / tiny_bundle_b.version / "model.onnx"
    onnx.write_bytes(onnx.read_bytes() + b"\0")                 # what the node would load is altered
    w = edge_worker(topics, tiny_bundle.path, trusted_keys=tmp_path / "trusted", model_store=store)
    publish_release(broker.bootstrap, topics.models, tiny_bundle_b, reason="tampered copy", key=key)
    w.wait_for("edgeloop_model_swaps_refused_total", lambda v: v == 1)
    assert w.sample("edgeloop_model_swaps_refused_total", {"reason": "verification"}) == 1
    shutil.rmtree(store / tiny_bundle_b.version)
    Registry(store).add(tiny_bundle_b.path)
    publish_release(broker.bootstrap, topics.models, tiny_bundle_b, reason="unsigned")
    w.wait_for("edgeloop_model_swaps_refused_total", lambda v: v == 2)
    assert w.sample("edgeloop_model_swaps_refused_total", {"reason": "unsigned"}) == 1
    assert w.sample("edgeloop_model_info", {"version": tiny_bundle.version}) == 1
    dl = [json.loads(v) for v in topic_reader(topics.deadletter, lambda vs: len(vs) >= 2, 30)]
    assert [d["reason"] for d in dl] == ["verification", "unsigned"]
    assert all(d["source_topic"] == topics.models and json.loads(d["value"])["version"] == tiny_bundle_b.version
               for d in dl)
    publish_release(broker.bootstrap, topics.models, tiny_bundle_b, reason="signed", key=key)
    w.wait_for("edgeloop_model_swaps_total", lambda v: v == 1)
    assert w.sample("edgeloop_model_info", {"version": tiny_bundle_b.version}) == 1
    assert w.sample("edgeloop_deadletter_records_total", {"reason": "unsigned", "topic": topics.models}) == 1
    w.assert_alive()


def test_small_messages_read_together_are_windowed_in_one_push(
        broker, topics, edge_worker, tiny_bundle, topic_reader, decode_detections):
    """A sensor's small messages (8 flows here; a live sensor's are about 50), read faster
    than one push each would window them, go to the windows several at a time: every message
    windowed once, in fewer pushes than messages, and the same source windows as offline."""
    df = _flows(seed=11)
    expected = {w.window_id for w in windows_from_frame(df, k=8, seconds=10.0, views=VIEWS) if w.view == "src"}
    with FlowPublisher(broker.bootstrap, topics.flows, batch_records=8) as pub:  # a backlog before the worker
        replay_frame(df, pub, progress=False)
    messages = pub.stats.messages
    w = edge_worker(topics, tiny_bundle.path, window_idle_s=2)
    w.wait_for("edgeloop_flows_in_total", lambda v: v == len(df))
    dets = _all_windows(topic_reader, decode_detections, topics, len(df))
    src, _ = _by_view(dets, df)
    assert {d["window_id"] for d in src} == expected and len(dets) == len({d["window_id"] for d in dets})
    pushes, pushed = (w.sample(f"edgeloop_window_push_messages_{s}") for s in ("count", "sum"))
    assert pushed == w.sample("edgeloop_flow_messages_in_total") == messages
    assert pushes <= messages / 2, f"{messages} messages in {pushes} pushes"
    print(f"\n[coalescing] {messages} messages of <= 8 flows windowed in {pushes:.0f} pushes")


def test_two_workers_split_the_partitions(broker, topics, edge_worker, tiny_bundle, topic_reader, decode_detections):
    df = _flows(seed=5, hosts=10, per_host=32)
    closed = windows_from_frame(df, k=8, seconds=10.0, views=VIEWS)
    expected = {w.window_id for w in closed if w.view == "src"}
    group = f"pair-{topics.prefix}"
    a = edge_worker(topics, tiny_bundle.path, group=group, window_idle_s=2)
    b = edge_worker(topics, tiny_bundle.path, group=group, window_idle_s=2)
    for w in (a, b):
        w.wait_for("edgeloop_assigned_partitions", lambda v: v == 2, timeout=60)
    with FlowPublisher(broker.bootstrap, topics.flows) as pub:
        replay_frame(df, pub, progress=False)
    dets = decode_detections(topic_reader(
        topics.detections, lambda vs: sum(len(d["flow_ids"]) for d in decode_detections(vs)) >= 2 * len(df),
        timeout=60))
    ids = [d["window_id"] for d in dets]
    # Flows are partitioned by source: each worker sees all of a source's flows (the same
    # source windows as one process) but only part of a destination's, so destination
    # windows differ from one process's; still every flow is in exactly one of them.
    assert len(ids) == len(set(ids)) and {d["window_id"] for d in dets if d["view"] == "src"} == expected
    dst_flows = [f for d in dets if d["view"] == "dst" for f in d["flow_ids"]]
    assert sorted(dst_flows) == sorted(df["flow_id"])
    fa, fb = a.sample("edgeloop_flows_in_total"), b.sample("edgeloop_flows_in_total")
    assert fa > 0 and fb > 0 and fa + fb == len(df)
    assert len({json.loads(v)["worker"] for v in topic_reader(topics.detections, lambda vs: True, 5)}) == 2


PCAP = Path(__file__).resolve().parents[2] / "data" / "lab" / "eval.pcap"


def test_replayed_pcap_yields_one_detection_per_closed_window(
        broker, topics, edge_worker, tiny_bundle, topic_reader, decode_detections):
    pytest.importorskip("nfstream", reason="metering a pcap needs the capture extra")
    df = load_flows(PCAP)  # NFStream meters the shipped lab capture, as `edgeloop replay` does
    expected = {w.window_id for w in windows_from_frame(df, k=8, seconds=10.0, views=VIEWS) if w.view == "src"}
    w = edge_worker(topics, tiny_bundle.path, window_idle_s=2)
    with FlowPublisher(broker.bootstrap, topics.flows) as pub:
        st = replay_frame(df, pub, progress=False)
    assert st.records == len(df) > 500
    dets = _all_windows(topic_reader, decode_detections, topics, len(df))
    ids = [d["window_id"] for d in dets]
    assert len(ids) == len(set(ids))
    src, _ = _by_view(dets, df)
    assert {d["window_id"] for d in src} == expected
    assert w.sample("edgeloop_windows_scored_total") == len(dets)


def test_worker_applies_and_drops_active_policies(broker, topics, edge_worker, tiny_bundle, topic_reader):
    """An active suppression changes what the engine alerts on (not only the watcher's
    state): while it is active, one scanner's windows are muted and raise no alert; once it
    is revoked, the same scan from that source alerts again."""
    from kafka import KafkaProducer

    from contracts.policy_model import AlertMatch, Policy
    from streams.active_policies import PolicyActivation, PolicyRevocation, encode_active

    df = _flows(seed=5, hosts=2, per_host=32)
    scanners = sorted(df.loc[df["label"] == "syn_scan", "src_ip"].unique())
    muted, other = scanners[0], scanners[1]
    w = edge_worker(topics, tiny_bundle.path, allow_unsigned="true", window_idle_s=2, alert_interval_s=1)
    now = int(time.time() * 1000)
    act = PolicyActivation(policy_id="p1", policy=Policy(suppress_alerts=[AlertMatch(attack="syn_scan", key=muted)]),
                           approved_by="test", approved_ms=now, expires_ms=now + 600_000, code_sha256="0" * 64,
                           proposal_sha256="0" * 64, provenance="library:test")
    # a forged activation muting alerts about the broker's host: the detector's own guard refuses it
    mute = act.model_copy(update={"policy_id": "mute", "policy": Policy(suppress_alerts=[
        AlertMatch(attack="syn_scan", key="127.0.0.1")])})
    p = KafkaProducer(bootstrap_servers=broker.bootstrap)
    p.send(topics.policies_active, key=b"mute", value=encode_active(mute)).get(10)
    p.send(topics.policies_active, key=b"p1", value=encode_active(act)).get(10)
    w.wait_for("edgeloop_active_policies", lambda v: v == 1, timeout=30)
    w.wait_for("edgeloop_detector_policies_refused_total", lambda v: v == 1, timeout=30, labels={"reason": "guard"})
    [dl] = [json.loads(v) for v in topic_reader(topics.deadletter, lambda vs: len(vs) >= 1, 20)]
    assert dl["source_topic"] == topics.policies_active and dl["reason"] == "PolicyRefused"
    assert json.loads(dl["value"])["policy_id"] == "mute" and "would mute alerts about" in dl["error"]

    def scan_alerts(rows: pd.DataFrame, n_before: int) -> set[str]:
        with FlowPublisher(broker.bootstrap, topics.flows) as pub:
            replay_frame(rows, pub, progress=False)
        w.wait_for("edgeloop_flows_in_total", lambda v: v >= n_before + len(rows), timeout=30)
        w.wait_for("edgeloop_windows_scored_total", lambda v: v >= 2 * len(set(rows["src_ip"])), timeout=60)
        time.sleep(3)  # the alert interval, twice
        alerts = [json.loads(v) for v in topic_reader(topics.alerts, lambda vs: False, timeout=3)]
        return {a["key"] for a in alerts if a["attack"] == "syn_scan"}

    scans = df[df["src_ip"].isin(scanners)]
    during = scan_alerts(scans, 0)
    assert other in during and muted not in during, during
    assert w.sample("edgeloop_alert_windows_muted_total", {"reason": "suppressed"}) > 0
    rev = PolicyRevocation(policy_id="p1", revoked_by="test", revoked_ms=now + 1)
    p.send(topics.policies_active, key=b"p1", value=encode_active(rev)).get(10)
    p.close()
    w.wait_for("edgeloop_active_policies", lambda v: v == 0, timeout=30)
    later = scans.assign(flow_id=scans["flow_id"] + "-again", first_seen_ms=scans["first_seen_ms"] + 600_000,
                         last_seen_ms=scans["last_seen_ms"] + 600_000)
    assert muted in scan_alerts(later, len(scans))


def test_sensor_metrics_count_what_the_broker_acknowledged_and_what_it_refused(broker, topics, topic_reader):
    from prometheus_client import CollectorRegistry

    from contracts.errors import BrokerError
    from streams.metrics import SensorMetrics

    m = SensorMetrics(CollectorRegistry())
    df = _flows(seed=11, hosts=2, per_host=40)
    before = time.time()
    with FlowPublisher(broker.bootstrap, topics.flows, batch_records=100, metrics=m) as pub:
        st = replay_frame(df, pub, progress=False)
    sample = m.registry.get_sample_value
    assert sample("edgeloop_sensor_flows_sent_total") == len(df) == st.records
    assert sample("edgeloop_sensor_messages_sent_total") == st.messages == sample("edgeloop_sensor_batch_flows_count")
    assert sample("edgeloop_sensor_bytes_sent_total") == st.bytes
    assert sample("edgeloop_sensor_last_sent_timestamp_seconds") >= before
    msgs = topic_reader(topics.flows, lambda vs: len(vs) >= st.messages, timeout=30)
    assert len(msgs) == st.messages

    # A message the producer cannot send (no such partition) is counted, with its flows, and raised.
    with FlowPublisher(broker.bootstrap, topics.flows, metrics=m) as pub:
        pub.partitions = [*pub.partitions, 99]
        with pytest.raises(BrokerError, match=r"\[99\]"):
            pub._send(99, [dict(r) for r in iter_flow_dicts(df.iloc[:3])])
    errors = [(s.labels["kind"], s.value) for s in m.send_errors.collect()[0].samples if s.name.endswith("_total")]
    assert errors == [("ValueError", 1.0)], errors  # kafka-python: "Unrecognized partition"
    assert sample("edgeloop_sensor_flows_lost_total") == 3
    assert sample("edgeloop_sensor_flows_sent_total") == len(df)

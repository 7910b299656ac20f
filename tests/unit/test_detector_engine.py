import json
import shutil

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from contracts.errors import BundleVerificationError, ModelError
from inference.bundle import Bundle
from inference.datasets.synthetic import synthetic_flows
from inference.onnx_detector import OnnxDetector
from inference.registry import Registry, resolve_bundle
from streams.detector import DetectorConfig, EdgeDetector
from streams.metrics import EdgeMetrics
from streams.score import score_frame, summary
from streams.sources.files import records_from_frame


@pytest.fixture(scope="module")
def flows():
    return synthetic_flows(hosts_per_class=3, flows_per_host=40, seed=21)


def test_every_window_is_scored_once_and_counted(tiny_bundle, flows):
    reg = CollectorRegistry()
    now = [0.0]
    eng = EdgeDetector(OnnxDetector(tiny_bundle), DetectorConfig(batch_max=16, batch_wait_ms=1000),
                       EdgeMetrics(reg), clock=lambda: now[0])
    records, bad = records_from_frame(flows)
    assert not bad
    outs = []
    for i in range(0, len(records), 50):
        eng.ingest(records[i:i + 50])
        outs += eng.tick()
    outs += eng.flush_all()
    dets = [d for o in outs if o.topic == "detections" for d in json.loads(o.value)["detections"]]
    ids = [d["window_id"] for d in dets]
    scored = sum(reg.get_sample_value("edgeloop_windows_scored_total", {"closed_by": c}) or 0
                 for c in ("k", "time", "idle", "flush", "pressure"))
    assert len(ids) == len(set(ids)) == scored
    # Every flow is in exactly one window of each view.
    for view in tiny_bundle.meta.window.views:
        ids_in_view = [f for d in dets if d["view"] == view for f in d["flow_ids"]]
        assert sorted(ids_in_view) == sorted(r.flow_id for r in records), view
    assert reg.get_sample_value("edgeloop_flows_in_total") == len(records)
    assert reg.get_sample_value("edgeloop_inference_batch_windows_count") >= len(ids) / 16
    assert any(o.topic == "alerts" for o in outs)


def test_batches_wait_at_most_batch_wait(tiny_bundle, flows):
    now = [0.0]
    eng = EdgeDetector(OnnxDetector(tiny_bundle), DetectorConfig(batch_max=10_000, batch_wait_ms=20),
                       clock=lambda: now[0])
    records, _ = records_from_frame(flows)
    eng.ingest(records[:64])
    assert eng.pending and eng.tick() == []
    now[0] = 0.021
    assert [o.topic for o in eng.tick()][0] == "detections" and not eng.pending


def test_a_tick_told_the_flows_already_waited_scores_them_at_once(tiny_bundle, flows):
    """The worker's tick windows the messages read since the last tick and scores their
    windows in the same tick (`tick(now=True)`), not after another batch_wait."""
    eng = EdgeDetector(OnnxDetector(tiny_bundle), DetectorConfig(batch_max=10_000, batch_wait_ms=1000),
                       clock=lambda: 0.0)
    records, _ = records_from_frame(flows)
    eng.ingest(records[:64])
    assert eng.pending and eng.tick() == [] and eng.pending
    assert [o.topic for o in eng.tick(now=True)][0] == "detections" and not eng.pending


def test_a_tick_scores_for_at_most_its_budget_and_the_next_ticks_finish(tiny_bundle, flows):
    """Thousands of windows closing at once (an idle expiry after a flood) must not stall the
    loop in one tick: with a zero budget each tick scores one batch, and none is lost."""
    reg, now = CollectorRegistry(), [0.0]
    eng = EdgeDetector(OnnxDetector(tiny_bundle), DetectorConfig(batch_max=16, batch_wait_ms=0, tick_budget_ms=0),
                       EdgeMetrics(reg), clock=lambda: now[0])
    records, _ = records_from_frame(flows)
    eng.windower.max_open = 10**9
    eng.ingest(records)
    now[0] = 1000.0  # every open window is now idle
    per_tick = []
    while True:
        dets = [d for o in eng.tick() if o.topic == "detections" for d in json.loads(o.value)["detections"]]
        if not dets:
            break
        per_tick.append(len(dets))
    assert len(per_tick) > 2 and max(per_tick) == 16
    scored = sum(reg.get_sample_value("edgeloop_windows_scored_total", {"closed_by": c}) or 0
                 for c in ("k", "time", "idle"))
    assert scored == sum(per_tick)  # ingest scores nothing: every window came out of a tick
    assert not eng.pending and len(eng.windower) == 0
    assert reg.get_sample_value("edgeloop_tick_batches_deferred_total") == len(per_tick) - 1


@pytest.mark.parametrize("change", [{"k": 9}, {"seconds": 30.0}, {"views": ["src"]}, {"views": ["dst", "src"]}])
def test_swap_refuses_a_bundle_whose_windows_are_cut_differently(tiny_bundle, change):
    eng = EdgeDetector(OnnxDetector(tiny_bundle))
    other = OnnxDetector(tiny_bundle)
    other.window = tiny_bundle.meta.window.model_copy(update=change)
    with pytest.raises(BundleVerificationError, match="window spec"):
        eng.swap(other)
    same = OnnxDetector(tiny_bundle)
    eng.swap(same)
    assert eng.model is same


def test_a_detector_refuses_settings_that_cut_windows_another_way(tiny_bundle):
    from inference.bundle import check_window

    spec = tiny_bundle.meta.window
    assert check_window(tiny_bundle, spec.k, spec.seconds, spec.views) == spec
    with pytest.raises(BundleVerificationError) as err:
        check_window(tiny_bundle, spec.k, spec.seconds, ["src"])
    assert "views=src,dst" in str(err.value) and "views=src " in str(err.value) + " "
    assert "EDGELOOP_FOLLOW_BUNDLE_WINDOW" in str(err.value)
    with pytest.raises(BundleVerificationError, match="K=16"):
        check_window(tiny_bundle, 16, spec.seconds, spec.views)
    assert check_window(tiny_bundle, 16, 3.0, ["dst"], follow=True) == spec


def test_offline_score_reports_windows_and_ground_truth(tiny_bundle, flows):
    res = score_frame(flows, tiny_bundle)
    w = res.windows
    assert set(w["predicted"]) <= set(tiny_bundle.class_names)
    assert (w.groupby("view")["n_flows"].sum() == len(flows)).all()
    assert set(w["view"]) == set(tiny_bundle.meta.window.views)
    assert (w["label"] == w["predicted"]).mean() > 0.8  # a trained model, on its own kind of data
    s = summary(w)
    assert s["windows"].sum() == len(w) and "recall_as_label" in s.columns


def test_tampered_bundle_fails_verification(tiny_bundle, tmp_path):
    t = tmp_path / "b"
    shutil.copytree(tiny_bundle.path, t)
    Bundle.load(t).verify()
    (t / "model.onnx").write_bytes(b"garbage")
    with pytest.raises(BundleVerificationError, match="sha256"):
        Bundle.load(t).verify()
    meta = json.loads((tmp_path / "b" / "bundle.json").read_text())
    meta["features"]["names"] = meta["features"]["names"][::-1]
    shutil.copy(tiny_bundle.path / "model.onnx", t / "model.onnx")
    (t / "bundle.json").write_text(json.dumps(meta))
    with pytest.raises(BundleVerificationError):
        Bundle.load(t).verify()


def test_registry_is_content_addressed_and_tracks_current(tiny_bundle, tiny_bundle_b, tmp_path):
    reg = Registry(tmp_path / "registry")
    a = reg.add(tiny_bundle.path)
    assert a.version == tiny_bundle.version and reg.add(tiny_bundle.path).path == a.path
    reg.add(tiny_bundle_b.path)
    assert reg.current_version() is None
    reg.promote(tiny_bundle_b.version, "test")
    assert resolve_bundle("", tmp_path / "registry").version == tiny_bundle_b.version
    assert [h["version"] for h in reg.history()] == [tiny_bundle_b.version]
    with pytest.raises(ModelError):
        reg.get("nope")


def test_active_policy_overrides_mute_alerts(tiny_bundle, flows):
    from contracts.policy_model import AlertMatch, ClassThreshold, Policy, Service
    from streams.active_policies import detector_overrides

    def run(policy):
        reg = CollectorRegistry()
        eng = EdgeDetector(OnnxDetector(tiny_bundle), DetectorConfig(alert_min_windows=1), EdgeMetrics(reg))
        if policy is not None:
            eng.set_overrides(detector_overrides(policy))
        records, _ = records_from_frame(flows)
        eng.ingest(records)
        outs = eng.flush_all()
        return [json.loads(o.value) for o in outs if o.topic == "alerts"], reg

    base, _ = run(None)
    attacks = sorted({a["attack"] for a in base})
    assert attacks
    quiet, reg = run(Policy(class_thresholds=[ClassThreshold(attack=a, min_confidence=1.0) for a in attacks]))
    # A floor of 1.0 mutes every window short of certain; only windows at exactly 1.0 remain.
    assert len(quiet) < len(base) and all(a["max_confidence"] == 1.0 for a in quiet)
    assert reg.get_sample_value("edgeloop_alert_windows_muted_total", {"reason": "threshold"}) > 0
    one = attacks[0]
    rest, reg = run(Policy(suppress_alerts=[AlertMatch(attack=one)]))
    assert {a["attack"] for a in rest} == set(attacks) - {one}
    assert reg.get_sample_value("edgeloop_alert_windows_muted_total", {"reason": "suppressed"}) > 0
    # Alerts name the addresses and ports of their windows' flows (read from the windows' columns).
    by_src: dict[str, set] = {}
    for r in flows.itertuples():
        by_src.setdefault(r.src_ip, set()).add((r.dst_ip, r.dst_port, r.protocol))
    for a in (a for a in base if a["view"] == "src"):
        assert a["src_ips"] == [a["key"]] and a["dst_ports"]
        assert {(d, p) for d in a["dst_ips"] for p in a["dst_ports"]} & {(d, p) for d, p, _ in by_src[a["key"]]}
    # A window whose every flow goes to an allow-listed service does not alert: the alerts aimed
    # at one service, with that service allow-listed, are gone.
    one_service = [a for a in base if len(a["dst_ips"]) == 1 and len(a["dst_ports"]) == 1]
    assert one_service
    ip, port = one_service[0]["dst_ips"][0], one_service[0]["dst_ports"][0]
    protos = {p for d, pt, p in set().union(*by_src.values()) if (d, pt) == (ip, port)}
    allowed, reg = run(Policy(allow_services=[Service(ip=ip, port=port, proto={6: "tcp", 17: "udp"}[p])
                                              for p in protos]))
    assert not [a for a in allowed if a["dst_ips"] == [ip] and a["dst_ports"] == [port]]
    assert reg.get_sample_value("edgeloop_alert_windows_muted_total", {"reason": "allow_listed"}) > 0


def test_uncertain_messages_carry_the_flows_as_they_came_in(tiny_bundle, flows):
    """Open windows keep columns; the records sent to `uncertain` are rebuilt from them and must
    be the decoded wire records, field for field (every window goes: audit fraction 1)."""
    from contracts.records import UncertainWindow, decode, decode_flow_rows, encode_flow_batch
    from streams.sources.files import iter_flow_dicts

    rows = list(iter_flow_dicts(flows))
    wire = [r for a in range(0, len(rows), 100) for r in decode_flow_rows(encode_flow_batch(rows[a:a + 100], "t"))]
    model = OnnxDetector(tiny_bundle)
    # Covered destination windows are counted, not sent (test_source_only_classes); here
    # every window must go out, so neither destination rule applies.
    model._source_only[:] = False
    model._one_peer_source[:] = False
    eng = EdgeDetector(model, DetectorConfig(uncertain_rate_per_s=0, audit_sample=1.0))
    for a in range(0, len(wire), 100):
        eng.ingest(wire[a:a + 100])
    outs = eng.flush_all()
    sent = [decode(UncertainWindow, o.value) for o in outs if o.topic == "uncertain"]
    windows = sum(len(json.loads(o.value)["detections"]) for o in outs if o.topic == "detections")
    assert len(sent) == windows
    by_id = {r.flow_id: r for r in records_from_frame(flows)[0]}
    assert sum(len(u.flows) for u in sent) == len(tiny_bundle.meta.window.views) * len(wire)
    for u in sent:
        assert all(f == by_id[f.flow_id] for f in u.flows)
    # Beside each flow, the host history of the window's key when it came, rounded: the
    # windows the same flows make offline carry the same rows.
    from inference.windowing import windows_from_frame

    w = eng.windower
    ref = {c.window_id: c.history for c in windows_from_frame(flows, k=w.k, seconds=w.seconds, views=w.views)}
    for u in sent:
        assert len(u.history) == len(u.flows) > 0
        np.testing.assert_allclose(u.history, ref[u.window_id], atol=6e-6)


# produced_ms as a batch keeps it: varying with gaps (a list column), varying (an int64
# column), one value per push of 40 flows (a value the batch keeps once), none at all.
PRODUCED = {"gaps": lambda i: None if i % 3 == 0 else 1_000 + i, "ints": lambda i: 5_000 - i,
            "per_push": lambda i: 9_000 + i // 40, "none": lambda i: None}


@pytest.mark.parametrize("produced_at", sorted(PRODUCED))
def test_detections_carry_rounded_scores_and_their_latest_produced_time(tiny_bundle, flows, produced_at):
    eng = EdgeDetector(OnnxDetector(tiny_bundle), DetectorConfig(batch_max=10_000))
    records, _ = records_from_frame(flows)
    records = [r.model_copy(update={"produced_ms": PRODUCED[produced_at](i)}) for i, r in enumerate(records)]
    produced = {r.flow_id: r.produced_ms for r in records}
    for a in range(0, len(records), 40):
        eng.ingest(records[a:a + 40])
    eng.close_all("flush")
    batch = list(eng.pending)
    s = eng.model.score_windows(batch)
    dets = {d["window_id"]: d for o in eng.score_pending() if o.topic == "detections"
            for d in json.loads(o.value)["detections"]}
    for i, w in enumerate(batch):
        d = dets[w.window_id]
        assert d["probabilities"] == [round(p, 5) for p in s.probabilities[i].tolist()]
        assert d["confidence"] == round(float(s.confidence[i]), 5)
        assert d["ood_score"] == round(float(s.ood[i]), 4)
        times = [produced[f] for f in w.flow_ids if produced[f] is not None]
        assert d["produced_ms"] == (max(times) if times else None)


def test_messages_windowed_together_give_the_windows_of_one_push_each(tiny_bundle, flows):
    """The worker coalesces the messages already fetched into one push (`ingest_many`): the
    windows, their verdicts and the flows' origins (the offset ledger's tokens) must be those
    of one push per message."""
    from contracts.arrow_flows import decode_flow_arrow, encode_flow_arrow
    from contracts.records import decode_flow_rows, encode_flow_batch, join_rows
    from streams.sources.files import iter_flow_dicts

    rows = list(iter_flow_dicts(flows))
    messages = [decode_flow_rows(encode_flow_batch(rows[a:a + 23])) for a in range(0, len(rows), 23)]
    assert all(m.numeric is not None for m in messages)  # the clean path, numeric read at decode

    def run(groups, arrow=False):
        eng = EdgeDetector(OnnxDetector(tiny_bundle), DetectorConfig(batch_max=64, batch_wait_ms=0),
                           clock=lambda: 0.0)
        outs, released = [], []
        for group in groups:
            if arrow:
                eng.ingest_arrow_many(group)
            elif len(group) == 1:
                eng.ingest(*group[0])
            else:
                eng.ingest_many(group)
            outs += eng.tick()
            released += eng.take_released()
        outs += eng.flush_all()
        released += eng.take_released()
        dets = {d["window_id"]: (d["flow_ids"], d["predicted"], d["confidence"])
                for o in outs if o.topic == "detections" for d in json.loads(o.value)["detections"]}
        return dets, sorted(released)

    tagged = [(m, i) for i, m in enumerate(messages)]
    one_each = run([[t] for t in tagged])
    together = run([tagged[a:a + 7] for a in range(0, len(tagged), 7)])
    assert one_each[0] and together == one_each
    # Arrow payloads (two sensors) the same way, and the same windows as the JSON ones.
    tables = [(decode_flow_arrow(encode_flow_arrow(rows[a:a + 23], sensor=f"s{a % 2}")).table, a // 23)
              for a in range(0, len(rows), 23)]
    assert run([tables[a:a + 7] for a in range(0, len(tables), 7)], arrow=True) == one_each
    joined = join_rows([m for m, _ in tagged[:3]])
    assert np.array_equal(joined.numeric, np.concatenate([m.numeric for m, _ in tagged[:3]]))
    assert getattr(join_rows([messages[0], list(messages[1])]), "numeric", None) is None  # a part without one

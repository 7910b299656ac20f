from contracts.records import Detection
from streams.routing import AlertAggregator, TokenBucket, UncertainRouter, audit_pick


def det(i, pred="syn_scan", conf=0.99, unc=False, key="10.0.0.66"):
    return Detection(window_id=f"w{i}", key=key, flow_ids=[f"f{i}"], first_seen_ms=i, last_seen_ms=i + 1,
                     predicted=pred, probabilities=[1 - conf, conf], confidence=conf, ood_score=0.0,
                     uncertain=unc, closed_by="k", model_version="v1", scored_ms=0)


def test_token_bucket_limits_rate():
    now = [0.0]
    b = TokenBucket(rate=2, burst=2, clock=lambda: now[0])
    assert [b.take() for _ in range(3)] == [True, True, False]
    now[0] = 0.5
    assert b.take() and not b.take()


def test_uncertain_windows_are_rate_limited_and_counted():
    r = UncertainRouter(rate_per_s=1, audit_fraction=0)
    out = [r.route(det(i, unc=True, conf=0.4), True, [], ["benign", "syn_scan"]) for i in range(5)]
    assert sum(o is not None for o in out) == 1 and r.rate_limited == 4
    assert out[0].reason == "low_confidence"


def test_covered_windows_are_counted_not_sent_and_take_no_token():
    """A destination window deferred because its sources' windows carry its flows (a scan's
    targets) must not use up the rate-limited channel: after 50 of them, the one truly
    unsure window still goes out. Fails if covered windows are sent or take a token."""
    r = UncertainRouter(rate_per_s=1, audit_fraction=0)
    covered = [r.route(det(i, unc=True), False, [], ["benign", "syn_scan"], covered=True) for i in range(50)]
    assert covered == [None] * 50 and r.covered == 50 and r.rate_limited == 0
    out = r.route(det(99, unc=True, conf=0.4), True, [], ["benign", "syn_scan"])
    assert out is not None and out.reason == "low_confidence"
    # `covered` says nothing about a window that is not uncertain: the audit sample still picks it.
    r2 = UncertainRouter(rate_per_s=1, audit_fraction=1.0)
    assert r2.route(det(1), False, [], ["benign", "syn_scan"], covered=True).reason == "audit"


def test_audit_sample_is_deterministic_and_about_the_fraction():
    picks = [audit_pick(f"window-{i}", 0.1) for i in range(5000)]
    assert 350 < sum(picks) < 650
    assert picks == [audit_pick(f"window-{i}", 0.1) for i in range(5000)]


def test_alerts_aggregate_confident_attacks_per_key_and_class():
    now = [0.0]
    a = AlertAggregator("benign", min_windows=2, interval_s=5, clock=lambda: now[0])
    for i in range(3):
        a.add(det(i))
    a.add(det(9, pred="benign"))
    a.add(det(10, unc=True))
    a.add(det(11, key="10.0.0.7"))
    assert a.drain("v1") == []  # interval not over
    now[0] = 6
    (alert,) = a.drain("v1")
    assert (alert.key, alert.attack, alert.windows) == ("10.0.0.66", "syn_scan", 3)
    now[0] = 12
    a.add(det(12, key="10.0.0.7"))
    assert [x.key for x in a.drain("v1")] == ["10.0.0.7"]  # the single window waited, now 2


def test_one_window_aggregates_expire_instead_of_alerting_or_piling_up():
    """A spoofed flood gives one window per fresh source: none may alert, none may stay."""
    now = [0.0]
    a = AlertAggregator("benign", min_windows=2, interval_s=5, clock=lambda: now[0])
    for i in range(1000):
        a.add(det(i, key=f"198.51.{i // 250}.{i % 250}"))
    for step in range(1, 6):
        now[0] = 6 * step
        assert a.drain("v1") == []
    assert a._aggs == {}
    a.add(det(2000, key="10.0.0.9"))
    assert a.drain("v1", force=True) == []  # the end of input does not lower the bar


def test_a_slow_attacker_still_adds_up_to_an_alert():
    """One alerting window per interval: it never expires while it keeps coming."""
    now = [0.0]
    a = AlertAggregator("benign", min_windows=5, interval_s=5, clock=lambda: now[0])
    got = []
    for step in range(6):
        a.add(det(step, key="10.0.0.66"))
        now[0] = 6 * (step + 1)
        got += a.drain("v1")
    assert [(x.key, x.windows) for x in got] == [("10.0.0.66", 5)]


def test_struct_outputs_decode_as_the_contract_models_with_every_value():
    """The router's UncertainRow and the engine's detections message are msgspec structs;
    consumers decode them as UncertainWindow and DetectionBatch: same flows, same values,
    whether a flow came as a FlowRow (fast decode) or a FlowRecord (per-record path)."""
    import msgspec

    from contracts.records import (DetectionBatch, DetectionRow, FlowRecord, UncertainWindow, decode,
                                 decode_flow_rows, encode, encode_detection_batch, encode_flow_batch)

    good = dict(flow_id="s-1", first_seen_ms=1000, last_seen_ms=1500, src_ip="10.0.0.1", dst_ip="10.0.0.2",
                src_port=40000, dst_port=80, protocol=6, packets=10, bytes=1200, src2dst_packets=6,
                dst2src_packets=4, min_ps=60, mean_ps=120, max_ps=400, syn_packets=1, label="syn_scan",
                application_name="HTTP")
    (row,) = decode_flow_rows(encode_flow_batch([good]))
    record = FlowRecord(**dict(good, flow_id="s-2"))
    d = DetectionRow(window_id="w1", key="10.0.0.1", flow_ids=["s-1", "s-2"], first_seen_ms=1000, last_seen_ms=1500,
                     predicted="benign", probabilities=[0.6, 0.4], confidence=0.6, ood_score=-3.0, uncertain=True,
                     closed_by="k", model_version="v1", scored_ms=9, view="dst")
    u = UncertainRouter(rate_per_s=10, audit_fraction=0).route(d, True, [row, record], ["benign", "syn_scan"],
                                                                history=[[0.5] * 18, [0.25] * 18])
    back = decode(UncertainWindow, encode(u))
    assert back.flows == [FlowRecord(**good), record]
    assert (back.reason, back.view, back.history[1][0], back.probabilities) == ("low_confidence", "dst", 0.25, [0.6, 0.4])
    batch = decode(DetectionBatch, encode_detection_batch("w", "v1", ["benign", "syn_scan"], [d]))
    assert batch.detections[0].model_dump() == msgspec.structs.asdict(d)


def test_an_alert_lists_its_flows_addresses_and_counts_distinct_sources(monkeypatch):
    monkeypatch.setattr(AlertAggregator, "MAX_LISTED", 3)
    monkeypatch.setattr(AlertAggregator, "SOURCE_CAP", 5)
    a = AlertAggregator("benign", min_windows=2, interval_s=5, clock=lambda: 0.0)
    a.add(det(1), ["10.1.0.1", "10.1.0.2", "10.1.0.1"], ["10.9.0.1"] * 3, [80, 443, 80])
    a.add(det(2), ["10.1.0.2", "10.1.0.3", "10.1.0.4", "10.1.0.5", "10.1.0.6"], ["10.9.0.1"] * 5, [22] * 5)
    a.add(det(3, pred="benign"), ["10.1.0.99"], ["10.9.0.2"], [1])  # benign: not counted
    (alert,) = a.drain("v1", force=True)
    assert alert.sources == 5  # six distinct, counted up to the cap
    assert alert.src_ips == ["10.1.0.1", "10.1.0.2", "10.1.0.3"] and alert.dst_ips == ["10.9.0.1"]
    assert alert.dst_ports == [22, 80, 443] and alert.flows == sum(len(det(i).flow_ids) for i in (1, 2))


def test_a_group_of_windows_aggregates_exactly_as_the_same_windows_one_at_a_time():
    """The engine adds a batch's windows of one (view, key, attack) in one add_group call,
    their columns end to end: the alert must list the same first values up to the cap, count
    the same sources, flows, times and confidence as adding them one by one."""
    import random

    rnd = random.Random(7)
    wins = []
    for i in range(40):
        n = rnd.randint(1, 8)
        src = [f"10.1.{rnd.randint(0, 30)}.{rnd.randint(0, 9)}" for _ in range(n)]
        dst = [f"10.2.0.{rnd.randint(0, 70)}" for _ in range(n)]
        ports = [rnd.choice([22, 80, rnd.randint(1, 65535)]) for _ in range(n)]
        wins.append((det(i, conf=0.9 + i / 1000), src, dst, ports))
    one = AlertAggregator("benign", min_windows=1, interval_s=1, clock=lambda: 0.0)
    for d, s, t, p in wins:
        one.add(d, s, t, p)
    grouped = AlertAggregator("benign", min_windows=1, interval_s=1, clock=lambda: 0.0)
    for part in (wins[:1], wins[1:25], wins[25:]):
        grouped.add_group(("src", "10.0.0.66", "syn_scan"), len(part), sum(len(d.flow_ids) for d, *_ in part),
                          min(d.first_seen_ms for d, *_ in part), max(d.last_seen_ms for d, *_ in part),
                          max(d.confidence for d, *_ in part), [a for _, s, _, _ in part for a in s],
                          [a for _, _, t, _ in part for a in t], [a for *_, p in part for a in p])
    (a,), (b,) = one.drain("v1", force=True), grouped.drain("v1", force=True)
    assert len(a.dst_ips) == len(a.dst_ports) == AlertAggregator.MAX_LISTED  # the caps were reached
    assert a == b

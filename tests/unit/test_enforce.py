"""Enforcement: the rendered nftables ruleset, strict addresses, the guard, the detector side.

The rendering checks are golden text. Where nft and root are available, rendered rulesets
are validated by the kernel with `nft -c`, and apply/rollback runs for real inside a
throwaway network namespace (never the host's ruleset).
"""
from __future__ import annotations

import os
import shutil
import subprocess

import pytest
from pydantic import ValidationError

from contracts.errors import RecordError
from contracts.policy_model import AlertMatch, ClassThreshold, Policy, RateLimit, Service

from streams.enforce import (ActivePolicies, DetectorOverrides, Enforcer, Guard, PolicyActivation, PolicyRefused,
                             PolicyRevocation, broker_hosts, decode_active, detector_overrides, encode_active,
                             merge_overrides)
from streams.nftables import (AddressError, EnforceError, Nft, NftEntry, NftError, parse_address, parse_network,
                              policy_tag, render_ruleset)

NOW = 1_767_225_600_000
SHA = "a" * 64
GARBAGE = ["10.0.0.1; flush ruleset", "10.0.0.1 } ; flush ruleset ; {", "10.0.0.1/24", "example.com", " 10.0.0.1",
           "10.0.0.1\n", "10.0.0.256", "1.2.3.4/33", "", "10.0.0.1,10.0.0.2", "0x0a000001", "10.0.0.1 timeout 999999d"]
# Valid for Python's ipaddress (and so for Policy), but not for a firewall rule: a zone id
# means nothing to nft, and an IPv4-mapped address would dodge the IPv4 guard.
ENFORCER_ONLY = ["::ffff:10.0.0.1", "fe80::1%eth0"]


def activation(pid: str, policy: Policy, approved_ms: int = NOW) -> PolicyActivation:
    return PolicyActivation(policy_id=pid, policy=policy, approved_by="alice", approved_ms=approved_ms,
                            expires_ms=approved_ms + policy.expires_s * 1000, code_sha256=SHA, proposal_sha256=SHA,
                            provenance="library:block_source")


# -- rendering ---------------------------------------------------------------------------------
GOLDEN = """\
# edgeloop enforcer, policies with network actions: 1; replaced as a whole
table inet edgeloop {}
delete table inet edgeloop
table inet edgeloop {
\tset TAG_block4 {
\t\ttype ipv4_addr
\t\tflags interval,timeout
\t\telements = { 10.8.0.0/16 timeout 900s, 10.9.0.66 timeout 900s }
\t}
\tset TAG_block6 {
\t\ttype ipv6_addr
\t\tflags interval,timeout
\t\telements = { 2001:db8::/32 timeout 900s }
\t}
\tset TAG_rate0_4 {
\t\ttype ipv4_addr
\t\tflags interval,timeout
\t\telements = { 10.7.0.1 timeout 900s }
\t}
\tset TAG_isolate4 {
\t\ttype ipv4_addr
\t\tflags interval,timeout
\t\telements = { 10.6.0.1 timeout 900s }
\t}
\tchain TAG {
\t\tip daddr 10.9.0.10 tcp dport 80 return
\t\tip saddr 10.9.0.10 tcp sport 80 return
\t\tip saddr @TAG_block4 ct direction reply return
\t\tip saddr @TAG_block4 drop
\t\tip6 saddr @TAG_block6 ct direction reply return
\t\tip6 saddr @TAG_block6 drop
\t\tip saddr @TAG_rate0_4 limit rate over 50/second drop
\t\tip saddr @TAG_isolate4 drop
\t\tip daddr @TAG_isolate4 drop
\t}
\tchain input {
\t\ttype filter hook input priority -10; policy accept;
\t\tjump TAG
\t}
\tchain forward {
\t\ttype filter hook forward priority -10; policy accept;
\t\tjump TAG
\t}
\tchain output {
\t\ttype filter hook output priority -10; policy accept;
\t\tjump TAG
\t}
}
"""
FULL = Policy(block_sources=["10.9.0.66", "10.8.0.0/16", "2001:db8::/32", "10.8.3.0/24"],
              rate_limit_sources=[RateLimit(sources=["10.7.0.1"], packets_per_s=50)],
              isolate_hosts=["10.6.0.1"], allow_services=[Service(ip="10.9.0.10", port=80)], expires_s=900)


def test_golden_ruleset_own_table_sets_with_timeouts_v4_v6_apart_overlaps_merged() -> None:
    text = render_ruleset([NftEntry("pol-1", FULL, NOW + 900_000)], now_ms=NOW)
    assert text == GOLDEN.replace("TAG", policy_tag("pol-1"))


def test_timeouts_are_the_remaining_lifetime_and_expired_or_detector_only_policies_render_nothing() -> None:
    p = Policy(block_sources=["10.9.0.66"], expires_s=900)
    text = render_ruleset([NftEntry("a", p, NOW + 100_500)], now_ms=NOW)
    assert "10.9.0.66 timeout 101s" in text
    gone = render_ruleset([NftEntry("a", p, NOW - 1)], now_ms=NOW)
    assert gone == ("# edgeloop enforcer, policies with network actions: 0; replaced as a whole\n"
                    "table inet edgeloop {}\ndelete table inet edgeloop\n")
    detector_only = Policy(class_thresholds=[ClassThreshold(attack="syn_scan", min_confidence=0.9)])
    assert render_ruleset([NftEntry("b", detector_only, NOW + 10**6)], now_ms=NOW) == gone


def test_each_policy_gets_its_own_chain_jumped_from_every_hook_and_slow_rates_go_per_minute() -> None:
    a = Policy(block_sources=["10.9.0.66"])
    b = Policy(rate_limit_sources=[RateLimit(sources=["10.9.0.70", "10.9.0.71"], packets_per_s=0.25)])
    text = render_ruleset([NftEntry("a", a, NOW + 10**6), NftEntry("b", b, NOW + 10**6)], now_ms=NOW, table="lab")
    assert text.count("chain p") == 2 and "table inet lab {" in text
    for tag in (policy_tag("a"), policy_tag("b")):
        assert text.count(f"jump {tag}") == 3
    assert "limit rate over 15/minute drop" in text
    assert "10.9.0.70/31 timeout" in text  # adjacent addresses collapse into one prefix


def test_policy_ids_never_reach_the_ruleset() -> None:
    evil = 'x"; flush ruleset; #'
    text = render_ruleset([NftEntry(evil, Policy(block_sources=["10.9.0.66"]), NOW + 10**6)], now_ms=NOW)
    assert "flush" not in text and evil not in text


def test_table_names_are_checked() -> None:
    with pytest.raises(EnforceError):
        render_ruleset([], now_ms=NOW, table="edgeloop; flush ruleset")


# -- strict addresses ----------------------------------------------------------------------------
@pytest.mark.parametrize("text", GARBAGE)
def test_strict_parsing_rejects_garbage(text: str) -> None:
    with pytest.raises(AddressError):
        parse_network(text)
    with pytest.raises(ValidationError):
        Policy(block_sources=[text])


@pytest.mark.parametrize("text", ENFORCER_ONLY)
def test_addresses_policy_allows_but_the_enforcer_refuses(text: str) -> None:
    with pytest.raises(AddressError):
        parse_network(text)
    enf = Enforcer(RecordingNft(), Guard.build(), clock=lambda: NOW)
    assert not enf.handle(activation("odd", Policy(block_sources=[text])))
    assert "odd" in enf.refused and "odd" not in enf.state.entries


def test_strict_parsing_accepts_and_canonicalises() -> None:
    assert str(parse_network("10.0.0.0/8")) == "10.0.0.0/8"
    assert str(parse_network("2001:DB8::1")) == "2001:db8::1/128"
    assert str(parse_address("10.0.0.1")) == "10.0.0.1"
    with pytest.raises(AddressError):
        parse_address("10.0.0.0/8")
    with pytest.raises(AddressError):
        parse_network(167772161)


@pytest.mark.parametrize("text", GARBAGE[:4])
def test_garbage_smuggled_past_validation_still_cannot_reach_the_ruleset(text: str) -> None:
    forged = Policy.model_construct(block_sources=[text], rate_limit_sources=[], class_thresholds=[],
                                    suppress_alerts=[], isolate_hosts=[], allow_services=[], expires_s=900)
    with pytest.raises(AddressError):
        render_ruleset([NftEntry("x", forged, NOW + 10**6)], now_ms=NOW)


# -- the guard -----------------------------------------------------------------------------------
@pytest.fixture
def guard() -> Guard:
    return Guard.build(bootstrap="10.0.0.5:9092,[2001:db8::5]:9093", mgmt_addrs=["192.168.1.2"],
                       allow_list=["172.16.0.0/12"], local_addrs=["10.77.0.10"])


@pytest.mark.parametrize("policy, why", [
    (Policy(block_sources=["10.0.0.5"]), "broker 10.0.0.5"),
    (Policy(block_sources=["10.0.0.0/8"]), "broker 10.0.0.5"),           # a CIDR around the broker
    (Policy(rate_limit_sources=[RateLimit(sources=["2001:db8::/64"], packets_per_s=10)]), "broker 2001:db8::5"),
    (Policy(isolate_hosts=["192.168.1.2"]), "management address"),
    (Policy(block_sources=["172.16.5.5"]), "allow-list"),
    (Policy(block_sources=["10.77.0.10"]), "an address of this node"),
    (Policy(block_sources=["127.0.0.1"]), "loopback"),
])
def test_guard_refuses_policies_touching_protected_infrastructure(guard: Guard, policy: Policy, why: str) -> None:
    with pytest.raises(PolicyRefused) as err:
        guard.check("p1", policy)
    assert why in str(err.value) and "p1" in str(err.value)


def test_guard_lets_narrow_policies_through(guard: Guard) -> None:
    guard.check("ok", Policy(block_sources=["10.9.0.66", "2001:db9::/64", "10.9.0.0/16"],
                             allow_services=[Service(ip="10.9.0.5", port=443)],
                             suppress_alerts=[AlertMatch(attack="syn_scan", key="10.9.1.0/24"),
                                              AlertMatch(attack="dos", key="2001:db9::/64")],
                             class_thresholds=[ClassThreshold(attack="dos", min_confidence=0.95)]))


@pytest.mark.parametrize("policy, why", [
    # muting the brokers' alerts used to pass this guard
    (Policy(suppress_alerts=[AlertMatch(attack="dos", key="10.0.0.5")]), "would mute alerts about 10.0.0.5/32 (broker"),
    (Policy(suppress_alerts=[AlertMatch(attack="dos", key="10.0.0.0/24")]), "would mute alerts about 10.0.0.5/32"),
    (Policy(suppress_alerts=[AlertMatch(key="10.9.0.7")]), "a suppression of every class hides any attack"),
    (Policy(suppress_alerts=[AlertMatch(attack="dos")]), "must name the addresses it covers"),
    (Policy(suppress_alerts=[AlertMatch(attack="dos", key="0.0.0.0/0")]), "is wider than /24"),
    (Policy(suppress_alerts=[AlertMatch(attack="dos", key="10.9.0.0/16")]), "is wider than /24"),
    (Policy(suppress_alerts=[AlertMatch(attack="dos", key="2001:db9::/48")]), "is wider than /64"),
    (Policy(block_sources=["128.0.0.0/1"]), "block 128.0.0.0/1 is wider than /16"),
    (Policy(block_sources=["2001:db9::/32"]), "is wider than /48"),
    (Policy(rate_limit_sources=[RateLimit(sources=["11.0.0.0/8"], packets_per_s=1)]), "rate-limit 11.0.0.0/8 is wider"),
    (Policy(class_thresholds=[ClassThreshold(attack="dos", min_confidence=1.0)]), "mutes the class"),
])
def test_guard_refuses_broad_and_monitoring_blind_policies(guard: Guard, policy: Policy, why: str) -> None:
    with pytest.raises(PolicyRefused) as err:
        guard.check("p2", policy)
    assert why in str(err.value)


def test_thresholds_on_every_attack_class_are_broad() -> None:
    g = Guard.build(attack_classes=["dos", "syn_scan"])
    both = Policy(class_thresholds=[ClassThreshold(attack="dos", min_confidence=0.9),
                                    ClassThreshold(attack="syn_scan", min_confidence=0.9)])
    assert g.problems(both) == ["thresholds on every attack class at once: broad actions need an operator reason"]
    assert g.problems(Policy(class_thresholds=both.class_thresholds[:1])) == []


def test_an_operator_reason_lets_broad_actions_pass_but_never_protected_ones(guard: Guard) -> None:
    broad = Policy(block_sources=["11.0.0.0/8"], suppress_alerts=[AlertMatch(attack="dos")])
    assert guard.problems(broad, broad_reason="known botnet range, ticket 4411") == []
    assert guard.problems(broad, broad_reason="   ")  # blank is no reason
    touching = Policy(block_sources=["10.0.0.0/8"])  # wide and around the broker
    problems = guard.problems(touching, broad_reason="because")
    assert problems == ["block 10.0.0.0/8 would touch 10.0.0.5/32 (broker 10.0.0.5)",
                        "block 10.0.0.0/8 would touch 10.77.0.10/32 (an address of this node)"]


def test_infrastructure_discovery_reads_resolvers_ntp_and_gateways(tmp_path) -> None:
    from streams.guard import gateways, ntp_servers, resolvers

    (tmp_path / "resolv.conf").write_text("# c\nnameserver 10.53.0.1\nnameserver fe80::1%eth0\nsearch lan\n"
                                          "nameserver not-an-ip\n")
    assert resolvers(tmp_path / "resolv.conf") == ["10.53.0.1", "fe80::1"]
    (tmp_path / "chrony.conf").write_text("server 10.123.0.1 iburst\npool 10.123.0.2\n# server 9.9.9.9\n")
    (tmp_path / "timesyncd.conf").write_text("[Time]\nNTP=10.123.0.3 10.123.0.4\nFallbackNTP=10.123.0.5\n")
    assert ntp_servers([str(tmp_path / "chrony.conf"), str(tmp_path / "timesyncd.conf"), "/nonexistent"]) == [
        "10.123.0.1", "10.123.0.2", "10.123.0.3", "10.123.0.4", "10.123.0.5"]
    if shutil.which("ip"):
        routes = subprocess.run(["ip", "-j", "route", "show", "default"], capture_output=True, text=True).stdout
        expected = sorted({r["gateway"] for r in __import__("json").loads(routes or "[]") if r.get("gateway")})
        assert [g for g in gateways() if ":" not in g] == expected
    g = Guard.build(infrastructure={"10.53.0.1": "DNS resolver"}, scrapers=["127.0.0.2"], core=["10.0.0.9"])
    assert g.problems(Policy(block_sources=["10.53.0.1"])) == ["block 10.53.0.1 would touch 10.53.0.1/32 (DNS resolver)"]
    assert "metrics scraper" in g.problems(Policy(isolate_hosts=["127.0.0.2"]))[-1]
    assert "core host 10.0.0.9" in g.problems(Policy(block_sources=["10.0.0.9"]))[0]


def test_guard_resolves_broker_names_and_parses_bootstrap_lists() -> None:
    assert broker_hosts("a:9092, [::1]:9093,10.0.0.1:1,::1") == ["a", "::1", "10.0.0.1", "::1"]
    g = Guard.build(bootstrap="localhost:9092")
    assert any(why == "broker localhost" for why in g.protected.values())
    with pytest.raises(EnforceError, match="cannot resolve broker host"):
        Guard.build(bootstrap="no-such-host.invalid:9092")


class RecordingNft(Nft):
    """Nft that records scripts instead of running them (for logic tests without root)."""

    def __init__(self) -> None:
        super().__init__()
        self.checked: list[str] = []
        self.applied: list[str] = []

    def check(self, text: str) -> None:
        self.checked.append(text)

    def apply(self, text: str) -> None:
        self.applied.append(text)


def test_enforcer_refuses_guarded_policies_applies_others_and_rolls_back(guard: Guard) -> None:
    clock = [NOW]
    enf = Enforcer(RecordingNft(), guard, clock=lambda: clock[0])
    assert not enf.handle(activation("bad", Policy(block_sources=["10.0.0.0/8"])))
    assert "bad" in enf.refused and "broker" in enf.refused["bad"]
    assert enf.handle(activation("good", Policy(block_sources=["10.9.0.66"], expires_s=600)))
    text = enf.reconcile()
    assert "10.9.0.66 timeout 600s" in text and "10.0.0" not in text.split("delete table")[1]
    assert enf.applied["good"].latency_ms == 0 and set(enf.applied) == {"good"}
    clock[0] += 601_000
    assert enf.tick() and "policies with network actions: 0" in enf.reconcile()
    assert enf.applied == {}


def test_enforcer_revocation_rolls_back_and_a_revoked_policy_never_returns(guard: Guard) -> None:
    enf = Enforcer(RecordingNft(), guard, clock=lambda: NOW)
    act = activation("p", Policy(block_sources=["10.9.0.66"]))
    enf.handle(act)
    enf.reconcile()
    assert enf.handle(PolicyRevocation(policy_id="p", revoked_by="bob", revoked_ms=NOW))
    assert "10.9.0.66" not in enf.reconcile()
    assert not enf.handle(act)  # replayed activation after the revocation


# -- records on policies.active ------------------------------------------------------------------
def test_active_records_round_trip_and_garbage_is_a_record_error() -> None:
    act = activation("p", FULL)
    rev = PolicyRevocation(policy_id="p", revoked_by="bob", revoked_ms=NOW, reason="false positive")
    assert decode_active(encode_active(act)) == act
    assert decode_active(encode_active(rev)) == rev
    bad_addr = encode_active(act).replace(b"10.9.0.66", b"10.9.0.666")
    for raw in (b"{", b"[]", b'{"schema": "edgeloop.policy/1"}', bad_addr):
        with pytest.raises(RecordError):
            decode_active(raw)


def test_active_set_replays_in_order_and_expires() -> None:
    s = ActivePolicies()
    p = Policy(block_sources=["10.9.0.66"], expires_s=60)
    assert not s.apply(activation("old", p, approved_ms=NOW - 61_000), NOW)   # expired before we saw it
    assert s.apply(activation("a", p), NOW)
    assert not s.apply(activation("a", p), NOW)                                # duplicate
    assert s.apply(activation("b", p), NOW)
    assert s.apply(PolicyRevocation(policy_id="b", revoked_by="x", revoked_ms=NOW), NOW)
    assert [a.policy_id for a in s.current()] == ["a"]
    assert s.expire(NOW + 60_000) == ["a"] and s.current() == []


# -- the detector side -------------------------------------------------------------------------
def flow(dst: str, port: int, proto: int = 6) -> tuple[str, int, int]:
    """A window's flow as `mutes` sees it: (destination, port, protocol)."""
    return (dst, port, proto)


def test_detector_overrides_thresholds_suppression_and_allow_listed_services() -> None:
    ov = detector_overrides(Policy(
        class_thresholds=[ClassThreshold(attack="syn_scan", min_confidence=0.9)],
        suppress_alerts=[AlertMatch(attack="fin_scan"), AlertMatch(key="10.9.1.0/24")],
        allow_services=[Service(ip="10.9.0.10", port=53, proto="udp")]))
    assert ov.per_class_confidence == {"syn_scan": 0.9}
    assert ov.mutes("syn_scan", 0.85, "10.9.0.66") == "threshold"
    assert ov.mutes("syn_scan", 0.95, "10.9.0.66") is None
    assert ov.mutes("fin_scan", 0.99, "10.9.0.66") == "suppressed"
    assert ov.mutes("syn_flood", 0.99, "10.9.1.7") == "suppressed"
    assert ov.mutes("syn_flood", 0.99, "10.9.0.5>10.9.1.7") == "suppressed"   # pair keys: either side
    dns = [flow("10.9.0.10", 53, 17), flow("10.9.0.10", 53, 17)]
    assert ov.mutes("syn_flood", 0.99, "10.9.0.100", dns) == "allow_listed"
    assert ov.mutes("syn_flood", 0.99, "10.9.0.100", dns + [flow("10.9.0.10", 80)]) is None
    assert detector_overrides(Policy(block_sources=["10.9.0.66"])).empty


def test_overrides_of_several_policies_merge_to_the_strictest() -> None:
    a = detector_overrides(Policy(class_thresholds=[ClassThreshold(attack="syn_scan", min_confidence=0.8)]))
    b = detector_overrides(Policy(class_thresholds=[ClassThreshold(attack="syn_scan", min_confidence=0.9),
                                                    ClassThreshold(attack="dos", min_confidence=0.7)],
                                  suppress_alerts=[AlertMatch(attack="fin_scan")]))
    m = merge_overrides([a, b, b])
    assert m.per_class_confidence == {"syn_scan": 0.9, "dos": 0.7} and len(m.suppress) == 1
    assert merge_overrides([]) == DetectorOverrides()


# -- the kernel: nft -c, and apply/rollback in a throwaway namespace ------------------------------
def _nft_usable() -> str:
    if shutil.which("nft") is None and shutil.which("nft", path="/usr/sbin:/sbin") is None:
        return "nft is not installed (scripts/setup-lab.sh installs nftables)"
    if os.geteuid() != 0:
        return "nft -c talks to the kernel and needs root"
    return ""


@pytest.fixture(scope="module")
def netns() -> str:
    why = _nft_usable()
    if why:
        pytest.skip(why)
    name = f"el-{os.getpid()}-nft"
    cp = subprocess.run(["ip", "netns", "add", name], capture_output=True, text=True)
    if cp.returncode != 0:
        pytest.skip(f"cannot create a network namespace: {cp.stderr.strip()}")
    yield name
    subprocess.run(["ip", "netns", "del", name], capture_output=True)


@pytest.mark.parametrize("policy", [
    FULL,
    Policy(block_sources=["2001:db8::1", "2001:db8:1::/48"], allow_services=[Service(ip="2001:db8::10", port=443)]),
    Policy(rate_limit_sources=[RateLimit(sources=["10.0.0.0/24"], packets_per_s=0.01),
                               RateLimit(sources=["10.1.0.1", "2001:db8::7"], packets_per_s=1e6)]),
    Policy(isolate_hosts=["10.9.0.10", "2001:db8::10"], allow_services=[Service(ip="10.9.0.10", port=53, proto="any")]),
])
def test_rendered_rulesets_pass_nft_check(netns: str, policy: Policy) -> None:
    Nft(netns=netns).check(render_ruleset([NftEntry("x", policy, NOW + 10**6), NftEntry("y", FULL, NOW + 10**6)],
                                          now_ms=NOW))


def test_apply_then_revoke_in_a_namespace_leaves_no_table(netns: str) -> None:
    nft = Nft(netns=netns)
    enf = Enforcer(nft, Guard.build(), table="edgeloop_test")
    enf.handle(activation("p", Policy(block_sources=["10.9.0.66", "2001:db8::/48"], expires_s=900),
                          approved_ms=int(__import__("time").time() * 1000)))
    enf.reconcile()
    listed = nft.list_table("edgeloop_test")
    assert "10.9.0.66" in listed and "2001:db8::/48" in listed and "expires" in listed
    enf.handle(PolicyRevocation(policy_id="p", revoked_by="bob", revoked_ms=NOW))
    enf.reconcile()
    assert nft.list_table("edgeloop_test") == ""
    assert ("inet", "edgeloop_test") not in nft.tables()


class RefusingNft(RecordingNft):
    """nft -c rejects any table naming `bad` (as it would a rule the kernel cannot take)."""

    def __init__(self, bad: str) -> None:
        super().__init__()
        self.bad = bad

    def check(self, text: str) -> None:
        if self.bad in text:
            raise NftError("check", f"Error: could not process rule for {self.bad}", 1)
        super().check(text)


def test_enforcer_metrics_count_refusals_once_applies_latency_and_rollbacks_by_why(guard: Guard) -> None:
    from prometheus_client import CollectorRegistry

    from streams.metrics import EnforcerMetrics

    m = EnforcerMetrics(CollectorRegistry())
    clock = [NOW + 250]  # applied 250 ms after approval

    def sample(name: str, **labels: str) -> float | None:
        return m.registry.get_sample_value(name, labels)

    enf = Enforcer(RefusingNft("10.9.0.99"), guard, clock=lambda: clock[0], metrics=m)
    guarded = activation("guarded", Policy(block_sources=["10.0.0.5"]))
    assert not enf.handle(guarded) and not enf.handle(guarded)  # replayed: still one refusal
    enf.handle(activation("nft-bad", Policy(block_sources=["10.9.0.99"])))
    enf.handle(activation("short", Policy(block_sources=["10.9.0.66"], expires_s=60)))
    enf.handle(activation("long", Policy(block_sources=["10.9.0.77"], expires_s=600)))
    enf.reconcile()
    assert sample("edgeloop_enforcer_policies_refused_total", reason="guard") == 1
    assert sample("edgeloop_enforcer_policies_refused_total", reason="nft") == 1
    assert sample("edgeloop_enforcer_policies_enforced") == 2
    assert sample("edgeloop_enforcer_reconciles_total", outcome="ok") == 1
    assert sample("edgeloop_enforcer_apply_latency_seconds_count") == 2
    assert sample("edgeloop_enforcer_apply_latency_seconds_sum") == pytest.approx(0.5)

    enf.handle(PolicyRevocation(policy_id="long", revoked_by="bob", revoked_ms=clock[0]))
    enf.reconcile()
    clock[0] += 61_000
    assert enf.tick()
    enf.reconcile()
    assert sample("edgeloop_enforcer_rollbacks_total", why="revoked") == 1
    assert sample("edgeloop_enforcer_rollbacks_total", why="expired") == 1
    assert sample("edgeloop_enforcer_policies_enforced") == 0


def test_a_failed_apply_is_counted_and_keeps_what_was_in_force(guard: Guard) -> None:
    from prometheus_client import CollectorRegistry

    from streams.metrics import EnforcerMetrics

    class BrokenApply(RecordingNft):
        def apply(self, text: str) -> None:
            raise NftError("apply", "netlink: Error: Operation not permitted", 1)

    m = EnforcerMetrics(CollectorRegistry())
    enf = Enforcer(BrokenApply(), guard, clock=lambda: NOW, metrics=m)
    enf.handle(activation("p", Policy(block_sources=["10.9.0.66"])))
    with pytest.raises(NftError):
        enf.reconcile()
    assert m.registry.get_sample_value("edgeloop_enforcer_reconciles_total", {"outcome": "error"}) == 1
    assert m.registry.get_sample_value("edgeloop_enforcer_policies_enforced") == 0
    assert enf.applied == {}


def test_a_detector_never_applies_what_its_guard_refuses() -> None:
    import asyncio

    from streams.active_policies import PolicyWatcher, encode_active

    applied, refused = [], []
    watcher = PolicyWatcher("unused:9092", "policies.active", applied.append,
                            guard=Guard.build(bootstrap="10.0.0.5:9092"),
                            on_refused=lambda raw, exc: refused.append((raw, exc)))
    now = int(__import__("time").time() * 1000)
    mute_broker = activation("forged", Policy(suppress_alerts=[AlertMatch(attack="dos", key="10.0.0.5")]), approved_ms=now)
    mute_all = activation("wide", Policy(suppress_alerts=[AlertMatch(attack="dos", key="11.0.0.0/8")]), approved_ms=now)
    fine = activation("ok", Policy(suppress_alerts=[AlertMatch(attack="dos", key="10.9.0.7")]), approved_ms=now)
    changed = [asyncio.run(watcher.handle(encode_active(r))) for r in (mute_broker, mute_all, fine)]
    assert changed == [False, False, True]
    assert [r.policy_id for r in watcher.state.current()] == ["ok"]
    assert [exc.policy_id for _, exc in refused] == ["forged", "wide"] and watcher.refused == 2
    assert refused[0][0] == encode_active(mute_broker)  # the raw value goes to the dead-letter topic
    # with the operator's reason the wide one passes; the broker's never does
    reasoned = mute_all.model_copy(update={"broad_reason": "lab drill"})
    assert asyncio.run(watcher.handle(encode_active(reasoned))) is True
    assert asyncio.run(watcher.handle(encode_active(mute_broker.model_copy(update={"broad_reason": "x"})))) is False

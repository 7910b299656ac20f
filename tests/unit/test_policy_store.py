"""The policy store: the state machine, the audit log, and only approved policies becoming active.

Proposals here are real library blueprints whose policy and KPIs come from a twin of the
synthetic syn_scan scenario (evaluated directly; the sandboxed loop is tested elsewhere).
"""
from __future__ import annotations

import threading
from pathlib import Path

import pytest

from contracts.policy_model import PolicyProposal
from llm_agents.policies.store import PolicyNotFound, PolicyStateError, PolicyStore, PolicyStoreError
from llm_agents.experiments.twin_scenarios import ATTACKER, library_proposal, synthetic_scenario
from streams.active_policies import PolicyActivation, decode_active, encode_active

T0 = 1_767_225_600_000


@pytest.fixture(scope="module")
def scenario():
    return synthetic_scenario("syn_scan", seed=3, n_benign=600)


def make_proposal(scenario, source: str = ATTACKER, policy_id: str | None = None,
                  expires_s: int = 900) -> PolicyProposal:
    return library_proposal(scenario, source, policy_id=policy_id, expires_s=expires_s, created_ms=T0)


class Clock:
    def __init__(self) -> None:
        self.t = T0

    def __call__(self) -> int:
        return self.t


@pytest.fixture
def store(tmp_path: Path) -> PolicyStore:
    return PolicyStore(tmp_path / "policies", clock=Clock())


def test_a_new_proposal_is_proposed_stored_verbatim_and_audited(store: PolicyStore, scenario) -> None:
    p = make_proposal(scenario)
    assert store.add(p, who="proposer", alert_id="a-1")
    assert not store.add(p)  # idempotent by id
    row = store.get(p.policy_id)
    assert row.state == "proposed" and row.sources == [ATTACKER] and row.attack == "syn_scan"
    assert store.proposal(p.policy_id) == p
    assert (store.directory / "proposals" / f"{p.policy_id}.json").read_bytes() == p.dump_json()
    [a] = store.audit(p.policy_id)
    assert (a.who, a.action, a.at_ms, a.details["alert_id"]) == ("proposer", "propose", T0, "a-1")


def test_approve_then_activate_records_who_when_and_expiry(store: PolicyStore, scenario) -> None:
    p = make_proposal(scenario, expires_s=600)
    store.add(p)
    store.clock.t = T0 + 5_000
    row = store.approve(p.policy_id, "alice", note="scan from the guest VLAN")
    assert (row.state, row.approved_by, row.approved_ms, row.expires_ms) == ("approved", "alice", T0 + 5_000,
                                                                               T0 + 605_000)
    act = store.activation(p.policy_id)
    assert isinstance(act, PolicyActivation) and decode_active(encode_active(act)) == act
    assert (act.policy, act.approved_by, act.code_sha256) == (p.policy, "alice", p.code_sha256)
    assert store.mark_active(p.policy_id, "alice", {"offset": 3}).state == "active"
    actions = [(a.who, a.action, a.details.get("from"), a.details.get("to")) for a in store.audit(p.policy_id)]
    assert actions == [("proposer", "propose", None, None), ("alice", "approve", "proposed", "approved"),
                       ("alice", "activate", "approved", "active")]
    assert all("os_user" in a.details for a in store.audit(p.policy_id)[1:])


@pytest.mark.parametrize("path, action", [
    ([], "activate"), ([], "revoke"), ([], "expire"),
    (["reject"], "approve"), (["reject"], "activate"), (["reject"], "revoke"),
    (["approve"], "reject"), (["approve"], "approve"),
    (["approve", "activate"], "approve"), (["approve", "activate", "revoke"], "activate"),
    (["approve", "activate", "expire"], "revoke"),
])
def test_illegal_transitions_are_refused_and_leave_no_audit_row(store: PolicyStore, scenario, path, action) -> None:
    p = make_proposal(scenario)
    store.add(p)
    for step in path:
        store.transition(p.policy_id, step, "alice", {"reason": "x"})
    before = store.audit(p.policy_id)
    with pytest.raises(PolicyStateError):
        store.transition(p.policy_id, action, "bob")
    assert store.audit(p.policy_id) == before


@pytest.mark.parametrize("path", [[], ["reject"], ["approve", "revoke"], ["approve", "activate", "expire"]])
def test_only_approved_or_active_policies_yield_an_activation(store: PolicyStore, scenario, path) -> None:
    p = make_proposal(scenario)
    store.add(p)
    for step in path:
        store.transition(p.policy_id, step, "alice", {})
    with pytest.raises(PolicyStateError, match="only approved policies"):
        store.activation(p.policy_id)


def test_reject_needs_a_reason_and_is_audited(store: PolicyStore, scenario) -> None:
    p = make_proposal(scenario)
    store.add(p)
    with pytest.raises(PolicyStoreError):
        store.reject(p.policy_id, "bob", "  ")
    assert store.reject(p.policy_id, "bob", "the scanner is ours").state == "rejected"
    last = store.audit(p.policy_id)[-1]
    assert (last.who, last.action, last.details["reason"]) == ("bob", "reject", "the scanner is ours")


def test_revocation_record_names_who_and_why(store: PolicyStore, scenario) -> None:
    p = make_proposal(scenario)
    store.add(p)
    store.approve(p.policy_id, "alice")
    store.mark_active(p.policy_id, "alice")
    store.clock.t = T0 + 9_000
    store.revoke(p.policy_id, "carol", "false positive")
    rev = store.revocation(p.policy_id)
    assert (rev.revoked_by, rev.revoked_ms, rev.reason) == ("carol", T0 + 9_000, "false positive")


def test_expiry_moves_only_due_active_policies(store: PolicyStore, scenario) -> None:
    a, b = make_proposal(scenario, expires_s=60), make_proposal(scenario, "10.9.0.77", expires_s=600)
    for p in (a, b):
        store.add(p)
        store.approve(p.policy_id, "alice")
        store.mark_active(p.policy_id, "alice")
    store.clock.t = T0 + 61_000
    assert store.expire_due() == [a.policy_id]
    assert store.get(a.policy_id).state == "expired" and store.get(b.policy_id).state == "active"
    assert store.audit(a.policy_id)[-1].who == "system"


def test_two_people_deciding_at_once_cannot_both_win(tmp_path: Path, scenario) -> None:
    p = make_proposal(scenario)
    PolicyStore(tmp_path).add(p)
    results: list[str] = []
    barrier = threading.Barrier(8)

    def decide(i: int) -> None:
        s = PolicyStore(tmp_path)
        barrier.wait()
        try:
            if i % 2:
                s.approve(p.policy_id, f"approver{i}")
            else:
                s.reject(p.policy_id, f"rejecter{i}", "no")
            results.append("won")
        except PolicyStateError:
            results.append("lost")

    threads = [threading.Thread(target=decide, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sorted(results) == ["lost"] * 7 + ["won"]
    decisions = [a for a in PolicyStore(tmp_path).audit(p.policy_id) if a.action in ("approve", "reject")]
    assert len(decisions) == 1


def test_state_survives_a_restart_and_ids_resolve_by_prefix(tmp_path: Path, scenario) -> None:
    p = make_proposal(scenario, policy_id="3f2a9c1d04e5aa")
    PolicyStore(tmp_path).add(p)
    PolicyStore(tmp_path).approve(p.policy_id, "alice")
    again = PolicyStore(tmp_path)
    assert again.get(p.policy_id).state == "approved"
    assert again.resolve("3f2a") == p.policy_id
    again.add(make_proposal(scenario, "10.9.0.77", policy_id="3f2b00"))
    with pytest.raises(PolicyStoreError, match="ambiguous"):
        again.resolve("3f2")
    with pytest.raises(PolicyNotFound):
        again.resolve("ffff")


def test_a_tampered_proposal_file_is_detected(store: PolicyStore, scenario) -> None:
    p = make_proposal(scenario)
    store.add(p)
    path = store.directory / "proposals" / f"{p.policy_id}.json"
    path.write_bytes(path.read_bytes().replace(ATTACKER.encode(), b"10.9.0.1"))
    with pytest.raises(PolicyStoreError, match="sha256"):
        store.approve(p.policy_id, "alice")


@pytest.mark.parametrize("who", ["", "   ", "a\nb", "x" * 201])
def test_who_must_be_a_printable_name(store: PolicyStore, scenario, who: str) -> None:
    p = make_proposal(scenario)
    store.add(p)
    with pytest.raises(PolicyStoreError):
        store.approve(p.policy_id, who)


def test_unsafe_ids_are_refused(store: PolicyStore, scenario) -> None:
    with pytest.raises(PolicyStoreError):
        store.add(make_proposal(scenario, policy_id="../../etc/x"))


def test_live_covering_finds_policies_that_already_name_the_sources(store: PolicyStore, scenario) -> None:
    p = make_proposal(scenario)
    store.add(p)
    assert [r.policy_id for r in store.live_covering([ATTACKER])] == [p.policy_id]
    store.reject(p.policy_id, "bob", "no")
    assert store.live_covering([ATTACKER]) == []


def test_metrics_read_the_store_at_each_scrape_and_count_expired_actives_as_expired(
        store: PolicyStore, scenario) -> None:
    from prometheus_client import CollectorRegistry

    from llm_agents.agent_metrics import PolicyStoreCollector

    reg = CollectorRegistry()
    reg.register(PolicyStoreCollector(store))

    def sample(name: str, **labels: str) -> float | None:
        return reg.get_sample_value(name, labels)

    assert sample("edgeloop_policies", state="proposed") == 0
    assert sample("edgeloop_policy_oldest_proposed_age_seconds") == 0
    a, b, c = (make_proposal(scenario, src, expires_s=60) for src in ("10.9.0.66", "10.9.0.77", "10.9.0.88"))
    for p in (a, b, c):
        store.add(p)
    store.clock.t = T0 + 90_000  # the proposals were created at T0: they have waited 90 s
    assert sample("edgeloop_policies", state="proposed") == 3
    assert sample("edgeloop_policy_oldest_proposed_age_seconds") == 90
    store.approve(a.policy_id, "alice")
    store.mark_active(a.policy_id, "alice")
    store.reject(b.policy_id, "bob", "false positive")
    assert [sample("edgeloop_policies", state=s) for s in ("proposed", "active", "rejected")] == [1, 1, 1]
    assert sample("edgeloop_policy_decisions_total", action="propose") == 3
    assert sample("edgeloop_policy_decisions_total", action="approve") == 1
    assert sample("edgeloop_policy_decisions_total", action="reject") == 1
    # Past its expiry the active policy is expired for metrics, before expire_due marks it.
    store.clock.t += 61_000
    assert sample("edgeloop_policies", state="active") == 0 and sample("edgeloop_policies", state="expired") == 1
    assert store.get(a.policy_id).state == "active"
    store.reject(c.policy_id, "bob", "done")
    assert sample("edgeloop_policy_oldest_proposed_age_seconds") == 0


def test_metrics_of_an_unreadable_store_leave_the_scrape_working(store: PolicyStore) -> None:
    from prometheus_client import CollectorRegistry, generate_latest

    from llm_agents.agent_metrics import PolicyStoreCollector

    reg = CollectorRegistry()
    reg.register(PolicyStoreCollector(store))
    store.db_path.unlink()
    store.db_path.mkdir()  # sqlite cannot open a directory
    text = generate_latest(reg).decode()
    assert "edgeloop_policies{" not in text

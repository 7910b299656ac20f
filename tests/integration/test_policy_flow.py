"""Proposals and approval on the real broker: proposed → approved from the CLI → policies.active.

The proposals come from the real proposer: an alert, the expert library (offline), the
sandboxed blueprint loop on a twin of the synthetic syn_scan scenario. The person's side
runs `edgeloop policy ...` through click's CliRunner, from a second data directory that
learns the proposals from `policies.proposed` alone.
"""
from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner

from contracts.records import Detection, DetectionBatch, encode
from llm_agents.blueprints.sandbox import sandbox_available
from llm_agents.policies.proposals import propose_from_alerts
from llm_agents.policies.cli import cli
from llm_agents.policies.store import PolicyStore
from llm_agents.experiments.twin_scenarios import ATTACKER, synthetic_scenario
from streams.active_policies import PolicyActivation, PolicyRevocation, decode_active
from streams.producer import FlowPublisher
from streams.settings import load_settings
from streams.sources.replay import replay_frame

pytestmark = pytest.mark.integration
OTHER = "10.9.0.77"
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def sandbox_ok() -> None:
    """For the tests that propose (a blueprint step runs in the sandbox); the others run anyway."""
    ok, why = sandbox_available()
    if not ok:
        pytest.skip(f"the blueprint sandbox cannot confine step code here, so nothing can be proposed: {why}")


def scenario(attacker: str = ATTACKER):
    sc = synthetic_scenario("syn_scan", seed=2, n_benign=1200)
    if attacker == ATTACKER:
        return sc
    flows = sc.flows.replace({"src_ip": {ATTACKER: attacker}})
    det = sc.detections.assign(key=sc.detections["key"].replace({ATTACKER: attacker}))
    return type(sc)(sc.name, flows, det, attacker, sc.victim, sc.web, sc.dns, sc.source)


def alert_for(sc) -> dict:
    w = sc.detections[(sc.detections["key"] == sc.attacker) & (sc.detections["predicted"] == sc.name)]
    return {"alert_id": f"alert-{sc.attacker}", "key": sc.attacker, "attack": sc.name, "windows": len(w),
            "flows": int(w["flow_ids"].map(len).sum()), "first_seen_ms": int(w["first_seen_ms"].min()),
            "last_seen_ms": int(w["last_seen_ms"].max()), "max_confidence": float(w["confidence"].max()),
            "src_ips": [sc.attacker], "dst_ips": [sc.victim], "dst_ports": [], "model_version": "simulated"}


def settings_for(broker, topics, data_dir: Path):
    return load_settings(kafka_bootstrap=broker.bootstrap, topic_prefix=topics.prefix, data_dir=data_dir,
                         llm_base_url="")


def env_for(broker, topics, data_dir: Path) -> dict[str, str]:
    """A lab's settings: unsigned approvals apply (`--who`). Signatures, required by default,
    are the subject of test_with_trusted_keys_... below."""
    return {"EDGELOOP_KAFKA_BOOTSTRAP": broker.bootstrap, "EDGELOOP_TOPIC_PREFIX": topics.prefix,
            "EDGELOOP_DATA_DIR": str(data_dir), "EDGELOOP_LLM_BASE_URL": "", "EDGELOOP_ALLOW_UNSIGNED": "true"}


def active_records(topic_reader, topics, until, timeout: float = 20) -> list:
    return [decode_active(v) for v in topic_reader(topics.policies_active,
                                                   lambda vs: until([decode_active(v) for v in vs]), timeout)]


def test_approved_from_the_cli_reaches_active_a_rejected_one_never_does(sandbox_ok, broker, topics, topic_reader,
                                                                        tmp_path: Path) -> None:
    core = settings_for(broker, topics, tmp_path / "core")
    ids = []
    for attacker in (ATTACKER, OTHER):
        sc = scenario(attacker)
        [out] = propose_from_alerts([alert_for(sc)], core, flows=sc.flows, detections=sc.detections)
        assert out.status == "proposed", out.reason
        assert out.proposal.policy.block_sources == [attacker]
        assert "library:block_source" in out.proposal.provenance  # the library, or its stored copy
        ids.append(out.proposal.policy_id)
    published = topic_reader(topics.policies_proposed, lambda vs: len(vs) >= 2, 20)
    assert sorted(json.loads(v)["policy_id"] for v in published) == sorted(ids)
    # The same alert again: a live policy already covers it.
    sc = scenario()
    [again] = propose_from_alerts([alert_for(sc)], core, flows=sc.flows, detections=sc.detections)
    assert again.status == "covered"

    # A person, from another data directory: everything they know comes from the topic.
    run = CliRunner()
    env = env_for(broker, topics, tmp_path / "desk")
    res = run.invoke(cli, ["policy", "list"], env=env)
    assert res.exit_code == 0, res.output
    assert all(pid[:12] in res.output for pid in ids)
    res = run.invoke(cli, ["policy", "show", ids[0][:8], "--no-sync"], env=env)
    assert res.exit_code == 0, res.output
    assert "# Blueprint `block_source`" in res.output and "code sha256:" in res.output
    assert "attack_flows_stopped_frac" in res.output and "library:block_source" in res.output

    res = run.invoke(cli, ["policy", "approve", ids[0][:8], "--who", "alice", "--note", "scanner"], env=env)
    assert res.exit_code == 0, res.output
    # The guard refuses, at approval already, a policy touching an allow-listed network.
    res = run.invoke(cli, ["policy", "approve", ids[1], "--who", "bob", "--protect", "10.9.0.0/24"], env=env)
    assert res.exit_code != 0 and "allow-list" in res.output
    res = run.invoke(cli, ["policy", "reject", ids[1], "--who", "bob", "--reason", "lab scanner, expected"], env=env)
    assert res.exit_code == 0, res.output
    res = run.invoke(cli, ["policy", "approve", ids[1], "--who", "mallory"], env=env)
    assert res.exit_code != 0 and "rejected" in res.output

    recs = active_records(topic_reader, topics, lambda rs: len(rs) >= 1)
    time.sleep(1.5)  # give a wrongly published record time to show up
    recs = active_records(topic_reader, topics, lambda rs: False, timeout=1.5)
    assert [(type(r), r.policy_id) for r in recs] == [(PolicyActivation, ids[0])]
    act = recs[0]
    assert act.approved_by == "alice" and act.note == "scanner" and act.policy.block_sources == [ATTACKER]
    assert act.expires_ms == act.approved_ms + act.policy.expires_s * 1000

    if os.geteuid() == 0:  # nft -c needs root
        res = run.invoke(cli, ["enforce", "--once", "--dry-run", "--no-protect-local"], env=env)
        assert res.exit_code == 0, res.output
        assert f"{ATTACKER} timeout" in res.output and "drop" in res.output

    res = run.invoke(cli, ["policy", "revoke", ids[0][:8], "--who", "carol", "--reason", "done"], env=env)
    assert res.exit_code == 0, res.output
    recs = active_records(topic_reader, topics, lambda rs: len(rs) >= 2)
    assert isinstance(recs[-1], PolicyRevocation) and recs[-1].revoked_by == "carol"
    if os.geteuid() == 0:
        res = run.invoke(cli, ["enforce", "--once", "--dry-run", "--no-protect-local"], env=env)
        assert res.exit_code == 0 and "policies with network actions: 0" in res.output, res.output

    desk = PolicyStore(tmp_path / "desk" / "policies")
    assert [r.state for r in (desk.get(ids[0]), desk.get(ids[1]))] == ["revoked", "rejected"]
    trail = [(a.who, a.action) for a in desk.audit(ids[0])]
    assert trail == [("sync", "propose"), ("alice", "approve"), ("alice", "activate"), ("carol", "revoke"),
                     ("carol", "publish")]
    assert [(a.who, a.action) for a in desk.audit(ids[1])] == [("sync", "propose"), ("bob", "refuse"),
                                                               ("bob", "reject")]


def publish_recorded(broker, topics, sc) -> None:
    """The scenario's flows on `flows` and its detector verdicts on `detections`, as a
    sensor and a detector would have left them."""
    with FlowPublisher(broker.bootstrap, topics.flows) as pub:
        replay_frame(sc.flows, pub, progress=False)
    from kafka import KafkaProducer

    p = KafkaProducer(bootstrap_servers=broker.bootstrap)
    rows = sc.detections.to_dict("records")
    for i in range(0, len(rows), 200):
        dets = [Detection(window_id=r["window_id"], key=r["key"], flow_ids=r["flow_ids"],
                          first_seen_ms=r["first_seen_ms"], last_seen_ms=r["last_seen_ms"], predicted=r["predicted"],
                          probabilities=[1 - r["confidence"], r["confidence"]], confidence=r["confidence"],
                          ood_score=0.0, uncertain=False, closed_by="k", model_version="simulated", scored_ms=1)
                for r in rows[i:i + 200]]
        p.send(topics.detections, encode(DetectionBatch(model_version="simulated", class_names=["benign", sc.name],
                                                        detections=dets)))
    p.flush()
    p.close()


def test_the_twin_is_read_back_from_the_flows_and_detections_topics(sandbox_ok, broker, topics, tmp_path: Path) -> None:
    sc = scenario()
    publish_recorded(broker, topics, sc)
    [out] = propose_from_alerts([alert_for(sc)], settings_for(broker, topics, tmp_path), publish_topic=False)
    assert out.status == "proposed", out.reason
    ev = out.proposal.kpis["evidence"]
    assert ev["twin_flows"] > 0.5 * len(sc.flows) and ev["twin_windows"] > 0
    assert out.proposal.kpis["attack_flows_stopped_frac"] >= 0.95
    assert isinstance(pd.Timestamp(ev["twin_time_ms"][0], unit="ms"), pd.Timestamp)


def alert_and_wait_for_proposal(broker, topics, sc, data_dir: Path, agent, timeout: float = 90):
    """Publish the scenario's alert and wait for the running `agent` process to store one proposal."""
    from kafka import KafkaProducer

    from contracts.records import Alert

    p = KafkaProducer(bootstrap_servers=broker.bootstrap)
    p.send(topics.alerts, encode(Alert.model_validate(alert_for(sc))))
    p.flush()
    p.close()
    store = PolicyStore(data_dir / "policies")
    deadline = time.monotonic() + timeout
    while not store.list() and time.monotonic() < deadline and agent.poll() is None:
        time.sleep(0.5)
    [row] = store.list()
    return row


def _activation(pid: str, policy) -> bytes:
    from streams.active_policies import encode_active

    now = int(time.time() * 1000)
    return encode_active(PolicyActivation(policy_id=pid, policy=policy, approved_by="alice", approved_ms=now,
                                          expires_ms=now + policy.expires_s * 1000, code_sha256="b" * 64,
                                          proposal_sha256="c" * 64, provenance="library:raise_class_threshold"))


def test_the_detector_side_watcher_hands_over_overrides_from_policies_active(broker, topics) -> None:
    import asyncio

    from kafka import KafkaProducer

    from contracts.policy_model import ClassThreshold, Policy
    from streams.active_policies import PolicyWatcher, encode_active

    p = KafkaProducer(bootstrap_servers=broker.bootstrap)
    pol = Policy(class_thresholds=[ClassThreshold(attack="syn_scan", min_confidence=0.9)])
    p.send(topics.policies_active, key=b"t1", value=_activation("t1", pol))
    p.send(topics.policies_active, key=b"junk", value=b"{not json")
    p.flush()
    seen = []

    async def main() -> None:
        watcher = PolicyWatcher(broker.bootstrap, topics.policies_active, on_change=seen.append)
        task = asyncio.create_task(watcher.run())
        for _ in range(200):
            if seen:
                break
            await asyncio.sleep(0.05)
        p.send(topics.policies_active, key=b"t1", value=encode_active(
            PolicyRevocation(policy_id="t1", revoked_by="bob", revoked_ms=int(time.time() * 1000))))
        p.flush()
        for _ in range(200):
            if len(seen) >= 2:
                break
            await asyncio.sleep(0.05)
        task.cancel()
        assert watcher.bad == 1

    asyncio.run(main())
    p.close()
    assert seen[0].per_class_confidence == {"syn_scan": 0.9}
    assert seen[0].mutes("syn_scan", 0.8, "10.9.0.66") == "threshold"
    assert seen[1].empty


@pytest.mark.skipif(os.geteuid() != 0, reason="nft -c needs root")
def test_enforce_dead_letters_bad_records_and_still_applies_the_good_ones(broker, topics, topic_reader,
                                                                         tmp_path: Path) -> None:
    from kafka import KafkaProducer

    from contracts.policy_model import Policy

    p = KafkaProducer(bootstrap_servers=broker.bootstrap)
    p.send(topics.policies_active, key=b"x", value=b'{"schema": "edgeloop.policy_activation/1", "policy_id": "x"}')
    p.send(topics.policies_active, key=b"ok", value=_activation("ok", Policy(block_sources=["10.9.0.66"])))
    p.send(topics.policies_active, key=b"bad", value=_activation("bad", Policy(block_sources=["127.0.0.0/8"])))
    p.flush()
    p.close()
    res = CliRunner().invoke(cli, ["enforce", "--once", "--dry-run", "--no-protect-local"],
                             env=env_for(broker, topics, tmp_path))
    assert res.exit_code == 0, res.output
    assert "10.9.0.66 timeout" in res.output and "127.0.0" not in res.output.split("delete table")[-1]
    assert "policy bad refused" in res.output or "1 refused" in res.output
    [dl] = [json.loads(v) for v in topic_reader(topics.deadletter, lambda vs: len(vs) >= 1, 20)]
    assert dl["source_topic"] == topics.policies_active and dl["reason"] == "missing_field" and dl["offset"] == 0


def test_an_approval_whose_publication_failed_stays_approved_and_is_published_on_retry(sandbox_ok,
        broker, topics, topic_reader, tmp_path: Path) -> None:
    from contracts.errors import BrokerError
    from llm_agents.policies.proposals import approve_policy

    sc = scenario()
    [out] = propose_from_alerts([alert_for(sc)], settings_for(broker, topics, tmp_path), flows=sc.flows,
                                detections=sc.detections, publish_topic=False)
    store, pid = PolicyStore(tmp_path / "policies"), out.proposal.policy_id
    with pytest.raises(BrokerError):  # nothing listens there: kafka-python gives up after its timeout
        approve_policy(store, pid, "alice", bootstrap="127.0.0.1:1", topics=topics, timeout_s=2)
    assert store.get(pid).state == "approved"
    act = approve_policy(store, pid, "alice", bootstrap=broker.bootstrap, topics=topics)
    assert store.get(pid).state == "active"
    recs = active_records(topic_reader, topics, lambda rs: len(rs) >= 1)
    assert recs == [act]
    assert [a.action for a in store.audit(pid)] == ["propose", "approve", "activate"]


def test_the_agent_proposes_once_for_a_repeated_alert_and_dead_letters_garbage(sandbox_ok, broker, topics, topic_reader,
                                                                               tmp_path: Path) -> None:
    import asyncio

    from kafka import KafkaProducer
    from prometheus_client import CollectorRegistry

    from contracts.records import Alert
    from llm_agents.agent_metrics import build_agent_metrics
    from llm_agents.policies.alert_proposer import AlertProposer

    sc = scenario()
    publish_recorded(broker, topics, sc)
    alert = Alert.model_validate(alert_for(sc))
    p = KafkaProducer(bootstrap_servers=broker.bootstrap)
    p.send(topics.alerts, encode(alert))
    p.send(topics.alerts, b"{not an alert")
    p.flush()
    settings = settings_for(broker, topics, tmp_path / "core")
    reg = CollectorRegistry()
    m = build_agent_metrics(reg)
    store = PolicyStore(tmp_path / "core" / "policies")

    async def run_until(proposer: AlertProposer, done, timeout: float = 90) -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(proposer.run(stop))
        deadline = time.monotonic() + timeout
        while not done() and time.monotonic() < deadline and not task.done():
            await asyncio.sleep(0.2)
        stop.set()
        await task

    def proposer() -> AlertProposer:
        return AlertProposer(settings, broker.bootstrap, topics, metrics=m, group_id=f"{topics.prefix}policies",
                             settle_s=0.3)

    first = proposer()
    asyncio.run(run_until(first, lambda: first.outcomes and reg.get_sample_value(
        "edgeloop_agent_alerts_deadlettered_total", {"reason": "bad_json"}) == 1))
    assert [o.status for o in first.outcomes] == ["proposed"], [o.reason for o in first.outcomes]
    [row] = store.list()
    assert row.state == "proposed" and row.alert_id == alert.alert_id and row.sources == [sc.attacker]
    proposed = topic_reader(topics.policies_proposed, lambda vs: len(vs) >= 1, 20)
    assert [json.loads(v)["policy_id"] for v in proposed] == [row.policy_id]
    [dl] = [json.loads(v) for v in topic_reader(topics.deadletter, lambda vs: len(vs) >= 1, 20)]
    assert dl["source_topic"] == topics.alerts and dl["offset"] == 1

    # The attack goes on: the detector raises the alert again. A restarted agent resumes
    # after its committed offsets and finds the proposal already covers the source.
    p = KafkaProducer(bootstrap_servers=broker.bootstrap)
    p.send(topics.alerts, encode(alert.model_copy(update={"alert_id": "alert-again", "windows": alert.windows + 3})))
    p.flush()
    p.close()
    second = proposer()
    asyncio.run(run_until(second, lambda: bool(second.outcomes)))
    assert [o.status for o in second.outcomes] == ["covered"]
    assert len(store.list()) == 1
    assert reg.get_sample_value("edgeloop_agent_alerts_received_total") == 2
    assert reg.get_sample_value("edgeloop_agent_policy_proposals_total", {"status": "proposed"}) == 1
    assert reg.get_sample_value("edgeloop_agent_policy_proposals_total", {"status": "covered"}) == 1
    assert reg.get_sample_value("edgeloop_deadletter_records_total",
                                {"reason": "bad_json", "topic": topics.alerts}) == 1


def test_the_agent_service_proposes_for_alerts_and_stops_cleanly(sandbox_ok, broker, topics, tmp_path: Path) -> None:
    import signal
    import subprocess
    import sys

    from streams.broker import free_port

    sc = scenario()
    publish_recorded(broker, topics, sc)
    env = {**os.environ, **env_for(broker, topics, tmp_path / "core"), "EDGELOOP_METRICS_PORT": str(free_port()),
           "EDGELOOP_SESSION_TIMEOUT_S": "6", "EDGELOOP_HEARTBEAT_S": "1"}
    log = tmp_path / "agent.log"
    proc = subprocess.Popen([sys.executable, "-m", "edgeloop_app.cli", "agent", "--no-retrain"], env=env,
                            stdout=open(log, "wb"), stderr=subprocess.STDOUT, start_new_session=True)
    try:
        row = alert_and_wait_for_proposal(broker, topics, sc, tmp_path / "core", proc)
        assert row.state == "proposed" and row.sources == [sc.attacker]
    finally:
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(30)
    assert rc == 0, log.read_text()[-3000:]
    assert "proposing policies for" in log.read_text()


def _under_unit(unit: str, argv: list[str], caps: bool = False) -> list[str]:
    """argv under the kernel-level properties of a shipped unit (tests/security/unit_restrictions.py):
    NoNewPrivileges, RestrictNamespaces, RestrictAddressFamilies, and no capabilities
    (CapabilityBoundingSet=) unless `caps`."""
    drop = [] if caps else ["setpriv", "--bounding-set=-all", "--inh-caps=-all", "--ambient-caps=-all", "--"]
    return [*drop, sys.executable, str(REPO / "tests" / "security" / "unit_restrictions.py"),
            str(REPO / "deploy" / "systemd" / unit), "--", *argv]


def test_the_agent_under_its_units_restrictions_proposes_through_the_sandbox_service(sandbox_ok, broker, topics,
                                                                                     tmp_path: Path) -> None:
    """The shipped agent unit forbids namespaces, so a sandbox of its own cannot start (the
    agent says so); with edgeloop-sandbox.service, itself under its unit's properties, beside
    it, the same agent proposes a policy."""
    import signal
    import subprocess

    from streams.broker import free_port

    if os.geteuid() != 0 or not Path("/usr/bin/setpriv").exists():
        pytest.fail("this test needs root and util-linux's setpriv (CI has both)")
    sock = tmp_path / "run" / "sandbox.sock"
    sock.parent.mkdir()
    cli_argv = [sys.executable, "-m", "edgeloop_app.cli"]
    helper_log = tmp_path / "sandbox.log"
    # The helper's unit: its namespaces and address families as the unit sets them; its
    # User= as --run-as (root keeps CAP_SETUID for that one step, then bubblewrap is 4242's)
    sock.parent.chmod(0o755)
    helper = subprocess.Popen(_under_unit("edgeloop-sandbox.service", [*cli_argv, "sandbox", "serve", "--socket",
                                                                       str(sock), "--run-as", "4242"], caps=True),
                              stdout=open(helper_log, "wb"), stderr=subprocess.STDOUT, start_new_session=True)
    sc = scenario()
    publish_recorded(broker, topics, sc)
    env = {**os.environ, **env_for(broker, topics, tmp_path / "core"), "EDGELOOP_SESSION_TIMEOUT_S": "6",
           "EDGELOOP_HEARTBEAT_S": "1"}
    env.pop("EDGELOOP_SANDBOX_SOCKET", None)
    procs = [helper]
    try:
        deadline = time.monotonic() + 60
        while not sock.exists():
            assert helper.poll() is None and time.monotonic() < deadline, helper_log.read_text()[-2000:]
            time.sleep(0.2)
        # 1. the agent alone under its unit: no sandbox, so no proposals, and it says so
        alone = subprocess.run(_under_unit("edgeloop-agent.service", [*cli_argv, "sandbox", "check"]),
                               env=env, capture_output=True, text=True, timeout=120)
        assert alone.returncode == 1 and "No permissions to create new namespace" in alone.stderr.replace("\n", " ")
        # 2. the agent under its unit with the service's socket: it proposes
        env.update(EDGELOOP_SANDBOX_SOCKET=str(sock), EDGELOOP_METRICS_PORT=str(free_port()))
        log = tmp_path / "agent.log"
        agent = subprocess.Popen(_under_unit("edgeloop-agent.service", [*cli_argv, "agent", "--no-retrain"]),
                                 env=env, stdout=open(log, "wb"), stderr=subprocess.STDOUT, start_new_session=True)
        procs.append(agent)
        row = alert_and_wait_for_proposal(broker, topics, sc, tmp_path / "core", agent, timeout=120)
        text = log.read_text()
        assert "RestrictNamespaces=yes" in text and "proposing policies for" in text, text[-3000:]
        assert row.state == "proposed" and row.sources == [sc.attacker]
        print(f"\n[deployed sandbox] agent under RestrictNamespaces=yes proposed {row.policy_id[:12]} "
              f"({row.provenance}) through the sandbox service")
    finally:
        for proc in reversed(procs):
            proc.send_signal(signal.SIGTERM)
            proc.wait(30)


def test_with_trusted_keys_the_enforcer_applies_the_signed_approval_and_dead_letters_forgeries(sandbox_ok,
        broker, topics, topic_reader, tmp_path: Path) -> None:
    """A forged activation (a bare producer, code_sha256 all zeros, the old integration test's
    trick), a signed one altered on the way, and the approver's own: only the last applies."""
    from kafka import KafkaProducer

    from contracts.policy_model import Policy
    from streams.active_policies import encode_active
    from streams.signing import SigningKey

    core = settings_for(broker, topics, tmp_path / "core")
    [out] = propose_from_alerts([alert_for(scenario())], core, flows=scenario().flows,
                                detections=scenario().detections)
    assert out.status == "proposed", out.reason
    run, env = CliRunner(), env_for(broker, topics, tmp_path / "core")
    from streams.keys_cli import keys as keys_cmd

    res = run.invoke(keys_cmd, ["new", "alice", "--dir", str(tmp_path / "keys")], env=env)
    assert res.exit_code == 0, res.output
    trusted = tmp_path / "trusted"
    trusted.mkdir()
    (trusted / "alice.pub").write_text((tmp_path / "keys" / "alice.pub").read_text())
    res = run.invoke(cli, ["policy", "approve", out.proposal.policy_id, "--key", str(tmp_path / "keys" / "alice.key"),
                           "--who", "mallory"], env=env)
    assert res.exit_code != 0 and "the key says who you are" in res.output
    res = run.invoke(cli, ["policy", "approve", out.proposal.policy_id, "--key", str(tmp_path / "keys" / "alice.key")],
                     env=env)
    assert res.exit_code == 0 and "signed by key" in res.output, res.output
    [signed] = [r for r in active_records(topic_reader, topics, lambda rs: len(rs) >= 1) if r.signature]
    assert signed.approved_by == "alice"
    forged = decode_active(_activation("forged", Policy(block_sources=["10.9.0.99"])))
    assert forged.code_sha256 == "b" * 64 and not forged.signature
    tampered = signed.model_copy(update={"policy_id": "tampered",
                                         "policy": Policy(block_sources=["10.9.0.0/24", *signed.policy.block_sources])})
    p = KafkaProducer(bootstrap_servers=broker.bootstrap)
    for rec in (forged, tampered):
        p.send(topics.policies_active, key=rec.policy_id.encode(), value=encode_active(rec))
    p.flush()
    p.close()
    res = run.invoke(cli, ["enforce", "--once", "--dry-run", "--no-protect-local"],
                     env={**env, "EDGELOOP_TRUSTED_KEYS": str(trusted)})
    assert res.exit_code == 0, res.output
    ruleset = res.output.split("delete table")[-1]
    assert f"{ATTACKER} timeout" in ruleset and "10.9.0.99" not in ruleset and "10.9.0.0/24" not in ruleset
    assert "only records signed by alice" in res.output
    dls = [json.loads(v) for v in topic_reader(topics.deadletter, lambda vs: len(vs) >= 2, 20)]
    assert sorted(d["reason"] for d in dls) == ["bad_signature", "unsigned"]
    assert all(d["source_topic"] == topics.policies_active for d in dls)
    # The default, on a node nobody gave keys: nothing applies, not even alice's approval.
    res = run.invoke(cli, ["enforce", "--once", "--dry-run", "--no-protect-local"],
                     env={**env, "EDGELOOP_ALLOW_UNSIGNED": None, "EDGELOOP_TRUSTED_KEYS": None})
    assert res.exit_code == 0, res.output
    assert "accepting nothing: no trusted keys" in res.output
    assert ATTACKER not in res.output.split("delete table")[-1]
    dls = [json.loads(v) for v in topic_reader(topics.deadletter, lambda vs: len(vs) >= 5, 20)]
    assert sorted(d["reason"] for d in dls[2:]) == ["unknown_signer", "unknown_signer", "unsigned"]

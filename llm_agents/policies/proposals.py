"""From alerts to proposals, and from a person's approval to `policies.active`.

The proposal side of DESIGN.md's policy loop:

    alert ─► intent (intent_from_alert) ─► BlueprintLoop on a DigitalTwin of the alert's
          time range ─► PolicyProposal ─► PolicyStore (data_dir/policies) + `policies.proposed`
    person ─► approve_policy ─► PolicyStore: approved ─► `policies.active` ─► active
           ─► revoke_policy  ─► PolicyStore: revoked  ─► revocation on `policies.active`

    >>> outcomes = propose_from_alerts(alerts, settings)                  # reads the topics
    >>> outcomes = propose_from_alerts(alerts, settings, flows=df, detections=det)
    >>> [o.proposal.policy_id for o in outcomes if o.status == "proposed"]

The twin: built from the recorded flows and detector verdicts of the alert's time range
(first_seen - margin .. last_seen + margin). A caller that already holds them (the demo,
a test, `edgeloop score` output) passes them in; otherwise they are read back from the
`flows` and `detections` topics, a bounded read of each partition's latest messages
(`max_messages` per partition, `timeout_s`). No second recorder: Kafka already keeps
what the twin needs for as long as its retention, and a restarted proposer reads it again.

Offline (no LLM endpoint) the Designer and Coder answer from the expert library; every
proposal says where it came from (`provenance`). Per alert, the actions are tried in
order (block the source, else rate-limit it) until one validates on the twin. An alert
whose sources a live policy already covers gets no second proposal.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import pandas as pd

from contracts.errors import BrokerError, RecordError
from contracts.policy_model import PolicyProposal
from contracts.records import Alert, DetectionBatch, decode, decode_flows
from llm_agents.policies.store import PolicyStore, PolicyStateError, PolicyStoreError
from streams.active_policies import PolicyActivation, PolicyRevocation, encode_active
from streams.kafka_security import kafka_python_options
from streams.settings import Settings
from streams.topics import Topics

__all__ = ["DEFAULT_ACTIONS", "PolicyProposer", "PolicyStore", "ProposalOutcome", "approve_policy",
           "propose_from_alerts", "publish", "read_recorded", "reject_policy", "revoke_policy", "sync_proposals"]

log = logging.getLogger("edgeloop.policies")
DEFAULT_ACTIONS = ("block_source", "rate_limit_source")
MARGIN_MS = 60_000


@dataclass
class ProposalOutcome:
    """What became of one alert: `proposed` (with the proposal), `covered`, `unblockable`
    (a fan-in attack from more sources than an alert can list: blocking a few of them,
    or the victim it names, would not stop it) or `failed`."""

    alert_id: str
    status: str
    reason: str = ""
    proposal: PolicyProposal | None = None
    attempts: list[dict[str, Any]] = field(default_factory=list)


def bootstrap_for(settings: Settings) -> str:
    return settings.kafka_bootstrap or f"127.0.0.1:{settings.embedded_port}"


# -- Kafka: publish one value, read a topic back (bounded) ---------------------------------------
def publish(bootstrap: str, topic: str, key: str, value: bytes, timeout_s: float = 10.0) -> tuple[int, int]:
    """Send one value and wait for the broker's ack; returns (partition, offset)."""
    from kafka import KafkaProducer
    from kafka.errors import KafkaError

    try:
        ms = int(timeout_s * 1000)
        p = KafkaProducer(bootstrap_servers=bootstrap, **kafka_python_options(),
                          acks="all", request_timeout_ms=ms, max_block_ms=ms,
                          bootstrap_timeout_ms=ms)
    except KafkaError as exc:
        raise BrokerError(f"cannot reach Kafka at {bootstrap}: {exc}") from exc
    try:
        md = p.send(topic, key=key.encode(), value=value).get(timeout=timeout_s)
        return md.partition, md.offset
    except KafkaError as exc:
        raise BrokerError(f"publishing to {topic} failed: {exc}") from exc
    finally:
        p.close(timeout=5)


def read_tail(bootstrap: str, topic: str, *, max_messages: int = 2_000, timeout_s: float = 20.0) -> list[bytes]:
    """The latest values of a topic (at most `max_messages` per partition), up to its end now."""
    from kafka import KafkaConsumer, TopicPartition

    from kafka.errors import KafkaError

    try:
        c = KafkaConsumer(bootstrap_servers=bootstrap, **kafka_python_options(),
                          group_id=None, enable_auto_commit=False,
                          fetch_max_wait_ms=100, max_poll_interval_ms=10_000, consumer_timeout_ms=1000,
                          bootstrap_timeout_ms=int(min(timeout_s, 10) * 1000))
    except KafkaError as exc:
        raise BrokerError(f"cannot reach Kafka at {bootstrap}: {exc}") from exc
    try:
        tps = [TopicPartition(topic, p) for p in sorted(c.partitions_for_topic(topic) or {0})]
        c.assign(tps)
        begin, end = c.beginning_offsets(tps), c.end_offsets(tps)
        for tp in tps:
            c.seek(tp, max(begin[tp], end[tp] - max_messages))
        values: list[bytes] = []
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and any(c.position(tp) < end[tp] for tp in tps):
            for tp, batch in c.poll(timeout_ms=200, max_records=5000).items():
                values.extend(m.value for m in batch if m.offset < end[tp])
        return values
    finally:
        c.close()


def read_recorded(bootstrap: str, topics: Topics, start_ms: int, end_ms: int, *, max_messages: int = 2_000,
                  timeout_s: float = 20.0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Flows and detections of [start_ms, end_ms) read back from the topics, for a twin."""
    flows = []
    for raw in read_tail(bootstrap, topics.flows, max_messages=max_messages, timeout_s=timeout_s):
        for rec in decode_flows(raw):
            if not isinstance(rec, RecordError) and start_ms <= rec.first_seen_ms < end_ms:
                flows.append(rec.model_dump())
    dets = []
    for raw in read_tail(bootstrap, topics.detections, max_messages=max_messages, timeout_s=timeout_s):
        try:
            batch = decode(DetectionBatch, raw)
        except RecordError:
            continue  # the detector's own output; a bad one was never ours to dead-letter
        dets += [d.model_dump() for d in batch.detections if d.last_seen_ms >= start_ms and d.first_seen_ms < end_ms]
    fdf = pd.DataFrame(flows).drop_duplicates("flow_id", keep="last") if flows else pd.DataFrame()
    ddf = pd.DataFrame(dets).drop_duplicates("window_id", keep="last") if dets else None
    return fdf, ddf if ddf is not None else pd.DataFrame(columns=["window_id", "key", "flow_ids", "predicted",
                                                                    "confidence"])


# -- proposing --------------------------------------------------------------------------------
class PolicyProposer:
    """Alerts in, validated proposals out (stored, and published when a publisher is given)."""

    def __init__(self, store: PolicyStore, *, client: Any | None = None, sandbox: Any | None = None,
                 repository: Any | None = None, actions: Sequence[str] = DEFAULT_ACTIONS, max_rounds: int = 3,
                 bootstrap: str | None = None, topics: Topics | None = None) -> None:
        from llm_agents.blueprints import BlueprintLoop, Coder, Designer, ExpertLibrary
        from llm_agents.blueprints.sandbox_service import make_sandbox

        lib = ExpertLibrary.load()
        self.store, self.actions = store, tuple(actions)
        self.loop = BlueprintLoop(Designer(client, lib), Coder(client, lib), sandbox or make_sandbox(), repository,
                                  max_rounds=max_rounds)
        self.bootstrap, self.topics = bootstrap, topics

    def propose(self, alert: Alert | Mapping[str, Any], twin: Any) -> ProposalOutcome:
        from llm_agents.blueprints import intent_from_alert

        a = alert if isinstance(alert, Alert) else Alert.model_validate(dict(alert))
        if a.view == "dst" and a.sources > len(a.src_ips):
            return ProposalOutcome(a.alert_id, "unblockable",
                                   f"{a.attack} on {a.key} from {a.sources} sources (spoofed or distributed): "
                                   "source blocks cannot stop it; protect the victim upstream")
        first = intent_from_alert(a, self.actions[0])
        covered = self.store.live_covering(first.sources or first.hosts)
        if covered:
            return ProposalOutcome(a.alert_id, "covered", f"already covered by {covered[0].policy_id} "
                                                          f"({covered[0].state})")
        out = ProposalOutcome(a.alert_id, "failed")
        for action in self.actions:
            res = self.loop.run(intent_from_alert(a, action), twin)
            problems = res.rounds[-1].problems[:3] if res.rounds else []
            out.attempts.append({"action": action, "ok": res.ok, "provenance": res.provenance, "problems": problems})
            if res.ok:
                out.proposal = self._finish(res.to_proposal(), a, twin)
                out.status, out.reason = "proposed", f"{action} validated on the twin ({res.provenance})"
                return out
        out.reason = "; ".join(f"{x['action']}: {' | '.join(x['problems']) or 'no policy'}" for x in out.attempts)
        return out

    def _finish(self, proposal: PolicyProposal, alert: Alert, twin: Any) -> PolicyProposal:
        evidence = {"alert_id": alert.alert_id, "alert_key": alert.key, "attack": alert.attack,
                    "alert_windows": alert.windows, "alert_model_version": alert.model_version,
                    "twin": twin.name, "twin_flows": twin.n_flows, "twin_windows": twin.n_windows,
                    "twin_time_ms": [twin.start_ms, twin.end_ms]}
        proposal = proposal.model_copy(update={"kpis": {**proposal.kpis, "evidence": evidence}})
        self.store.add(proposal, who="proposer", alert_id=alert.alert_id)
        if self.bootstrap and self.topics:
            part, off = publish(self.bootstrap, self.topics.policies_proposed, proposal.policy_id,
                                proposal.dump_json())
            self.store.note(proposal.policy_id, "proposer", "publish",
                            {"topic": self.topics.policies_proposed, "partition": part, "offset": off})
        return proposal


def _rank(alerts: Iterable[Alert | Mapping[str, Any]], limit: int) -> list[Alert]:
    seen, out = set(), []
    parsed = [a if isinstance(a, Alert) else Alert.model_validate(dict(a)) for a in alerts]
    # Source-view alerts first: they name the attacker, which a policy can act on; a
    # destination-view alert names the victim and is for fan-in attacks.
    for a in sorted(parsed, key=lambda a: (a.view != "src", -a.windows, -a.max_confidence, a.alert_id)):
        if (a.view, a.key, a.attack) not in seen:
            seen.add((a.view, a.key, a.attack))
            out.append(a)
    return out[:limit]


def propose_from_alerts(alerts: Iterable[Alert | Mapping[str, Any]], settings: Settings, *,
                        flows: pd.DataFrame | None = None, detections: pd.DataFrame | None = None,
                        bootstrap: str | None = None, llm: Any | None = None, publish_topic: bool = True,
                        max_alerts: int = 5, margin_ms: int = MARGIN_MS,
                        actions: Sequence[str] = DEFAULT_ACTIONS) -> list[ProposalOutcome]:
    """Propose a policy for each of the strongest alerts; returns one outcome per alert used.

    alerts      Alert records (or their dicts), e.g. everything read from `alerts`.
    settings    data_dir (store: data_dir/policies, blueprints: data_dir/blueprints),
                topic_prefix, the broker, and the LLM endpoint (offline when unset).
    flows, detections   the recorded flows (FlowRecord columns) and detector verdicts
                (window_id, key, flow_ids, predicted, confidence) for the twin; when
                None they are read back from the topics for the alerts' time range.
    llm         an LLMClient (or a fake); None = LLMClient.from_settings(settings), which is
                None offline, so the expert library answers.
    publish_topic   publish each proposal to `policies.proposed` (it is stored either way).
    max_alerts  alerts considered, strongest first (most windows), one per (key, attack).
    """
    from llm_agents.blueprints import BlueprintRepository
    from llm_agents.twin.model import DigitalTwin

    chosen = _rank(alerts, max_alerts)
    if not chosen:
        return []
    topics, boot = Topics(settings.topic_prefix), bootstrap or bootstrap_for(settings)
    if llm is None and not settings.offline:
        from llm_agents.client import LLMClient
        llm = LLMClient.from_settings(settings)
    lo = min(a.first_seen_ms for a in chosen) - margin_ms
    hi = max(a.last_seen_ms for a in chosen) + margin_ms + 1
    if flows is None:
        flows, detections = read_recorded(boot, topics, lo, hi)
    proposer = PolicyProposer(PolicyStore(Path(settings.data_dir) / "policies"), client=llm,
                              repository=BlueprintRepository(Path(settings.data_dir) / "blueprints"),
                              actions=actions, bootstrap=boot if publish_topic else None, topics=topics)
    outcomes = []
    for a in chosen:
        if flows.empty:
            outcomes.append(ProposalOutcome(a.alert_id, "failed", "no recorded flows for the alert's time range"))
            continue
        twin = DigitalTwin(flows, detections, start_ms=a.first_seen_ms - margin_ms,
                           end_ms=a.last_seen_ms + margin_ms + 1, name=f"alert-{a.alert_id}", view=a.view)
        outcomes.append(proposer.propose(a, twin))
        log.warning("alert %s (%s from %s): %s %s", a.alert_id, a.attack, a.key, outcomes[-1].status,
                    outcomes[-1].reason)
    return outcomes


# -- a person's decisions -----------------------------------------------------------------------
def sync_proposals(store: PolicyStore, bootstrap: str, topic: str, *, timeout_s: float = 10.0) -> int:
    """Take in proposals published on `policies.proposed` that this store has not seen."""
    added = 0
    for raw in read_tail(bootstrap, topic, max_messages=10_000, timeout_s=timeout_s):
        try:
            p = PolicyProposal.model_validate_json(raw)
        except ValueError as exc:
            log.error("a value on %s is not a policy proposal: %s", topic, str(exc)[:300])
            continue
        try:
            added += store.add(p, who="sync", details={"topic": topic})
        except PolicyStoreError as exc:
            log.error("proposal from %s not stored: %s", topic, exc)
    return added


def approve_policy(store: PolicyStore, policy_id: str, who: str, *, bootstrap: str, topics: Topics,
                   guard: Any | None = None, note: str = "", broad_reason: str = "",
                   key: Any | None = None, timeout_s: float = 10.0) -> PolicyActivation:
    """Approve (when proposed) and publish to `policies.active`; the policy is then active.

    A policy left `approved` by a failed publication is published again. With a guard
    (streams.guard.Guard), a policy touching protected infrastructure, or a broad one
    without `broad_reason`, is refused here already, before any enforcer sees it.
    """
    row = store.get(policy_id)
    if row.state == "proposed":
        if guard is not None:
            problems = guard.problems(store.proposal(policy_id).policy, broad_reason=broad_reason)
            if problems:
                store.note(policy_id, who, "refuse", {"problems": problems})
                from streams.enforce import PolicyRefused
                raise PolicyRefused(policy_id, problems)
        store.approve(policy_id, who, note, broad_reason)
    elif row.state != "approved":
        raise PolicyStateError(policy_id, row.state, "approve")
    act = store.activation(policy_id)
    if key is not None:  # streams.signing.SigningKey: edges with trusted keys apply only signed records
        from streams.signing import sign_record

        act = sign_record(act, key)
    part, off = publish(bootstrap, topics.policies_active, policy_id, encode_active(act), timeout_s)
    store.mark_active(policy_id, who, {"topic": topics.policies_active, "partition": part, "offset": off})
    return act


def reject_policy(store: PolicyStore, policy_id: str, who: str, reason: str) -> None:
    store.reject(policy_id, who, reason)


def revoke_policy(store: PolicyStore, policy_id: str, who: str, *, bootstrap: str, topics: Topics,
                  reason: str = "", key: Any | None = None, timeout_s: float = 10.0) -> PolicyRevocation:
    """Revoke and publish the revocation (signed with `key` when given); on a revoked policy,
    publish it again."""
    row = store.get(policy_id)
    if row.state != "revoked":
        store.revoke(policy_id, who, reason)
    rev = store.revocation(policy_id)
    if key is not None:
        from streams.signing import sign_record

        rev = sign_record(rev, key)
    part, off = publish(bootstrap, topics.policies_active, policy_id, encode_active(rev), timeout_s)
    store.note(policy_id, who, "publish" if row.state != "revoked" else "republish",
               {"topic": topics.policies_active, "partition": part, "offset": off, "record": "revocation"})
    return rev

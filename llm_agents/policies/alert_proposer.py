"""The agent's policy side: alerts in, proposals waiting for a person out.

    >>> proposer = AlertProposer(settings, bootstrap, Topics(prefix), llm=client, metrics=agent_metrics)
    >>> await proposer.run(stop)          # beside LabelAgent.run in `edgeloop agent`

`AlertProposer` follows `alerts` in its own consumer group (the agent's group plus
`-policies`) with manual commits. Alerts that arrive together (each within `settle_s`
of the last, at most `batch_max`) are handled as one batch by
`llm_agents.policies.proposals.propose_from_alerts`: the strongest alert per (source, attack), a
twin read back from `flows` and `detections` for their time range, the blueprint loop
(the expert library offline, else the configured LLM), and each validated proposal stored
in data_dir/policies and published on `policies.proposed`, where a person approves it.

Offsets are committed once a batch is handled, so a restart picks up what was not. An
ongoing attack raises an alert every few seconds: a proposal already covering its
sources (proposed, approved or active) makes the next ones `covered`, never a second
proposal. A value that is not an alert goes to `deadletter` with its origin. A batch
that fails outright (the broker gone while reading the twin back) is logged and counted
as `error`; the attack's next alert tries again.
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from contracts.errors import EdgeloopError, RecordError
from contracts.records import Alert, decode, encode
from llm_agents.agent_metrics import AgentMetrics
from streams.deadletter import dead_letter
from streams.kafka_security import aiokafka_options
from streams.settings import Settings
from streams.topics import Topics

log = logging.getLogger("edgeloop.agent.policies")


class AlertProposer:
    """Follows `alerts` and proposes policies for them; see the module docstring."""

    def __init__(self, settings: Settings, bootstrap: str, topics: Topics, *, llm: Any = None,
                 metrics: AgentMetrics | None = None, group_id: str = "edgeloop-agent-policies",
                 settle_s: float = 2.0, batch_max: int = 200, max_alerts: int = 5) -> None:
        self.settings, self.bootstrap, self.topics = settings, bootstrap, topics
        self.llm, self.metrics, self.group_id = llm, metrics, group_id
        self.settle_s, self.batch_max, self.max_alerts = settle_s, batch_max, max_alerts
        # The latest ProposalOutcomes, for inspection; bounded, the service runs for months.
        self.outcomes: deque[Any] = deque(maxlen=100)
        self.consumer: Any = None
        self.producer: Any = None

    async def run(self, stop: asyncio.Event) -> None:
        s = self.settings
        self.consumer = AIOKafkaConsumer(
            self.topics.alerts, bootstrap_servers=self.bootstrap, **aiokafka_options(), group_id=self.group_id,
            client_id=f"edgeloop-{s.worker_id or 'agent'}-policies", enable_auto_commit=False,
            auto_offset_reset="earliest", fetch_max_wait_ms=s.fetch_max_wait_ms,
            session_timeout_ms=int(s.session_timeout_s * 1000), heartbeat_interval_ms=int(s.heartbeat_s * 1000),
            max_poll_interval_ms=300_000)  # one batch may run the blueprint loop for minutes
        self.producer = AIOKafkaProducer(bootstrap_servers=self.bootstrap, **aiokafka_options(), acks="all")
        await self.producer.start()
        await self.consumer.start()
        try:
            await self._loop(stop)
        finally:
            await self.consumer.stop()
            await self.producer.stop()

    async def _loop(self, stop: asyncio.Event) -> None:
        pending: list[Alert] = []
        last, uncommitted = time.monotonic(), False
        while not stop.is_set():
            got = await self.consumer.getmany(timeout_ms=200, max_records=self.batch_max)
            for msgs in got.values():
                for m in msgs:
                    uncommitted = True
                    alert = await self._decode(m)
                    if alert is not None:
                        pending.append(alert)
                        last = time.monotonic()
            if pending and (time.monotonic() - last >= self.settle_s or len(pending) >= self.batch_max):
                await self._handle(pending)
                pending = []
            if uncommitted and not pending:
                await self.consumer.commit()
                uncommitted = False

    async def _decode(self, msg: Any) -> Alert | None:
        try:
            alert = decode(Alert, msg.value or b"")
        except RecordError as exc:
            dl = dead_letter(exc, topic=msg.topic, partition=msg.partition, offset=msg.offset, value=msg.value,
                             key=msg.key, worker=f"{self.settings.worker_id or 'agent'}-policies")
            await self.producer.send_and_wait(self.topics.deadletter, encode(dl), key=msg.key)
            log.error("bad value on %s@%d: %s", msg.topic, msg.offset, exc)
            if self.metrics:
                self.metrics.alerts_deadlettered.labels(reason=dl.reason).inc()
                self.metrics.deadletters.labels(reason=dl.reason, topic=msg.topic).inc()
            return None
        if self.metrics:
            self.metrics.alerts_received.inc()
        return alert

    async def _handle(self, alerts: list[Alert]) -> None:
        from llm_agents.policies.proposals import propose_from_alerts  # the blueprint loop: imported when first used

        t0 = time.perf_counter()
        try:
            outcomes = await asyncio.to_thread(propose_from_alerts, alerts, self.settings, bootstrap=self.bootstrap,
                                               llm=self.llm, max_alerts=self.max_alerts)
        except EdgeloopError as exc:
            log.error("proposing for %d alerts failed: %s", len(alerts), exc)
            if self.metrics:
                self.metrics.policy_proposals.labels(status="error").inc()
            return
        finally:
            if self.metrics:
                self.metrics.proposal_seconds.observe(time.perf_counter() - t0)
        self.outcomes.extend(outcomes)
        for o in outcomes:
            if self.metrics:
                self.metrics.policy_proposals.labels(status=o.status).inc()
            if o.status == "proposed":
                log.warning("alert %s: proposed %s (%s); waiting for approval", o.alert_id,
                            o.proposal.policy_id, o.reason)

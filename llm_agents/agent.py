"""The agent service (`edgeloop agent`): uncertain windows in, labels out, retraining on cue.

    >>> agent = LabelAgent(AgentConfig(), bootstrap, Topics(prefix), state=AgentState.open(data_dir),
    ...                    client=LLMClient.from_settings(settings, registry))   # None = offline
    >>> await agent.run(stop=event)

The loop reads `uncertain` in a consumer group with manual commits and decides windows in
batches (`batch_size` per LLM call, default 20; the Labeler renders traffic text as quoted
data). Each window ends one of four ways, and only then is its offset done:

    accepted     the label passed acceptance (valid, confident, a check agrees): stored
                 in the dataset store and published on `labels`
    parked       sent to the review queue: acceptance said no (Label published with
                 accepted=false), the LLM gave nothing usable, it kept failing
                 (`max_attempts`), or there is no LLM at all (offline mode)
    known        the window is already labelled in the store (a window of the reference
                 data, or a redelivery whose ledger entry was lost)
    deadletter   the value could not be decoded: sent to `deadletter` with its origin

A partition's offset N+1 is committed only when every window up to N is done. Rate
limits, timeouts and an unreachable LLM leave windows uncommitted; they are retried
after an exponential backoff. If the agent dies, uncommitted windows are read again; the
ledger (llm_agents.audit) says which of them were already decided, so none is labelled,
stored or parked twice. Labels are published from the ledger's outbox (at least once).

The flows' own `label` field (ground truth in lab replays) is removed as each window is
decoded: nothing in the agent can see it.

Retraining starts in a background thread after `retrain_min_labels` new accepted labels,
or when the uncertain share of detections over `drift_window_s` reaches `drift_ratio`.
"""
from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.abc import ConsumerRebalanceListener
from aiokafka.errors import KafkaError

from contracts.errors import RecordError
from contracts.records import UncertainWindow, decode, encode
from llm_agents.labeling.acceptance import AcceptancePolicy
from llm_agents.agent_metrics import AgentMetrics
from llm_agents.agent_tracking import DriftMonitor, OffsetTracker
from llm_agents.audit import Decision, now_ms
from llm_agents.labeling.decider import AgentState, Decider, strip_truth
from llm_agents.store import HOLDOUT_FRACTION
from streams.deadletter import dead_letter
from streams.kafka_security import aiokafka_options
from streams.topics import Topics

__all__ = ["AgentConfig", "AgentState", "AgentStats", "Decider", "DriftMonitor", "LabelAgent", "OffsetTracker"]
log = logging.getLogger("edgeloop.agent")


@dataclass(frozen=True)
class AgentConfig:
    """How the agent consumes, batches, retries and when it retrains (see from_settings)."""

    group_id: str = "edgeloop-agent"
    batch_size: int = 20
    batch_wait_ms: float = 500.0
    max_pending: int = 400           # stop fetching while this many windows wait
    max_attempts: int = 4            # transient LLM failures before a window is parked
    backoff_s: float = 1.0           # first retry delay; doubles per attempt
    backoff_max_s: float = 30.0
    session_timeout_s: float = 10.0  # Tansu holds a joining member for about half of it
    heartbeat_s: float = 2.0
    fetch_max_wait_ms: int = 20      # Tansu holds every fetch for the full wait
    retrain_min_labels: int = 200    # 0: no retrain on labels
    drift_ratio: float = 0.0         # 0: no retrain on drift
    drift_window_s: float = 300.0
    drift_min_windows: int = 500
    retrain_cooldown_s: float = 300.0
    worker: str = "agent"
    policy: AcceptancePolicy = AcceptancePolicy()
    # Share of accepted LLM labels parked for a person (`verify`): the retrainer's holdout
    # side, where only truth judges challengers (llm_agents.labeling.decider). 0: store them all.
    verify_fraction: float = HOLDOUT_FRACTION

    @classmethod
    def from_settings(cls, s: Any, **overrides: Any) -> "AgentConfig":
        """From streams.settings; `agent_*`, `retrain_*` and `drift_*` fields when it has them."""
        names = {"group_id": "agent_group_id", "batch_size": "agent_batch_size",
                 "batch_wait_ms": "agent_batch_wait_ms", "max_attempts": "agent_max_attempts",
                 "backoff_s": "agent_backoff_s", "retrain_min_labels": "retrain_min_labels",
                 "drift_ratio": "drift_uncertain_ratio", "drift_window_s": "drift_window_s",
                 "drift_min_windows": "drift_min_windows", "retrain_cooldown_s": "retrain_cooldown_s",
                 "verify_fraction": "agent_verify_fraction"}
        kw: dict[str, Any] = {f: getattr(s, n) for f, n in names.items() if hasattr(s, n)}
        kw.update(session_timeout_s=s.session_timeout_s, heartbeat_s=s.heartbeat_s,
                  fetch_max_wait_ms=s.fetch_max_wait_ms, worker=s.worker_id or "agent")
        if hasattr(s, "label_min_confidence"):
            kw["policy"] = AcceptancePolicy(min_confidence=s.label_min_confidence)
        return cls(**{**kw, **overrides})


@dataclass
class Item:
    """A window read from Kafka and not yet finished."""

    partition: int
    offset: int
    window: UncertainWindow
    received: float
    attempts: int = 0
    not_before: float = 0.0


@dataclass
class AgentStats:
    received: int = 0
    deadlettered: int = 0
    retries: int = 0
    published: int = 0
    outcomes: dict[str, int] = field(default_factory=dict)  # accepted, parked, known, redelivered...

    @property
    def finished(self) -> int:
        return sum(self.outcomes.values()) + self.deadlettered


class LabelAgent:
    """The Kafka side of the agent: consume, batch, decide, publish, commit; see the module doc."""

    def __init__(self, config: AgentConfig, bootstrap: str, topics: Topics, state: AgentState,
                 client: Any = None, *, metrics: AgentMetrics | None = None, retrainer: Any = None) -> None:
        self.cfg, self.bootstrap, self.topics, self.state = config, bootstrap, topics, state
        self.metrics, self.retrainer = metrics, retrainer
        self.decider = Decider(state, client, policy=config.policy, batch_size=config.batch_size, metrics=metrics,
                               verify_fraction=config.verify_fraction)
        self.tracker = OffsetTracker()
        self.drift = DriftMonitor(config.drift_window_s)
        self.items: list[Item] = []
        self.stats = AgentStats()
        self.retrains: list[Any] = []       # decisions of retrains this process ran
        self._retrain: asyncio.Future | None = None
        last = state.audit.last(["retrain_started"])
        self._count_from_ms = last.at_ms + 1 if last else 0   # labels counted toward the next retrain
        self._last_retrain = -1e18
        self._end: dict[Any, int] | None = None
        self.consumer: Any = None
        self.producer: Any = None

    async def run(self, stop: asyncio.Event | None = None, max_windows: int | None = None,
                  once: bool = False) -> AgentStats:
        """Until `stop` is set, `max_windows` windows are finished, or (`once`) the topic is drained.

        On the way out it waits for a retrain in progress, publishes what the outbox holds
        and commits what is done; windows still pending stay uncommitted for the next run.
        """
        c = self.cfg
        self.consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap, **aiokafka_options(), group_id=c.group_id,
            client_id=f"edgeloop-{c.worker}", enable_auto_commit=False, auto_offset_reset="earliest", fetch_max_wait_ms=c.fetch_max_wait_ms,
            session_timeout_ms=int(c.session_timeout_s * 1000), heartbeat_interval_ms=int(c.heartbeat_s * 1000),
            max_poll_interval_ms=max(300_000, int(c.backoff_max_s * 4000)))
        self.consumer.subscribe([self.topics.uncertain], listener=_Rebalance(self))
        self.producer = AIOKafkaProducer(bootstrap_servers=self.bootstrap, **aiokafka_options(),
                                         acks="all", linger_ms=5)
        await self.producer.start()
        await self.consumer.start()
        follow = asyncio.create_task(self._follow_detections()) if c.drift_ratio > 0 else None
        try:
            while not (stop is not None and stop.is_set()):
                await self._step()
                if max_windows is not None and self.stats.finished >= max_windows:
                    break
                if once and await self._drained():
                    break
        finally:
            if self._retrain is not None:
                await asyncio.shield(self._retrain)
            await self._flush_outbox()
            await self._commit()
            if follow is not None:
                follow.cancel()
            await self.consumer.stop()
            await self.producer.stop()
        return self.stats

    async def _step(self) -> None:
        now = time.monotonic()
        if len(self.items) < self.cfg.max_pending:
            got = await self.consumer.getmany(timeout_ms=self._wait_ms(now), max_records=self.cfg.batch_size * 5)
            for tp, msgs in got.items():
                for m in msgs:
                    await self._ingest(tp.partition, m)
        else:
            await asyncio.sleep(self._wait_ms(now) / 1000)
        batch = self._due(time.monotonic())
        if batch:
            await self._decide(batch)
        await self._flush_outbox()
        await self._commit()
        self._maybe_retrain()
        if self.metrics:
            self.metrics.pending_windows.set(len(self.items))
            self.metrics.review_queue_depth.set(self.state.review.depth())

    def _wait_ms(self, now: float) -> int:
        ready = [i for i in self.items if i.not_before <= now]
        if ready:
            return max(0, min(200, int(self.cfg.batch_wait_ms - (now - ready[0].received) * 1000)))
        later = [i.not_before for i in self.items]
        return max(0, min(200, int((min(later) - now) * 1000))) if later else 200

    def _due(self, now: float) -> list[Item]:
        batch, seen = [], set()
        for i in self.items:
            if i.not_before <= now and i.window.window_id not in seen:
                seen.add(i.window.window_id)
                batch.append(i)
                if len(batch) == self.cfg.batch_size:
                    return batch
        waited = batch and (now - min(i.received for i in batch)) * 1000 >= self.cfg.batch_wait_ms
        return batch if waited or any(i.attempts for i in batch) else []

    async def _ingest(self, partition: int, msg: Any) -> None:
        self.tracker.add(partition, msg.offset)
        try:
            w = decode(UncertainWindow, msg.value or b"")
            if not w.flows:
                raise RecordError("invalid", "an uncertain window with no flows")
        except RecordError as exc:
            await self._dead_letter(exc, msg)
            return
        self.stats.received += 1
        if self.metrics:
            self.metrics.windows_received.inc()
        self.items.append(Item(partition, msg.offset, strip_truth(w), time.monotonic()))

    async def _dead_letter(self, exc: RecordError, msg: Any) -> None:
        key = f"dl:{msg.topic}:{msg.partition}:{msg.offset}"
        if not self.state.ledger.decided([key]):
            dl = dead_letter(exc, topic=msg.topic, partition=msg.partition, offset=msg.offset, value=msg.value,
                             key=msg.key, worker=self.cfg.worker)
            await self.producer.send_and_wait(self.topics.deadletter, encode(dl), key=msg.key)
            self.state.ledger.commit([Decision(key, "deadletter", None, figures={"reason": dl.reason},
                                               detail=dl.error[:500])])
            if self.metrics:
                self.metrics.windows_deadlettered.labels(reason=dl.reason).inc()
                self.metrics.deadletters.labels(reason=dl.reason, topic=msg.topic).inc()
        self.stats.deadlettered += 1
        self.tracker.done(msg.partition, msg.offset)

    async def _decide(self, batch: list[Item]) -> None:
        t0 = time.perf_counter()
        attempts = {i.window.window_id: i.attempts for i in batch}
        out = await asyncio.to_thread(self.decider.decide, [i.window for i in batch], attempts,
                                      self.cfg.max_attempts)
        if self.metrics:
            self.metrics.batch_seconds.observe(time.perf_counter() - t0)
        now, done = time.monotonic(), set()
        for item in batch:
            wid = item.window.window_id
            if wid in out.finished:
                done.add(id(item))
                self.tracker.done(item.partition, item.offset)
                self.stats.outcomes[out.finished[wid]] = self.stats.outcomes.get(out.finished[wid], 0) + 1
            else:  # a transient LLM failure: back off, keep the offset open
                item.attempts += 1
                item.not_before = now + min(self.cfg.backoff_max_s, self.cfg.backoff_s * 2 ** (item.attempts - 1))
                self.stats.retries += 1
                if self.metrics:
                    self.metrics.llm_retries.labels(kind=out.retry.get(wid, "unknown")).inc()
        self.items = [i for i in self.items if id(i) not in done]

    async def _flush_outbox(self) -> None:
        rows = self.state.ledger.pending()
        if not rows:
            return
        futs = [await self.producer.send(self.topics.labels, value, key=wid.encode()) for _, wid, value in rows]
        await asyncio.gather(*futs)
        self.state.ledger.mark_published([r[0] for r in rows])
        self.stats.published += len(rows)
        if self.metrics:
            self.metrics.labels_published.inc(len(rows))

    async def _commit(self) -> None:
        offsets = self.tracker.committable()
        if not offsets:
            return
        try:
            await self.consumer.commit({TopicPartition(self.topics.uncertain, p): o for p, o in offsets.items()})
        except KafkaError as exc:  # a rebalance: the next owner reads them again; the ledger dedups
            log.warning("offset commit failed (%s); those windows may be read again", exc)

    async def _drained(self) -> bool:
        assigned = self.consumer.assignment()
        if self.items or not assigned or self.state.ledger.unpublished():
            return False
        if self._end is None:
            self._end = await self.consumer.end_offsets(list(assigned))
        for tp, end in self._end.items():
            # Tansu's ListOffsets can under-report the end of a partition written in
            # multi-record batches; a fetch response's high watermark is right.
            hw = self.consumer.highwater(tp)
            if hw is None or await self.consumer.position(tp) < max(end, hw):
                return False
        return True

    def _accepted_since_last_retrain(self) -> int:
        """Labels that reached the store since the count started: this agent's acceptances and
        the verdicts people gave with `edgeloop review` in another process, read from the shared
        audit log, so a confirmed `verify` item counts and a restart loses nothing."""
        return self.state.audit.count(("label_accepted", "review_accept", "review_correct"), self._count_from_ms)

    def _maybe_retrain(self) -> None:
        if self.retrainer is None or (self._retrain is not None and not self._retrain.done()):
            return
        c = self.cfg
        new = self._accepted_since_last_retrain()
        ratio, n = self.drift.ratio()
        trigger = None
        if c.retrain_min_labels and new >= c.retrain_min_labels:
            trigger = "labels"
        elif (c.drift_ratio > 0 and new > 0 and n >= c.drift_min_windows and ratio >= c.drift_ratio
              and time.monotonic() - self._last_retrain >= c.retrain_cooldown_s):
            trigger = "drift"
        if trigger is None:
            return
        self._count_from_ms = now_ms() + 1
        self._last_retrain = time.monotonic()
        detail = {"new_labels": new, "uncertain_ratio": round(ratio, 4), "detections": n}
        log.warning("retrain triggered by %s: %s", trigger, detail)
        self._retrain = asyncio.ensure_future(asyncio.to_thread(self.retrainer.run, trigger, detail))
        self._retrain.add_done_callback(self._retrain_done)

    def _retrain_done(self, fut: asyncio.Future) -> None:
        if fut.cancelled():
            return
        exc = fut.exception()
        if exc is not None:
            log.error("retrain failed: %s", exc, exc_info=exc)
            self.state.audit.record("retrain_failed", detail=f"{type(exc).__name__}: {exc}"[:1000])
        else:
            self.retrains.append(fut.result())

    async def _follow_detections(self) -> None:
        consumer = AIOKafkaConsumer(bootstrap_servers=self.bootstrap, **aiokafka_options(),
                                    group_id=None, enable_auto_commit=False,
                                    auto_offset_reset="latest", fetch_max_wait_ms=self.cfg.fetch_max_wait_ms)
        await consumer.start()
        try:
            parts = consumer.partitions_for_topic(self.topics.detections) or {0}
            consumer.assign([TopicPartition(self.topics.detections, p) for p in parts])
            while True:
                got = await consumer.getmany(timeout_ms=500)
                for msgs in got.values():
                    for m in msgs:
                        self.drift.add_batch(m.value)
                if self.metrics:
                    self.metrics.uncertain_ratio.set(self.drift.ratio()[0])
        finally:
            await consumer.stop()


class _Rebalance(ConsumerRebalanceListener):
    """Commit what is done before partitions go; forget the windows of partitions we lost."""

    def __init__(self, agent: LabelAgent) -> None:
        self.agent = agent

    async def on_partitions_revoked(self, revoked: Any) -> None:
        await self.agent._commit()
        lost = [tp.partition for tp in revoked]
        self.agent.items = [i for i in self.agent.items if i.partition not in lost]
        self.agent.tracker.drop(lost)

    async def on_partitions_assigned(self, assigned: Any) -> None:
        self.agent._end = None

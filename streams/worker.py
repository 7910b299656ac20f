"""The edge worker: a faust-streaming app that runs the detector engine on `flows`.

    $ edgeloop detect            # one worker; start more with the same group to scale out

One agent reads `flows` (raw bytes, decoded and validated by edgeloop itself so bad
input becomes a dead letter instead of a crash). A timer windows the messages read since
its last tick in one push (`coalesce_flows`: small messages cost the windowing per push,
not per flow), closes idle windows and flushes inference batches that waited
`batch_wait_ms`. A background task follows `models` and
hot-swaps verified bundles. Workers in one consumer group share the partitions.

At-least-once: faust would commit a message's offset once the handler returns, while its
flows still sit in open windows, so the topic is read with acks off and the worker commits
itself. An offset ledger (streams.offsets) tracks which messages still have flows in open
windows; every `commit_interval_s` the worker flushes its producer and commits, per
partition, up to the first message that does, and records how far it read (ReadMarks).
On a rebalance or a shutdown it closes
every open window (closed_by "revoke"), scores and produces them, and commits before the
partitions are handed over. After a kill -9 the next owner starts at the last commit:
flows read again are counted (`edgeloop_flows_replayed_total`, below the read mark the
previous owner left), and their windows keep their ids.
"""
from __future__ import annotations

import asyncio
import logging
import time
from itertools import groupby
from pathlib import Path
from typing import Any

import faust
from aiokafka.errors import KafkaError
from aiokafka.structs import TopicPartition
from prometheus_client import CollectorRegistry

from contracts.arrow_flows import decode_flow_arrow, is_arrow
from contracts.errors import RecordError
from contracts.records import decode_flow_rows, encode, record_json
from inference.bundle import Bundle, check_window
from inference.history import KERNEL_MISSING
from inference.onnx_detector import OnnxDetector
from streams.deadletter import dead_letter
from streams.detector import DetectorConfig, EdgeDetector, Output
from streams.faust_transport import app_class
from streams.hotswap import ModelWatcher
from streams.kafka_security import KafkaSecurity
from streams.metrics import EdgeMetrics, freeze_startup, watch_gc
from streams.offsets import OffsetLedger, ReadMarks
from streams.settings import Settings
from streams.signing import trusted_keys
from streams.topics import Topics

log = logging.getLogger("edgeloop.worker")


def faust_app(settings: Settings, bootstrap: str) -> faust.App:
    """The faust app with consumer timings that are stable on Tansu and Kafka under load.
    faust's own directory goes under the data directory, not the working directory."""
    app_cls = app_class(settings.fetch_max_wait_ms)
    parent = Path(settings.data_dir) / "faust"
    parent.mkdir(parents=True, exist_ok=True)  # faust makes only the last level
    datadir = str(parent).replace("{", "{{").replace("}", "}}")
    return app_cls(
        settings.group_id, broker=f"kafka://{bootstrap}", datadir=datadir + "/{conf.name}",
        value_serializer="raw", key_serializer="raw",
        web_enabled=False, topic_partitions=settings.partitions, topic_allow_declare=False,
        consumer_auto_offset_reset="earliest", broker_max_poll_interval=settings.max_poll_interval_s,
        broker_session_timeout=settings.session_timeout_s, broker_heartbeat_interval=settings.heartbeat_s,
        broker_rebalance_timeout=settings.rebalance_timeout_s, broker_request_timeout=settings.session_timeout_s + 10,
        producer_linger_ms=5, producer_max_batch_size=1 << 20, stream_wait_empty=False,
        producer_compression_type=settings.kafka_compression, logging_config=None,
        broker_credentials=KafkaSecurity.from_settings(settings).faust_credentials())


class EdgeWorker:
    def __init__(self, settings: Settings, bootstrap: str, bundle: Bundle,
                 registry: CollectorRegistry | None = None) -> None:
        self.settings, self.bootstrap = settings, bootstrap
        self.topics = Topics(settings.topic_prefix)
        self.names = self.topics.all()
        self.metrics = EdgeMetrics(registry or CollectorRegistry())
        self.worker_id = settings.worker_id or f"edge-{int(time.time() * 1000) % 10**8}"
        check_window(bundle, settings.window_k, settings.window_seconds, settings.views,
                     follow=settings.follow_bundle_window)
        cfg = DetectorConfig.from_settings(settings)
        cfg = DetectorConfig(**{**cfg.__dict__, "worker": self.worker_id})
        if settings.host_history == "auto" and KERNEL_MISSING:
            log.warning("host history counted with numpy, about 10x slower than the compiled kernel, "
                        "which is not built here (%s); reinstall with a C compiler", KERNEL_MISSING)
        self.engine = EdgeDetector(OnnxDetector(bundle, int8=settings.int8, shape_rules=settings.shape_rules),
                                   cfg, self.metrics)
        self.app = faust_app(settings, bootstrap)
        self.last_offset: dict[int, int] = {}
        self.ledger = OffsetLedger()
        self.assigned: set[int] = set()         # flows partitions owned in this generation
        self.generation = 0                     # bumped when partitions are given up
        self.replay_until: dict[int, int] = {}  # how far the partitions' previous owners read
        self.read_marks = ReadMarks(bootstrap, settings.group_id, self.names["flows"])
        self._saved_marks: dict[int, int] = {}
        self._lag_series: set[str] = set()
        # Good rows of messages read (their ledger tokens taken) but not windowed yet: the
        # tick windows them together, or the agent once they reach `coalesce_flows`.
        self._unwindowed: list[tuple[Any, Any]] = []
        self._unwindowed_flows = 0
        self.watcher = ModelWatcher(bootstrap, self.names["models"], self._swap,
                                    lambda: self.engine.model.version, self.metrics,
                                    store=settings.model_store or settings.data_dir / "registry",
                                    trusted=trusted_keys(settings, "model releases"),
                                    int8=settings.int8, shape_rules=settings.shape_rules,
                                    on_refused=lambda raw, exc: self.refused(self.names["models"], raw, exc))
        self._wire()

    def _wire(self) -> None:
        app = self.app
        # acks=False: faust neither tracks nor commits these offsets; EdgeWorker.commit does.
        flows = app.topic(self.names["flows"], value_serializer="raw", key_serializer="raw", allow_empty=True,
                          acks=False)

        @app.agent(flows, name="edgeloop-detect")
        async def detect(stream: Any) -> None:
            async for event in stream.events():
                await self.handle(event.message, event.value)

        # Batches are also flushed as messages arrive; the timer scores a batch whose wait
        # ran out between messages. Every 50 ms it held windows for the next message or
        # tick: p50 28 -> 18 ms produced->detection at 5,000 flows/s with a 5 ms floor
        # (p99 37-53 -> 31-45 ms, three alternated runs; flows/s the same).
        interval = max(self.settings.batch_wait_ms / 1000.0, 0.005)

        @app.timer(interval=interval, name="edgeloop-tick")
        async def tick() -> None:
            # The messages read since the last tick, windowed in one push; their windows
            # already waited, so they are scored now.
            await self.drain(self.engine.tick(now=self._window_unwindowed()))

        @app.timer(interval=self.settings.commit_interval_s, name="edgeloop-commit")
        async def commit() -> None:
            await self.commit()

        app.on_partitions_assigned.connect(self._on_assigned)
        app.on_partitions_revoked.connect(self._on_revoked)
        app.on_before_shutdown.connect(self._on_shutdown)

        @app.timer(interval=1.0, name="edgeloop-lag")
        async def lag() -> None:
            self.observe_lag()

        @app.task
        async def follow_models() -> None:
            await self.watcher.run()

        @app.task
        async def follow_policies() -> None:
            from streams.active_policies import PolicyWatcher

            def on_change(overrides: Any) -> None:
                self.engine.set_overrides(overrides)
                self.metrics.active_policies.set(len(watcher.state.current()))
                log.warning("active policies changed: %d in force", len(watcher.state.current()))

            async def on_refused(raw: bytes, exc: Exception) -> None:
                self.metrics.detector_policies_refused.labels(reason=getattr(exc, "reason", "guard")).inc()
                await self.refused(self.names["policies.active"], raw, exc)

            meta = self.engine.model.bundle.meta
            # `ip` and DNS look-ups of NTP pools can take seconds: not on the event loop
            guard = await asyncio.to_thread(detector_guard, self.bootstrap,
                                            [c for c in meta.class_names if c != meta.benign_class])
            watcher = PolicyWatcher(self.bootstrap, self.names["policies.active"], on_change, guard=guard,
                                    on_refused=on_refused, trusted=trusted_keys(self.settings))
            await watcher.run()

    async def refused(self, topic: str, raw: bytes, exc: Exception) -> None:
        """Dead-letter a value of a control topic (models, policies.active) this worker refused."""
        dl = dead_letter(exc, topic=topic, partition=None, offset=None, value=raw, worker=self.worker_id)
        self.metrics.deadletters.labels(reason=dl.reason, topic=topic).inc()
        await self.emit([Output("deadletter", None, encode(dl))])

    async def _swap(self, det: OnnxDetector) -> None:
        # Flush what the old model owns first, so each window is scored by exactly one model.
        await self.drain(self.engine.tick())
        self.engine.swap(det)

    async def handle(self, message: Any, value: bytes | None) -> None:
        self.metrics.messages_in.inc()
        part, offset, generation = message.partition, message.offset, self.generation
        self.last_offset[part] = offset
        good: Any  # FlowRows (FlowRecords where a value took the per-record path), or an Arrow table
        if is_arrow(getattr(message, "headers", None)):
            got = decode_flow_arrow(value or b"")
            errors, good, n = got.errors, got.table, len(got)
        else:
            errors, good = [], decode_flow_rows(value or b"")
            if getattr(good, "numeric", None) is None:  # some rows failed: split them off
                items, good = good, []
                for item in items:
                    (errors if isinstance(item, RecordError) else good).append(item)
            n = len(good)
        for err in errors:
            raw = value if err.index is None else record_json(err.item)
            await self.dead_letter(err, message, raw)
        if generation != self.generation or part not in self.assigned:
            # Given up while its dead letters went out: the partition's next owner reads it again.
            return
        if offset < self.replay_until.get(part, -1):
            self.metrics.flows_replayed.inc(n)
        # The ledger counts these flows from here until their windows are produced: a commit
        # never passes a message read and not yet windowed, and a hand-over windows what was
        # read before it closes the windows (`_hand_over`).
        token = self.ledger.consumed(part, offset, n * len(self.engine.windower.views))
        if n:
            self._unwindowed.append((good, token))
            self._unwindowed_flows += n
            if self._unwindowed_flows >= self.settings.coalesce_flows:
                self._window_unwindowed()
        if self.engine.due():
            await self.drain(self.engine.tick())

    def _window_unwindowed(self) -> bool:
        """Window the messages read and not windowed yet, in order, one push per run of
        JSON (FlowRows) or Arrow (Table) payloads; whether there were any."""
        parts = self._unwindowed
        if not parts:
            return False
        self._unwindowed, self._unwindowed_flows = [], 0
        for rows, run in groupby(parts, key=lambda p: isinstance(p[0], list)):
            same = list(run)
            self.metrics.push_messages.observe(len(same))
            (self.engine.ingest_many if rows else self.engine.ingest_arrow_many)(same)
        return True

    async def drain(self, outputs: list[Output]) -> None:
        """Produce what the engine just returned, then release its windows' flows to the ledger."""
        released = self.engine.take_released()
        await self.emit(outputs)
        self.ledger.release(released)

    async def commit(self) -> bool:
        """Commit, per partition, the offset before which every flow is in a produced window."""
        offsets = self.ledger.committable()
        self.metrics.messages_held.set(self.ledger.held())
        await self.save_read_marks()
        if not offsets:
            return True
        await self.app.producer.flush()  # the windows that released these offsets are on the broker
        ok = await self._commit(offsets)
        if ok:
            self.ledger.committed(offsets)
        self.metrics.offsets_committed.labels(outcome="ok" if ok else "failed").inc()
        return ok

    async def _commit(self, offsets: dict[int, int]) -> bool:
        # In the consumer's thread: faust runs aiokafka there.
        thread, topic = self.app.consumer._thread, self.names["flows"]

        async def in_thread() -> bool:
            consumer = thread._ensure_consumer()
            mine = consumer.assignment()
            todo = {TopicPartition(topic, p): off for p, off in offsets.items() if TopicPartition(topic, p) in mine}
            if todo:
                await consumer.commit(todo)
            return len(todo) == len(offsets)

        try:
            ok = bool(await thread.call_thread(in_thread))
        except KafkaError as exc:  # CommitFailedError in a rebalance, IllegalStateError, ...
            log.warning("offset commit failed (%s); the flows after the last commit will be read again", exc)
            return False
        return ok

    async def save_read_marks(self) -> None:
        marks = {p: max(self.ledger.consumed_up_to(p) or 0, self.replay_until.get(p, 0))
                 for p in self.ledger.partitions()}
        marks = {p: m for p, m in marks.items() if self._saved_marks.get(p) != m}
        try:
            await self.read_marks.save(marks)
            self._saved_marks.update(marks)
        except KafkaError as exc:  # telemetry for the next owner; the commit itself stands
            log.warning("read marks not saved (%s): a restart will not count its replays", exc)

    async def _on_assigned(self, sender: Any, assigned: Any, **_: Any) -> None:
        mine = {tp.partition for tp in assigned if tp.topic == self.names["flows"]}
        self.assigned = mine
        self.metrics.assigned_partitions.set(len(mine))
        if not mine:
            return
        try:
            self.replay_until = await self.read_marks.load(mine)
        except Exception as exc:  # the replay count is telemetry; never stop the assignment for it
            log.warning("read marks unavailable (%s): replays not counted", exc)
            self.replay_until = {}

    async def _on_revoked(self, sender: Any, revoked: Any, **_: Any) -> None:
        mine = {tp.partition for tp in revoked if tp.topic == self.names["flows"]}
        if mine:
            await self._hand_over(mine, "partitions revoked")

    async def _on_shutdown(self, sender: Any, **_: Any) -> None:
        await self._hand_over(set(self.assigned), "shutdown")
        await self.read_marks.stop()

    async def _hand_over(self, partitions: set[int], why: str) -> None:
        """Close and produce every open window, then commit, before the partitions go.

        The windows are scored a batch at a time with the loop free in between, so the
        consumer keeps fetching and heartbeating through a hand-over of many windows. A
        worker that was already dropped from the group (fenced: a stall outlasted its session)
        scores nothing: its partitions belong to another member, which reads those flows
        again from the last commit, and the quicker this one rejoins the better."""
        self.generation += 1
        self.assigned -= partitions
        held = self.ledger.held()
        if self._fenced():
            self._unwindowed, self._unwindowed_flows = [], 0
            dropped = self.engine.discard_all()
            self.metrics.handovers.labels(outcome="fenced").inc()
            log.warning("%s %s while fenced: %d open windows left to the next owner (%d messages)", why,
                        sorted(partitions), dropped, held)
        else:
            self._window_unwindowed()
            windows = self.engine.close_all(closed_by="revoke")
            while self.engine.pending:
                await self.drain(self.engine.score_pending())
                await asyncio.sleep(0)
            await self.drain(self.engine.final_alerts())
            ok = await self.commit()
            self.metrics.handovers.labels(outcome="ok" if ok else "commit_failed").inc()
            log.warning("%s %s: %d windows of %d messages closed and produced; commit %s", why,
                        sorted(partitions), windows, held, "ok" if ok else "FAILED")
        self.ledger.drop(partitions)
        for p in partitions:
            self.replay_until.pop(p, None)
            self._saved_marks.pop(p, None)

    def _fenced(self) -> bool:
        """Whether the group coordinator has forgotten this member (aiokafka resets the
        member id when a heartbeat or commit is answered UnknownMemberId or
        IllegalGeneration, and then rejoins: that rejoin is what revokes)."""
        try:
            consumer = self.app.consumer._thread._ensure_consumer()
            return consumer._coordinator.member_id == ""  # JoinGroupRequest.UNKNOWN_MEMBER_ID
        except Exception:  # no consumer yet, or a shutdown: not fenced, hand over normally
            return False

    async def dead_letter(self, exc: Exception, message: Any, raw: bytes | None) -> None:
        dl = dead_letter(exc, topic=message.topic, partition=message.partition, offset=message.offset,
                         value=raw, key=message.key, worker=self.worker_id)
        self.metrics.deadletters.labels(reason=dl.reason, topic=message.topic).inc()
        await self.emit([Output("deadletter", message.key, encode(dl))])

    async def emit(self, outputs: list[Output]) -> None:
        producer = self.app.producer
        for o in outputs:
            await producer.send(topic=self.names[o.topic], key=o.key, value=o.value, partition=None,
                                timestamp=None, headers=None)

    def observe_lag(self) -> None:
        try:
            consumer = self.app.consumer
            mine = [tp for tp in consumer.assignment() if tp.topic == self.names["flows"]]
            self.metrics.assigned_partitions.set(len(mine))
            owned = {str(tp.partition) for tp in mine}
            for part in self._lag_series - owned:  # a partition lost in a rebalance is not ours to report
                self.metrics.consumer_lag.remove(part)
            self._lag_series = owned
            for tp in mine:
                if tp.partition in self.last_offset:
                    hw = consumer.highwater(tp)
                    if hw is not None:
                        lag = max(0, hw - self.last_offset[tp.partition] - 1)
                        self.metrics.consumer_lag.labels(partition=str(tp.partition)).set(lag)
        except Exception as exc:  # lag is best-effort telemetry; never stop the worker for it
            log.debug("lag metric unavailable: %s", exc)

    def run(self) -> None:
        """Run until SIGINT/SIGTERM (faust's worker owns the event loop and signals)."""
        worker = faust.Worker(self.app, loglevel="WARNING", quiet=True, redirect_stdouts=False)
        if self.settings.gc_freeze:
            self.metrics.gc_frozen.set(freeze_startup())
        stop = watch_gc(self.metrics.gc_pause)
        try:
            worker.execute_from_commandline()
        finally:
            stop()


def detector_guard(bootstrap: str, attack_classes: list[str]) -> Any:
    """The guard a detector holds activations to: the brokers, loopback, what the node depends
    on (gateways, resolvers, NTP), its own addresses; discovery failures are warned, not fatal,
    so a node without iproute2 still guards the brokers and loopback."""
    from contracts.errors import EdgeloopError
    from streams.guard import Guard, discover_infrastructure, local_addresses

    infra: dict[str, str] = {}
    local: list[str] = []
    try:
        infra = discover_infrastructure()
        local = local_addresses()
    except EdgeloopError as exc:
        log.warning("guard: %s; protecting the brokers and loopback only", exc)
    return Guard.build(bootstrap=bootstrap, infrastructure=infra, local_addrs=local, attack_classes=attack_classes)

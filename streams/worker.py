"""The edge worker: a faust-streaming app that runs the detector engine on `flows`.

    $ edgeloop detect            # one worker; start more with the same group to scale out

One agent reads `flows` (raw bytes, decoded and validated by edgeloop itself so bad
input becomes a dead letter instead of a crash). A timer closes idle windows and flushes
inference batches that waited `batch_wait_ms`. A background task follows `models` and
hot-swaps verified bundles. Workers in one consumer group share the partitions.
"""
from __future__ import annotations

import logging
import time
from typing import Any

import faust
from prometheus_client import CollectorRegistry

from inference.bundle import Bundle, check_window
from inference.onnx_detector import OnnxDetector
from streams.deadletter import dead_letter
from streams.detector import DetectorConfig, EdgeDetector, Output
from streams.errors import RecordError
from streams.faust_transport import app_class
from streams.hotswap import ModelWatcher
from streams.metrics import EdgeMetrics
from streams.records import FlowRecord, decode_flows, encode, record_json
from streams.settings import Settings
from streams.topics import Topics

log = logging.getLogger("edgeloop.worker")


def faust_app(settings: Settings, bootstrap: str) -> faust.App:
    """The faust app with consumer timings that are stable on Tansu and Kafka under load."""
    app_cls = app_class(settings.fetch_max_wait_ms)
    return app_cls(
        settings.group_id, broker=f"kafka://{bootstrap}", value_serializer="raw", key_serializer="raw",
        web_enabled=False, topic_partitions=settings.partitions, topic_allow_declare=False,
        consumer_auto_offset_reset="earliest", broker_max_poll_interval=settings.max_poll_interval_s,
        broker_session_timeout=settings.session_timeout_s, broker_heartbeat_interval=settings.heartbeat_s,
        broker_rebalance_timeout=settings.rebalance_timeout_s, broker_request_timeout=settings.session_timeout_s + 10,
        producer_linger_ms=5, producer_max_batch_size=1 << 20, stream_wait_empty=False,
        producer_compression_type=settings.kafka_compression, logging_config=None)


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
        self.engine = EdgeDetector(OnnxDetector(bundle), cfg, self.metrics)
        self.app = faust_app(settings, bootstrap)
        self.last_offset: dict[int, int] = {}
        self._lag_series: set[str] = set()
        self.watcher = ModelWatcher(bootstrap, self.names["models"], self._swap,
                                    lambda: self.engine.model.version, self.metrics)
        self._wire()

    def _wire(self) -> None:
        app = self.app
        flows = app.topic(self.names["flows"], value_serializer="raw", key_serializer="raw", allow_empty=True)

        @app.agent(flows, name="edgeloop-detect")
        async def detect(stream: Any) -> None:
            async for event in stream.events():
                await self.handle(event.message, event.value)

        # Batches are also flushed as messages arrive; the timer covers quiet periods.
        interval = max(self.settings.batch_wait_ms / 1000.0, 0.05)

        @app.timer(interval=interval, name="edgeloop-tick")
        async def tick() -> None:
            await self.emit(self.engine.tick())

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

            watcher = PolicyWatcher(self.bootstrap, self.names["policies.active"], on_change)
            await watcher.run()

    async def _swap(self, det: OnnxDetector) -> None:
        # Flush what the old model owns first, so each window is scored by exactly one model.
        await self.emit(self.engine.tick())
        self.engine.swap(det)

    async def handle(self, message: Any, value: bytes | None) -> None:
        self.metrics.messages_in.inc()
        self.last_offset[message.partition] = message.offset
        good: list[FlowRecord] = []
        for item in decode_flows(value or b""):
            if isinstance(item, RecordError):
                raw = value if item.index is None else record_json(item.item)
                await self.dead_letter(item, message, raw)
            else:
                good.append(item)
        if good:
            self.engine.ingest(good)
        if self.engine.due():
            await self.emit(self.engine.tick())

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
        worker.execute_from_commandline()

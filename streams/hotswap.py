"""Model releases: publish one, and follow the `models` topic to hot-swap detectors.

Every detector reads `models` on its own (no consumer group, from the beginning: the
topic is compacted, so the last release is the one that counts). For each release it
loads the bundle at `uri`, checks the sha256 and the feature schema, and only then hands
the new OnnxDetector to the engine, which swaps it in between two batches.

    >>> publish_release(bootstrap, topics, bundle, reason="promoted")
"""
from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path
from typing import Awaitable, Callable

from inference.bundle import Bundle
from inference.onnx_detector import OnnxDetector
from streams.errors import BundleVerificationError, EdgeloopError, RecordError
from streams.metrics import EdgeMetrics
from streams.records import ModelRelease, decode, encode

log = logging.getLogger("edgeloop.hotswap")


def release_for(bundle: Bundle, reason: str = "") -> ModelRelease:
    return ModelRelease(version=bundle.version, sha256=bundle.sha256(), uri=str(Path(bundle.path).resolve()),
                        feature_schema_sha256=bundle.meta.features.get("sha256", ""),
                        class_names=bundle.class_names, released_ms=int(time.time() * 1000), reason=reason)


def publish_release(bootstrap: str, topic: str, bundle: Bundle, reason: str = "") -> ModelRelease:
    """Publish a release on the models topic (keyed by model name, for compaction)."""
    from kafka import KafkaProducer

    rel = release_for(bundle, reason)
    p = KafkaProducer(bootstrap_servers=bootstrap, acks="all")
    try:
        p.send(topic, key=bundle.meta.name.encode(), value=encode(rel)).get(timeout=15)
    finally:
        p.close()
    return rel


def load_release(rel: ModelRelease, threads: int = 1) -> OnnxDetector:
    """Load and verify the bundle a release points at; raises BundleVerificationError."""
    try:
        bundle = Bundle.load(rel.uri)
    except EdgeloopError as exc:
        raise BundleVerificationError(rel.version, f"cannot load {rel.uri}: {exc}") from exc
    if bundle.version != rel.version:
        raise BundleVerificationError(rel.version, f"bundle at {rel.uri} is version {bundle.version}")
    bundle.verify(expected_sha256=rel.sha256)
    if rel.feature_schema_sha256 != bundle.meta.features.get("sha256"):
        raise BundleVerificationError(rel.version, "release feature schema differs from bundle's")
    return OnnxDetector(bundle, threads=threads)


class ModelWatcher:
    """Follow the models topic and call `on_model` with each verified new detector."""

    def __init__(self, bootstrap: str, topic: str, on_model: Callable[[OnnxDetector], Awaitable[None] | None],
                 current_version: Callable[[], str], metrics: EdgeMetrics | None = None) -> None:
        self.bootstrap, self.topic, self.on_model = bootstrap, topic, on_model
        self.current_version, self.metrics = current_version, metrics
        self.refused: list[tuple[str, str]] = []

    async def handle(self, raw: bytes) -> None:
        try:
            rel = decode(ModelRelease, raw)
        except RecordError as exc:
            self._refuse("?", "bad_release", str(exc))
            return
        if rel.version == self.current_version():
            return
        try:
            det = await asyncio.to_thread(load_release, rel)
        except BundleVerificationError as exc:
            self._refuse(rel.version, "verification", exc.detail)
            return
        except EdgeloopError as exc:
            self._refuse(rel.version, "load", str(exc))
            return
        try:
            res = self.on_model(det)
            if asyncio.iscoroutine(res):
                await res
        except BundleVerificationError as exc:  # e.g. windows cut differently from the running model's
            self._refuse(rel.version, "verification", exc.detail)
            return
        log.warning("model swapped in: %s (%s)", rel.version, rel.reason or "release")

    def _refuse(self, version: str, reason: str, detail: str) -> None:
        self.refused.append((version, detail))
        log.error("model release %s refused (%s): %s", version, reason, detail)
        if self.metrics:
            self.metrics.model_swaps_refused.labels(reason=reason).inc()

    async def run(self) -> None:
        from streams.topics import follow_topic

        async def on_poll(values: list[bytes]) -> None:
            for raw in values:
                await self.handle(raw)

        await follow_topic(self.bootstrap, self.topic, on_poll)

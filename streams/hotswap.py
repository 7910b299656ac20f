"""Model releases: publish one, and follow the `models` topic to hot-swap detectors.

Every detector reads `models` on its own (no consumer group, from the beginning: the
topic is compacted, so the last release is the one that counts). A release names a bundle
by its content: the detector fetches `<model store>/<version>` (EDGELOOP_MODEL_STORE, by
default its registry), never a path from the record, checks that the bundle there is that
version with that sha256 and feature schema, and, with trusted keys configured
(EDGELOOP_TRUSTED_KEYS), that the release is signed by the key it names (`released_by`).
Only then does the engine get the new OnnxDetector, swapped in between two batches. A
release refused for any reason is dead-lettered with it and counted.

    >>> publish_release(bootstrap, topics.models, bundle, reason="promoted", key=SigningKey.load(path))
"""
from __future__ import annotations

import asyncio
import logging
import re
import time
from pathlib import Path
from typing import Any, Awaitable, Callable, Sequence

from contracts.errors import BundleVerificationError, EdgeloopError, RecordError
from contracts.records import ModelRelease, decode, encode
from contracts.window import SHAPE_RULES
from inference.bundle import Bundle
from inference.onnx_detector import OnnxDetector
from streams.kafka_security import kafka_python_options
from streams.metrics import EdgeMetrics
from streams.signing import SignatureRefused, SigningKey, TrustedKeys, sign_record

log = logging.getLogger("edgeloop.hotswap")
# A bundle version is its content address (inference.bundle): hex digits, nothing else, so
# it can name a directory and never a path out of the model store.
VERSION = re.compile(r"^[0-9a-f]{16,64}$")


class ReleaseRefused(RecordError):
    """A model release a detector will not swap in; `reason` is what the metric and the dead
    letter say: bad_release, bad_version, not_in_store, verification, load, or a signature
    reason (unsigned, unknown_signer, bad_signature, wrong_name)."""


def release_for(bundle: Bundle, reason: str = "", key: SigningKey | None = None) -> ModelRelease:
    """The release of `bundle`, signed by `key` (its name becomes `released_by`) when given."""
    rel = ModelRelease(version=bundle.version, sha256=bundle.sha256(), uri=str(Path(bundle.path).resolve()),
                       feature_schema_sha256=bundle.meta.features.get("sha256", ""),
                       class_names=bundle.class_names, released_ms=int(time.time() * 1000), reason=reason,
                       released_by=key.name if key else "")
    return sign_record(rel, key) if key else rel


def publish_release(bootstrap: str, topic: str, bundle: Bundle, reason: str = "",
                    key: SigningKey | None = None) -> ModelRelease:
    """Publish a release on the models topic (keyed by model name, for compaction). Detectors
    fetch the bundle from their model store by version, so it must be there (the registry)."""
    from kafka import KafkaProducer

    rel = release_for(bundle, reason, key)
    p = KafkaProducer(bootstrap_servers=bootstrap, **kafka_python_options(), acks="all")
    try:
        p.send(topic, key=bundle.meta.name.encode(), value=encode(rel)).get(timeout=15)
    finally:
        p.close()
    return rel


def load_release(rel: ModelRelease, store: Path, threads: int = 1, int8: bool = False,
                 shape_rules: str | Sequence[str] = SHAPE_RULES) -> OnnxDetector:
    """Fetch the bundle a release names from `store` by its version and verify it against the
    release; raises ReleaseRefused (reason `load` for a bundle without the int8 model `int8`
    asks for). The detector applies `shape_rules`, as the one it replaces did."""
    if not VERSION.fullmatch(rel.version):
        raise ReleaseRefused("bad_version", f"release version {rel.version[:80]!r} is not a content hash")
    path = Path(store) / rel.version
    if not (path / "bundle.json").is_file():
        raise ReleaseRefused("not_in_store", f"bundle {rel.version} is not in the model store {store}")
    try:
        bundle = Bundle.load(path)
        if bundle.version != rel.version:
            raise BundleVerificationError(rel.version, f"the store's {path} holds version {bundle.version}")
        bundle.verify(expected_sha256=rel.sha256)
        if rel.feature_schema_sha256 != bundle.meta.features.get("sha256"):
            raise BundleVerificationError(rel.version, "release feature schema differs from bundle's")
        return OnnxDetector(bundle, threads=threads, int8=int8, shape_rules=shape_rules)
    except BundleVerificationError as exc:
        raise ReleaseRefused("verification", exc.detail) from exc
    except EdgeloopError as exc:
        raise ReleaseRefused("load", f"cannot load {path}: {exc}") from exc


class ModelWatcher:
    """Follow the models topic and call `on_model` with each verified new detector; call
    `on_refused(raw, ReleaseRefused)` (a dead letter) for each release it will not use."""

    def __init__(self, bootstrap: str, topic: str, on_model: Callable[[OnnxDetector], Awaitable[None] | None],
                 current_version: Callable[[], str], metrics: EdgeMetrics | None = None, *,
                 store: Path, trusted: TrustedKeys | None = None,
                 on_refused: Callable[[bytes, RecordError], Awaitable[None] | None] | None = None,
                 int8: bool = False, shape_rules: str | Sequence[str] = SHAPE_RULES) -> None:
        self.bootstrap, self.topic, self.on_model = bootstrap, topic, on_model
        self.shape_rules = shape_rules
        self.current_version, self.metrics = current_version, metrics
        self.store, self.trusted, self.on_refused = Path(store), trusted, on_refused
        self.int8 = int8
        self.refused: list[tuple[str, str, str]] = []

    async def handle(self, raw: bytes) -> None:
        try:
            rel = decode(ModelRelease, raw)
        except RecordError as exc:
            await self._refuse(raw, "?", ReleaseRefused("bad_release", str(exc)))
            return
        if rel.version == self.current_version():
            return
        try:
            if self.trusted is not None:
                self.trusted.verify(rel)
            det = await asyncio.to_thread(load_release, rel, self.store, int8=self.int8,
                                          shape_rules=self.shape_rules)
            res = self.on_model(det)
            if asyncio.iscoroutine(res):
                await res
        except (ReleaseRefused, SignatureRefused) as exc:
            await self._refuse(raw, rel.version, exc)
            return
        except BundleVerificationError as exc:  # e.g. windows cut differently from the running model's
            await self._refuse(raw, rel.version, ReleaseRefused("verification", exc.detail))
            return
        log.warning("model swapped in: %s (%s%s)", rel.version, rel.reason or "release",
                    f", signed by {rel.released_by}" if rel.signature else "")

    async def _refuse(self, raw: bytes, version: str, exc: RecordError) -> None:
        self.refused.append((version, exc.reason, str(exc)))
        log.error("model release %s refused (%s): %s", version, exc.reason, exc)
        if self.metrics:
            self.metrics.model_swaps_refused.labels(reason=exc.reason).inc()
        if self.on_refused is not None:
            res = self.on_refused(raw, exc)
            if asyncio.iscoroutine(res):
                await res

    async def run(self) -> None:
        from streams.topics import follow_topic

        async def on_poll(values: list[bytes]) -> None:
            for raw in values:
                await self.handle(raw)

        await follow_topic(self.bootstrap, self.topic, on_poll)

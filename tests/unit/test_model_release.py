"""Model releases are signed and fetched by content hash (streams.hotswap.ModelWatcher): a
detector swaps in only a bundle from its own model store, named by the release's version,
matching its sha256 and schema, and, with trusted keys, signed by the key it names. Every
refusal has a reason, a count and a dead letter carrying the release."""
from __future__ import annotations

import asyncio

import pytest
from prometheus_client import CollectorRegistry

from contracts.records import encode
from inference.registry import Registry
from streams.hotswap import ModelWatcher, release_for
from streams.metrics import EdgeMetrics
from streams.signing import SigningKey, TrustedKeys, sign_record


@pytest.fixture()
def store(tmp_path, tiny_bundle):
    Registry(tmp_path / "store").add(tiny_bundle.path)
    return tmp_path / "store"


@pytest.fixture()
def keys(tmp_path):
    registry, mallory = SigningKey.generate("registry"), SigningKey.generate("mallory")
    registry.save(tmp_path / "trusted")               # only registry's .pub is trusted
    return registry, mallory, TrustedKeys.load(tmp_path / "trusted")


class Watch:
    """A ModelWatcher with a fake engine: what it swapped in, refused and dead-lettered."""

    def __init__(self, store, trusted=None, int8=False, shape_rules="flood_shape,repeat_shape") -> None:
        self.swapped, self.dead = [], []
        self.metrics = EdgeMetrics(CollectorRegistry())
        self.w = ModelWatcher("unused:9092", "models", self.swapped.append, lambda: "0" * 16, self.metrics,
                              store=store, trusted=trusted, on_refused=lambda raw, exc: self.dead.append((raw, exc)),
                              int8=int8, shape_rules=shape_rules)

    def send(self, value: bytes) -> str | None:
        asyncio.run(self.w.handle(value))
        return self.dead[-1][1].reason if self.dead else None

    def refused(self, reason: str) -> float:
        return self.metrics.registry.get_sample_value("edgeloop_model_swaps_refused_total", {"reason": reason}) or 0


def test_a_signed_release_of_a_stored_bundle_is_swapped_in(store, keys, tiny_bundle):
    registry, _, trusted = keys
    w = Watch(store, trusted)
    rel = release_for(tiny_bundle, "promoted", key=registry)
    assert rel.released_by == "registry" and rel.signer == registry.key_id
    assert w.send(encode(rel)) is None
    assert [d.version for d in w.swapped] == [tiny_bundle.version]
    assert str(w.swapped[0].bundle.path).startswith(str(store))   # fetched from the store


@pytest.mark.parametrize("case", ["unsigned", "unknown_signer", "bad_signature", "wrong_name"])
def test_signature_refusals_are_dead_lettered_with_their_reason(store, keys, tiny_bundle, case):
    registry, mallory, trusted = keys
    w = Watch(store, trusted)
    rel = {
        "unsigned": lambda: release_for(tiny_bundle),
        "unknown_signer": lambda: release_for(tiny_bundle, key=mallory),
        # signed, then pointed at other bytes: the signature no longer covers the record
        "bad_signature": lambda: release_for(tiny_bundle, key=registry).model_copy(update={"sha256": "f" * 64}),
        # mallory's key is not trusted; a trusted key signing a release that names someone else:
        "wrong_name": lambda: sign_record(release_for(tiny_bundle).model_copy(update={"released_by": "alice"}),
                                          registry),
    }[case]()
    value = encode(rel)
    assert w.send(value) == case
    assert w.swapped == [] and w.refused(case) == 1
    assert w.dead[0][0] == value                       # the release itself, for the dead letter


def test_without_trusted_keys_unsigned_releases_still_apply(store, tiny_bundle):
    w = Watch(store)
    assert w.send(encode(release_for(tiny_bundle))) is None and len(w.swapped) == 1


def test_a_release_is_never_loaded_from_its_uri_or_a_path_in_its_version(store, tiny_bundle,
                                                                          tiny_bundle_b):
    w = Watch(store)
    # tiny_bundle_b exists at its uri but is not in the store: refused, whatever the uri says
    assert w.send(encode(release_for(tiny_bundle_b))) == "not_in_store"
    traversal = release_for(tiny_bundle).model_copy(update={"version": "../store/" + tiny_bundle.version})
    assert w.send(encode(traversal)) == "bad_version"
    assert w.send(b"not a release") == "bad_release"
    assert w.swapped == []


def test_a_tampered_bundle_in_the_store_is_refused(store, tiny_bundle):
    path = store / tiny_bundle.version
    onnx = path / "model.onnx"
    onnx.write_bytes(onnx.read_bytes() + b"\0")
    w = Watch(store)
    assert w.send(encode(release_for(tiny_bundle))) == "verification"
    assert w.swapped == [] and w.refused("verification") == 1


def test_a_detector_serving_int8_refuses_a_release_without_an_int8_model(store, tiny_bundle):
    """EDGELOOP_INT8=1: a release whose bundle has no int8 model is refused (reason `load`,
    dead-lettered), not quietly served in fp32."""
    assert tiny_bundle.meta.int8 is None
    w = Watch(store, int8=True)
    assert w.send(encode(release_for(tiny_bundle))) == "load"
    assert w.swapped == [] and w.refused("load") == 1


def test_a_swapped_in_detector_applies_the_shape_rules_the_worker_was_told(store, tiny_bundle):
    """EDGELOOP_SHAPE_RULES holds across a hot swap: a release loads with the worker's rules,
    not the default ones."""
    w = Watch(store, shape_rules="flood_shape")
    assert w.send(encode(release_for(tiny_bundle))) is None
    assert w.swapped[0].shape_rules == ("flood_shape",)


def test_a_worker_serves_and_swaps_with_its_shape_rules(tmp_path, tiny_bundle):
    """The worker's first detector and its watcher (for every later release) both take
    EDGELOOP_SHAPE_RULES."""
    from streams.settings import Settings
    from streams.worker import EdgeWorker

    w = EdgeWorker(Settings(model=str(tiny_bundle.path), data_dir=tmp_path, shape_rules="repeat_shape"),
                   "127.0.0.1:9", tiny_bundle, CollectorRegistry())
    assert w.engine.model.shape_rules == ("repeat_shape",) and w.watcher.shape_rules == "repeat_shape"

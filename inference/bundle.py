"""A model bundle: an ONNX graph plus the JSON that says how to feed and read it.

Layout of a bundle directory:

    model.onnx          inputs "windows" [N, F, K] float32 and "mask" [N, K]; output "logits" [N, C]
    model.int8.onnx     optional statically quantised twin of model.onnx
    bundle.json         BundleMeta below: feature schema + normalisation, class names, K,
                        temperature, thresholds, metrics, sha256 of each ONNX file

The bundle's `version` is content-addressed: the first 16 hex digits of the sha256 over
the ONNX bytes and the canonical metadata (metrics excluded), so equal content means equal
version and any change means a new one.

    >>> b = Bundle.load("inference/default_bundle")
    >>> b.verify()            # raises BundleVerificationError on a hash/schema mismatch
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from contracts.errors import BundleVerificationError, ModelError
from contracts.window import WindowSpec
from inference.features import FeatureSchema, schema_sha256

BUNDLE_SCHEMA = "edgeloop.bundle/1"
META_FILE = "bundle.json"
DEFAULT_BUNDLE_DIR = Path(__file__).parent / "default_bundle"


class OnnxFile(BaseModel):
    file: str
    sha256: str


class Thresholds(BaseModel):
    """Below `confidence`, with an OOD score above `ood`, with a flow beyond `support`, or
    called benign while an ensemble member's p(benign) is under `member_benign`, a window is
    uncertain."""

    confidence: float = Field(0.8, ge=0, le=1)
    # None: no out-of-distribution gate (JSON has no infinity).
    ood: float | None = None
    # Optional per-class confidence floors (policies can raise these).
    per_class: dict[str, float] = Field(default_factory=dict)
    # Per protocol, the largest single flow of training (log1p packets and bytes, plus a
    # margin): a window with a flow beyond it is out of distribution (inference.support).
    # Empty: no such gate (bundles made before it).
    support: dict[str, dict[str, float]] = Field(default_factory=dict)
    # An ensemble's benign call needs every member's calibrated p(benign) at or above this
    # (the graph's "member_logits" output); below it the window is uncertain: the members
    # disagree, as they do on what none of them learned. None: no such gate.
    member_benign: float | None = Field(None, ge=0, le=1)


def check_window(bundle: "Bundle", k: int, seconds: float, views: Any, *, follow: bool = False) -> WindowSpec:
    """The window spec to run `bundle` with: its own, when the settings agree or `follow`
    is set; otherwise BundleVerificationError naming both (train/serve skew: a model fed
    windows cut another way scores inputs it never saw)."""
    spec = bundle.meta.window
    asked = WindowSpec(k=k, seconds=seconds, key=list(views)[0], views=list(views))
    if follow or spec.same_cut(asked):
        return spec
    raise BundleVerificationError(
        bundle.version or str(bundle.path),
        f"window spec {spec.describe()} differs from the settings' {asked.describe()} "
        "(EDGELOOP_WINDOW_K/_SECONDS/_VIEWS); set them to the bundle's, or "
        "EDGELOOP_FOLLOW_BUNDLE_WINDOW=true to run with the bundle's")


class BundleMeta(BaseModel):
    model_config = ConfigDict(extra="allow", populate_by_name=True)

    schema_: str = Field(BUNDLE_SCHEMA, alias="schema")
    name: str = "edgeloop-cnn"
    version: str = ""
    created_ms: int = 0
    class_names: list[str]
    benign_class: str = "benign"
    window: WindowSpec = Field(default_factory=WindowSpec)
    features: dict[str, Any]
    temperature: float = Field(1.0, gt=0)
    thresholds: Thresholds = Field(default_factory=Thresholds)
    onnx: OnnxFile
    int8: OnnxFile | None = None
    metrics: dict[str, Any] = Field(default_factory=dict)
    training: dict[str, Any] = Field(default_factory=dict)


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def content_version(meta: BundleMeta) -> str:
    """Content address: hash of the ONNX hashes plus metadata, ignoring version/metrics."""
    d = meta.model_dump(by_alias=True, exclude={"version", "metrics", "created_ms"})
    if d["window"].get("views") == ["src"]:  # bundles from before views keep their version
        del d["window"]["views"]
    if not d["thresholds"].get("support"):  # nor do bundles from before the flow-support gate
        d["thresholds"].pop("support", None)
    if d["thresholds"].get("member_benign") is None:  # nor those without the member gate
        d["thresholds"].pop("member_benign", None)
    blob = json.dumps(d, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


@dataclass
class Bundle:
    path: Path
    meta: BundleMeta

    @classmethod
    def load(cls, path: str | Path) -> "Bundle":
        path = Path(path)
        try:
            meta = BundleMeta.model_validate_json((path / META_FILE).read_bytes())
        except FileNotFoundError as exc:
            raise ModelError(f"no {META_FILE} in {path}") from exc
        except ValueError as exc:
            raise ModelError(f"{path / META_FILE} is not a valid bundle: {exc}") from exc
        return cls(path, meta)

    @property
    def version(self) -> str:
        return self.meta.version

    @property
    def feature_schema(self) -> FeatureSchema:
        return FeatureSchema.from_json(self.meta.features)

    @property
    def class_names(self) -> list[str]:
        return self.meta.class_names

    def onnx_path(self, int8: bool = False) -> Path:
        if int8:
            if self.meta.int8 is None:
                raise ModelError(f"bundle {self.version} has no int8 model")
            return self.path / self.meta.int8.file
        return self.path / self.meta.onnx.file

    def sha256(self) -> str:
        return self.meta.onnx.sha256

    def verify(self, expected_sha256: str | None = None) -> None:
        """Check file hashes, content version and that this code computes its features."""
        v = self.version or str(self.path)
        for spec in filter(None, (self.meta.onnx, self.meta.int8)):
            f = self.path / spec.file
            if not f.is_file():
                raise BundleVerificationError(v, f"missing {spec.file}")
            if sha256_file(f) != spec.sha256:
                raise BundleVerificationError(v, f"{spec.file} sha256 mismatch")
        if expected_sha256 and expected_sha256 != self.meta.onnx.sha256:
            raise BundleVerificationError(v, "release sha256 does not match bundle")
        if content_version(self.meta) != self.version:
            raise BundleVerificationError(v, "metadata changed since the bundle was written")
        fs = self.meta.features
        if fs.get("sha256") != schema_sha256(fs.get("names", ()), fs.get("version", -1)):
            raise BundleVerificationError(v, "feature schema hash does not match its names")
        if fs.get("sha256") != schema_sha256():
            raise BundleVerificationError(v, "feature schema differs from this detector's")
        if len(fs.get("mean", ())) != len(fs.get("names", ())):
            raise BundleVerificationError(v, "normalisation statistics do not match features")


def write_bundle(out_dir: str | Path, onnx_bytes: bytes, meta: BundleMeta,
                 int8_bytes: bytes | None = None) -> Bundle:
    """Write model(s) and metadata, filling in hashes and the content version."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "model.onnx").write_bytes(onnx_bytes)
    meta.onnx = OnnxFile(file="model.onnx", sha256=hashlib.sha256(onnx_bytes).hexdigest())
    if int8_bytes is not None:
        (out / "model.int8.onnx").write_bytes(int8_bytes)
        meta.int8 = OnnxFile(file="model.int8.onnx", sha256=hashlib.sha256(int8_bytes).hexdigest())
    meta.version = content_version(meta)
    (out / META_FILE).write_text(meta.model_dump_json(by_alias=True, indent=2))
    return Bundle(out, meta)

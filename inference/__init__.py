"""The detector model: features, bundle, registry, ONNX Runtime scoring, training, evaluation.

Edge installs use the ONNX side only; training names import torch when first used.
"""
from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "FeatureSchema": "inference.features", "FEATURE_NAMES": "inference.features",
    "Bundle": "inference.bundle", "BundleMeta": "inference.bundle", "write_bundle": "inference.bundle",
    "Registry": "inference.registry", "resolve_bundle": "inference.registry",
    "OnnxDetector": "inference.onnx_detector",
    "train_bundle": "inference.train", "train_windows": "inference.train",
    "evaluate_bundle": "inference.evaluate",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'inference' has no attribute {name!r}")

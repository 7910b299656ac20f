"""edgeloop's streaming side: topics, broker, sources, the edge detector (records from `contracts`,
windows from `inference`).

The public surface is re-exported here; heavy modules (faust, kafka clients) load only
when one of their names is first used.
"""
from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "Settings": "streams.settings", "load_settings": "streams.settings",
    "EdgeloopError": "contracts.errors", "RecordError": "contracts.errors", "ConfigError": "contracts.errors",
    "FlowRecord": "contracts.records", "Detection": "contracts.records", "Alert": "contracts.records",
    "UncertainWindow": "contracts.records", "Label": "contracts.records", "ModelRelease": "contracts.records",
    "DeadLetter": "contracts.records", "decode_flows": "contracts.records", "encode": "contracts.records",
    "Topics": "streams.topics", "ensure_topics": "streams.topics",
    "EmbeddedBroker": "streams.broker", "Windower": "inference.windowing", "windows_from_frame": "inference.windowing",
    "EdgeDetector": "streams.detector", "DetectorConfig": "streams.detector", "EdgeWorker": "streams.worker",
    "FlowPublisher": "streams.producer", "load_flows": "streams.sources.files", "score_frame": "streams.score",
    "EdgeMetrics": "streams.metrics", "publish_release": "streams.hotswap",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'streams' has no attribute {name!r}")

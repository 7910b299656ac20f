"""edgeloop's streaming side: records, topics, broker, sources, windowing, the edge detector.

The public surface is re-exported here; heavy modules (faust, kafka clients) load only
when one of their names is first used.
"""
from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "Settings": "streams.settings", "load_settings": "streams.settings",
    "EdgeloopError": "streams.errors", "RecordError": "streams.errors", "ConfigError": "streams.errors",
    "FlowRecord": "streams.records", "Detection": "streams.records", "Alert": "streams.records",
    "UncertainWindow": "streams.records", "Label": "streams.records", "ModelRelease": "streams.records",
    "DeadLetter": "streams.records", "decode_flows": "streams.records", "encode": "streams.records",
    "Topics": "streams.topics", "ensure_topics": "streams.topics",
    "EmbeddedBroker": "streams.broker", "Windower": "streams.windowing", "windows_from_frame": "streams.windowing",
    "EdgeDetector": "streams.detector", "DetectorConfig": "streams.detector", "EdgeWorker": "streams.worker",
    "FlowPublisher": "streams.producer", "load_flows": "streams.sources.files", "score_frame": "streams.score",
    "EdgeMetrics": "streams.metrics", "publish_release": "streams.hotswap",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'streams' has no attribute {name!r}")

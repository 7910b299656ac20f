"""Real uncertain windows: what the edge would send the agent from a capture.

    >>> wins = uncertain_windows(Path("data/lab/eval.parquet"), limit=10, audit=0.02)

The capture goes through the edge engine with the shipped bundle; the uncertain windows
and the audit sample of confident ones come out as the `uncertain` topic carries them.
The flows keep their `label` (the truth, for a test or a benchmark); the agent's Decider
strips it before anything reaches a model.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd


def uncertain_windows(path: Path, limit: int | None = None, audit: float = 0.0,
                      split: str | None = None) -> list[Any]:
    """Every uncertain window of the capture at `path` (Parquet flows), or `limit` of them
    spread evenly; `split` keeps the rows of one `split` value (the nDPI halves)."""
    from contracts.records import UncertainWindow
    from inference.bundle import DEFAULT_BUNDLE_DIR, Bundle
    from inference.onnx_detector import OnnxDetector
    from streams.detector import DetectorConfig, EdgeDetector
    from streams.sources.files import records_from_frame

    df = pd.read_parquet(path)
    if split is not None and "split" in df.columns:
        df = df[df["split"] == split]
    records, _ = records_from_frame(df)
    eng = EdgeDetector(OnnxDetector(Bundle.load(DEFAULT_BUNDLE_DIR)),
                       DetectorConfig(uncertain_rate_per_s=0, audit_sample=audit))
    out = []
    for i in range(0, len(records), 5000):
        eng.ingest(records[i:i + 5000])
        while eng.pending:
            out += eng.score_pending()
    eng.pending.extend(eng.windower.flush())
    while eng.pending:
        out += eng.score_pending()
    wins = [UncertainWindow.model_validate_json(o.value) for o in out if o.topic == "uncertain"]
    if limit is None or len(wins) <= limit:
        return wins
    step = max(1, len(wins) // limit)
    return wins[::step][:limit]

"""Offline scoring, like `suricata -r`: the edge's windowing and inference over a file.

    $ edgeloop score capture.pcap -o verdicts.parquet

Runs the very same EdgeDetector engine as the stream (same windows, same ids, same
model code), with no broker. One row per window.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
import pandas as pd

from inference.bundle import Bundle
from inference.onnx_detector import OnnxDetector
from inference.windowing import window_label
from streams.detector import DetectorConfig, EdgeDetector
from streams.sources.files import records_from_frame

CHUNK = 500  # the replay's batch size, so batches close windows in the same order


@dataclass
class ScoreResult:
    windows: pd.DataFrame
    bad_rows: list[tuple[int, Exception]] = field(default_factory=list)
    class_names: list[str] = field(default_factory=list)


def detector_for(bundle: Bundle, int8: bool = False, shape_rules: str | None = None) -> OnnxDetector:
    """The detector a worker with these settings would serve: the shape rules it applies are
    `shape_rules`, else EDGELOOP_SHAPE_RULES (streams.settings), so a capture scored or judged
    offline gets the verdicts the edge would give it."""
    if shape_rules is None:
        from streams.settings import Settings

        shape_rules = Settings().shape_rules
    return OnnxDetector(bundle, int8=int8, shape_rules=shape_rules)


def score_frame(df: pd.DataFrame, bundle: Bundle, config: DetectorConfig = DetectorConfig(),
                model: OnnxDetector | None = None) -> ScoreResult:
    """Score every window of a flow DataFrame; bad rows are reported, not scored.

    One frame is one capture (host history runs through it). Pass `model` (an
    OnnxDetector of `bundle`) to score many captures without loading the model each time;
    without one, `detector_for(bundle)` (the shape rules EDGELOOP_SHAPE_RULES names).
    """
    records, bad = records_from_frame(df)
    model = model or detector_for(bundle)
    rows: list[dict[str, Any]] = []
    truth: dict[str, str] = {}

    def collect(dets: list[Any]) -> None:  # DetectionRows
        rows.extend(msgspec.structs.asdict(d) for d in dets)

    eng = EdgeDetector(model, config, on_scored=collect)
    for i in range(0, len(records), CHUNK):
        chunk = records[i:i + CHUNK]
        closed_before = len(eng.pending)
        eng.ingest(chunk)
        for w in eng.pending[closed_before:]:
            _truth(w, truth)
        while len(eng.pending) >= config.batch_max:
            eng.score_pending()
    tail = eng.windower.flush()
    for w in tail:
        _truth(w, truth)
    eng.pending.extend(tail)
    while eng.pending:
        eng.score_pending()
    out = pd.DataFrame(rows)
    if len(out):
        out.insert(3, "n_flows", out["flow_ids"].map(len))
        for j, c in enumerate(model.class_names):
            out[f"p_{c}"] = out["probabilities"].map(lambda p, j=j: p[j])
        if truth:
            out["label"] = out["window_id"].map(truth)
    return ScoreResult(out, bad, model.class_names)


def write_windows(df: pd.DataFrame, path: str | Path) -> Path:
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    if p.suffix in {".jsonl", ".ndjson", ".json"}:
        df.to_json(p, orient="records", lines=True)
    else:
        df.to_parquet(p, index=False)
    return p


def summary(df: pd.DataFrame) -> pd.DataFrame:
    """Per predicted class: windows, uncertain, mean confidence (and recall vs label if known)."""
    if df.empty:
        return pd.DataFrame(columns=["predicted", "windows", "uncertain", "mean_confidence"])
    g = df.groupby("predicted").agg(windows=("window_id", "size"), uncertain=("uncertain", "sum"),
                                    mean_confidence=("confidence", "mean")).reset_index()
    if "label" in df.columns:
        lab = df.dropna(subset=["label"])
        rec = (lab.assign(hit=lab["label"] == lab["predicted"]).groupby("label")["hit"].mean())
        g["recall_as_label"] = g["predicted"].map(rec)
    return g


def _truth(w: Any, truth: dict[str, str]) -> None:
    """The window's label from its flows' `label` fields (read as a column), when any has one."""
    labels = w.column("label")
    if any(labels):
        truth[w.window_id] = window_label(labels)

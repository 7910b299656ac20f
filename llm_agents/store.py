"""The dataset store: labelled windows as flow rows in append-only Parquet parts.

    <data_dir>/datasets/
        manifest.json                  the parts that count, replaced atomically
        reference/part-000001-<h>.parquet    real labelled training data (e.g. the lab capture)
        labelled/part-000002-<h>.parquet     windows labelled by the agent or a person
        synthetic/part-000003-<h>.parquet    synthetic windows the synthesizer kept

Every part is a *window frame* (see `llm_agents.window_frames`): one row per flow, in
window order, with FlowRecord columns plus

    window_id      the edge's deterministic window id
    label          the class the window was labelled with
    provenance     where the samples came from: "real", "llm:<model>", "stat:kde"
    label_source   where the label came from: "llm:<model>", "human:<who>",
                   "dataset:<name>", "synthesizer"
    confidence     the labeller's confidence (1.0 for a person or a dataset)
    model_version  the detector version that sent the window (real windows)
    added_ms       when the part was written
    view           the window's view ("src", "dst", "pair")
    h10_flows ...  the host history the detector saw with each flow
                   (inference.history.HISTORY_FEATURES; empty for synthetic windows)

A window id is stored at most once across reference and labelled windows: appending one
that is already there is skipped and reported, so a redelivered window cannot be counted
twice. A part file that is not in the manifest (a crash between writing it and updating
the manifest) is ignored and removed by the next append. Ground truth that travels with
flows (`FlowRecord.label`) never enters the store: `window_rows` drops it.

    >>> store = DatasetStore(settings.data_dir / "datasets")
    >>> store.append("labelled", window_rows(w, "syn_scan", label_source="llm:m", confidence=0.9))
    >>> store.frame(("reference", "labelled"))          # a window frame
"""
from __future__ import annotations

import fcntl
import hashlib
import io
import json
import os
import re
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import numpy as np
import pandas as pd

from contracts.records import FLOW_FIELDS, UncertainWindow
from inference.features import flow_features, raw_matrix_from_frame
from inference.history import HISTORY_FEATURES
from llm_agents.audit import now_ms
from llm_agents.window_frames import window_starts, windows_frame

KINDS = ("reference", "labelled", "synthetic")
REAL_KINDS = ("reference", "labelled")
# Label sources that count as truth in the promotion gate's holdout: a person, a dataset's
# own labels (the lab's spans, a public capture's), the operator's site baseline. An LLM's
# label ("llm:<model>") trains a challenger but never judges one.
TRUTH_SOURCES = ("human:", "dataset:", "baseline:")
HOLDOUT_FRACTION = 0.2
MANIFEST = "manifest.json"
MANIFEST_SCHEMA = "edgeloop.dataset_manifest/1"
# Flow columns kept in the store: FlowRecord minus ground truth and transport timing.
FLOW_COLUMNS = tuple(c for c in FLOW_FIELDS if c not in ("label", "produced_ms"))
META_COLUMNS = ("window_id", "label", "provenance", "label_source", "confidence",
                "model_version", "added_ms", "view")
COLUMNS = FLOW_COLUMNS + HISTORY_FEATURES + META_COLUMNS
_FLOW_SET = set(FLOW_COLUMNS)


def holdout_mask(window_ids: Sequence[str], fraction: float = HOLDOUT_FRACTION,
                 salt: str = "holdout") -> np.ndarray:
    """True for held-out windows: a stable hash of the id, so a window never changes side.
    The agent asks a person to verify an accepted LLM label on this side (reason `verify`),
    and the retrainer judges challengers on it."""
    h = [int.from_bytes(hashlib.blake2b(f"{salt}|{w}".encode(), digest_size=8).digest(), "big")
         for w in window_ids]
    return np.array(h, dtype=np.float64) / 2.0**64 < fraction


def is_truth(label_sources: Sequence[str]) -> np.ndarray:
    """True where a label came from a person, a dataset or the site baseline (TRUTH_SOURCES)."""
    return np.array([str(s).startswith(TRUTH_SOURCES) for s in label_sources], dtype=bool)


@dataclass(frozen=True)
class AppendResult:
    part: str | None
    windows: int
    rows: int
    skipped: list[str]  # window ids already in the store


def window_rows(window: UncertainWindow, label: str, *, label_source: str, confidence: float,
                provenance: str = "real") -> pd.DataFrame:
    """One uncertain window as store rows; the flows' own `label` (ground truth) is dropped."""
    return windows_rows([(window, label, label_source, confidence)], provenance=provenance)


def windows_rows(entries: Sequence[tuple[UncertainWindow, str, str, float]],
                 provenance: str = "real") -> pd.DataFrame:
    """Many (window, label, label_source, confidence) as one frame, built in one pass."""
    rows: list[dict[str, Any]] = []
    for w, label, source, conf in entries:
        meta = {"window_id": w.window_id, "label": label, "provenance": provenance, "label_source": source,
                "confidence": float(conf), "model_version": w.model_version, "view": w.view}
        hist = w.history if len(w.history) == len(w.flows) else [[None] * len(HISTORY_FEATURES)] * len(w.flows)
        rows += [{**f.model_dump(include=_FLOW_SET), **dict(zip(HISTORY_FEATURES, h)), **meta}
                 for f, h in zip(w.flows, hist)]
    cols = [*FLOW_COLUMNS, *HISTORY_FEATURES, *(c for c in META_COLUMNS if c != "added_ms")]
    return pd.DataFrame(rows, columns=cols)


def reference_frame(flows: pd.DataFrame, *, classes: Iterable[str] | None = None, k: int = 8,
                    seconds: float = 10.0, key: str = "src", source: str = "lab",
                    views: Any = None) -> pd.DataFrame:
    """Real labelled flows cut into windows as the edge does; windows of other classes dropped.

    For seeding the store with the data the detector was trained on, so acceptance has
    labelled neighbours and retraining has the real training set.
    """
    frame = windows_frame(flows, k=k, seconds=seconds, key=key, views=views)  # type: ignore[arg-type]
    if classes is not None:
        frame = frame[frame["label"].isin(set(classes))]
    return frame.assign(label_source=f"dataset:{source}", confidence=1.0, model_version="")


VARIATION = "variation"   # provenance and label source of re-rendered attack runs


def variant_frame(flows: pd.DataFrame, *, copies: int, seed: int, classes: Iterable[str] | None = None,
                  k: int = 8, seconds: float = 10.0, key: str = "src", views: Any = None,
                  benign: str = "benign") -> pd.DataFrame:
    """`copies` re-rendered copies of every attack run in `flows` (inference.datasets.variation,
    as the shipped recipe trains), windowed as the edge does, for the store's `synthetic`
    part. Their flow ids are the real flows' ids plus `~v<copy>`, so a retrain can leave out
    every copy of a flow it holds out."""
    from inference.datasets.variation import run_variants

    extra = run_variants(flows, copies=copies, seed=seed, benign=benign)
    if not len(extra):
        return extra.iloc[0:0]
    frame = windows_frame(extra, k=k, seconds=seconds, key=key, views=views, provenance=VARIATION,  # type: ignore[arg-type]
                          benign=benign)
    if classes is not None:
        frame = frame[frame["label"].isin(set(classes))]
    return frame.assign(label_source=VARIATION, confidence=1.0, model_version="")


def variant_origins(frame: pd.DataFrame) -> pd.Series:
    """Per row, the id of the real flow a re-rendered flow was copied from (else its own id)."""
    from inference.datasets.variation import COPY_MARK

    return frame["flow_id"].astype(str).str.replace(re.escape(COPY_MARK) + r"\d+$", "", regex=True)


class DatasetStore:
    """Append-only window store; safe to share between threads and processes."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self._cache: dict[str, pd.DataFrame] = {}
        self._vectors: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
        self._index: dict[str, dict[str, dict[str, Any]]] = {}
        self._mlock = threading.Lock()

    # Writing -----------------------------------------------------------------------------

    def append(self, kind: str, frame: pd.DataFrame, note: str = "") -> AppendResult:
        """Add a window frame as one part; windows already stored are skipped."""
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
        frame = _conform(frame)
        with self._file_lock():
            manifest = self.manifest()
            scope = REAL_KINDS if kind in REAL_KINDS else (kind,)
            have = self.window_ids(scope)
            ids = frame["window_id"].astype(str)
            skipped = sorted(set(ids[ids.isin(have)]))
            new = frame[~ids.isin(have)].reset_index(drop=True)
            if new.empty:
                return AppendResult(None, 0, 0, skipped)
            seq = int(manifest["seq"]) + 1
            new = new.assign(added_ms=now_ms())
            data = _parquet_bytes(new)
            digest = hashlib.sha256(data).hexdigest()
            rel = f"{kind}/part-{seq:06d}-{digest[:12]}.parquet"
            _atomic_write(self.root / rel, data)
            windows = new.drop_duplicates("window_id")
            manifest["seq"] = seq
            manifest["parts"].append({
                "file": rel, "kind": kind, "rows": len(new), "windows": len(windows),
                "sha256": digest, "created_ms": now_ms(), "note": note,
                "labels": {str(k): int(v) for k, v in windows["label"].value_counts().items()},
                "provenance": {str(k): int(v) for k, v in windows["provenance"].value_counts().items()}})
            _atomic_write(self.root / MANIFEST, json.dumps(manifest, indent=1).encode())
            self._remove_orphans(manifest)
        return AppendResult(rel, len(windows), len(new), skipped)

    @contextmanager
    def _file_lock(self) -> Iterator[None]:
        with self._mlock, open(self.root / ".lock", "a+") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def _remove_orphans(self, manifest: dict[str, Any]) -> None:
        listed = {p["file"] for p in manifest["parts"]}
        for kind in KINDS:
            for f in (self.root / kind).glob("part-*.parquet"):
                if f"{kind}/{f.name}" not in listed:
                    f.unlink(missing_ok=True)

    # Reading -----------------------------------------------------------------------------

    def manifest(self) -> dict[str, Any]:
        f = self.root / MANIFEST
        if not f.is_file():
            return {"schema": MANIFEST_SCHEMA, "seq": 0, "parts": []}
        return json.loads(f.read_text())

    @property
    def seq(self) -> int:
        """Grows with every append: a cheap way to tell whether anything changed."""
        return int(self.manifest()["seq"])

    def parts(self, kinds: Sequence[str] = KINDS) -> list[dict[str, Any]]:
        return [p for p in self.manifest()["parts"] if p["kind"] in kinds]

    def _part(self, rel: str, cache: bool = True) -> pd.DataFrame:
        df = self._cache.get(rel)
        if df is None:
            df = pd.read_parquet(self.root / rel)
            if cache:
                self._cache[rel] = df
        return df

    def frame(self, kinds: Sequence[str] = KINDS, cache: bool = True) -> pd.DataFrame:
        """Every stored window of these kinds, as one window frame (parts in order).
        `cache=False` reads parts not already in memory without keeping them: the
        synthetic part (re-rendered attack runs, some 200 MB as a frame) is read once per
        retrain, and an agent that kept it would carry it between retrains."""
        frames = [self._part(p["file"], cache) for p in self.parts(kinds)]
        if not frames:
            return pd.DataFrame(columns=list(COLUMNS))
        return pd.concat(frames, ignore_index=True)

    def _part_index(self, rel: str, kind: str) -> dict[str, dict[str, Any]]:
        """window_id -> what `lookup` reports, per part (parts never change, so built once)."""
        idx = self._index.get(rel)
        if idx is None:
            df = self._part(rel, cache=kind in REAL_KINDS).drop_duplicates("window_id")
            cols = [df[c].tolist() for c in ("window_id", "label", "label_source", "confidence", "provenance")]
            idx = {w: {"kind": kind, "label": y, "label_source": src, "confidence": float(c), "provenance": pv}
                   for w, y, src, c, pv in zip(*cols)}
            self._index[rel] = idx
        return idx

    def window_ids(self, kinds: Sequence[str] = KINDS) -> set[str]:
        return {w for p in self.parts(kinds) for w in self._part_index(p["file"], p["kind"])}

    def lookup(self, window_ids: Iterable[str], kinds: Sequence[str] = REAL_KINDS) -> dict[str, dict[str, Any]]:
        """For stored windows among `window_ids`: kind, label, label_source, confidence."""
        want, out = list(window_ids), {}
        for p in self.parts(kinds):
            idx = self._part_index(p["file"], p["kind"])
            out.update({w: idx[w] for w in want if w in idx and w not in out})
        return out

    def counts(self) -> dict[str, dict[str, int]]:
        """Windows per label, per kind."""
        out: dict[str, dict[str, int]] = {k: {} for k in KINDS}
        for p in self.parts():
            for label, n in p["labels"].items():
                out[p["kind"]][label] = out[p["kind"]].get(label, 0) + n
        return out

    def evidence(self, kinds: Sequence[str] = REAL_KINDS) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(vectors [n, 2F], labels [n], window ids [n]) of stored windows for acceptance.

        Vectors are `acceptance.window_vector`: mean and max of each flow feature.
        """
        parts = [self._part_vectors(p["file"]) for p in self.parts(kinds)]
        if not parts:
            return np.zeros((0, 0)), np.zeros(0, dtype=object), np.zeros(0, dtype=object)
        return (np.vstack([v for v, _, _ in parts]), np.concatenate([y for _, y, _ in parts]),
                np.concatenate([i for _, _, i in parts]))

    def _part_vectors(self, rel: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if rel not in self._vectors:
            df = self._part(rel)
            self._vectors[rel] = (frame_vectors(df), *_window_meta(df))
        return self._vectors[rel]


def frame_vectors(df: pd.DataFrame) -> np.ndarray:
    """`acceptance.window_vector` for every window of a window frame, vectorised: [n, 2F]."""
    start, ordinal, _ = window_starts(df)
    feats = flow_features(raw_matrix_from_frame(df)).astype(np.float64)
    if not len(feats):
        return np.zeros((0, 2 * feats.shape[1]))
    idx = np.flatnonzero(start)
    counts = np.bincount(ordinal).astype(np.float64)[:, None]
    mean = np.add.reduceat(feats, idx, axis=0) / counts
    return np.hstack([mean, np.maximum.reduceat(feats, idx, axis=0)])


def _window_meta(df: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    start, _, _ = window_starts(df)
    return df["label"].astype(str).to_numpy()[start], df["window_id"].astype(str).to_numpy()[start]


def _conform(frame: pd.DataFrame) -> pd.DataFrame:
    """The store's columns, in order; missing metadata filled, anything else dropped."""
    missing = [c for c in ("window_id", "label", "provenance") if c not in frame.columns]
    if missing:
        raise ValueError(f"a window frame needs columns {missing}")
    out = frame.copy()
    defaults = {"label_source": "", "confidence": 1.0, "model_version": "", "added_ms": 0,
                "sensor": "", "application_name": "", "requested_server_name": "", "user_agent": "",
                "view": "src", **{h: np.nan for h in HISTORY_FEATURES}}
    for c, v in defaults.items():
        if c not in out.columns:
            out[c] = v
    absent = [c for c in FLOW_COLUMNS if c not in out.columns]
    if absent:
        raise ValueError(f"a window frame needs flow columns {absent}")
    window_starts(out)  # raises when a window's rows are not contiguous
    for c in ("sensor", "application_name", "requested_server_name", "user_agent", "flow_id",
              "src_ip", "dst_ip", "window_id", "label", "provenance", "label_source", "model_version"):
        out[c] = out[c].fillna("").astype(str)
    out["view"] = out["view"].fillna("src").astype(str)
    for h in HISTORY_FEATURES:
        out[h] = pd.to_numeric(out[h], errors="coerce").astype("float64")
    return out.loc[:, list(COLUMNS)].reset_index(drop=True)


def _parquet_bytes(df: pd.DataFrame) -> bytes:
    buf = io.BytesIO()
    df.to_parquet(buf, index=False)
    return buf.getvalue()


def _atomic_write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)

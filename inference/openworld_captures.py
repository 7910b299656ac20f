"""Turn manifest entries into captures, and captures into labelled flow frames.

One entry can stand for many captures (a glob; a table with a `capture_column`). Each
capture is loaded on its own, since host history and windows run over one capture only.
A capture that cannot be loaded is not dropped: it carries one reason out of `REASONS`
and a detail, and the report counts it.

    >>> caps = expand(entry)               # [Capture], in a stable order
    >>> got = caps[0].load()               # Loaded(flows=DataFrame | None, reason, detail, meter)
"""
from __future__ import annotations

import glob as globlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from contracts.errors import SourceError
from contracts.records import FLOW_FIELDS
from inference.openworld_manifest import Entry
from inference.openworld_meter import CAPTURE_SUFFIXES, FAILURE_REASONS, meter_capture

REASONS = {
    **FAILURE_REASONS,
    "no_match": "the glob matched no file",
    "unreadable_table": "the flow table could not be read",
    "missing_columns": "the flow table lacks FlowRecord columns (or the capture column)",
    "no_split_column": "`split` given but the table has no `split` column",
    "no_rows": "no flow left after the split filter",
    "no_labels": "scope = labels, but no labels file and no `label` column",
    "bad_labels": "the labels file could not be read or applied",
    "no_windows": "no valid flow rows, so no window to score",
}
TABLE_SUFFIXES = (".csv", ".parquet", ".jsonl", ".ndjson")
_REQUIRED = ("flow_id", "first_seen_ms", "last_seen_ms", "src_ip", "dst_ip", "protocol", "packets")


@dataclass
class Loaded:
    """A capture's flows (None when it failed), why not, and the metering record of a pcap."""

    flows: Any = None
    reason: str | None = None
    detail: str = ""
    meter: dict[str, Any] | None = None
    # Per attack label, the (view, key) pairs that carry it (lab spans): see judge_windows.
    principals: dict[str, set[tuple[str, str]]] | None = None
    # Per (label, view, key) of the principals, when its runs went on (lab spans).
    periods: dict[tuple[str, str, str], list[tuple[float, float]]] | None = None
    # Per destination, the start times of attack flows to it (sorted): who was under attack.
    attacked: dict[str, Any] | None = None


@dataclass
class Capture:
    """One capture to score: its entry, a stable name, where it comes from, how to load it."""

    entry: Entry
    name: str
    source: str
    loader: Callable[[], Loaded] = field(repr=False, default=lambda: Loaded())

    def load(self) -> Loaded:
        return self.loader()


def _failed(reason: str, detail: str) -> Callable[[], Loaded]:
    return lambda: Loaded(reason=reason, detail=detail)


def expand(entry: Entry) -> list[Capture]:
    """Every capture an entry stands for (a missing file or empty glob is one failed capture)."""
    if entry.path is not None:
        if not entry.path.is_file():
            return [Capture(entry, entry.name, str(entry.path),
                            _failed("missing_file", f"{entry.path}: no such file"))]
        return _from_file(entry, entry.path, entry.name)
    files = sorted(Path(f) for f in globlib.glob(entry.glob or "") if Path(f).is_file())
    files = [f for f in files if f.suffix.lower() in CAPTURE_SUFFIXES + TABLE_SUFFIXES]
    if entry.split:
        files = [f for f in files if f.suffix.lower() not in CAPTURE_SUFFIXES
                 or _ndpi_split(f) == entry.split]
    if not files:
        return [Capture(entry, entry.name, str(entry.glob),
                        _failed("no_match", f"{entry.glob}: no capture or flow table matched"
                                + (f" in split {entry.split!r}" if entry.split else "")))]
    return [c for f in files for c in _from_file(entry, f, f"{entry.name}/{f.name}")]


_SPLITS: dict[Path, dict[str, str]] = {}


def _ndpi_split(path: Path) -> str:
    """The nDPI half a capture file is in, over every capture file in its directory."""
    from inference.datasets.ndpi import capture_files, split_files

    if path.parent not in _SPLITS:
        _SPLITS[path.parent] = split_files(p.name for p in capture_files(path.parent))
    return _SPLITS[path.parent].get(path.name, "")


def _from_file(entry: Entry, path: Path, name: str) -> list[Capture]:
    if path.suffix.lower() in CAPTURE_SUFFIXES:
        return [Capture(entry, name, str(path), lambda: _load_pcap(entry, path))]
    try:
        table = _read_table(path)
    except SourceError as exc:
        return [Capture(entry, name, str(path), _failed("unreadable_table", str(exc)))]
    if entry.split is not None:
        if "split" not in table.columns:
            return [Capture(entry, name, str(path),
                            _failed("no_split_column", f"{path}: `split` = {entry.split!r} but no split column"))]
        table = table[table["split"].astype(str) == entry.split]
        if not len(table):
            return [Capture(entry, name, str(path),
                            _failed("no_rows", f"{path}: no rows in split {entry.split!r}"))]
    col = entry.capture_column
    if col is None:
        return [Capture(entry, name, str(path), lambda: _finish(entry, table, str(path)))]
    if col not in table.columns:
        return [Capture(entry, name, str(path),
                        _failed("missing_columns", f"{path}: no capture column {col!r}"))]
    groups = {str(k): g for k, g in table.groupby(table[col].astype(str), sort=True)}
    return [Capture(entry, f"{name}/{k}", f"{path}[{col}={k}]",
                    lambda g=g, k=k: _finish(entry, g, f"{path}[{col}={k}]"))
            for k, g in groups.items()]


def _read_table(path: Path) -> Any:
    import pandas as pd

    try:
        if path.suffix.lower() == ".parquet":
            df = pd.read_parquet(path)
        elif path.suffix.lower() == ".csv":
            df = pd.read_csv(path)
        else:
            df = pd.read_json(path, lines=True)
    except (OSError, ValueError) as exc:
        raise SourceError(f"{path}: cannot read flow table: {exc}") from exc
    return df


def _load_pcap(entry: Entry, path: Path) -> Loaded:
    opts: dict[str, Any] = {}
    table = None
    if entry.labels is not None:
        try:
            table, opts = _labels(entry.labels)
        except SourceError as exc:
            return Loaded(reason="bad_labels", detail=str(exc))
    for key in ("idle_timeout", "active_timeout"):
        if getattr(entry, key) is not None:
            opts[key] = getattr(entry, key)
    m = meter_capture(path, sensor=entry.sensor, **opts)
    if not m.ok:
        return Loaded(reason=m.reason, detail=m.detail, meter=m.record())
    got = _finish(entry, m.flows, str(path), table)
    got.meter = m.record()
    return got


def attacked_times(flows: Any, benign: str = "benign") -> dict[str, Any]:
    """Per destination address, the sorted start times of the attack flows it received."""
    import numpy as np

    hit = flows[flows["label"].astype(str) != benign]
    return {str(d): np.sort(g["first_seen_ms"].to_numpy(dtype=np.float64))
            for d, g in hit.groupby(hit["dst_ip"].astype(str))}


def _labels(path: Path) -> tuple[Any, dict[str, Any]]:
    """The labels table and metering options, via inference.evaluate's own reader."""
    from inference.evaluate import _read_labels

    if not path.is_file():
        raise SourceError(f"labels {path}: no such file")
    try:
        return _read_labels(path)
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise SourceError(f"labels {path}: cannot read: {exc}") from exc


def _finish(entry: Entry, flows: Any, source: str, labels: Any = None) -> Loaded:
    """Check columns, attach labels for scope = labels, keep FlowRecord columns only."""
    from inference.evaluate import label_flows

    missing = [c for c in _REQUIRED if c not in flows.columns]
    if missing:
        return Loaded(reason="missing_columns", detail=f"{source}: missing {missing}")
    if entry.scope == "labels":
        try:
            if labels is None and entry.labels is not None:
                labels = _labels(entry.labels)[0]
            if labels is not None:
                flows = label_flows(flows.drop(columns=["label"], errors="ignore"), labels)
        except SourceError as exc:
            return Loaded(reason="bad_labels", detail=str(exc))
        if "label" not in flows.columns or flows["label"].isna().all():
            return Loaded(reason="no_labels", detail=f"{source}: scope = labels needs a labels "
                                                     "file or a `label` column")
        principals = periods = None
        if entry.labels is not None and entry.labels.suffix.lower() == ".json":
            import json

            from inference.datasets.lab import continue_connections, labels_principals, separate_attack_runs

            try:
                doc = json.loads(entry.labels.read_text())
                principals, periods = labels_principals(doc, separated=entry.separate_runs)
            except (OSError, ValueError, TypeError, KeyError, AttributeError) as exc:
                return Loaded(reason="bad_labels", detail=f"{entry.labels}: {exc}")
            flows = continue_connections(flows)
            if entry.separate_runs:
                flows = separate_attack_runs(flows, doc.get("spans", []))
        keep = [c for c in FLOW_FIELDS if c in flows.columns]
        return Loaded(flows=flows.loc[:, keep].reset_index(drop=True), principals=principals,
                      periods=periods, attacked=attacked_times(flows) if principals is not None else None)
    keep = [c for c in FLOW_FIELDS if c in flows.columns]
    return Loaded(flows=flows.loc[:, keep].reset_index(drop=True))

"""Shared steps for dataset adapters: clean numbers, complete FlowRecord columns, check rows.

An adapter maps a foreign format to a dict of FlowRecord columns, then calls `finish`,
which fills the rest with defaults and enforces the record's physical rules (packets are
the sum of both directions, flag counts never exceed packets, min <= mean <= max packet
size), so every row validates as a FlowRecord. `check_rows` proves it on a sample.
"""
from __future__ import annotations

import re
from typing import Any

import numpy as np
import pandas as pd

from contracts.errors import SourceError
from contracts.records import FLOW_FIELDS, FlowRecord

_DEFAULTS: dict[str, Any] = {name: f.default for name, f in FlowRecord.model_fields.items()
                              if name != "schema_" and not f.is_required()}
_FLAGS = ("syn_packets", "ack_packets", "psh_packets", "rst_packets", "fin_packets", "urg_packets",
          "src2dst_syn_packets", "dst2src_syn_packets", "dst2src_rst_packets")
_INTS = ("src_port", "dst_port", "protocol", "packets", "bytes", "src2dst_packets", "src2dst_bytes",
         "dst2src_packets", "dst2src_bytes", "first_seen_ms", "last_seen_ms", *_FLAGS)


def snake(label: Any) -> str:
    """'DoS Hulk' -> 'dos_hulk'; any run of other characters becomes one underscore."""
    return re.sub(r"[^0-9a-z]+", "_", str(label).strip().lower()).strip("_") or "unknown"


def numeric(values: Any, scale: float = 1.0) -> np.ndarray:
    """Numbers from a column: text, NaN and +-inf become 0, negatives are clipped to 0."""
    arr = pd.to_numeric(pd.Series(values), errors="coerce").to_numpy(dtype=np.float64) * scale
    arr[~np.isfinite(arr)] = 0.0
    return np.maximum(arr, 0.0)


def finish(cols: dict[str, Any], n: int) -> pd.DataFrame:
    """A DataFrame of FlowRecord columns (plus `label`) satisfying FlowRecord's rules."""
    df = pd.DataFrame({k: (np.broadcast_to(v, (n,)) if np.ndim(v) == 0 else v)
                       for k, v in cols.items()})
    for name in FLOW_FIELDS:
        if name not in df.columns:
            df[name] = _DEFAULTS.get(name)
    fwd = np.maximum(df["src2dst_packets"].to_numpy(np.int64), 0)
    bwd = np.maximum(df["dst2src_packets"].to_numpy(np.int64), 0)
    fwd = np.where(fwd + bwd == 0, 1, fwd)
    df["src2dst_packets"], df["dst2src_packets"], df["packets"] = fwd, bwd, fwd + bwd
    df["bytes"] = df["src2dst_bytes"].to_numpy(np.int64) + df["dst2src_bytes"].to_numpy(np.int64)
    for flag in _FLAGS:
        df[flag] = np.minimum(df[flag].to_numpy(np.int64), df["packets"].to_numpy())
    mean = df["bytes"].to_numpy(np.float64) / df["packets"].to_numpy()
    df["mean_ps"] = mean
    df["min_ps"] = np.minimum(df["min_ps"].to_numpy(np.float64), mean)
    df["max_ps"] = np.maximum(df["max_ps"].to_numpy(np.float64), mean)
    df["last_seen_ms"] = np.maximum(df["last_seen_ms"].to_numpy(np.int64),
                                    df["first_seen_ms"].to_numpy(np.int64))
    for col in _INTS:
        df[col] = df[col].astype(np.int64)
    df["src_port"] = df["src_port"].clip(0, 65535)
    df["dst_port"] = df["dst_port"].clip(0, 65535)
    df["protocol"] = df["protocol"].clip(0, 255)
    return df.loc[:, [*FLOW_FIELDS]]


def check_rows(df: pd.DataFrame, limit: int | None = 1000) -> int:
    """Validate up to `limit` rows (None: all) as FlowRecord; SourceError names the first bad row."""
    rows = df if limit is None else df.head(limit)
    for i, row in enumerate(rows.to_dict("records")):
        clean = {k: v for k, v in row.items() if v is not None and v == v}  # drop None/NaN
        try:
            FlowRecord.model_validate(clean)
        except ValueError as exc:
            raise SourceError(f"row {i} is not a valid FlowRecord: {exc}") from exc
    return len(rows)

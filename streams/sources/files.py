"""Flow files: CSV, Parquet, JSON lines, or a pcap metered by NFStream, as a DataFrame.

    >>> df = load_flows("capture.pcap")       # FlowRecord columns (+ label if the file has one)

CSV/Parquet must carry FlowRecord column names (see contracts.records.FLOW_FIELDS); public
datasets with other layouts go through inference.datasets adapters first.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Iterator

import pandas as pd

from contracts.errors import SourceError
from contracts.records import FLOW_FIELDS, FlowRecord

REQUIRED = tuple(n for n, f in FlowRecord.model_fields.items() if f.is_required())
PCAP_SUFFIXES = {".pcap", ".pcapng", ".cap"}


def load_flows(path: str | Path, sensor: str = "replay") -> pd.DataFrame:
    """Read a flow file into a DataFrame with FlowRecord columns, in file order."""
    p = Path(path)
    if not p.is_file():
        raise SourceError(f"{p}: no such file")
    suffix = p.suffix.lower()
    try:
        if suffix in PCAP_SUFFIXES:
            from inference.flow_meter import meter_pcap  # needs the capture extra (nfstream)

            df = meter_pcap(p, sensor=sensor)
        elif suffix == ".parquet":
            df = pd.read_parquet(p)
        elif suffix == ".csv":
            df = pd.read_csv(p)
        elif suffix in {".jsonl", ".ndjson", ".json"}:
            df = pd.read_json(p, lines=suffix != ".json")
        else:
            raise SourceError(f"{p}: unknown flow file type {suffix!r} (pcap, csv, parquet, jsonl)")
    except ImportError as exc:
        raise SourceError(f"{p}: metering pcaps needs NFStream: pip install 'edgeloop[capture]'") from exc
    except (OSError, ValueError) as exc:
        raise SourceError(f"{p}: cannot read: {exc}") from exc
    missing = [c for c in REQUIRED if c not in df.columns]
    if missing:
        raise SourceError(f"{p}: missing flow columns {missing}; expected FlowRecord names")
    keep = [c for c in FLOW_FIELDS if c in df.columns]
    return df.loc[:, keep].reset_index(drop=True)


def _clean(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


def iter_flow_dicts(df: pd.DataFrame) -> Iterator[dict[str, Any]]:
    """Plain JSON-ready dicts per row; missing values dropped (so validation names them)."""
    cols = list(df.columns)
    for row in df.itertuples(index=False, name=None):
        yield {c: v for c, v in zip(cols, map(_clean, row)) if v is not None and v is not pd.NA}


def records_from_frame(df: pd.DataFrame) -> tuple[list[FlowRecord], list[tuple[int, Exception]]]:
    """Validate every row; return the records and (row index, error) for the bad ones."""
    from contracts.errors import RecordError
    from contracts.records import validate

    good, bad = [], []
    for i, d in enumerate(iter_flow_dicts(df)):
        try:
            good.append(validate(FlowRecord, d))
        except RecordError as exc:
            bad.append((i, exc))
    return good, bad

"""A push's flows as columns, and the windows that close over them.

The windower keeps no object per flow: every push becomes one `FlowBatch` (the RAW_COLUMNS
that vary within it, each view's history rows, flow ids, addresses and, when records are
kept, their other fields, a value shared by the batch kept once), and an open window keeps
(batch, row) pairs. A closing pass gathers every closing flow's columns at once (`gather`:
a few numpy calls per distinct batch, not Python per flow). A closed window rebuilds its
flows as FlowRows only when asked (`ClosedWindow.items`: a window routed to `uncertain`);
alerts and policies read single fields with `ClosedWindow.column`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from operator import attrgetter
from typing import Any, Sequence

import msgspec
import numpy as np

from contracts.records import FlowRecord, FlowRow
from contracts.window import ClosedBy
from inference.features import N_FEATURES, RAW_COLUMNS
from inference.history import N_HISTORY

# Bytes a live batch keeps per flow besides its varying RAW_COLUMNS and history rows (both
# counted exactly): the flow id, an address and three list slots; the record's other fields
# when records are kept (tracemalloc, tests/bench/bench_open_windows.py).
BATCH_FLOW_BYTES = 140
EXTRA_FLOW_BYTES = 60


class FlowBatch:
    """One push's flows as columns, shared by every open window holding one of them (the
    windows keep row numbers, not per-flow objects). A record is rebuilt from its row only
    when something asks for it (`ClosedWindow.items`: a window routed to `uncertain`)."""

    __slots__ = ("first", "varying", "cols", "obj", "ids", "src", "dst", "hist", "labels", "origins", "extra",
                 "refs", "nbytes")

    def __init__(self, raw: np.ndarray, ids: Sequence[str], src: Sequence[str], dst: Sequence[str],
                 labels: Sequence[Any] | None, origins: Sequence[Any] | None,
                 extra: dict[str, tuple[str, Any]] | None) -> None:
        # RAW_COLUMNS: the first row whole, and only the columns that vary within the batch
        # (a flood's or a scan's flows differ in a few: times and ports).
        self.first = raw[0].copy()
        self.cols = np.flatnonzero((raw != raw[0]).any(axis=0))
        self.varying = np.ascontiguousarray(raw[:, self.cols])
        # One object array [n, 3] of flow id, source and destination: a closing pass gathers
        # all three with one fancy-indexing call; ids, src and dst are its columns.
        n = len(ids)
        self.obj = np.empty((n, 3), dtype=object)
        for j, col in enumerate((ids, src, dst)):
            self.obj[:, j] = objects(col)
        self.ids, self.src, self.dst = self.obj[:, 0], self.obj[:, 1], self.obj[:, 2]
        self.labels = None if labels is None else objects(labels)
        self.origins = None if origins is None else objects(origins)
        self.extra = extra
        # Per view, that view's history rows of these flows: a list while the push adds them,
        # then one array [views, n, N_HISTORY] (`seal`), gathered with one call per batch.
        self.hist: Any = []
        self.refs = 0  # window memberships still open
        self.nbytes = self.varying.nbytes + n * (BATCH_FLOW_BYTES + (EXTRA_FLOW_BYTES if extra is not None else 0))

    def seal(self) -> None:
        """The push added every view's history rows: stack them into one array."""
        self.hist = np.stack(self.hist)

    def rows(self, idx: Any) -> np.ndarray:
        """The RAW_COLUMNS rows at `idx` [len(idx), len(RAW_COLUMNS)] float64."""
        out = np.repeat(self.first[None, :], len(idx), axis=0)
        out[:, self.cols] = self.varying[idx]
        return out


def objects(values: Sequence[Any]) -> np.ndarray:
    """A 1-D object array of `values` (never a deeper array made of sequences in them)."""
    return np.fromiter(values, dtype=object, count=len(values))


# Read off the record contract, so a field added to FlowRecord is kept too: the fields a
# batch keeps besides RAW_COLUMNS, flow_id and the addresses, to rebuild a record (a value
# shared by the whole batch kept once, integers in an int64 array), and the RAW_COLUMNS
# that are integers (float64 in the batch, int again in a rebuilt record).
_EXTRA_FIELDS = tuple(f for f in FlowRecord.model_fields
                      if f not in RAW_COLUMNS and f not in ("schema_", "flow_id", "src_ip", "dst_ip"))
_extra_getter = attrgetter(*_EXTRA_FIELDS)
_INT_RAW = frozenset(n for n in RAW_COLUMNS if FlowRecord.model_fields[n].annotation is int)

_RAW_DEFAULTS = [(f.name, f.default) for f in msgspec.structs.fields(FlowRow)
                 if f.name in RAW_COLUMNS and f.default is not msgspec.NODEFAULT]


def _column(values: tuple[Any, ...]) -> tuple[str, Any]:
    first = values[0]
    if values.count(first) == len(values):
        return "one", first
    if type(first) is int and None not in values:
        return "int", np.array(values, dtype=np.int64)
    seen: dict[Any, Any] = {}
    return "list", [seen.setdefault(v, v) for v in values]


def extra_columns(items: Sequence[Any]) -> dict[str, tuple[str, Any]]:
    return {name: _column(col) for name, col in zip(_EXTRA_FIELDS, zip(*map(_extra_getter, items)))}


def arrow_columns(table: Any) -> tuple[list[str], list[str], list[str], np.ndarray, dict[str, tuple[str, Any]]]:
    """A pyarrow Table of flows (contracts.arrow_flows: every FlowRecord field a column)
    as a push's columns: flow ids, source and destination addresses, the RAW_COLUMNS matrix
    and the other fields as `extra_columns` would keep them from the same records."""
    import pyarrow.compute as pc

    cols = dict(zip(table.column_names, table.columns))
    raw = np.empty((table.num_rows, len(RAW_COLUMNS)), dtype=np.float64)
    for j, name in enumerate(RAW_COLUMNS):
        raw[:, j] = cols[name].to_numpy()
    extra: dict[str, tuple[str, Any]] = {}
    for name in _EXTRA_FIELDS:
        col = cols[name]
        if pc.count_distinct(col, mode="all").as_py() == 1:
            extra[name] = ("one", col[0].as_py())
        elif col.type == "int64" and col.null_count == 0:
            extra[name] = ("int", col.to_numpy())
        else:
            seen: dict[Any, Any] = {}
            extra[name] = ("list", [seen.setdefault(v, v) for v in col.to_pylist()])
    return cols["flow_id"].to_pylist(), cols["src_ip"].to_pylist(), cols["dst_ip"].to_pylist(), raw, extra


def _value(col: tuple[str, Any], row: int) -> Any:
    how, v = col
    return v if how == "one" else int(v[row]) if how == "int" else v[row]


def _record(b: FlowBatch, row: int, raw: list[float]) -> Any:
    """The flow at `row` as a FlowRow: its RAW_COLUMNS values `raw` (gathered when its window
    closed) and the batch's other columns."""
    vals: dict[str, Any] = dict(zip(RAW_COLUMNS, raw))
    for name in _INT_RAW:
        vals[name] = int(vals[name])
    for name, default in _RAW_DEFAULTS:  # the default object itself, so that it is omitted on the wire
        if vals[name] == default:
            vals[name] = default
    vals["flow_id"], vals["src_ip"], vals["dst_ip"] = b.ids[row], b.src[row], b.dst[row]
    assert b.extra is not None
    for name, col in b.extra.items():
        vals[name] = _value(col, row)
    return FlowRow(**vals)


@dataclass
class ClosedWindow:
    window_id: str
    key: str
    flow_ids: list[str]
    features: np.ndarray  # [n, N_FEATURES] unnormalised, n <= K
    first_seen_ms: int
    last_seen_ms: int
    closed_by: ClosedBy
    view: str = "src"
    # Where the flows live (a stream's window): batch, row, batch, row, ... as the open
    # window held them. Training's windows keep none, so no batch stays alive.
    flat: list[Any] = field(default_factory=list, repr=False)
    raw: np.ndarray | None = field(default=None, repr=False)  # [n, RAW_COLUMNS] float64, gathered at close
    # Per flow, gathered at close: addresses, and the label and origin pushed with it.
    src: list[str] = field(default_factory=list, repr=False)
    dst: list[str] = field(default_factory=list, repr=False)
    labels: list[Any] = field(default_factory=list, repr=False)
    origins: list[Any] = field(default_factory=list, repr=False)
    # When the latest of its flows was produced (the sensor's stamp), None where none has one.
    produced_ms: int | None = None
    _items: list[Any] | None = field(default=None, repr=False)

    @property
    def history(self) -> np.ndarray:
        """The host-history part of the features, one row per flow."""
        return self.features[:, N_FEATURES - N_HISTORY:]

    @property
    def rows(self) -> list[tuple[FlowBatch, int]]:
        """(batch, row) of each flow."""
        return list(zip(self.flat[::2], self.flat[1::2]))

    @property
    def batches(self) -> list[FlowBatch]:
        """The batches holding the window's flows, in order."""
        return list(dict.fromkeys(self.flat[::2]))

    @property
    def items(self) -> list[Any]:
        """The flows as FlowRows, rebuilt on first use (the windower kept records), else []."""
        if self._items is None:
            # The RAW_COLUMNS rows were gathered at close, in the same order: one tolist, not
            # a gather per flow (the uncertain windows' records cost 2 of a worker's 14 s).
            raw = self.raw.tolist() if self.raw is not None else []
            self._items = [_record(b, r, x) for (b, r), x in zip(self.rows, raw) if b.extra is not None]
        return self._items

    def column(self, name: str) -> list[Any]:
        """One record field of every flow, without rebuilding the records ([] when the
        windower kept no records)."""
        if name == "src_ip":
            return self.src
        if name == "dst_ip":
            return self.dst
        if name in _RAW_INDEX:
            if self.raw is None:
                return []
            col = self.raw[:, _RAW_INDEX[name]]
            return col.astype(np.int64).tolist() if name in _INT_RAW else col.tolist()
        batches = self.batches
        if len(batches) == 1 and batches[0].extra is not None and batches[0].extra[name][0] == "one":
            return [batches[0].extra[name][1]] * len(self.flow_ids)  # one push's worth, one value
        return [_value(b.extra[name], r) for b, r in self.rows if b.extra is not None]

_RAW_INDEX = {name: i for i, name in enumerate(RAW_COLUMNS)}


def windows_column(windows: Sequence[ClosedWindow], name: str) -> list[Any]:
    """`column(name)` of several windows laid end to end: a RAW_COLUMNS field in one numpy
    pass over their rows (not an array conversion per window)."""
    if len(windows) == 1:
        return windows[0].column(name)
    j = _RAW_INDEX.get(name)
    if j is None or any(w.raw is None for w in windows):
        return [v for w in windows for v in w.column(name)]
    col = np.concatenate([w.raw[:, j] for w in windows])
    return col.astype(np.int64).tolist() if name in _INT_RAW else col.tolist()


MISSING = object()  # a gathered label or origin of a flow whose batch was pushed without any


class Gathered:
    """Every closing flow's columns, laid end to end (`gather`)."""

    __slots__ = ("batches", "raw", "hist", "ids", "src", "dst", "labels", "origins", "produced")

    def __init__(self, batches: list[FlowBatch], raw: np.ndarray, hist: np.ndarray, ids: np.ndarray, src: np.ndarray, dst: np.ndarray,
                 labels: np.ndarray | None, origins: np.ndarray | None, produced: np.ndarray | None) -> None:
        self.batches = batches  # the distinct batches, in order of their first flow's group
        self.raw, self.hist, self.ids, self.src, self.dst = raw, hist, ids, src, dst
        self.labels, self.origins = labels, origins
        self.produced = produced  # float64 produced_ms per flow, NaN where a flow has none


def produced_column(b: FlowBatch, rows: np.ndarray) -> np.ndarray:
    """produced_ms of a batch's `rows` as float64, NaN where a flow has none (read once for
    a value the whole batch shares, by fancy indexing for an integer column)."""
    how, v = b.extra["produced_ms"] if b.extra is not None else ("one", None)
    if how == "one":
        return np.full(len(rows), np.nan if v is None else float(v))
    if how == "int":
        return v[rows].astype(np.float64)
    return np.array([np.nan if x is None else float(x) for x in map(v.__getitem__, rows.tolist())])


def gather(flow_batches: list[FlowBatch], rows: np.ndarray, view_index: np.ndarray) -> Gathered:
    """The columns of the flows at (flow_batches[i], rows[i]), their history rows from the
    view view_index[i]: a few fancy-indexing calls per distinct batch."""
    total = len(rows)
    # Group the flows by batch: the batch objects' ids, sorted (stable, so each group keeps
    # its flows in order).
    oid = np.fromiter(map(id, flow_batches), dtype=np.int64, count=total)
    raw = np.empty((total, len(RAW_COLUMNS)), dtype=np.float64)
    hist = np.empty((total, N_HISTORY), dtype=np.float32)
    obj = np.empty((total, 3), dtype=object)  # flow id, source, destination
    groups: list[tuple[FlowBatch, Any, np.ndarray]] = []
    if total and (oid == oid[0]).all():
        groups.append((flow_batches[0], slice(None), rows))
    elif total:
        order = np.argsort(oid, kind="stable")
        so = oid[order]
        cut = np.flatnonzero(so[1:] != so[:-1]) + 1
        for lo, hi in zip([0, *cut.tolist()], [*cut.tolist(), total]):
            pos = order[lo:hi]
            groups.append((flow_batches[int(pos[0])], pos, rows[pos]))
    batches = [b for b, _, _ in groups]
    labels = np.full(total, MISSING, dtype=object) if any(b.labels is not None for b in batches) else None
    origins = np.full(total, MISSING, dtype=object) if any(b.origins is not None for b in batches) else None
    produced = np.full(total, np.nan) if any(b.extra is not None for b in batches) else None
    views = np.unique(view_index).tolist() if total else []
    for b, pos, r in groups:
        raw[pos] = b.rows(r)
        if produced is not None and b.extra is not None:
            produced[pos] = produced_column(b, r)
        obj[pos] = b.obj[r]
        if labels is not None and b.labels is not None:
            labels[pos] = b.labels[r]
        if origins is not None and b.origins is not None:
            origins[pos] = b.origins[r]
        hist[pos] = b.hist[views[0], r] if len(views) == 1 else b.hist[view_index[pos], r]
    return Gathered(batches, raw, hist, obj[:, 0], obj[:, 1], obj[:, 2], labels, origins, produced)

"""A push's flows as columns, and the windows that close over them.

The windower keeps no object per flow: every push becomes one `FlowBatch` (the RAW_COLUMNS
that vary within it, each view's history rows, flow ids, addresses and, when records are
kept, their other fields, a value shared by the batch kept once), and an open window keeps
(batch, row) pairs. A closed window rebuilds its flows as FlowRows only when asked
(`ClosedWindow.items`: a window routed to `uncertain`); alerts and policies read single
fields with `ClosedWindow.column`.
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

    __slots__ = ("first", "varying", "cols", "ids", "src", "dst", "hist", "labels", "origins", "extra", "refs",
                 "nbytes")

    def __init__(self, raw: np.ndarray, ids: Sequence[str], src: Sequence[str], dst: Sequence[str],
                 labels: Sequence[Any] | None, origins: Sequence[Any] | None,
                 extra: dict[str, tuple[str, Any]] | None) -> None:
        # RAW_COLUMNS: the first row whole, and only the columns that vary within the batch
        # (a flood's or a scan's flows differ in a few: times and ports).
        self.first = raw[0].copy()
        self.cols = np.flatnonzero((raw != raw[0]).any(axis=0))
        self.varying = np.ascontiguousarray(raw[:, self.cols])
        self.ids, self.src, self.dst = ids, src, dst
        self.labels, self.origins, self.extra = labels, origins, extra
        self.hist: list[np.ndarray] = []  # per view, that view's history rows of these flows
        self.refs = 0  # window memberships still open
        n = len(ids)
        self.nbytes = self.varying.nbytes + n * (BATCH_FLOW_BYTES + (EXTRA_FLOW_BYTES if extra is not None else 0))

    def rows(self, idx: Sequence[int]) -> np.ndarray:
        """The RAW_COLUMNS rows at `idx` [len(idx), len(RAW_COLUMNS)] float64."""
        out = np.repeat(self.first[None, :], len(idx), axis=0)
        out[:, self.cols] = self.varying[idx]
        return out


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
    rows: list[tuple[FlowBatch, int]] = field(default_factory=list, repr=False)  # where each flow lives
    raw: np.ndarray | None = field(default=None, repr=False)  # [n, RAW_COLUMNS] float64, gathered at close
    _items: list[Any] | None = field(default=None, repr=False)
    # Given at close by a windower that keeps no records (training): no rows, no batches kept alive.
    _labels: list[Any] | None = field(default=None, repr=False)
    _origins: list[Any] | None = field(default=None, repr=False)

    @property
    def history(self) -> np.ndarray:
        """The host-history part of the features, one row per flow."""
        return self.features[:, N_FEATURES - N_HISTORY:]

    @property
    def items(self) -> list[Any]:
        """The flows as FlowRows, rebuilt on first use (the windower kept records), else []."""
        if self._items is None:
            # The RAW_COLUMNS rows were gathered at close, in the same order: one tolist, not
            # a gather per flow (the uncertain windows' records cost 2 of a worker's 14 s).
            raw = self.raw.tolist() if self.raw is not None else []
            self._items = [_record(b, r, x) for (b, r), x in zip(self.rows, raw) if b.extra is not None]
        return self._items

    @property
    def labels(self) -> list[Any]:
        """Per flow, the label pushed with it (ground truth), when labels were pushed."""
        if self._labels is not None:
            return self._labels
        return [b.labels[r] for b, r in self.rows if b.labels is not None]

    @property
    def origins(self) -> list[Any]:
        """Per flow, the token of the message it came in, when origins were pushed."""
        if self._origins is not None:
            return self._origins
        return [b.origins[r] for b, r in self.rows if b.origins is not None]

    def column(self, name: str) -> list[Any]:
        """One record field of every flow, without rebuilding the records ([] when the
        windower kept no records)."""
        if name == "src_ip":
            return [b.src[r] for b, r in self.rows]
        if name == "dst_ip":
            return [b.dst[r] for b, r in self.rows]
        if name in _RAW_INDEX:
            if self.raw is None:
                return []
            col = self.raw[:, _RAW_INDEX[name]]
            return col.astype(np.int64).tolist() if name in _INT_RAW else col.tolist()
        return [_value(b.extra[name], r) for b, r in self.rows if b.extra is not None]

    def latest(self, name: str) -> Any:
        """The largest value of a record field that is not in RAW_COLUMNS over the window's
        flows, None where no flow has one: a field shared by a whole batch is read once."""
        best = None
        for b, r in self.rows:
            if b.extra is None:
                continue
            x = _value(b.extra[name], r)
            if x is not None and (best is None or x > best):
                best = x
        return best


_RAW_INDEX = {name: i for i, name in enumerate(RAW_COLUMNS)}


def by_source(pairs: Sequence[tuple[Any, int]]) -> list[tuple[Any, list[int], list[int]]]:
    """Group (source, row) pairs by source object: (source, positions in `pairs`, rows), so a
    gather makes one indexing call per distinct source (a batch, an array)."""
    groups: dict[int, tuple[Any, list[int], list[int]]] = {}
    for i, (src, r) in enumerate(pairs):
        g = groups.get(id(src))
        if g is None:
            g = groups[id(src)] = (src, [], [])
        g[1].append(i)
        g[2].append(r)
    return list(groups.values())


def gather_raw(out: np.ndarray, flows: list[tuple[FlowBatch, int]]) -> None:
    """out[i] = the RAW_COLUMNS row of flows[i], one `rows` call per distinct batch."""
    for b, pos, idx in by_source(flows):
        out[pos] = b.rows(idx)

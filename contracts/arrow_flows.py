"""Flow batches as Arrow IPC: an optional payload for edgeloop's own sensors.

A `flows` message is JSON (`edgeloop.flows/1`, or one `edgeloop.flow/1`) unless its Kafka
header `content-type` says `application/vnd.apache.arrow.stream`: then the value is one Arrow
IPC stream whose columns are FlowRecord's fields (the record contract, read off
`FlowRecord`; unknown columns are ignored, a missing column with a default takes it).

    >>> value = encode_flow_arrow(flow_dicts, sensor="s1")      # a publisher, with ARROW_HEADERS
    >>> got = decode_flow_arrow(value)                          # -> ArrowFlows
    >>> got.table      # the good rows (pyarrow.Table)
    >>> got.errors     # one RecordError per bad row (.index, .item: the row as a dict), or
    ...                # one for the whole message (.index None) when it cannot be read at all

The same rules as the JSON path, checked as column masks: each field's bounds, text
lengths, allowed values and finiteness, then FlowRecord's physical rules. A row a mask
flags is judged by FlowRecord itself (same reason and message as the JSON path gives) and
dead-lettered alone; the good rows of the same message go on. A message that is not an
Arrow stream, lacks a required column or has a column of the wrong type is one dead letter.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, Any, Literal, Sequence, Union, get_args, get_origin
from types import UnionType

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from contracts.errors import RecordError
from contracts.records import MAX_BATCH_RECORDS, MAX_MESSAGE_BYTES, FlowRecord, validate

CONTENT_TYPE_HEADER = "content-type"
ARROW_CONTENT_TYPE = b"application/vnd.apache.arrow.stream"
ARROW_HEADERS = [(CONTENT_TYPE_HEADER, ARROW_CONTENT_TYPE)]


@dataclass(frozen=True)
class _Field:
    name: str
    arrow: pa.DataType
    required: bool
    nullable: bool  # None is a valid value
    default: Any
    ge: float | None = None
    le: float | None = None
    min_length: int | None = None
    max_length: int | None = None
    allowed: tuple[Any, ...] | None = None  # a Literal's values
    finite: bool = False


def _describe(name: str, info: Any) -> _Field:
    """The Arrow type and the rules of one FlowRecord field, read off its annotation."""
    ann, meta = info.annotation, list(info.metadata)
    nullable = False
    if get_origin(ann) in (Union, UnionType):
        args = [a for a in get_args(ann) if a is not type(None)]
        nullable, ann = len(args) < len(get_args(ann)), args[0]
    if get_origin(ann) is Annotated:
        base, *extra = get_args(ann)
        meta += [m for x in extra for m in (getattr(x, "metadata", None) or [x])]
        ann = base
    allowed = None
    if get_origin(ann) is Literal:
        allowed = get_args(ann)
        ann = type(allowed[0])
    arrow = {int: pa.int64(), float: pa.float64(), str: pa.string()}[ann]
    rules: dict[str, Any] = {}
    for m in meta:
        for attr in ("ge", "le", "min_length", "max_length"):
            if getattr(m, attr, None) is not None:
                rules[attr] = getattr(m, attr)
    return _Field(name, arrow, info.is_required(), nullable, None if info.is_required() else info.default,
                  allowed=allowed, finite=ann is float, **rules)


FIELDS: tuple[_Field, ...] = tuple(_describe(n, f) for n, f in FlowRecord.model_fields.items() if n != "schema_")
SCHEMA = pa.schema([pa.field(f.name, f.arrow, nullable=True) for f in FIELDS])


@dataclass
class ArrowFlows:
    table: pa.Table  # the good rows, every FlowRecord field as a column of its type
    errors: list[RecordError] = field(default_factory=list)

    def __len__(self) -> int:
        return self.table.num_rows


def encode_flow_arrow(records: Sequence[dict[str, Any]], sensor: str = "") -> bytes:
    """One `flows` value as an Arrow IPC stream (send it with ARROW_HEADERS). Fields a record
    lacks take FlowRecord's defaults; `sensor` names the batch in the schema's metadata, as
    the JSON envelope's `sensor` does (a record's own `sensor` is its column)."""
    schema = SCHEMA.with_metadata({"edgeloop.sensor": sensor}) if sensor else SCHEMA
    cols = [pa.array([r.get(f.name, f.default) for r in records], type=f.arrow) for f in FIELDS]
    table = pa.Table.from_arrays(cols, schema=schema)
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, schema) as w:
        w.write_table(table)
    return sink.getvalue().to_pybytes()


def is_arrow(headers: Any) -> bool:
    """Whether a message's headers (a list of (name, value) pairs or a mapping) say Arrow."""
    if not headers:
        return False
    pairs = headers.items() if hasattr(headers, "items") else headers
    return any(str(k).lower() == CONTENT_TYPE_HEADER and v == ARROW_CONTENT_TYPE for k, v in pairs)


def decode_flow_arrow(raw: bytes) -> ArrowFlows:
    """The good rows of an Arrow `flows` value and a RecordError per bad one (see the module)."""
    try:
        table = _read(raw)
    except RecordError as exc:
        return ArrowFlows(pa.Table.from_arrays([pa.array([], f.arrow) for f in FIELDS], schema=SCHEMA), [exc])
    if table.num_rows == 0:
        return ArrowFlows(table)
    bad = _flagged(table)
    if not bad.any():
        return ArrowFlows(table)
    errors: list[RecordError] = []
    for i in np.flatnonzero(bad).tolist():
        item = table.slice(i, 1).to_pylist()[0]
        try:
            validate(FlowRecord, item)
        except RecordError as exc:
            exc.item, exc.index = item, i
            errors.append(exc)
            continue
        bad[i] = False  # a mask stricter than the contract: the record itself stands
    return ArrowFlows(table.filter(pa.array(~bad)), errors)


def _le(b: bytes, at: int, n: int, signed: bool = False) -> int:
    if at < 0 or at + n > len(b):
        raise ValueError("metadata offset out of range")
    return int.from_bytes(b[at:at + n], "little", signed=signed)


def _field(b: bytes, table: int, i: int) -> int | None:
    """Where field `i` of the flatbuffer table at `table` lies, None when it is absent."""
    vtable = table - _le(b, table, 4, signed=True)
    if 4 + 2 * i >= _le(b, vtable, 2):
        return None
    off = _le(b, vtable + 4 + 2 * i, 2)
    return table + off if off else None


def _batch_rows(meta: bytes, batch: int) -> int:
    """Rows of the RecordBatch table at `batch` in a message's flatbuffer metadata; a
    RecordError when its buffers are compressed."""
    if _field(meta, batch, 3) is not None:
        raise RecordError("bad_arrow", "compressed IPC buffers are not read (they could unpack to any "
                                       "size): send them uncompressed, Kafka compresses the message")
    at = _field(meta, batch, 0)
    return 0 if at is None else _le(meta, at, 8, signed=True)


def _inspect(buf: pa.Buffer) -> None:
    """Before any buffer is read: every message's row count and compression, from its
    metadata alone (Arrow's Message.fbs: Message.header, RecordBatch.length and .compression,
    DictionaryBatch.data). More than MAX_BATCH_RECORDS rows, or compressed buffers, refuse
    the message: a small message must not unpack into a large table."""
    rows = 0
    for msg in pa.ipc.MessageReader.open_stream(buf):
        if msg.type not in ("record batch", "dictionary batch"):
            continue
        meta = msg.metadata.to_pybytes()
        header = _field(meta, _le(meta, 0, 4), 2)
        if header is None:
            raise ValueError(f"a {msg.type} without a header")
        table = header + _le(meta, header, 4)
        if msg.type == "dictionary batch":
            data = _field(meta, table, 1)
            if data is None:
                raise ValueError("a dictionary batch without data")
            _batch_rows(meta, data + _le(meta, data, 4))
            continue
        rows += _batch_rows(meta, table)
        if rows > MAX_BATCH_RECORDS:
            raise RecordError("over_batch_limit", f"more than {MAX_BATCH_RECORDS} rows in one Arrow message: "
                                                  "split it")


def _read(raw: bytes) -> pa.Table:
    """The message as a table of SCHEMA's columns, or one RecordError for all of it."""
    if len(raw) > MAX_MESSAGE_BYTES:
        raise RecordError("too_large", f"{len(raw)} bytes > {MAX_MESSAGE_BYTES}")
    try:
        buf = pa.py_buffer(raw)
        _inspect(buf)
        got = pa.ipc.open_stream(buf).read_all()
        got.validate(full=True)  # offsets in range, strings valid UTF-8
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise RecordError("bad_arrow", f"not an Arrow IPC stream of flows: {str(exc)[:200]}") from exc
    if got.schema.equals(SCHEMA):  # edgeloop's own encoder: every column, every type
        return got
    n, cols = got.num_rows, []
    for f in FIELDS:
        if f.name not in got.column_names:
            if f.required:
                raise RecordError("missing_field", f"{f.name}: no such column")
            cols.append(pa.array([f.default] * n, type=f.arrow))
            continue
        col = got.column(f.name)
        t = col.type
        if not (pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_string(t)
                or pa.types.is_large_string(t) or pa.types.is_null(t)):
            # dictionary, run-end, list, ... : a few bytes that can stand for a huge column
            raise RecordError("invalid", f"{f.name}: a column of {t}; plain numbers or text expected")
        try:
            cols.append(col if col.type == f.arrow else col.cast(f.arrow, safe=True))
        except (pa.ArrowException, ValueError) as exc:
            raise RecordError("invalid", f"{f.name}: a column of {col.type}, expected {f.arrow}: "
                                         f"{str(exc)[:120]}") from exc
    return pa.Table.from_arrays(cols, schema=SCHEMA)


_NUMERIC = [f for f in FIELDS if f.arrow != pa.string()]
_LO = np.array([-np.inf if f.ge is None else f.ge for f in _NUMERIC], dtype=np.float64)
_HI = np.array([np.inf if f.le is None else f.le for f in _NUMERIC], dtype=np.float64)
_AT = {f.name: j for j, f in enumerate(_NUMERIC)}
_FLAGS = [_AT[n] for n in ("syn_packets", "ack_packets", "psh_packets", "rst_packets", "fin_packets", "urg_packets")]


def _flagged(table: pa.Table) -> np.ndarray:
    """Rows that may break a field rule or a physical rule ([n] bool): the numeric columns
    as one float matrix against each field's bounds (NaN and infinities fail them too),
    text lengths only where a column's extremes break a bound."""
    n, cols = table.num_rows, dict(zip(table.column_names, table.columns))
    bad = np.zeros(n, dtype=bool)
    for f in FIELDS:
        col = cols[f.name]
        if col.null_count and not f.nullable:
            bad |= col.is_null().to_numpy(zero_copy_only=False)
        if f.arrow != pa.string() or (f.min_length is None and f.max_length is None):
            continue
        length = pc.utf8_length(col)
        mm = pc.min_max(length)
        lo, hi = mm["min"].as_py(), mm["max"].as_py()
        if lo is None or ((f.min_length is None or lo >= f.min_length)
                          and (f.max_length is None or hi <= f.max_length)):
            continue
        v = length.fill_null(0).to_numpy(zero_copy_only=False)
        if f.min_length is not None:
            bad |= v < f.min_length
        if f.max_length is not None:
            bad |= v > f.max_length
    m = np.empty((n, len(_NUMERIC)), dtype=np.float64)
    for j, f in enumerate(_NUMERIC):
        col = cols[f.name]
        m[:, j] = (col.fill_null(0) if col.null_count else col).to_numpy(zero_copy_only=False)
    c = _AT
    with np.errstate(invalid="ignore"):
        bad |= ~((m >= _LO) & (m <= _HI)).all(axis=1)
        for f in _NUMERIC:
            if f.allowed is not None:
                bad |= ~np.isin(m[:, c[f.name]], f.allowed)
        p = m[:, c["packets"]]
        both = m[:, c["src2dst_packets"]] + m[:, c["dst2src_packets"]]
        bad |= m[:, c["last_seen_ms"]] < m[:, c["first_seen_ms"]]
        bad |= (both != 0) & (both != p)
        bad |= (m[:, _FLAGS] > p[:, None]).any(axis=1)
        mn, mean, mx = m[:, c["min_ps"]], m[:, c["mean_ps"]], m[:, c["max_ps"]]
        bad |= (mx != 0) & ~((mn <= mean) & (mean <= mx + 1e-6))
    return bad

"""Every value on an edgeloop topic: a versioned JSON schema, defined here once.

Each value carries a `schema` field such as ``"edgeloop.flow/1"``. Decoding validates
and raises `RecordError` (with a short `reason` code) on anything it cannot use, so the
caller can dead-letter the raw bytes and carry on.

    >>> rec = FlowRecord(flow_id="s1-1", first_seen_ms=0, last_seen_ms=5, src_ip="10.0.0.1", ...)
    >>> decode_flows(raw_bytes)       # -> list of (FlowRecord | RecordError)

A `flows` message is either one FlowRecord or a FlowBatch of many (sensors batch
naturally; one message per batch keeps the per-event cost of the stream low).
"""
from __future__ import annotations

import json
import math
from itertools import chain
from operator import attrgetter
from types import UnionType
from typing import Annotated, Any, Literal, Sequence, Union, get_args, get_origin

import msgspec
import numpy as np

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from contracts.errors import RecordError, SchemaVersionError

MAX_MESSAGE_BYTES = 8 * 1024 * 1024
MAX_BATCH_RECORDS = 20_000
MAX_TEXT = 512

Count = Annotated[int, Field(ge=0, le=10**12)]
NonNeg = Annotated[float, Field(ge=0, le=1e13, allow_inf_nan=False)]
Text = Annotated[str, Field(max_length=MAX_TEXT)]
Port = Annotated[int, Field(ge=0, le=65535)]


class _Record(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=False, allow_inf_nan=False)


class FlowRecord(_Record):
    """One bidirectional flow as metered by NFStream (or adapted from CSV/Parquet/NetFlow).

    Counts and sizes are NFStream's `bidirectional_*` unless prefixed by a direction.
    `application_name`, `requested_server_name` and `user_agent` are attacker-controlled
    text: data to quote, never instructions.
    """

    schema_: Literal["edgeloop.flow/1"] = Field("edgeloop.flow/1", alias="schema")
    flow_id: Annotated[str, Field(min_length=1, max_length=128)]
    sensor: Text = ""
    first_seen_ms: Annotated[int, Field(ge=0, le=10**14)]
    last_seen_ms: Annotated[int, Field(ge=0, le=10**14)]
    src_ip: Annotated[str, Field(min_length=2, max_length=64)]
    dst_ip: Annotated[str, Field(min_length=2, max_length=64)]
    src_port: Port = 0
    dst_port: Port = 0
    protocol: Annotated[int, Field(ge=0, le=255)]
    ip_version: Literal[4, 6] = 4
    duration_ms: NonNeg = 0.0
    packets: Annotated[int, Field(ge=1, le=10**12)]
    bytes: Count
    src2dst_packets: Count = 0
    src2dst_bytes: Count = 0
    dst2src_packets: Count = 0
    dst2src_bytes: Count = 0
    min_ps: NonNeg = 0.0
    mean_ps: NonNeg = 0.0
    stddev_ps: NonNeg = 0.0
    max_ps: NonNeg = 0.0
    mean_piat_ms: NonNeg = 0.0
    stddev_piat_ms: NonNeg = 0.0
    max_piat_ms: NonNeg = 0.0
    syn_packets: Count = 0
    ack_packets: Count = 0
    psh_packets: Count = 0
    rst_packets: Count = 0
    fin_packets: Count = 0
    urg_packets: Count = 0
    src2dst_syn_packets: Count = 0
    dst2src_syn_packets: Count = 0
    dst2src_rst_packets: Count = 0
    application_name: Text = ""
    requested_server_name: Text = ""
    user_agent: Text = ""
    # Ground truth, only in labelled datasets; never used as a feature.
    label: Annotated[str, Field(max_length=64)] | None = None
    # Set by the producer: when the record entered Kafka (epoch ms), for end-to-end latency.
    produced_ms: Annotated[int, Field(ge=0)] | None = None

    @model_validator(mode="after")
    def _physical(self) -> "FlowRecord":
        if self.last_seen_ms < self.first_seen_ms:
            raise ValueError("last_seen_ms before first_seen_ms")
        p = self.packets
        if self.src2dst_packets + self.dst2src_packets not in (0, p):
            raise ValueError("src2dst_packets + dst2src_packets != packets")
        # Chained comparisons, not max() of a tuple: this runs once per flow on the hot path.
        if (self.syn_packets > p or self.ack_packets > p or self.psh_packets > p or self.rst_packets > p
                or self.fin_packets > p or self.urg_packets > p):
            raise ValueError("a TCP flag count exceeds packets")
        if self.max_ps and not (self.min_ps <= self.mean_ps <= self.max_ps + 1e-6):
            raise ValueError("packet sizes not ordered min <= mean <= max")
        return self


FLOW_FIELDS: tuple[str, ...] = tuple(
    f.alias or name for name, f in FlowRecord.model_fields.items() if name != "schema_"
)
TEXT_FIELDS = ("flow_id", "sensor", "src_ip", "dst_ip", "application_name",
               "requested_server_name", "user_agent", "label")


class FlowBatch(_Record):
    schema_: Literal["edgeloop.flows/1"] = Field("edgeloop.flows/1", alias="schema")
    sensor: Text = ""
    records: list[dict[str, Any]] = Field(max_length=MAX_BATCH_RECORDS)


class Detection(_Record):
    """The verdict on one closed window."""

    window_id: str
    key: str
    flow_ids: list[str]
    first_seen_ms: int
    last_seen_ms: int
    predicted: str
    probabilities: list[float]
    confidence: float
    ood_score: float
    uncertain: bool
    closed_by: Literal["k", "time", "idle", "flush", "revoke", "pressure"]
    model_version: str
    produced_ms: int | None = None  # when the flow that closed the window was produced
    scored_ms: int
    # The window's view: keyed by source ("src"), by destination ("dst": `key` is the
    # victim of a fan-in attack) or by the pair.
    view: Literal["src", "dst", "pair"] = "src"


class DetectionBatch(_Record):
    schema_: Literal["edgeloop.detections/1"] = Field("edgeloop.detections/1", alias="schema")
    worker: str = ""
    model_version: str
    class_names: list[str]
    detections: list[Detection]


class Alert(_Record):
    """Confident attack verdicts for one key and class, aggregated over an interval."""

    schema_: Literal["edgeloop.alert/1"] = Field("edgeloop.alert/1", alias="schema")
    alert_id: str
    key: str
    attack: str
    windows: int
    flows: int
    first_seen_ms: int
    last_seen_ms: int
    max_confidence: float
    src_ips: list[str]
    dst_ips: list[str]
    dst_ports: list[int]
    model_version: str
    worker: str = ""
    # "src": `key` is the attacking source; "dst": `key` is the victim of a fan-in attack
    # (spoofed flood, reflection) and `src_ips` only the first of `sources` addresses.
    view: Literal["src", "dst", "pair"] = "src"
    sources: int = 0


class UncertainWindow(_Record):
    """A window the detector is unsure about (or an audit sample), with its raw flows."""

    schema_: Literal["edgeloop.uncertain/1"] = Field("edgeloop.uncertain/1", alias="schema")
    window_id: str
    key: str
    reason: Literal["low_confidence", "ood", "audit"]
    flows: list[FlowRecord]
    predicted: str
    probabilities: list[float]
    class_names: list[str]
    confidence: float
    ood_score: float
    model_version: str
    worker: str = ""
    view: Literal["src", "dst", "pair"] = "src"
    # What the window's host had done when each flow came (inference.history: one row of
    # HISTORY_FEATURES per flow), so the agent and retraining see what the detector saw.
    history: list[list[float]] = Field(default_factory=list, max_length=MAX_BATCH_RECORDS)


class Label(_Record):
    """A label decision for one window: who proposed it, and whether it was accepted."""

    schema_: Literal["edgeloop.label/1"] = Field("edgeloop.label/1", alias="schema")
    window_id: str
    label: str
    # Where the label came from: "llm:<model>", "human:<who>", "detector:<version>".
    source: str
    confidence: float = Field(ge=0, le=1)
    accepted: bool
    # Why: "accepted", or the acceptance reason code that sent it to review.
    reason: str
    novel: bool = False
    model_version: str = ""
    rationale: Annotated[str, Field(max_length=2000)] = ""
    at_ms: int


class ModelRelease(_Record):
    """A promoted bundle, named by its content: detectors fetch `<model store>/<version>`, never
    a path from the record, verify `sha256` and the feature schema (and, with trusted keys, the
    signature of `released_by`), then swap. `uri` only says where the publisher's registry kept it."""

    schema_: Literal["edgeloop.model_release/1"] = Field("edgeloop.model_release/1", alias="schema")
    version: str
    sha256: str
    uri: str = ""
    feature_schema_sha256: str
    class_names: list[str]
    released_ms: int
    reason: str = ""
    released_by: str = ""               # the name of the key that signed it
    signer: str = ""                    # its key id (streams/signing.py)
    signature: str = ""


class DeadLetter(_Record):
    """A value nobody could use, kept with why and where it came from."""

    schema_: Literal["edgeloop.deadletter/1"] = Field("edgeloop.deadletter/1", alias="schema")
    reason: str
    error: str
    source_topic: str
    partition: int | None = None
    offset: int | None = None
    key: str | None = None
    value: str  # the raw value (the bad record alone, for one record of a batch): its text, or base64
    # "base64" for a value that is not UTF-8 text (an Arrow IPC payload, broken bytes): the
    # value's first MAX_VALUE_CHARS bytes, so it can be replayed as it was.
    value_encoding: Literal["utf-8", "base64"] = "utf-8"
    value_bytes: int
    # Position of the bad record in its batch (the message at partition/offset); None: the whole message.
    index: int | None = None
    truncated: bool = False  # `value` was cut; the message itself is at partition/offset
    worker: str = ""
    at_ms: int


SCHEMAS: dict[str, type[_Record]] = {
    m.model_fields["schema_"].default: m
    for m in (FlowRecord, FlowBatch, DetectionBatch, Alert, UncertainWindow, Label, ModelRelease, DeadLetter)
}


def _reject_constant(token: str) -> float:
    raise RecordError("non_finite", f"JSON constant {token} is not allowed")


def _parse(raw: bytes | str, **hooks: Any) -> Any:
    """json.loads with the message size limit, and errors as RecordError (too_large,
    too_deep, bad_json)."""
    if len(raw) > MAX_MESSAGE_BYTES:
        raise RecordError("too_large", f"{len(raw)} bytes > {MAX_MESSAGE_BYTES}")
    try:
        return json.loads(raw, **hooks)
    except RecordError:
        raise
    except RecursionError as exc:
        raise RecordError("too_deep", "JSON nested too deeply") from exc
    except (ValueError, UnicodeDecodeError) as exc:
        raise RecordError("bad_json", str(exc)[:200]) from exc


def loads(raw: bytes | str) -> Any:
    """Parse JSON strictly: size-limited, and NaN/Infinity are errors, not floats."""
    return _parse(raw, parse_constant=_reject_constant)


# Numbers longer than this are no count, size or time; they stay text until a record is judged.
_MAX_NUMBER_CHARS = 40


class _Huge(str):
    """A JSON number too long to be a field value (kept as its digits)."""


def _parse_int(token: str) -> int | _Huge:
    return _Huge(token) if len(token) > _MAX_NUMBER_CHARS else int(token)


def _parse_float(token: str) -> float | _Huge:
    return _Huge(token) if len(token) > _MAX_NUMBER_CHARS else float(token)


def _loads_lenient(raw: bytes | str) -> tuple[Any, bool]:
    """Parse a batch so that one bad record cannot spoil the others: NaN and Infinity parse
    as floats, numbers of more than 40 characters as `_Huge`, and invalid UTF-8 as lone
    surrogates; `_record_problem` then judges each record. Size and nesting are enforced
    on the whole value. Also says whether the value held invalid UTF-8 at all."""
    text, bad_utf8 = raw, False
    if isinstance(raw, bytes):
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            text, bad_utf8 = raw.decode("utf-8", "surrogateescape"), True
    return _parse(text, parse_int=_parse_int, parse_float=_parse_float), bad_utf8


def _record_problem(item: Any, bad_utf8: bool = False) -> RecordError | None:
    """What makes one leniently parsed record unusable before validation, if anything
    (its text is searched for invalid UTF-8 only when the message held some)."""
    if not isinstance(item, dict):
        return RecordError("invalid", f"expected a JSON object, got {type(item).__name__}")
    for k, v in item.items():
        if isinstance(v, _Huge):
            return RecordError("huge_number", f"{k}: a number of {len(v)} characters")
        if isinstance(v, float) and not math.isfinite(v):
            return RecordError("non_finite", f"{k}: JSON constant {v} is not allowed")
        if isinstance(v, (dict, list)):
            return RecordError("invalid", f"{k}: expected a scalar, got {type(v).__name__}")
        if bad_utf8 and ((isinstance(v, str) and _has_surrogates(v)) or _has_surrogates(k)):
            return RecordError("bad_utf8", f"{k!r}: not valid UTF-8")
    return None


def _has_surrogates(text: str) -> bool:
    try:
        text.encode("utf-8")
        return False
    except UnicodeEncodeError:
        return True


def record_json(item: Any) -> bytes:
    """A leniently parsed record as JSON again (for its dead letter): NaN stays NaN, a huge
    number its digits (as a string), invalid UTF-8 as \\udcXX escapes."""
    return json.dumps(item, separators=(",", ":"), default=str).encode("ascii")


def _validation_reason(exc: ValidationError) -> RecordError:
    err = exc.errors()[0]
    loc = ".".join(str(p) for p in err.get("loc", ()))
    kind = err.get("type", "invalid")
    reason = "missing_field" if kind == "missing" else "non_finite" if "finite" in kind else "invalid"
    return RecordError(reason, f"{loc}: {err['msg']}" if loc else err["msg"])


def validate(cls: type[_Record], obj: Any) -> Any:
    """Validate a parsed JSON object as `cls`, translating errors to RecordError."""
    if not isinstance(obj, dict):
        raise RecordError("invalid", f"expected a JSON object, got {type(obj).__name__}")
    want = cls.model_fields["schema_"].default
    got = obj.get("schema", want)
    if got != want:
        raise SchemaVersionError("schema_version", f"schema {got!r}, this code reads {want!r}")
    try:
        return cls.model_validate(obj)
    except ValidationError as exc:
        raise _validation_reason(exc) from exc


def decode(cls: type[_Record], raw: bytes | str) -> Any:
    return validate(cls, loads(raw))


class _StrictFlowBatch(_Record):
    """A FlowBatch whose records are validated as FlowRecords in one pass (the fast path)."""

    schema_: Literal["edgeloop.flows/1"] = Field(alias="schema")
    sensor: Text = ""
    records: list[FlowRecord] = Field(max_length=MAX_BATCH_RECORDS)


def decode_flows(raw: bytes | str) -> list[FlowRecord | RecordError]:
    """Decode a `flows` value (one record or a batch) into records and per-record errors.

    A clean batch is parsed and validated in one pydantic-core call; only a batch with
    a problem takes the per-record path that isolates the bad records.
    """
    if len(raw) <= MAX_MESSAGE_BYTES:
        try:
            return list(_StrictFlowBatch.model_validate_json(raw).records)
        except ValidationError:
            pass
    return _decode_flows_slow(raw)


# Every numeric FlowRecord field, in this order: a decoded batch's values read once into a
# matrix (FlowRows.numeric), which the physical checks and the windower's RAW_COLUMNS both
# take their columns from.
NUMERIC_FIELDS: tuple[str, ...] = tuple(
    n for n, f in FlowRecord.model_fields.items() if f.annotation in (int, float))
_NUMERIC = attrgetter(*NUMERIC_FIELDS)
_NUM_AT = {n: i for i, n in enumerate(NUMERIC_FIELDS)}


class FlowRows(list):
    """Decoded flow rows; `numeric` [n, len(NUMERIC_FIELDS)] float64, their numeric fields,
    when every row of the message decoded clean (None otherwise)."""

    __slots__ = ("numeric",)

    def __init__(self, rows: Sequence[Any] = (), numeric: np.ndarray | None = None) -> None:
        super().__init__(rows)
        self.numeric = numeric


def join_rows(parts: Sequence[Sequence[Any]]) -> list[Any]:
    """Several messages' decoded rows as one list: FlowRows, their numeric matrices joined,
    when every part has one (each message decoded clean), else a plain list."""
    rows = list(chain.from_iterable(parts))
    nums = [getattr(p, "numeric", None) for p in parts]
    if all(m is not None and len(m) == len(p) for m, p in zip(nums, parts)):
        return FlowRows(rows, np.concatenate(nums) if nums else None)
    return rows


def numeric_matrix(rows: Sequence[Any]) -> np.ndarray:
    """NUMERIC_FIELDS of records (FlowRows or FlowRecords) as float64 [n, fields], one pass."""
    n = len(rows)
    return np.fromiter(chain.from_iterable(map(_NUMERIC, rows)), dtype=np.float64,
                       count=n * len(NUMERIC_FIELDS)).reshape(n, len(NUMERIC_FIELDS))


def decode_flow_rows(raw: bytes | str) -> list[Any]:
    """`decode_flows` for the edge's hot path: the same records and the same errors, with
    clean values decoded by msgspec into `FlowRow` structs (about 3x faster than pydantic;
    `tests/bench/bench_decode.py`), their physical rules checked as vectorised masks.

    A row that breaks a rule is judged by FlowRecord alone (same reason, same message) and
    dead-lettered by itself; a value msgspec refuses takes `decode_flows`' per-record path.
    FlowRows have FlowRecord's attributes and encode to the same JSON."""
    if len(raw) > MAX_MESSAGE_BYTES:
        return _decode_flows_slow(raw)
    try:
        rows = _ROW_BATCH.decode(raw).records
    except (msgspec.ValidationError, msgspec.DecodeError):
        try:
            rows = [_ROW.decode(raw)]
        except (msgspec.ValidationError, msgspec.DecodeError):
            return _decode_flows_slow(raw)
    num = numeric_matrix(rows)
    bad = _physical(num)
    if not bad.any():
        return FlowRows(rows, num)
    out: list[Any] = list(rows)
    for i in np.flatnonzero(bad).tolist():
        item = msgspec.to_builtins(rows[i])
        try:
            validate(FlowRecord, item)
        except RecordError as exc:
            exc.item, exc.index = item, i
            out[i] = exc
    return out


_PHYS_AT = [_NUM_AT[n] for n in ("first_seen_ms", "last_seen_ms", "packets", "src2dst_packets", "dst2src_packets",
                                  "syn_packets", "ack_packets", "psh_packets", "rst_packets", "fin_packets",
                                  "urg_packets", "min_ps", "mean_ps", "max_ps")]


def physical_problems(rows: Sequence[Any]) -> np.ndarray:
    """Rows that break FlowRecord's physical rules ([n] bool), as vectorised masks: time
    order, packets by direction, flag counts within packets, ordered packet sizes."""
    if not rows:
        return np.zeros(0, dtype=bool)
    return _physical(numeric_matrix(rows))


def _physical(num: np.ndarray) -> np.ndarray:
    """`physical_problems` on the rows' NUMERIC_FIELDS matrix."""
    v = num[:, _PHYS_AT]
    first, last, p, s2d, d2s = v[:, 0], v[:, 1], v[:, 2], v[:, 3], v[:, 4]
    flags, mn, mean, mx = v[:, 5:11], v[:, 11], v[:, 12], v[:, 13]
    both = s2d + d2s
    return ((last < first) | ((both != 0) & (both != p)) | (flags > p[:, None]).any(axis=1)
            | ((mx != 0) & ~((mn <= mean) & (mean <= mx + 1e-6))))


def _msgspec_type(annotation: Any, metadata: Sequence[Any] = ()) -> Any:
    """The msgspec type for a pydantic field type, with the same bounds."""
    origin = get_origin(annotation)
    if annotation is FlowRecord:
        return FlowRow
    if origin is list:
        return list[_msgspec_type(get_args(annotation)[0])]  # type: ignore[misc]
    if origin is Annotated:
        base, *extra = get_args(annotation)
        meta = [m for x in extra for m in (getattr(x, "metadata", None) or [x])]
        return _msgspec_type(base, [*metadata, *meta])
    if origin in (Union, UnionType):
        return Union[tuple(_msgspec_type(a) for a in get_args(annotation))]  # type: ignore[return-value]
    if origin is Literal or annotation is type(None):
        return annotation
    bounds: dict[str, Any] = {}
    for m in metadata:
        for attr in ("ge", "le", "gt", "lt", "min_length", "max_length"):
            if getattr(m, attr, None) is not None:
                bounds[attr] = getattr(m, attr)
    return Annotated[annotation, msgspec.Meta(**bounds)] if bounds else annotation


def struct_of(model: type[BaseModel], name: str, **options: Any) -> type:
    """A msgspec Struct with `model`'s fields, types and bounds (its `schema` field last)."""
    fields: list[Any] = []
    for fname, f in model.model_fields.items():
        if fname == "schema_":
            continue
        t = _msgspec_type(f.annotation, f.metadata)
        if f.is_required():
            fields.append((fname, t))
        else:
            fields.append((fname, t, msgspec.field(default_factory=f.default_factory) if f.default_factory
                           else f.default))
    fields.sort(key=lambda x: len(x) == 3)  # required first, as a struct wants
    if "schema_" in model.model_fields:
        schema = model.model_fields["schema_"].default
        fields.append(("schema_", Literal[schema], schema))
        options.setdefault("rename", {"schema_": "schema"})
    return msgspec.defstruct(name, fields, **options)


FlowRow = struct_of(FlowRecord, "FlowRow", omit_defaults=True)
# The detector's verdicts as structs: built per window at a fraction of a pydantic model's
# cost, encoded a batch at a time (encode_detection_batch); same JSON fields as Detection.
DetectionRow = struct_of(Detection, "DetectionRow")
_DetectionRows = msgspec.defstruct("DetectionRows", [
    ("schema", str), ("worker", str), ("model_version", str), ("class_names", list[str]),
    ("detections", list[DetectionRow])])  # type: ignore[valid-type]
# An uncertain window as the router builds it: the FlowRows ride as they are (no FlowRecord
# per flow); decoded, the message is an UncertainWindow like any other.
UncertainRow = struct_of(UncertainWindow, "UncertainRow")
_ENCODER = msgspec.json.Encoder()
_DETECTIONS_SCHEMA = DetectionBatch.model_fields["schema_"].default


def encode_detection_batch(worker: str, model_version: str, class_names: list[str],
                           detections: list[Any]) -> bytes:
    """One `detections` message (edgeloop.detections/1) from DetectionRows, in one encode."""
    return _ENCODER.encode(_DetectionRows(_DETECTIONS_SCHEMA, worker, model_version, class_names, detections))


_RowBatch = msgspec.defstruct("FlowRowBatch", [
    ("schema", Literal["edgeloop.flows/1"]),
    ("records", Annotated[list[FlowRow], msgspec.Meta(max_length=MAX_BATCH_RECORDS)]),  # type: ignore[valid-type]
    ("sensor", Annotated[str, msgspec.Meta(max_length=MAX_TEXT)], "")])
_ROW_BATCH = msgspec.json.Decoder(_RowBatch)
_ROW = msgspec.json.Decoder(FlowRow)


def _decode_flows_slow(raw: bytes | str) -> list[FlowRecord | RecordError]:
    """Decode a `flows` value (one record or a batch) into records and per-record errors.

    A broken envelope yields one error; a batch with some bad records yields the good
    records plus one RecordError per bad one (with the record as `.item`), so good
    flows keep flowing.
    """
    try:
        obj, bad_utf8 = _loads_lenient(raw)
        if isinstance(obj, dict) and obj.get("schema") == "edgeloop.flows/1":
            items = _envelope_records(obj)
        else:
            items = [obj]
            if (problem := _record_problem(obj, bad_utf8)) is not None:
                return [problem]  # the message is the record: its own value is the dead letter
    except RecordError as exc:
        return [exc]
    out: list[FlowRecord | RecordError] = []
    for i, item in enumerate(items):
        try:
            if i >= MAX_BATCH_RECORDS:
                raise RecordError("over_batch_limit", f"record {i} of {len(items)}: a batch holds at most "
                                                      f"{MAX_BATCH_RECORDS}")
            if (problem := _record_problem(item, bad_utf8)) is not None:
                raise problem
            out.append(validate(FlowRecord, item))
        except RecordError as exc:
            exc.item, exc.index = item, i  # the offending record and where, for the dead letter
            out.append(exc)
    return out


def _envelope_records(obj: dict[str, Any]) -> list[Any]:
    """The records of a FlowBatch envelope, checked without judging them (each record is
    judged alone, so one bad record costs only itself)."""
    records = obj.get("records")
    if not isinstance(records, list):
        raise RecordError("missing_field" if records is None else "invalid",
                          f"records: expected a list, got {type(records).__name__}")
    sensor = obj.get("sensor", "")
    if not isinstance(sensor, str) or len(sensor) > MAX_TEXT or _has_surrogates(sensor):
        raise RecordError("invalid", f"sensor: expected text of at most {MAX_TEXT} characters")
    return records


def encode(record: Any) -> bytes:
    """A record's JSON value: a pydantic model, or one of this module's structs."""
    if isinstance(record, msgspec.Struct):
        return _ENCODER.encode(record)
    return record.model_dump_json(by_alias=True, exclude_none=True).encode()


def encode_flow_batch(records: list[dict[str, Any]], sensor: str = "") -> bytes:
    """Encode plain flow dicts (already valid) as one FlowBatch value, without re-validation."""
    return json.dumps({"schema": "edgeloop.flows/1", "sensor": sensor, "records": records},
                      separators=(",", ":"), allow_nan=False).encode()

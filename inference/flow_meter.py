"""Flows from a pcap, metered by NFStream, as plain dicts with FlowRecord's field names.

NFStream (the `capture` extra) does the metering; this module only maps its
`bidirectional_*` columns onto the flow contract (`contracts.records.FLOW_FIELDS`) and
smooths its quirks so every dict validates: missing text is "" not NaN, negative
inter-arrival times from out-of-order timestamps are clamped to 0, mean packet size is
kept between min and max, and attacker-controlled text is truncated to the record limit.

    >>> for rec in iter_pcap_flows("capture.pcap", sensor="lab"):
    ...     FlowRecord.model_validate(rec)
    >>> df = meter_pcap("capture.pcap")          # columns in FLOW_FIELDS order, label None

`nfstream_flow_to_record` is public so live capture (an NFStreamer on an interface) uses
the very same mapping.
"""
from __future__ import annotations

import hashlib
import math
from pathlib import Path
from typing import Any, Iterator

from contracts.errors import SourceError
from contracts.records import FLOW_FIELDS, MAX_TEXT

# NFStream defaults are for long-lived links (idle 120 s, active 1800 s); the lab and
# most edge sensors want flows closed quickly so windows fill in seconds.
DEFAULT_IDLE_TIMEOUT = 5
DEFAULT_ACTIVE_TIMEOUT = 30

_COUNTS = {
    "packets": "bidirectional_packets", "bytes": "bidirectional_bytes",
    "src2dst_packets": "src2dst_packets", "src2dst_bytes": "src2dst_bytes",
    "dst2src_packets": "dst2src_packets", "dst2src_bytes": "dst2src_bytes",
    "syn_packets": "bidirectional_syn_packets", "ack_packets": "bidirectional_ack_packets",
    "psh_packets": "bidirectional_psh_packets", "rst_packets": "bidirectional_rst_packets",
    "fin_packets": "bidirectional_fin_packets", "urg_packets": "bidirectional_urg_packets",
    "src2dst_syn_packets": "src2dst_syn_packets", "dst2src_syn_packets": "dst2src_syn_packets",
    "dst2src_rst_packets": "dst2src_rst_packets",
}
_FLOATS = {
    "duration_ms": "bidirectional_duration_ms",
    "min_ps": "bidirectional_min_ps", "mean_ps": "bidirectional_mean_ps",
    "stddev_ps": "bidirectional_stddev_ps", "max_ps": "bidirectional_max_ps",
    "mean_piat_ms": "bidirectional_mean_piat_ms", "stddev_piat_ms": "bidirectional_stddev_piat_ms",
    "max_piat_ms": "bidirectional_max_piat_ms",
}
_TEXTS = ("application_name", "requested_server_name", "user_agent")


def _num(value: Any) -> float:
    """A finite, non-negative float from whatever NFStream gave (None, NaN, negatives)."""
    try:
        x = float(value)
    except (TypeError, ValueError):
        return 0.0
    return x if math.isfinite(x) and x > 0 else 0.0


def _text(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    text = value if isinstance(value, str) else str(value)
    return text.replace("\x00", "")[:MAX_TEXT]


def flow_id(sensor: str, src_ip: str, src_port: int, dst_ip: str, dst_port: int,
            protocol: int, first_seen_ms: int) -> str:
    """A stable id from the 5-tuple and start time (unique: a flow with the same 5-tuple
    starts only after the previous one expired). The same flow gets the same id whether
    it is metered live, from the full pcap or from a trimmed copy; sensors never collide."""
    key = f"{src_ip}|{src_port}|{dst_ip}|{dst_port}|{protocol}|{first_seen_ms}"
    return f"{sensor}-{hashlib.blake2b(key.encode(), digest_size=8).hexdigest()}"


def nfstream_flow_to_record(flow: Any, sensor: str = "") -> dict[str, Any]:
    """Map one NFStream flow (an NFlow, or any object/row with its attribute names) to a
    dict with exactly FLOW_FIELDS as keys, valid as a FlowRecord."""
    get = flow.get if isinstance(flow, dict) else (lambda k, d=None: getattr(flow, k, d))
    first = int(_num(get("bidirectional_first_seen_ms")))
    last = max(first, int(_num(get("bidirectional_last_seen_ms"))))
    ipv = int(_num(get("ip_version")) or 4)
    rec: dict[str, Any] = {
        "flow_id": "", "sensor": _text(sensor), "first_seen_ms": first, "last_seen_ms": last,
        "src_ip": _text(get("src_ip")) or "0.0.0.0", "dst_ip": _text(get("dst_ip")) or "0.0.0.0",
        "src_port": min(65535, int(_num(get("src_port")))),
        "dst_port": min(65535, int(_num(get("dst_port")))),
        "protocol": min(255, int(_num(get("protocol")))), "ip_version": 6 if ipv == 6 else 4,
    }
    for name, col in _COUNTS.items():
        rec[name] = int(_num(get(col)))
    for name, col in _FLOATS.items():
        rec[name] = _num(get(col))
    for name in _TEXTS:
        rec[name] = _text(get(name))
    _make_consistent(rec)
    rec["flow_id"] = flow_id(rec["sensor"] or "nf", rec["src_ip"], rec["src_port"], rec["dst_ip"],
                             rec["dst_port"], rec["protocol"], first)
    rec["label"] = None
    rec["produced_ms"] = None
    return {k: rec[k] for k in FLOW_FIELDS}


def _make_consistent(rec: dict[str, Any]) -> None:
    rec["packets"] = max(1, rec["packets"], rec["src2dst_packets"] + rec["dst2src_packets"])
    if rec["src2dst_packets"] + rec["dst2src_packets"] not in (0, rec["packets"]):
        rec["src2dst_packets"] = rec["packets"] - rec["dst2src_packets"]
    for flag in ("syn", "ack", "psh", "rst", "fin", "urg"):
        rec[f"{flag}_packets"] = min(rec[f"{flag}_packets"], rec["packets"])
    if rec["max_ps"]:
        rec["min_ps"] = min(rec["min_ps"], rec["max_ps"])
        rec["mean_ps"] = min(max(rec["mean_ps"], rec["min_ps"]), rec["max_ps"])
    rec["duration_ms"] = max(rec["duration_ms"], float(rec["last_seen_ms"] - rec["first_seen_ms"]))


def _streamer(path: str | Path, idle_timeout: int, active_timeout: int, n_meters: int):
    try:
        from nfstream import NFStreamer
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise SourceError("pcap metering needs NFStream: pip install 'edgeloop[capture]'") from exc
    p = Path(path)
    if not p.is_file():
        raise SourceError(f"pcap {p} does not exist")
    try:
        return NFStreamer(source=str(p), statistical_analysis=True, idle_timeout=idle_timeout,
                          active_timeout=active_timeout, n_meters=n_meters, splt_analysis=0,
                          n_dissections=20)
    except Exception as exc:  # NFStream raises bare ValueError/OSError on bad input
        raise SourceError(f"NFStream cannot open {p}: {exc}") from exc


def iter_pcap_flows(path: str | Path, sensor: str = "pcap", *,
                    idle_timeout: int = DEFAULT_IDLE_TIMEOUT,
                    active_timeout: int = DEFAULT_ACTIVE_TIMEOUT,
                    n_meters: int = 1) -> Iterator[dict[str, Any]]:
    """Meter a pcap and yield one FlowRecord-shaped dict per flow, in export order.

    One meter (the default) keeps export order deterministic; more meters are faster on
    big captures but interleave their output.
    """
    streamer = _streamer(path, idle_timeout, active_timeout, n_meters)
    try:
        for flow in streamer:
            yield nfstream_flow_to_record(flow, sensor)
    except SourceError:
        raise
    except Exception as exc:
        raise SourceError(f"NFStream failed on {path}: {exc}") from exc


def meter_pcap(path: str | Path, sensor: str = "pcap", *,
               idle_timeout: int = DEFAULT_IDLE_TIMEOUT,
               active_timeout: int = DEFAULT_ACTIVE_TIMEOUT, n_meters: int = 1):
    """Meter a pcap into a DataFrame: columns in FLOW_FIELDS order, sorted by first_seen_ms."""
    import pandas as pd

    rows = list(iter_pcap_flows(path, sensor, idle_timeout=idle_timeout,
                                active_timeout=active_timeout, n_meters=n_meters))
    df = pd.DataFrame.from_records(rows, columns=list(FLOW_FIELDS))
    df["label"] = df["label"].astype(object)
    df["produced_ms"] = df["produced_ms"].astype("Int64")
    return df.sort_values(["first_seen_ms", "flow_id"], kind="stable").reset_index(drop=True)

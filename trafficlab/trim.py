"""Cut a lab capture down to a size that can ship, without changing any flow in it.

A shipped replay pcap must stay small (a few MB), yet replaying it should give flows
exactly like those in the dataset. So trimming works on whole flows, never on parts:
it keeps every packet of the flows that *start* inside chosen time windows (the first
fraction of each attack run, plus a benign-only stretch before the first attack) and
drops every packet of every other flow. Re-metering the trimmed file with the same
NFStream timeouts gives the same flows, with the same flow ids, as the matching rows of
the full dataset. Each kept packet is also cut to `snaplen` bytes (wire lengths are
kept, so sizes do not change). The fraction is the largest that fits the byte budget.

    >>> info = trim_capture(full_pcap, out_pcap, flows_df, spans, max_bytes=5_000_000)
"""
from __future__ import annotations

import math
import socket
import struct
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from contracts.errors import LabError
from trafficlab.labelling import GRACE_MS, Span

PCAP_RECORD = 16
# Classic pcap magic numbers (microsecond and nanosecond variants) -> struct byte order.
_MAGICS = {b"\xd4\xc3\xb2\xa1": "<", b"\xa1\xb2\xc3\xd4": ">",
           b"\x4d\x3c\xb2\xa1": "<", b"\xa1\xb2\x3c\x4d": ">"}


@dataclass(frozen=True)
class TrimResult:
    fraction: float
    flows: int
    packets: int
    bytes: int
    snaplen: int


def _key(a: str, ap: int, b: str, bp: int, proto: int) -> tuple:
    return (proto, *sorted(((a, ap), (b, bp))))


def _read(path: Path):
    """Yield (ts_ms, key or None, header, body) for every packet of a classic pcap."""
    data = path.read_bytes()
    if len(data) < 24 or data[:4] not in _MAGICS:
        raise LabError(f"{path}: not a classic pcap file")
    endian = _MAGICS[data[:4]]
    nano = data[:4] in (b"\x4d\x3c\xb2\xa1", b"\xa1\xb2\x3c\x4d")
    rec = struct.Struct(endian + "IIII")
    yield data[:24]
    pos = 24
    while pos + PCAP_RECORD <= len(data):
        sec, frac, incl, orig = rec.unpack_from(data, pos)
        body = data[pos + PCAP_RECORD: pos + PCAP_RECORD + incl]
        ts_ms = sec * 1000 + (frac // 1_000_000 if nano else frac // 1000)
        yield ts_ms, _packet_key(body), (sec, frac, orig), body
        pos += PCAP_RECORD + incl


def _packet_key(frame: bytes):
    if len(frame) < 34 or frame[12:14] != b"\x08\x00":
        return None  # not IPv4 over Ethernet: NFStream makes no flow of it either
    ihl = (frame[14] & 0x0F) * 4
    proto = frame[23]
    src, dst = socket.inet_ntoa(frame[26:30]), socket.inet_ntoa(frame[30:34])
    sp = dp = 0
    l4 = 14 + ihl
    if proto in (6, 17) and len(frame) >= l4 + 4:
        sp, dp = struct.unpack_from("!HH", frame, l4)
    return _key(src, sp, dst, dp, proto)


def _select(df, spans: list[Span], fraction: float):
    """Row mask of flows starting in the windows for this fraction."""
    import numpy as np

    first = df["first_seen_ms"].to_numpy()
    keep = np.zeros(len(df), dtype=bool)
    start = int(first.min()) if len(first) else 0
    if spans:
        warm_end = start + (min(s.start_ms for s in spans) - start) * fraction
        keep |= first <= warm_end
    labels = df["label"].to_numpy()
    for s in spans:
        lo, hi = s.start_ms - GRACE_MS, s.end_ms + GRACE_MS
        ours = (labels == s.label) & (first >= lo) & (first <= hi)
        mine = np.sort(first[ours])
        if len(mine) == 0:
            continue
        cut = mine[max(0, math.ceil(fraction * len(mine)) - 1)]
        keep |= (ours & (first <= cut)) | ((first >= s.start_ms) & (first <= cut))
    return keep


def _estimate(df, mask, snaplen: int) -> int:
    pk = df["packets"].to_numpy()[mask]
    by = df["bytes"].to_numpy()[mask]
    return int(24 + (pk * PCAP_RECORD).sum() + (by.clip(max=pk * snaplen)).sum())


def trim_capture(src: Path, dst: Path, df, spans: list[Span], max_bytes: int,
                 snaplen: int = 96) -> TrimResult:
    """Write the largest flow-exact prefix-of-every-run subset of `src` that fits."""
    lo, hi = 0.0, 1.0
    if _estimate(df, _select(df, spans, 1.0), snaplen) > max_bytes * 0.97:
        for _ in range(20):
            mid = (lo + hi) / 2
            if _estimate(df, _select(df, spans, mid), snaplen) <= max_bytes * 0.97:
                lo = mid
            else:
                hi = mid
        fraction = lo
    else:
        fraction = 1.0
    for _ in range(8):
        mask = _select(df, spans, fraction)
        packets, size = _write(src, dst, df[mask], snaplen)
        if size <= max_bytes:
            return TrimResult(round(fraction, 4), int(mask.sum()), packets, size, snaplen)
        fraction *= 0.9
    raise LabError(f"could not trim {src} below {max_bytes} bytes")


def _write(src: Path, dst: Path, kept, snaplen: int) -> tuple[int, int]:
    intervals: dict[tuple, list[tuple[int, int]]] = defaultdict(list)
    for row in kept[["src_ip", "src_port", "dst_ip", "dst_port", "protocol",
                     "first_seen_ms", "last_seen_ms"]].itertuples(index=False):
        intervals[_key(row[0], row[1], row[2], row[3], row[4])].append((row[5], row[6]))
    it = _read(src)
    header = bytearray(next(it))
    endian = _MAGICS[bytes(header[:4])]
    struct.pack_into(endian + "I", header, 16, snaplen)
    rec = struct.Struct(endian + "IIII")
    out, packets = [bytes(header)], 0
    for ts_ms, key, (sec, frac, orig), body in it:
        spans = intervals.get(key) if key else None
        if spans and any(a <= ts_ms <= b for a, b in spans):
            keep = body[:snaplen]
            out.append(rec.pack(sec, frac, len(keep), orig) + keep)
            packets += 1
    blob = b"".join(out)
    dst.write_bytes(blob)
    return packets, len(blob)

"""Meter one capture file into flows, or say exactly why it could not be.

Open-world evaluation and the foreign datasets meter captures that other people made:
odd link types, IPv6 only, truncated files, a single packet. Each file either yields
flows or fails with one reason out of `FAILURE_REASONS`, so reports can count failures
per reason instead of skipping them. The file's own header is read first (pcap or
pcapng: link types, packet count, a cut-off tail), then NFStream meters it through
`inference.flow_meter.meter_pcap`.

    >>> m = meter_capture("capture.pcapng", sensor="ndpi")
    >>> m.ok, m.reason, len(m.flows), m.info.link_types
    (True, None, 12, ['ETHERNET'])
"""
from __future__ import annotations

import struct
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

from contracts.errors import SourceError
from inference.flow_meter import DEFAULT_ACTIVE_TIMEOUT, DEFAULT_IDLE_TIMEOUT

CAPTURE_SUFFIXES = (".pcap", ".pcapng", ".cap")
# Why a capture produced no flows. Every failed capture gets exactly one.
FAILURE_REASONS = {
    "missing_file": "the file does not exist",
    "not_a_capture": "neither a pcap nor a pcapng header (unknown magic number)",
    "truncated_header": "the file ends inside its own header",
    "no_packets": "a valid header but not one packet",
    "meter_error": "NFStream raised while metering",
    "no_flows": "packets, but NFStream metered no IP flow from them",
}
LINK_TYPES = {0: "NULL", 1: "ETHERNET", 12: "RAW", 14: "RAW", 101: "RAW", 108: "LOOP",
              105: "IEEE802_11", 113: "LINUX_SLL", 127: "IEEE802_11_RADIOTAP",
              228: "IPV4", 229: "IPV6", 276: "LINUX_SLL2"}
_PCAP_MAGIC = {b"\xd4\xc3\xb2\xa1": "<", b"\xa1\xb2\xc3\xd4": ">",
               b"\x4d\x3c\xb2\xa1": "<", b"\xa1\xb2\x3c\x4d": ">"}
_PCAPNG_SHB = b"\x0a\x0d\x0d\x0a"


@dataclass
class CaptureInfo:
    """What the file's own header and records say, before any metering."""

    format: str = "unknown"  # pcap, pcapng or unknown
    link_types: list[str] = field(default_factory=list)
    packets: int = 0
    snapped_packets: int = 0  # captured length shorter than the packet on the wire
    truncated_tail: bool = False  # the last record is cut off (metered up to there)
    error: str | None = None  # a FAILURE_REASONS key when the header itself is unusable


def _link_name(code: int) -> str:
    return LINK_TYPES.get(code, f"LINKTYPE_{code}")


def inspect_capture(path: str | Path) -> CaptureInfo:
    """Read a pcap/pcapng file's header and walk its records (no packet decoding)."""
    data = Path(path).read_bytes()
    if len(data) < 4:
        return CaptureInfo(error="truncated_header")
    if data[:4] in _PCAP_MAGIC:
        return _inspect_pcap(data, _PCAP_MAGIC[data[:4]])
    if data[:4] == _PCAPNG_SHB:
        return _inspect_pcapng(data)
    return CaptureInfo(error="not_a_capture")


def _inspect_pcap(data: bytes, order: str) -> CaptureInfo:
    info = CaptureInfo(format="pcap")
    if len(data) < 24:
        info.error = "truncated_header"
        return info
    info.link_types = [_link_name(struct.unpack(order + "I", data[20:24])[0] & 0x0FFFFFFF)]
    pos = 24
    while pos < len(data):
        if pos + 16 > len(data):
            info.truncated_tail = True
            break
        incl, orig = struct.unpack(order + "II", data[pos + 8:pos + 16])
        if pos + 16 + incl > len(data):
            info.truncated_tail = True
            break
        info.packets += 1
        info.snapped_packets += incl < orig
        pos += 16 + incl
    return info


def _inspect_pcapng(data: bytes) -> CaptureInfo:
    info = CaptureInfo(format="pcapng")
    if len(data) < 12:
        info.error = "truncated_header"
        return info
    order = "<" if data[8:12] == b"\x4d\x3c\x2b\x1a" else ">"
    pos, links = 0, []
    while pos < len(data):
        if pos + 12 > len(data):
            info.truncated_tail = True
            break
        btype, blen = struct.unpack(order + "II", data[pos:pos + 8])
        if btype == 0x0A0D0D0A:  # each section may switch byte order
            order = "<" if data[pos + 8:pos + 12] == b"\x4d\x3c\x2b\x1a" else ">"
            blen = struct.unpack(order + "I", data[pos + 4:pos + 8])[0]
        if blen < 12 or pos + blen > len(data):
            info.truncated_tail = True
            break
        body = data[pos + 8:pos + blen - 4]
        if btype == 1 and len(body) >= 2:
            links.append(_link_name(struct.unpack(order + "H", body[:2])[0]))
        elif btype == 6 and len(body) >= 20:  # enhanced packet block
            cap, orig = struct.unpack(order + "II", body[12:20])
            info.packets += 1
            info.snapped_packets += cap < orig
        elif btype in (2, 3):  # obsolete packet block, simple packet block
            info.packets += 1
        pos += blen
    info.link_types = sorted(set(links))
    return info


@dataclass
class MeterResult:
    """One capture metered: flows (None when it failed), what the file holds, and why not."""

    path: Path
    flows: Any = None  # DataFrame in FLOW_FIELDS order, or None
    info: CaptureInfo = field(default_factory=CaptureInfo)
    reason: str | None = None  # a FAILURE_REASONS key when it failed
    detail: str = ""
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.reason is None

    def notes(self) -> list[str]:
        """Caveats of a capture that metered: what to keep in mind about its flows."""
        out = []
        if self.info.truncated_tail:
            out.append("truncated_tail")
        if self.info.snapped_packets:
            out.append("snapped_packets")
        if self.ok and self.ip_versions() == [6]:
            out.append("ipv6_only")
        if any(t != "ETHERNET" for t in self.info.link_types):
            out.append("non_ethernet_link")
        return out

    def ip_versions(self) -> list[int]:
        if self.flows is None or not len(self.flows):
            return []
        return sorted(int(v) for v in self.flows["ip_version"].unique())

    def record(self) -> dict[str, Any]:
        """A JSON-ready summary for reports and datasheets."""
        flows = 0 if self.flows is None else len(self.flows)
        return {"file": self.path.name, "status": "ok" if self.ok else "failed",
                "reason": self.reason, "detail": self.detail, "format": self.info.format,
                "link_types": self.info.link_types, "packets": self.info.packets,
                "snapped_packets": self.info.snapped_packets,
                "truncated_tail": self.info.truncated_tail, "flows": flows,
                "flow_packets": int(self.flows["packets"].sum()) if flows else 0,
                "ip_versions": self.ip_versions(), "notes": self.notes(),
                "seconds": round(self.seconds, 3)}


def meter_capture(path: str | Path, sensor: str = "pcap", *,
                  idle_timeout: int = DEFAULT_IDLE_TIMEOUT,
                  active_timeout: int = DEFAULT_ACTIVE_TIMEOUT) -> MeterResult:
    """Meter one capture with NFStream; never raises for a bad file, says why instead."""
    from inference.flow_meter import meter_pcap

    p, t0 = Path(path), time.perf_counter()
    res = MeterResult(path=p)
    if not p.is_file():
        res.reason, res.detail = "missing_file", f"{p}: no such file"
        return res
    res.info = inspect_capture(p)
    if res.info.error:
        res.reason = res.info.error
        res.detail = f"{p.name}: {FAILURE_REASONS[res.info.error]}"
    elif res.info.packets == 0:
        res.reason, res.detail = "no_packets", f"{p.name}: {res.info.format} header, no packet records"
    else:
        try:
            res.flows = meter_pcap(p, sensor=sensor, idle_timeout=idle_timeout,
                                   active_timeout=active_timeout)
        except SourceError as exc:
            res.reason, res.detail = "meter_error", str(exc)
        else:
            if not len(res.flows):
                res.reason = "no_flows"
                res.detail = (f"{p.name}: {res.info.packets} packets on link type "
                              f"{','.join(res.info.link_types) or '?'}, no IP flow metered")
                res.flows = None
    res.seconds = time.perf_counter() - t0
    return res


@contextmanager
def progress_steps(label: str, total: int, enabled: bool = True) -> Iterator[Callable[[str], None]]:
    """A rich progress bar on stderr, one tick per `step(description)`; a no-op when disabled."""
    if not enabled:
        yield lambda description="": None
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    cols = (TextColumn(label), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
            TextColumn("{task.description}"))
    with Progress(*cols, console=Console(stderr=True), transient=False) as bar:
        task = bar.add_task("", total=total)

        def step(description: str = "") -> None:
            bar.update(task, advance=1, description=description[:60])
        yield step

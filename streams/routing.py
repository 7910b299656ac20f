"""Where each scored window goes: detections, uncertain (rate-limited), alerts.

Every window produces a detection. Windows under the confidence threshold (or out of
distribution) also go to `uncertain` with their raw flows, up to a rate; a deterministic
sample of confident windows goes too (reason "audit"), so agreement can be audited.
Confident attack verdicts are aggregated per (key, attack) into alerts.
"""
from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np

from contracts.records import Alert, Detection, FlowRecord, FlowRow, UncertainRow


class TokenBucket:
    """At most `rate` events per second on average, bursts up to `burst`."""

    def __init__(self, rate: float, burst: float | None = None, clock: Callable[[], float] = time.monotonic):
        self.rate, self.clock = rate, clock
        self.burst = burst if burst is not None else max(rate, 1.0)
        self.tokens, self.t = self.burst, clock()

    def take(self) -> bool:
        now = self.clock()
        self.tokens = min(self.burst, self.tokens + (now - self.t) * self.rate)
        self.t = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False


def audit_pick(window_id: str, fraction: float) -> bool:
    """Deterministic sample: the same window is picked in the stream and in a file."""
    if fraction <= 0:
        return False
    h = int.from_bytes(hashlib.blake2b(window_id.encode(), digest_size=4).digest(), "big")
    return h < fraction * 2**32


@dataclass
class _AlertAgg:
    windows: int = 0
    flows: int = 0
    first_seen_ms: int = 2**62
    last_seen_ms: int = 0
    max_confidence: float = 0.0
    src_ips: set[str] = field(default_factory=set)
    dst_ips: set[str] = field(default_factory=set)
    dst_ports: set[int] = field(default_factory=set)
    sources: int = 0  # distinct source addresses seen, counted up to SOURCE_CAP
    _seen: set[str] = field(default_factory=set)
    intervals: int = 0  # drains it has waited through with no new window


class AlertAggregator:
    """Collect confident attack detections per (view, key, attack); emit when the interval
    ends. In the `dst` view the key is the victim, and `sources` says how many distinct
    addresses attacked it (a spoofed flood: thousands)."""

    MAX_LISTED = 50
    SOURCE_CAP = 1_000_000  # distinct sources counted per alert (a spoofed flood has many)
    MAX_WAIT_INTERVALS = 3

    def __init__(self, benign: str, min_windows: int, interval_s: float, worker: str = "",
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.benign, self.min_windows, self.interval_s = benign, min_windows, interval_s
        self.worker, self.clock = worker, clock
        self._aggs: dict[tuple[str, str, str], _AlertAgg] = {}
        self._since = clock()

    def add(self, d: Detection, src_ips: Sequence[str] = (), dst_ips: Sequence[str] = (),
            dst_ports: Sequence[int] = ()) -> None:
        """Count a detection, with its flows' addresses and destination ports (columns: a
        ClosedWindow's `column`, no records rebuilt)."""
        if d.uncertain or d.predicted == self.benign:
            return
        self.add_group((d.view, d.key, d.predicted), 1, len(d.flow_ids), d.first_seen_ms, d.last_seen_ms,
                       d.confidence, src_ips, dst_ips, dst_ports)

    def add_group(self, k: tuple[str, str, str], windows: int, flows: int, first_seen_ms: int,
                  last_seen_ms: int, max_confidence: float, src_ips: Sequence[str] = (),
                  dst_ips: Sequence[str] = (), dst_ports: Sequence[int] = ()) -> None:
        """Count `windows` confident detections of one (view, key, attack) at once, their
        columns laid end to end in window order: the same aggregate as `add` one at a time."""
        a = self._aggs.get(k)
        if a is None:  # (not setdefault: that would build an aggregate and its four sets per call)
            a = self._aggs[k] = _AlertAgg()
        a.windows += windows
        a.intervals = 0  # still active: a slow attacker keeps adding up to min_windows
        a.flows += flows
        a.first_seen_ms = min(a.first_seen_ms, first_seen_ms)
        a.last_seen_ms = max(a.last_seen_ms, last_seen_ms)
        a.max_confidence = max(a.max_confidence, max_confidence)
        if a.sources < self.SOURCE_CAP:
            before = len(a._seen)
            a._seen.update(src_ips)
            a.sources = min(self.SOURCE_CAP, a.sources + len(a._seen) - before)
        cap = self.MAX_LISTED
        for col, listed in ((src_ips, a.src_ips), (dst_ips, a.dst_ips), (dst_ports, a.dst_ports)):
            if len(listed) >= cap:
                continue
            if len(listed) + len(col) <= cap:  # room for all of them: one C-level update
                listed.update(col)
                continue
            col = dict.fromkeys(col)  # distinct, in order (a group's columns repeat a lot)
            if len(listed) + len(col) <= cap:
                listed.update(col)
                continue
            for v in col:  # the first values, in order, up to the cap
                if len(listed) >= cap:
                    break
                listed.add(v)

    def due(self) -> bool:
        return bool(self._aggs) and self.clock() - self._since >= self.interval_s

    def drain(self, model_version: str, force: bool = False) -> list[Alert]:
        """Alerts for aggregates with `min_windows` windows; the rest wait for the next
        interval, and are dropped after `MAX_WAIT_INTERVALS` drains without a new window:
        a spoofed flood leaves one window per fresh source, and those must neither alert
        (one SYN accuses no one) nor pile up, while a slow attacker that keeps adding
        windows still reaches the bar. `force` (end of input) drains now, same rule."""
        if not force and not self.due():
            return []
        out, keep = [], {}
        for (view, key, attack), a in self._aggs.items():
            if a.windows >= self.min_windows:
                tag = f"{key}|{attack}|{a.first_seen_ms}" if view == "src" else f"{view}|{key}|{attack}|{a.first_seen_ms}"
                aid = hashlib.blake2b(tag.encode(), digest_size=8).hexdigest()
                out.append(Alert(alert_id=aid, key=key, attack=attack, windows=a.windows, flows=a.flows,
                                 first_seen_ms=a.first_seen_ms, last_seen_ms=a.last_seen_ms,
                                 max_confidence=round(a.max_confidence, 4), src_ips=sorted(a.src_ips),
                                 dst_ips=sorted(a.dst_ips), dst_ports=sorted(a.dst_ports),
                                 model_version=model_version, worker=self.worker, view=view,
                                 sources=a.sources))
            elif not force and a.intervals < self.MAX_WAIT_INTERVALS:
                a.intervals += 1
                keep[(view, key, attack)] = a
        self._aggs = keep
        self._since = self.clock()
        return out


def _row(f: Any) -> Any:
    """A flow as a FlowRow (FlowRecords, from the per-record decode path, are converted)."""
    if isinstance(f, FlowRecord):
        return FlowRow(**f.model_dump(exclude={"schema_"}))
    return f


class UncertainRouter:
    """Decide which windows go to `uncertain`: below threshold (rate-limited) or audit sample."""

    def __init__(self, rate_per_s: float, audit_fraction: float, worker: str = "") -> None:
        self.bucket = TokenBucket(rate_per_s) if rate_per_s > 0 else None
        self.audit_fraction, self.worker = audit_fraction, worker
        self.rate_limited = 0
        self.covered = 0

    def route(self, d: Detection, low_confidence: bool, flows: Sequence[Any] | Callable[[], Sequence[Any]],
              class_names: list[str], history: Any = None, covered: bool = False) -> Any:
        """The message for `uncertain` (an UncertainRow: `encode` it), or None. `history` (an array [n, N_HISTORY],
        or a callable giving it) rides with the flows, rounded, only when a message is sent.
        A `covered` uncertain window (a destination window whose flows its sources' windows
        carry: inference.onnx_detector) is counted, not sent, and takes no token: a scan of a
        thousand hosts must not use up the channel that the truly unsure windows need."""
        if d.uncertain and covered:
            self.covered += 1
            return None
        if d.uncertain:
            reason = "low_confidence" if low_confidence else "ood"
            if self.bucket is not None and not self.bucket.take():
                self.rate_limited += 1
                return None
        elif audit_pick(d.window_id, self.audit_fraction):
            reason = "audit"
        else:
            return None
        rows = flows() if callable(flows) else flows  # records rebuilt only for a message sent
        history = history() if callable(history) else history
        return UncertainRow(window_id=d.window_id, key=d.key, reason=reason, flows=[_row(f) for f in rows],
                               predicted=d.predicted, probabilities=d.probabilities,
                               class_names=class_names, confidence=d.confidence,
                               ood_score=d.ood_score, model_version=d.model_version, worker=self.worker,
                               view=d.view,
                               history=[] if history is None else np.round(history, 5).tolist())

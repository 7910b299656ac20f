"""Windows of K consecutive flows per key: the unit the detector scores.

A window collects flows that share a key (source, destination or the pair). It closes
when it holds K flows ("k"), when a flow arrives more than T seconds (event time) after
the window's first flow ("time": that flow starts the next window), when the key has
been silent for T seconds of wall-clock ("idle"), or at end of input ("flush").
Membership depends only on each key's own flow sequence, so replaying a file as fast as
possible over Kafka gives the same windows as scoring it offline. Training builds its
windows with this same class: no train/serve skew.

    >>> w = Windower(k=8, seconds=10, key="src")
    >>> closed = w.push_records(records)      # windows closed by these records
    >>> closed += w.flush()                   # end of input
    >>> x, mask = stack_windows(closed, k=8)  # [n, F, K], [n, K]
"""
from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Literal, Sequence

import numpy as np

from inference.features import (FLOW_FEATURES, N_FEATURES, RAW_COLUMNS, context_features,
                                 flow_features, raw_matrix, raw_matrix_from_frame)

KeyMode = Literal["src", "dst", "pair"]
ClosedBy = Literal["k", "time", "idle", "flush"]
_TS = RAW_COLUMNS.index("first_seen_ms")
_DPORT = RAW_COLUMNS.index("dst_port")


def key_function(mode: KeyMode) -> Callable[[str, str], str]:
    if mode == "src":
        return lambda src, dst: src
    if mode == "dst":
        return lambda src, dst: dst
    if mode == "pair":
        return lambda src, dst: f"{src}>{dst}"
    raise ValueError(f"unknown window key mode {mode!r} (src, dst, pair)")


def window_id(key: str, first_flow_id: str) -> str:
    """Deterministic id: the same window gets the same id in the stream and in a file."""
    return hashlib.blake2b(f"{key}|{first_flow_id}".encode(), digest_size=8).hexdigest()


@dataclass
class ClosedWindow:
    window_id: str
    key: str
    flow_ids: list[str]
    features: np.ndarray  # [n, N_FEATURES] unnormalised, n <= K
    first_seen_ms: int
    last_seen_ms: int
    closed_by: ClosedBy
    items: list[Any] = field(default_factory=list)  # the source records, when kept
    labels: list[Any] = field(default_factory=list)


@dataclass
class _Open:
    first_ts: float
    wall: float
    flow_ids: list[str] = field(default_factory=list)
    rows: list[np.ndarray] = field(default_factory=list)  # flow features, one row per flow
    ts: list[float] = field(default_factory=list)         # first_seen_ms, for context features
    dports: list[float] = field(default_factory=list)
    dst_ips: list[str] = field(default_factory=list)
    items: list[Any] = field(default_factory=list)
    labels: list[Any] = field(default_factory=list)


class Windower:
    """Incremental windowing over any number of keys, bounded by `max_open` windows."""

    def __init__(self, k: int = 8, seconds: float = 10.0, key: KeyMode = "src",
                 max_open: int = 200_000, keep_items: bool = True,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.k, self.horizon_ms, self.max_open = k, seconds * 1000.0, max_open
        self.seconds, self.keep_items, self.clock = seconds, keep_items, clock
        self._key = key_function(key)
        self._open: dict[str, _Open] = {}

    def __len__(self) -> int:
        return len(self._open)

    def push(self, src_ips: Sequence[str], dst_ips: Sequence[str], flow_ids: Sequence[str],
             raw: np.ndarray, items: Sequence[Any] | None = None,
             labels: Sequence[Any] | None = None) -> list[ClosedWindow]:
        """Add N flows (columns already extracted); return the windows they closed, in order."""
        feats = flow_features(raw)
        all_ts, all_dports = raw[:, _TS].tolist(), raw[:, _DPORT].tolist()
        now = self.clock()
        done: list[tuple[str, _Open, ClosedBy]] = []
        opened, keyf, k, horizon = self._open, self._key, self.k, self.horizon_ms
        keep = items if self.keep_items else None
        for i in range(len(flow_ids)):
            key = keyf(src_ips[i], dst_ips[i])
            ts = all_ts[i]
            w = opened.get(key)
            if w is not None and ts - w.first_ts > horizon:
                done.append((key, opened.pop(key), "time"))
                w = None
            if w is None:
                if len(opened) >= self.max_open:
                    oldest = next(iter(opened))
                    done.append((oldest, opened.pop(oldest), "idle"))
                w = opened[key] = _Open(first_ts=ts, wall=now)
            w.wall = now
            w.flow_ids.append(flow_ids[i])
            w.rows.append(feats[i])
            w.ts.append(ts)
            w.dports.append(all_dports[i])
            w.dst_ips.append(dst_ips[i])
            if keep is not None:
                w.items.append(keep[i])
            if labels is not None:
                w.labels.append(labels[i])
            if len(w.flow_ids) >= k:
                done.append((key, opened.pop(key), "k"))
        return self._close(done)

    def push_records(self, records: Sequence[Any]) -> list[ClosedWindow]:
        """Add FlowRecord objects (anything with FlowRecord attributes)."""
        return self.push([r.src_ip for r in records], [r.dst_ip for r in records],
                         [r.flow_id for r in records], raw_matrix(records), items=records)

    def expire(self, now: float | None = None) -> list[ClosedWindow]:
        """Close windows whose key has been silent for T seconds of wall-clock."""
        now = self.clock() if now is None else now
        stale = [key for key, w in self._open.items() if now - w.wall >= self.seconds]
        return self._close([(key, self._open.pop(key), "idle") for key in stale])

    def flush(self) -> list[ClosedWindow]:
        """Close every open window (end of input)."""
        out = self._close([(key, w, "flush") for key, w in self._open.items()])
        self._open.clear()
        return out

    @staticmethod
    def _close(done: list[tuple[str, _Open, ClosedBy]]) -> list[ClosedWindow]:
        """The closed windows, in order, their features built in one pass over all their
        flows laid end to end (a few numpy calls per push, not per window)."""
        if not done:
            return []
        sizes = np.fromiter((len(w.flow_ids) for _, w, _ in done), dtype=np.int64, count=len(done))
        starts = np.zeros(len(done), dtype=np.int64)
        np.cumsum(sizes[:-1], out=starts[1:])
        ts = np.fromiter((t for _, w, _ in done for t in w.ts), dtype=np.float64, count=int(sizes.sum()))
        dports = np.fromiter((p for _, w, _ in done for p in w.dports), dtype=np.float64, count=len(ts))
        ctx = context_features(ts, dports, [ip for _, w, _ in done for ip in w.dst_ips], starts)
        feats = np.concatenate([np.stack([r for _, w, _ in done for r in w.rows]), ctx], axis=1)
        lo, hi = np.minimum.reduceat(ts, starts).tolist(), np.maximum.reduceat(ts, starts).tolist()
        return [ClosedWindow(window_id(key, w.flow_ids[0]), key, w.flow_ids, feats[s:s + n], int(lo[j]),
                             int(hi[j]), how, w.items, w.labels)
                for j, ((key, w, how), s, n) in enumerate(zip(done, starts.tolist(), sizes.tolist()))]


def stack_windows(windows: Sequence[ClosedWindow], k: int) -> tuple[np.ndarray, np.ndarray]:
    """Pad and stack windows into the model's input: x [n, F, K] and mask [n, K]."""
    n = len(windows)
    x = np.zeros((n, N_FEATURES, k), dtype=np.float32)
    mask = np.zeros((n, k), dtype=np.float32)
    for i, w in enumerate(windows):
        m = len(w.flow_ids)
        x[i, :, :m] = w.features.T
        mask[i, :m] = 1.0
    return x, mask


def window_label(labels: Iterable[Any], benign: str = "benign") -> str:
    """A window's ground truth: its most common attack label, else benign."""
    counts: dict[str, int] = {}
    for lab in labels:
        if lab and lab != benign:
            counts[lab] = counts.get(lab, 0) + 1
    return max(counts, key=lambda c: counts[c]) if counts else benign


def windows_from_frame(df: Any, k: int = 8, seconds: float = 10.0, key: KeyMode = "src",
                       label_column: str | None = "label") -> list[ClosedWindow]:
    """Window a DataFrame of flows in row order, exactly as the stream would, then flush."""
    w = Windower(k=k, seconds=seconds, key=key, max_open=10**9, keep_items=False)
    labels = (df[label_column].tolist()
              if label_column and label_column in df.columns else None)
    closed = w.push(df["src_ip"].astype(str).tolist(), df["dst_ip"].astype(str).tolist(),
                    df["flow_id"].astype(str).tolist(), raw_matrix_from_frame(df), labels=labels)
    return closed + w.flush()


assert len(FLOW_FEATURES) + 3 == N_FEATURES

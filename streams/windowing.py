"""Windows of K consecutive flows per key: the unit the detector scores.

A window collects flows that share a key. It closes when it holds K flows ("k"), when a
flow arrives more than T seconds (event time) after the window's first flow ("time": that
flow starts the next window), when the key has been silent for T seconds of wall-clock
("idle"), at end of input ("flush"), or when the worker gives its partitions up in a
rebalance or a shutdown ("revoke": emitted before the offsets are handed over), or early,
the oldest first, when a view already holds `max_open` windows ("pressure"). Membership
depends only on each key's own flow sequence, so replaying a file as fast as possible over Kafka gives the same windows as
scoring it offline. Training builds its windows with this same class: no train/serve skew.

A Windower can look at the flows from several **views** at once: keyed by source ("src":
fan-out, one attacker's scan or brute force), by destination ("dst": fan-in, a spoofed
flood or a reflection attack on one victim) or by the pair. Every flow enters one window
per view; each view keeps its own open windows and its own bounded host history
(`inference.history`), whose features ride beside each flow.

    >>> w = Windower(k=8, seconds=10, views=("src", "dst"))
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

from inference.features import (N_FEATURES, RAW_COLUMNS, context_features, failed_flags,
                                 flow_features, raw_matrix, raw_matrix_from_frame)
from inference.history import DEFAULT_MAX_HOSTS, N_HISTORY, HostHistory

KeyMode = Literal["src", "dst", "pair"]
VIEWS: tuple[str, ...] = ("src", "dst", "pair")
ClosedBy = Literal["k", "time", "idle", "flush", "revoke", "pressure"]
_TS = RAW_COLUMNS.index("first_seen_ms")
_DPORT = RAW_COLUMNS.index("dst_port")
_BYTES = RAW_COLUMNS.index("bytes")


def key_function(mode: KeyMode | str) -> Callable[[str, str], str]:
    if mode == "src":
        return lambda src, dst: src
    if mode == "dst":
        return lambda src, dst: dst
    if mode == "pair":
        return lambda src, dst: f"{src}>{dst}"
    raise ValueError(f"unknown window key mode {mode!r} (src, dst, pair)")


def parse_views(views: str | Sequence[str]) -> tuple[str, ...]:
    """("src", "dst") from "src,dst" or a sequence; raises ValueError on an unknown view."""
    items = [v.strip() for v in views.split(",")] if isinstance(views, str) else list(views)
    items = [v for v in items if v]
    bad = [v for v in items if v not in VIEWS]
    if bad or not items or len(set(items)) != len(items):
        raise ValueError(f"views {views!r}: give distinct views out of {', '.join(VIEWS)}")
    return tuple(items)


def window_id(key: str, first_flow_id: str, view: str = "src") -> str:
    """Deterministic id: the same window gets the same id in the stream and in a file."""
    tag = f"{key}|{first_flow_id}" if view == "src" else f"{view}|{key}|{first_flow_id}"
    return hashlib.blake2b(tag.encode(), digest_size=8).hexdigest()


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
    view: str = "src"
    origins: list[Any] = field(default_factory=list)  # per flow: the token of the message it came in

    @property
    def history(self) -> np.ndarray:
        """The host-history part of the features, one row per flow."""
        return self.features[:, N_FEATURES - N_HISTORY:]


@dataclass
class _Open:
    first_ts: float
    wall: float
    flow_ids: list[str] = field(default_factory=list)
    rows: list[np.ndarray] = field(default_factory=list)  # flow features, one row per flow
    hist: list[np.ndarray] = field(default_factory=list)  # host history, one row per flow
    ts: list[float] = field(default_factory=list)         # first_seen_ms, for context features
    dports: list[float] = field(default_factory=list)
    peers: list[str] = field(default_factory=list)
    items: list[Any] = field(default_factory=list)
    labels: list[Any] = field(default_factory=list)
    origins: list[Any] = field(default_factory=list)


class _View:
    """One view's open windows and host history."""

    def __init__(self, name: str, max_hosts: int) -> None:
        self.name = name
        self.key = key_function(name)
        self.peer = (lambda src, dst: src) if name == "dst" else (lambda src, dst: dst)
        self.open: dict[str, _Open] = {}
        self.history = HostHistory(max_hosts=max_hosts)


class Windower:
    """Incremental windowing over any number of keys and views, bounded by `max_open`
    windows and `max_hosts` remembered hosts per view."""

    def __init__(self, k: int = 8, seconds: float = 10.0, key: KeyMode = "src",
                 max_open: int = 200_000, keep_items: bool = True,
                 clock: Callable[[], float] = time.monotonic,
                 views: Sequence[str] | str | None = None,
                 max_hosts: int = DEFAULT_MAX_HOSTS, idle_s: float | None = None) -> None:
        self.k, self.horizon_ms, self.max_open = k, seconds * 1000.0, max_open
        self.seconds, self.keep_items, self.clock = seconds, keep_items, clock
        self.idle_s = seconds if idle_s is None else idle_s
        self.views = parse_views(views if views is not None else (key,))
        self._views = [_View(v, max_hosts) for v in self.views]

    def __len__(self) -> int:
        return sum(len(v.open) for v in self._views)

    @property
    def history_entries(self) -> int:
        """Host-history entries held over all views (bounded by max_hosts per view)."""
        return sum(v.history.entries for v in self._views)

    def push(self, src_ips: Sequence[str], dst_ips: Sequence[str], flow_ids: Sequence[str],
             raw: np.ndarray, items: Sequence[Any] | None = None,
             labels: Sequence[Any] | None = None,
             origins: Sequence[Any] | None = None) -> list[ClosedWindow]:
        """Add N flows (columns already extracted); return the windows they closed, in order
        (view by view). `labels` and `origins` ride along per flow into the closed windows
        (ground truth; the offset ledger's message tokens)."""
        feats = flow_features(raw)
        failed = failed_flags(raw).tolist()
        all_ts, all_dports = raw[:, _TS].tolist(), raw[:, _DPORT].tolist()
        nbytes = raw[:, _BYTES].tolist()
        now = self.clock()
        keep = items if self.keep_items else None
        done: list[tuple[_View, str, _Open, ClosedBy]] = []
        for view in self._views:
            keyf, peerf = view.key, view.peer
            keys = [keyf(s, d) for s, d in zip(src_ips, dst_ips)]
            peers = [peerf(s, d) for s, d in zip(src_ips, dst_ips)]
            hist = view.history.update(keys, peers, all_dports, all_ts, failed, nbytes)
            self._assign(view, keys, peers, flow_ids, feats, hist, all_ts, all_dports, keep, labels,
                         origins, now, done)
        return self._close(done)

    def _assign(self, view: _View, keys: list[str], peers: list[str], flow_ids: Sequence[str],
                feats: np.ndarray, hist: np.ndarray, all_ts: list[float], all_dports: list[float],
                keep: Sequence[Any] | None, labels: Sequence[Any] | None,
                origins: Sequence[Any] | None, now: float, done: list[tuple[_View, str, _Open, ClosedBy]]) -> None:
        opened, k, horizon = view.open, self.k, self.horizon_ms
        for i in range(len(flow_ids)):
            key, ts = keys[i], all_ts[i]
            w = opened.get(key)
            if w is not None and ts - w.first_ts > horizon:
                done.append((view, key, opened.pop(key), "time"))
                w = None
            if w is None:
                if len(opened) >= self.max_open:
                    oldest = next(iter(opened))
                    done.append((view, oldest, opened.pop(oldest), "pressure"))
                w = opened[key] = _Open(first_ts=ts, wall=now)
            w.wall = now
            w.flow_ids.append(flow_ids[i])
            w.rows.append(feats[i])
            w.hist.append(hist[i])
            w.ts.append(ts)
            w.dports.append(all_dports[i])
            w.peers.append(peers[i])
            if keep is not None:
                w.items.append(keep[i])
            if labels is not None:
                w.labels.append(labels[i])
            if origins is not None:
                w.origins.append(origins[i])
            if len(w.flow_ids) >= k:
                done.append((view, key, opened.pop(key), "k"))

    def push_records(self, records: Sequence[Any], origins: Sequence[Any] | None = None) -> list[ClosedWindow]:
        """Add FlowRecord objects (anything with FlowRecord attributes)."""
        return self.push([r.src_ip for r in records], [r.dst_ip for r in records],
                         [r.flow_id for r in records], raw_matrix(records), items=records, origins=origins)

    def expire(self, now: float | None = None) -> list[ClosedWindow]:
        """Close windows whose key has been silent for `idle_s` (default T) of wall-clock."""
        now = self.clock() if now is None else now
        done: list[tuple[_View, str, _Open, ClosedBy]] = []
        for view in self._views:
            stale = [key for key, w in view.open.items() if now - w.wall >= self.idle_s]
            done += [(view, key, view.open.pop(key), "idle") for key in stale]
        return self._close(done)

    def flush(self, closed_by: ClosedBy = "flush") -> list[ClosedWindow]:
        """Close every open window (end of input; "revoke": partitions are being given up)."""
        done: list[tuple[_View, str, _Open, ClosedBy]] = []
        for view in self._views:
            done += [(view, key, w, closed_by) for key, w in view.open.items()]
            view.open.clear()
        return self._close(done)

    @staticmethod
    def _close(done: list[tuple[_View, str, _Open, ClosedBy]]) -> list[ClosedWindow]:
        """The closed windows, in order, their features built in one pass over all their
        flows laid end to end (a few numpy calls per push, not per window)."""
        if not done:
            return []
        sizes = np.fromiter((len(w.flow_ids) for _, _, w, _ in done), dtype=np.int64, count=len(done))
        starts = np.zeros(len(done), dtype=np.int64)
        np.cumsum(sizes[:-1], out=starts[1:])
        total = int(sizes.sum())
        ts = np.fromiter((t for _, _, w, _ in done for t in w.ts), dtype=np.float64, count=total)
        dports = np.fromiter((p for _, _, w, _ in done for p in w.dports), dtype=np.float64, count=total)
        ctx = context_features(ts, dports, [ip for _, _, w, _ in done for ip in w.peers], starts)
        ctx[:, 3] = np.repeat([v.name == "dst" for v, _, _, _ in done], sizes)
        feats = np.concatenate([np.stack([r for _, _, w, _ in done for r in w.rows]), ctx,
                                np.stack([h for _, _, w, _ in done for h in w.hist])], axis=1)
        lo, hi = np.minimum.reduceat(ts, starts).tolist(), np.maximum.reduceat(ts, starts).tolist()
        return [ClosedWindow(window_id(key, w.flow_ids[0], v.name), key, w.flow_ids, feats[s:s + n],
                             int(lo[j]), int(hi[j]), how, w.items, w.labels, v.name, w.origins)
                for j, ((v, key, w, how), s, n) in enumerate(zip(done, starts.tolist(), sizes.tolist()))]


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
                       label_column: str | None = "label", views: Sequence[str] | str | None = None,
                       max_hosts: int = DEFAULT_MAX_HOSTS) -> list[ClosedWindow]:
    """Window a DataFrame of flows in row order, exactly as the stream would, then flush.

    One frame is one capture: host history runs across all its rows. Window separate
    captures with separate calls."""
    w = Windower(k=k, seconds=seconds, key=key, max_open=10**9, keep_items=False, views=views,
                 max_hosts=max_hosts)
    labels = (df[label_column].tolist()
              if label_column and label_column in df.columns else None)
    closed = w.push(df["src_ip"].astype(str).tolist(), df["dst_ip"].astype(str).tolist(),
                    df["flow_id"].astype(str).tolist(), raw_matrix_from_frame(df), labels=labels)
    return closed + w.flush()


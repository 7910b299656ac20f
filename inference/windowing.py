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
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from contracts.window import VIEWS, ClosedBy, KeyMode, parse_views  # noqa: F401 (the windowing's own names)
from inference.features import (N_FEATURES, RAW_COLUMNS, context_features, failed_flags,
                                 flow_features, raw_matrix, raw_matrix_from_frame)
from inference.history import DEFAULT_MAX_HOSTS, N_HISTORY, HostHistory

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


_ABSENT = object()  # a flow pushed without items, labels or origins


class _Batch:
    """One push's flow columns, shared by every open window holding one of its flows (the
    windows keep row numbers, not per-flow copies)."""

    __slots__ = ("feats", "ts", "dports")

    def __init__(self, feats: np.ndarray, ts: list[float], dports: list[float]) -> None:
        self.feats, self.ts, self.dports = feats, ts, dports


@dataclass(slots=True)
class _Open:
    first_ts: float
    wall: float
    # per flow: (batch, the view's history rows of that batch, row, flow_id, peer, item,
    # label, origin): one tuple, not one list per column
    flows: list[tuple[Any, ...]] = field(default_factory=list)


# What an open window costs in memory, measured with tracemalloc (tests/bench/bench_open_windows.py):
# the window (its dict entry, _Open, list) and each flow it holds (tuple, row number, its share of
# the batch's columns), plus the decoded record a kept flow holds (shared by its views).
# Measured: 442 B for a one-flow window, 2,176 B for a seven-flow one (host history apart),
# and 700 B per decoded FlowRow.
WINDOW_BYTES = 160
FLOW_BYTES = 290
ITEM_BYTES = 700


class _View:
    """One view's open windows, least recently active first, and host history."""

    def __init__(self, name: str, max_hosts: int) -> None:
        self.name = name
        self.key = key_function(name)
        self.peer = (lambda src, dst: src) if name == "dst" else (lambda src, dst: dst)
        # An OrderedDict: taking windows off the front of a plain dict rescans the holes its
        # deletions leave (measured: 5-24 us a window at 10k-100k open, against 0.3-0.4 us).
        self.open: OrderedDict[str, _Open] = OrderedDict()
        self.flows = 0  # flows held by the open windows
        self.history = HostHistory(max_hosts=max_hosts)


class Windower:
    """Incremental windowing over any number of keys and views, bounded by `max_open`
    windows per view, `max_bytes` of open-window state over all views (the estimate of
    `open_bytes`), and `max_hosts` remembered hosts per view. At a bound the least recently
    active window closes early ("pressure")."""

    def __init__(self, k: int = 8, seconds: float = 10.0, key: KeyMode = "src",
                 max_open: int = 200_000, keep_items: bool = True,
                 clock: Callable[[], float] = time.monotonic,
                 views: Sequence[str] | str | None = None,
                 max_hosts: int = DEFAULT_MAX_HOSTS, idle_s: float | None = None,
                 max_bytes: int | None = None) -> None:
        self.k, self.horizon_ms, self.max_open = k, seconds * 1000.0, max_open
        self.max_bytes = max_bytes
        self.seconds, self.keep_items, self.clock = seconds, keep_items, clock
        self.idle_s = seconds if idle_s is None else idle_s
        self.views = parse_views(views if views is not None else (key,))
        self._views = [_View(v, max_hosts) for v in self.views]

    def __len__(self) -> int:
        return sum(len(v.open) for v in self._views)

    @property
    def open_bytes(self) -> int:
        """Estimated memory of the open windows (WINDOW_BYTES, FLOW_BYTES, ITEM_BYTES)."""
        windows, flows = len(self), sum(v.flows for v in self._views)
        item = ITEM_BYTES / len(self._views) if self.keep_items else 0.0
        return int(windows * WINDOW_BYTES + flows * (FLOW_BYTES + item))

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
        failed = failed_flags(raw).tolist()
        all_ts, all_dports = raw[:, _TS].tolist(), raw[:, _DPORT].tolist()
        nbytes = raw[:, _BYTES].tolist()
        batch = _Batch(flow_features(raw), all_ts, all_dports)
        now = self.clock()
        n = len(flow_ids)
        keep = items if self.keep_items else None
        absent = [_ABSENT] * n
        extra = list(zip(flow_ids, keep if keep is not None else absent,
                         labels if labels is not None else absent, origins if origins is not None else absent))
        done: list[tuple[_View, str, _Open, ClosedBy]] = []
        for view in self._views:
            keyf, peerf = view.key, view.peer
            keys = [keyf(s, d) for s, d in zip(src_ips, dst_ips)]
            peers = [peerf(s, d) for s, d in zip(src_ips, dst_ips)]
            hist = view.history.update(keys, peers, all_dports, all_ts, failed, nbytes)
            self._assign(view, keys, peers, batch, hist, extra, now, done)
        return self._close(done)

    def _assign(self, view: _View, keys: list[str], peers: list[str], batch: _Batch, hist: np.ndarray,
                extra: list[tuple[Any, Any, Any, Any]], now: float,
                done: list[tuple[_View, str, _Open, ClosedBy]]) -> None:
        opened, k, horizon, all_ts = view.open, self.k, self.horizon_ms, batch.ts
        per_view_bytes = None if self.max_bytes is None else self.max_bytes / len(self._views)
        item = ITEM_BYTES / len(self._views) if self.keep_items else 0.0
        for i, key in enumerate(keys):
            ts = all_ts[i]
            w = opened.get(key)
            if w is not None:
                if ts - w.first_ts > horizon:
                    del opened[key]
                    view.flows -= len(w.flows)
                    done.append((view, key, w, "time"))
                    w = None
                else:
                    opened.move_to_end(key)  # the dict stays in order of activity
            if w is None:
                while opened and (len(opened) >= self.max_open or (
                        per_view_bytes is not None
                        and (len(opened) + 1) * WINDOW_BYTES + (view.flows + 1) * (FLOW_BYTES + item) > per_view_bytes)):
                    oldest, w_old = opened.popitem(last=False)
                    view.flows -= len(w_old.flows)
                    done.append((view, oldest, w_old, "pressure"))
                w = opened[key] = _Open(first_ts=ts, wall=now)
            w.wall = now
            fid, it, lab, org = extra[i]
            w.flows.append((batch, hist, i, fid, peers[i], it, lab, org))
            view.flows += 1
            if len(w.flows) >= k:
                del opened[key]
                view.flows -= len(w.flows)
                done.append((view, key, w, "k"))

    def push_records(self, records: Sequence[Any], origins: Sequence[Any] | None = None) -> list[ClosedWindow]:
        """Add FlowRecord objects (anything with FlowRecord attributes)."""
        return self.push([r.src_ip for r in records], [r.dst_ip for r in records],
                         [r.flow_id for r in records], raw_matrix(records), items=records, origins=origins)

    def expire(self, now: float | None = None) -> list[ClosedWindow]:
        """Close windows whose key has been silent for `idle_s` (default T) of wall-clock.
        The open windows are kept least recently active first, so this looks only at the
        windows it closes (and one more per view)."""
        now = self.clock() if now is None else now
        done: list[tuple[_View, str, _Open, ClosedBy]] = []
        for view in self._views:
            opened = view.open
            while opened:
                key, w = next(iter(opened.items()))
                if now - w.wall < self.idle_s:
                    break
                opened.popitem(last=False)
                view.flows -= len(w.flows)
                done.append((view, key, w, "idle"))
        return self._close(done)

    def flush(self, closed_by: ClosedBy = "flush") -> list[ClosedWindow]:
        """Close every open window (end of input; "revoke": partitions are being given up)."""
        done: list[tuple[_View, str, _Open, ClosedBy]] = []
        for view in self._views:
            done += [(view, key, w, closed_by) for key, w in view.open.items()]
            view.open.clear()
            view.flows = 0
        return self._close(done)

    def clear(self) -> int:
        """Drop every open window unscored (no features are built); how many there were."""
        n = len(self)
        for view in self._views:
            view.open.clear()
            view.flows = 0
        return n

    @staticmethod
    def _close(done: list[tuple[_View, str, _Open, ClosedBy]]) -> list[ClosedWindow]:
        """The closed windows, in order, their features built in one pass over all their
        flows laid end to end: rows are gathered per batch with fancy indexing (a few numpy
        calls per push, not per window or per flow)."""
        if not done:
            return []
        sizes = np.fromiter((len(w.flows) for _, _, w, _ in done), dtype=np.int64, count=len(done))
        starts = np.zeros(len(done), dtype=np.int64)
        np.cumsum(sizes[:-1], out=starts[1:])
        total = int(sizes.sum())
        flows = [f for _, _, w, _ in done for f in w.flows]
        ts = np.fromiter((f[0].ts[f[2]] for f in flows), dtype=np.float64, count=total)
        dports = np.fromiter((f[0].dports[f[2]] for f in flows), dtype=np.float64, count=total)
        ctx = context_features(ts, dports, [f[4] for f in flows], starts)
        ctx[:, 3] = np.repeat([v.name == "dst" for v, _, _, _ in done], sizes)
        feats = np.empty((total, N_FEATURES), dtype=np.float32)
        nf = N_FEATURES - N_HISTORY - ctx.shape[1]
        feats[:, nf:nf + ctx.shape[1]] = ctx
        _gather(feats[:, :nf], [(f[0].feats, f[2]) for f in flows])
        _gather(feats[:, N_FEATURES - N_HISTORY:], [(f[1], f[2]) for f in flows])
        lo, hi = np.minimum.reduceat(ts, starts).tolist(), np.maximum.reduceat(ts, starts).tolist()
        out = []
        for j, ((v, key, w, how), s, n) in enumerate(zip(done, starts.tolist(), sizes.tolist())):
            fl = w.flows
            ids = [f[3] for f in fl]
            items, labels, origins = ([f[c] for f in fl if f[c] is not _ABSENT] for c in (5, 6, 7))
            out.append(ClosedWindow(window_id(key, ids[0], v.name), key, ids, feats[s:s + n],
                                    int(lo[j]), int(hi[j]), how, items, labels, v.name, origins))
        return out


def _gather(out: np.ndarray, rows: list[tuple[np.ndarray, int]]) -> None:
    """out[i] = array_i[row_i], one fancy-indexing call per distinct array."""
    groups: dict[int, tuple[np.ndarray, list[int], list[int]]] = {}
    for i, (arr, r) in enumerate(rows):
        g = groups.get(id(arr))
        if g is None:
            g = groups[id(arr)] = (arr, [], [])
        g[1].append(i)
        g[2].append(r)
    for arr, pos, idx in groups.values():
        out[pos] = arr[idx]


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


"""Windows of K consecutive flows per key: the unit the detector scores.

A window collects flows that share a key. It closes when it holds K flows ("k"), when a
flow arrives more than T seconds (event time) after the window's first flow ("time": that
flow starts the next window), when the key has been silent for T seconds of wall-clock
("idle"), at end of input ("flush"), or when the worker gives its partitions up in a
rebalance or a shutdown ("revoke": emitted before the offsets are handed over), or early,
the least recently active first, when a view already holds `max_open` windows or the open
windows' state reaches `max_bytes` ("pressure"). Membership depends only on each key's own
flow sequence, so replaying a file as fast as possible over Kafka gives the same windows as
scoring it offline. Training builds its windows with this same class: no train/serve skew.

No object is kept per flow: a push becomes one batch of columns (`inference.window_batch`)
and an open window holds (batch, row) pairs; its records are rebuilt only when asked for.

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
from itertools import chain
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from contracts.window import VIEWS, ClosedBy, KeyMode, parse_views  # noqa: F401 (the windowing's own names)
from inference.features import (N_FEATURES, RAW_COLUMNS, context_features, failed_flags,
                                 flow_features, raw_matrix, raw_matrix_from_frame)
from inference.history import DEFAULT_MAX_HOSTS, N_HISTORY, HostHistory, new_history
from inference.window_batch import (  # noqa: F401 (ClosedWindow and the byte figures are the windowing's own names)
    BATCH_FLOW_BYTES, EXTRA_FLOW_BYTES, MISSING, ClosedWindow, FlowBatch, extra_columns, gather)

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


_ROW_NUMBERS = list(range(1 << 15))  # row numbers as shared objects, grown for a bigger push


@dataclass(slots=True)
class _Open:
    first_ts: float
    wall: float
    # batch, row, batch, row, ...: where each flow lives, flat (a tuple per flow costs 56 B more)
    flows: list[Any] = field(default_factory=list)


# What open windows cost in memory, measured with tracemalloc (tests/bench/
# bench_open_windows.py prints the estimate beside peak RSS): a window (its dict entry about
# 140 B, _Open 56 B, its list 56 B), each flow it holds (two list slots, its first time), and
# the live batches (`FlowBatch.nbytes`). A batch is live while any open window holds one of
# its flows.
WINDOW_BYTES = 250
FLOW_BYTES = 40


class _View:
    """One view's open windows, least recently active first, and host history."""

    def __init__(self, name: str, index: int, max_hosts: int, host_history: str = "auto") -> None:
        self.name, self.index = name, index
        self.key = key_function(name)
        # An OrderedDict: taking windows off the front of a plain dict rescans the holes its
        # deletions leave (measured: 5-24 us a window at 10k-100k open, against 0.3-0.4 us).
        self.open: OrderedDict[str, _Open] = OrderedDict()
        self.history = new_history(max_hosts=max_hosts, engine=host_history)

    def columns(self, src: list[str], dst: list[str]) -> tuple[list[str], list[str]]:
        """Each flow's key and peer in this view (the address lists themselves where they are)."""
        if self.name == "src":
            return src, dst
        if self.name == "dst":
            return dst, src
        keyf = self.key
        return [keyf(s, d) for s, d in zip(src, dst)], dst


class Windower:
    """Incremental windowing over any number of keys and views, bounded by `max_open`
    windows per view, `max_bytes` of open-window state over all views (the estimate of
    `open_bytes`: windows, their flows and the batches they keep alive), and `max_hosts`
    remembered hosts per view (`host_history`: how they are counted, `new_history`). At a bound the least recently active window of the view
    holding the most windows closes early ("pressure")."""

    def __init__(self, k: int = 8, seconds: float = 10.0, key: KeyMode = "src",
                 max_open: int = 200_000, keep_items: bool = True,
                 clock: Callable[[], float] = time.monotonic,
                 views: Sequence[str] | str | None = None,
                 max_hosts: int = DEFAULT_MAX_HOSTS, idle_s: float | None = None,
                 max_bytes: int | None = None, host_history: str = "auto") -> None:
        self.k, self.horizon_ms, self.max_open = k, seconds * 1000.0, max_open
        self.max_bytes = max_bytes
        self.seconds, self.keep_items, self.clock = seconds, keep_items, clock
        self.idle_s = seconds if idle_s is None else idle_s
        self.views = parse_views(views if views is not None else (key,))
        self._views = [_View(v, i, max_hosts, host_history) for i, v in enumerate(self.views)]
        self._windows = 0  # open windows over all views
        self._held = 0  # flows held by open windows over all views
        self._batch_bytes = 0  # bytes of the batches open windows keep alive

    def __len__(self) -> int:
        return self._windows

    @property
    def open_bytes(self) -> int:
        """Estimated memory of the open windows (WINDOW_BYTES, FLOW_BYTES and the live
        batches' bytes)."""
        return self._windows * WINDOW_BYTES + self._held * FLOW_BYTES + self._batch_bytes

    @property
    def history_engine(self) -> str:
        """How this windower counts host history: "compiled" or "numpy"."""
        return "numpy" if isinstance(self._views[0].history, HostHistory) else "compiled"

    @property
    def history_entries(self) -> int:
        """Host-history entries held over all views (bounded by max_hosts per view)."""
        return sum(v.history.entries for v in self._views)

    def push(self, src_ips: Sequence[str], dst_ips: Sequence[str], flow_ids: Sequence[str],
             raw: np.ndarray, items: Sequence[Any] | None = None,
             labels: Sequence[Any] | None = None,
             origins: Sequence[Any] | None = None,
             extra: dict[str, tuple[str, Any]] | None = None) -> list[ClosedWindow]:
        """Add N flows (columns already extracted); return the windows they closed, in order
        (view by view). `items` (the records) are kept as columns when `keep_items`;
        `labels` and `origins` ride along per flow into the closed windows (ground truth;
        the offset ledger's message tokens). `extra` is the records' other fields already
        as columns (window_batch.arrow_columns), in place of `items`."""
        n = len(flow_ids)
        if n == 0:
            return []
        # Host history takes the columns as arrays (the compiled kernel reads them as they
        # are); the assignment loop reads times one by one, from a list.
        failed = failed_flags(raw)
        ts_col, dports, nbytes = (np.ascontiguousarray(raw[:, j]) for j in (_TS, _DPORT, _BYTES))
        all_ts = ts_col.tolist()
        if n > len(_ROW_NUMBERS):  # a whole capture windowed at once
            _ROW_NUMBERS.extend(range(len(_ROW_NUMBERS), n))
        # One string object per distinct address of the batch (a decoder makes one per field).
        seen: dict[str, str] = {}
        src_ips, dst_ips = [seen.setdefault(a, a) for a in src_ips], [seen.setdefault(a, a) for a in dst_ips]
        if not self.keep_items:
            extra = None
        elif extra is None and items is not None:
            extra = extra_columns(items)
        batch = FlowBatch(np.ascontiguousarray(raw, dtype=np.float64), flow_ids, src_ips, dst_ips,
                          labels, origins, extra)
        # The push holds a reference of its own, so a batch whose flows all close within the
        # push (K reached in one view before the next view adds its flows) is not let go early.
        batch.refs = 1
        self._batch_bytes += batch.nbytes
        now = self.clock()
        done: list[tuple[_View, str, _Open, ClosedBy]] = []
        for view in self._views:
            keys, peers = view.columns(src_ips, dst_ips)
            hist = view.history.update(keys, peers, dports, ts_col, failed, nbytes)
            batch.hist.append(hist)
            batch.nbytes += hist.nbytes
            self._batch_bytes += hist.nbytes
            self._assign(view, keys, batch, all_ts, now, done)
        batch.seal()
        batch.refs -= 1
        if batch.refs == 0:
            self._batch_bytes -= batch.nbytes
        return self._close(done)

    def _leave(self, view: _View, key: str, w: _Open, how: ClosedBy,
               done: list[tuple[_View, str, _Open, ClosedBy]]) -> None:
        """Account for a window that left its view's open dict; it goes to `done`."""
        n = len(w.flows) // 2
        self._windows -= 1
        self._held -= n
        for b in w.flows[::2]:
            b.refs -= 1
            if b.refs == 0:
                self._batch_bytes -= b.nbytes
        done.append((view, key, w, how))

    def _fullest(self, view: _View) -> _View:
        """The view a pressure close takes from: the one holding the most windows."""
        return max(self._views, key=lambda v: (len(v.open), v is view))

    def _assign(self, view: _View, keys: list[str], batch: FlowBatch, all_ts: list[float], now: float,
                done: list[tuple[_View, str, _Open, ClosedBy]]) -> None:
        opened, k, horizon = view.open, self.k, self.horizon_ms
        max_bytes = self.max_bytes
        leave = self._leave
        for i, key in zip(_ROW_NUMBERS, keys):  # shared int objects, not one per flow and view
            ts = all_ts[i]
            w = opened.get(key)
            if w is not None:
                if ts - w.first_ts > horizon:
                    del opened[key]
                    leave(view, key, w, "time", done)
                    w = None
                else:
                    opened.move_to_end(key)  # the dict stays in order of activity
            if w is None:
                while opened and len(opened) >= self.max_open:
                    oldest, w_old = opened.popitem(last=False)
                    leave(view, oldest, w_old, "pressure", done)
                if max_bytes is not None:
                    while self._windows and self.open_bytes + WINDOW_BYTES + FLOW_BYTES > max_bytes:
                        v = self._fullest(view)
                        oldest, w_old = v.open.popitem(last=False)
                        leave(v, oldest, w_old, "pressure", done)
                w = opened[key] = _Open(first_ts=ts, wall=now)
                self._windows += 1
            w.wall = now
            w.flows += (batch, i)
            batch.refs += 1
            self._held += 1
            if len(w.flows) >= 2 * k:
                del opened[key]
                leave(view, key, w, "k", done)

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
                self._leave(view, key, w, "idle", done)
        return self._close(done)

    def flush(self, closed_by: ClosedBy = "flush") -> list[ClosedWindow]:
        """Close every open window (end of input; "revoke": partitions are being given up)."""
        done: list[tuple[_View, str, _Open, ClosedBy]] = []
        for view in self._views:
            items = list(view.open.items())
            view.open.clear()
            for key, w in items:
                self._leave(view, key, w, closed_by, done)
        return self._close(done)

    def clear(self) -> int:
        """Drop every open window unscored (no features are built); how many there were."""
        n = len(self)
        for view in self._views:
            view.open.clear()
        self._windows = self._held = self._batch_bytes = 0
        return n

    def _close(self, done: list[tuple[_View, str, _Open, ClosedBy]]) -> list[ClosedWindow]:
        """The closed windows, in order, their features built in one pass over all their
        flows laid end to end: rows are gathered per batch with fancy indexing (a few numpy
        calls per batch, not per window or per flow)."""
        if not done:
            return []
        sizes = np.fromiter((len(w.flows) // 2 for _, _, w, _ in done), dtype=np.int64, count=len(done))
        starts = np.zeros(len(done), dtype=np.int64)
        np.cumsum(sizes[:-1], out=starts[1:])
        total = int(sizes.sum())
        flow_batches = list(chain.from_iterable(w.flows[::2] for _, _, w, _ in done))
        rows = np.fromiter(chain.from_iterable(w.flows[1::2] for _, _, w, _ in done), dtype=np.int64, count=total)
        view_index = np.repeat(np.fromiter((v.index for v, _, _, _ in done), dtype=np.int64, count=len(done)), sizes)
        g = gather(flow_batches, rows, view_index)
        raw = g.raw
        ts, dports = raw[:, _TS], raw[:, _DPORT]
        is_dst = np.repeat(np.fromiter((v.name == "dst" for v, _, _, _ in done), dtype=bool, count=len(done)), sizes)
        peers = np.where(is_dst, g.src, g.dst)  # the flow's other end, seen from the window's key
        ctx = context_features(ts, dports, peers, starts)
        ctx[:, 3] = is_dst
        feats = np.empty((total, N_FEATURES), dtype=np.float32)
        nf = N_FEATURES - N_HISTORY - ctx.shape[1]
        feats[:, :nf] = flow_features(raw)
        feats[:, nf:nf + ctx.shape[1]] = ctx
        feats[:, N_FEATURES - N_HISTORY:] = g.hist
        lo, hi = np.minimum.reduceat(ts, starts).tolist(), np.maximum.reduceat(ts, starts).tolist()
        # Each window's latest produced_ms (NaN-ignoring max; NaN where no flow has one).
        produced = ([None if p != p else int(p) for p in np.fmax.reduceat(g.produced, starts).tolist()]
                    if g.produced is not None else [None] * len(done))
        ids = g.ids.tolist()
        keep = self.keep_items
        src, dst = (g.src.tolist(), g.dst.tolist()) if keep else ([], [])
        labels = _per_flow(g.labels, g.batches, "labels")
        origins = _per_flow(g.origins, g.batches, "origins")
        out = []
        for j, ((v, key, w, how), s, n) in enumerate(zip(done, starts.tolist(), sizes.tolist())):
            e = s + n
            wid = window_id(key, ids[s], v.name)
            # The stream's windows keep their batches to rebuild records from and raw rows for
            # alerts; training's keep none, so no batch stays alive.
            kept = (w.flows, raw[s:e], src[s:e], dst[s:e]) if keep else ([], None, [], [])
            out.append(ClosedWindow(wid, key, ids[s:e], feats[s:e], int(lo[j]), int(hi[j]), how, v.name,
                                    *kept, labels(s, e), origins(s, e), produced[j]))
        return out


def _per_flow(values: np.ndarray | None, batches: list[FlowBatch], name: str) -> Callable[[int, int], list[Any]]:
    """Slices of a gathered per-flow field (labels, origins): only the flows whose batch was
    pushed with one, as when each flow was read from its batch."""
    if values is None:
        return lambda s, e: []
    vals = values.tolist()
    if all(getattr(b, name) is not None for b in batches):
        return lambda s, e: vals[s:e]
    return lambda s, e: [x for x in vals[s:e] if x is not MISSING]  # from batches pushed without


def stack_windows(windows: Sequence[ClosedWindow], k: int) -> tuple[np.ndarray, np.ndarray]:
    """Pad and stack windows into the model's input: x [n, F, K] and mask [n, K], by one
    scatter of all their flows' rows (about 2.3x faster than a copy per window on the nDPI
    captures' windows, mostly one flow each)."""
    n = len(windows)
    x = np.zeros((n, N_FEATURES, k), dtype=np.float32)
    if n == 0:
        return x, np.zeros((0, k), dtype=np.float32)
    feats = [w.features for w in windows]
    lens = np.fromiter(map(len, feats), dtype=np.intp, count=n)
    rows = np.concatenate(feats)
    starts = np.repeat(np.cumsum(lens) - lens, lens)
    x[np.repeat(np.arange(n), lens), :, np.arange(len(rows)) - starts] = rows
    return x, (np.arange(k)[None, :] < lens[:, None]).astype(np.float32)


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


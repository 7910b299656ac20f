"""When each (host, peer) or (host, peer, port) was last seen: host history's pair tables,
bounded, in about 24 bytes an entry instead of the 165 of an OrderedDict of Python ints and
floats (`tests/bench/bench_history.py`).

Entries are 64-bit hashes. Most live in three numpy arrays sorted by hash (`main`: hash,
last-seen time, touch number); entries touched since the last merge live in a small dict
(`recent`) that shadows them. The dict is folded into the arrays once it holds `merge_at`
entries, so a merge costs one sort per `merge_at` touches.

Every touch gets the next touch number. When a touch makes the table hold more than
`max_entries`, the least recently touched entries go, down to three quarters of
`max_entries`, in one pass: the same entries at the same touch whether flows come one at a
time or a batch at a time, since it depends only on the order of touches.

    >>> t = PairTable(max_entries=200_000)
    >>> t.previous(hashes)          # last-seen time of each hash (NaN: not held)
    >>> t.touch_rows(hashes, ts)    # one at a time: each previous time, or None
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

_EMPTY_I = np.empty(0, dtype=np.int64)
_EMPTY_F = np.empty(0, dtype=np.float64)
_LOOKUP = 512  # hashes of the one-at-a-time path looked up in the arrays at once


class PairTable:
    def __init__(self, max_entries: int, merge_at: int | None = None) -> None:
        if max_entries < 1:
            raise ValueError(f"max_entries must be >= 1, got {max_entries}")
        self.max_entries = max_entries
        self.keep = max(1, max_entries - max_entries // 4)
        self.merge_at = merge_at if merge_at is not None else max(256, max_entries // 8)
        self._keys, self._times, self._seqs = _EMPTY_I, _EMPTY_F, _EMPTY_I
        self._recent: dict[int, tuple[float, int]] = {}
        self._size = 0  # distinct entries held (main and recent overlap)
        self._seq = 0  # touches so far
        self.merges = 0  # merges so far (an eviction is one)

    def __len__(self) -> int:
        return self._size

    def nbytes(self) -> int:
        """The arrays' bytes (the recent dict apart)."""
        return self._keys.nbytes + self._times.nbytes + self._seqs.nbytes

    def in_main(self, hashes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """For each hash: whether main holds it, and its time there (NaN if not)."""
        keys = self._keys
        if not len(keys) or not len(hashes):
            return np.zeros(len(hashes), dtype=bool), np.full(len(hashes), np.nan)
        idx = np.searchsorted(keys, hashes)
        idx[idx == len(keys)] = 0
        found = keys[idx] == hashes
        return found, np.where(found, self._times[idx], np.nan)

    def previous(self, hashes: Sequence[int]) -> np.ndarray:
        """Each hash's last-seen time, NaN if the table does not hold it."""
        _, out = self.in_main(np.asarray(hashes, dtype=np.int64))
        recent = self._recent
        if recent:
            for i, h in enumerate(hashes):
                got = recent.get(h)
                if got is not None:
                    out[i] = got[0]
        return out

    def touch_batch(self, hashes: Sequence[int], last_flow: np.ndarray, times: Sequence[float], flows: int) -> None:
        """`flows` touches at once (the batch path; the caller made sure none evicts):
        distinct `hashes`, each last touched by flow `last_flow[j]` of the batch at `times[j]`."""
        base = self._seq
        found, _ = self.in_main(np.asarray(hashes, dtype=np.int64))
        recent = self._recent
        new = 0
        for h, j, t, main in zip(hashes, last_flow.tolist(), times, found.tolist()):
            if not main and h not in recent:
                new += 1
            recent[h] = (t, base + j)
        self._size += new
        self._seq = base + flows

    def touch_rows(self, hashes: Sequence[int], times: Sequence[float]) -> list[float | None]:
        """Touches one at a time, in order (the reference path, and the path that evicts):
        each hash's previous time, or None. The arrays are looked up `_LOOKUP` hashes at a
        time, and again after an eviction changes them."""
        n = len(hashes)
        out: list[float | None] = [None] * n
        recent, seq, size, most = self._recent, self._seq, self._size, self.max_entries
        i = 0
        while i < n:
            hi = min(n, i + _LOOKUP)
            found, at = self.in_main(np.asarray(hashes[i:hi], dtype=np.int64))
            main = [t if f else None for f, t in zip(found.tolist(), at.tolist())]
            lo = i
            while i < hi:
                h = hashes[i]
                got = recent.get(h)
                recent[h] = (times[i], seq)
                seq += 1
                i += 1
                if got is not None:
                    out[i - 1] = got[0]
                    continue
                out[i - 1] = before = main[i - 1 - lo]
                if before is None:
                    size += 1
                    if size > most:
                        self._seq, self._size = seq, size
                        self.merge(evict=True)
                        recent, size = self._recent, self._size
                        break  # main changed: look the rest up again
        self._seq, self._size = seq, size
        return out

    def merge(self, evict: bool = False) -> None:
        """Fold the recent entries into main (their stale rows there dropped, the rest slotted
        in by hash: no sort of main); with `evict`, keep only the `keep` most recently
        touched entries."""
        recent = self._recent
        n = len(recent)
        keys, times, seqs = self._keys, self._times, self._seqs
        if n:
            rk = np.fromiter(recent.keys(), dtype=np.int64, count=n)
            rt = np.fromiter((v[0] for v in recent.values()), dtype=np.float64, count=n)
            rs = np.fromiter((v[1] for v in recent.values()), dtype=np.int64, count=n)
            o = np.argsort(rk)
            rk, rt, rs = rk[o], rt[o], rs[o]
            if len(keys):
                idx = np.minimum(np.searchsorted(keys, rk), len(keys) - 1)
                stale = idx[keys[idx] == rk]
                if len(stale):
                    live = np.ones(len(keys), dtype=bool)
                    live[stale] = False
                    keys, times, seqs = keys[live], times[live], seqs[live]
            at = np.searchsorted(keys, rk)
            keys, times, seqs = np.insert(keys, at, rk), np.insert(times, at, rt), np.insert(seqs, at, rs)
        elif not evict:
            return
        if evict and len(keys) > self.keep:
            newest = np.sort(np.argpartition(seqs, len(keys) - self.keep)[len(keys) - self.keep:])
            keys, times, seqs = keys[newest], times[newest], seqs[newest]
        self._keys, self._times, self._seqs = keys, times, seqs
        self._recent, self._size = {}, len(keys)
        self.merges += 1

    def maybe_merge(self) -> None:
        """Between batches: fold the recent dict into the arrays once it is big."""
        if len(self._recent) >= self.merge_at:
            self.merge()

    def order(self) -> list[int]:
        """The held hashes, least recently touched first (for tests)."""
        self.merge()
        return self._keys[np.argsort(self._seqs, kind="stable")].tolist()

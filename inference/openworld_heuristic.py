"""The fan-out baseline: a rule in the style of Zeek's scan detector, to set beside the model.

A source that touches at least `FANOUT_PAIRS` (20) distinct destination:port pairs
within `FANOUT_HORIZON_MS` (5 minutes) is flagged. The rule is evaluated at each of the
source's flows, over the flows that started in the 5 minutes up to and including it
(inclusive: a pair exactly 5:00 earlier still counts). It flags:

- a capture, when any of its sources is flagged at any time;
- a window, when its key is a source flagged at one of its flows inside the window's
  time span [first_seen_ms, last_seen_ms] (in the dst view the key is a destination, so
  its windows are flagged only when that address also fans out as a source).

Open-world reports give the rule's figures next to the model's, so a detector that
misses what a one-line rule catches is visible at once.

    >>> flags = fanout_flags(flows)                 # bool per flow
    >>> flagged = flagged_times(flows, flags)       # source -> sorted times it was flagged
    >>> windows["fanout"] = flag_windows(windows, flagged)
"""
from __future__ import annotations

from collections import Counter, deque
from typing import Any

import numpy as np

FANOUT_PAIRS = 20
FANOUT_HORIZON_MS = 5 * 60 * 1000


def fanout_flags(flows: Any, pairs: int = FANOUT_PAIRS, horizon_ms: int = FANOUT_HORIZON_MS) -> np.ndarray:
    """Per flow (in frame order): is its source over the threshold at this flow's start?"""
    n = len(flows)
    out = np.zeros(n, dtype=bool)
    if not n:
        return out
    src = flows["src_ip"].astype(str).to_numpy()
    ts = flows["first_seen_ms"].to_numpy(dtype=np.int64)
    pair = (flows["dst_ip"].astype(str) + ":" + flows["dst_port"].astype(str)).to_numpy()
    order = np.lexsort((np.arange(n), ts, src))  # by source, then time, then row
    bounds = np.flatnonzero(src[order][1:] != src[order][:-1]) + 1
    for run in np.split(order, bounds):
        live: deque[int] = deque()
        seen: Counter[str] = Counter()
        for i in run:
            live.append(i)
            seen[pair[i]] += 1
            while ts[i] - ts[live[0]] > horizon_ms:
                old = live.popleft()
                seen[pair[old]] -= 1
                if not seen[pair[old]]:
                    del seen[pair[old]]
            out[i] = len(seen) >= pairs
    return out


def flagged_times(flows: Any, flags: np.ndarray) -> dict[str, np.ndarray]:
    """Source address -> sorted first_seen_ms of its flagged flows."""
    if not flags.any():
        return {}
    hit = flows.loc[flags, ["src_ip", "first_seen_ms"]]
    return {str(s): np.sort(g["first_seen_ms"].to_numpy(dtype=np.int64))
            for s, g in hit.groupby(hit["src_ip"].astype(str))}


def flag_windows(windows: Any, flagged: dict[str, np.ndarray]) -> np.ndarray:
    """Per window: is its key a source flagged inside the window's time span?"""
    out = np.zeros(len(windows), dtype=bool)
    if not flagged or not len(windows):
        return out
    keys = windows["key"].astype(str).tolist()
    lo = windows["first_seen_ms"].to_numpy(dtype=np.int64)
    hi = windows["last_seen_ms"].to_numpy(dtype=np.int64)
    for j, key in enumerate(keys):
        times = flagged.get(key)
        if times is not None:
            at = np.searchsorted(times, lo[j], side="left")
            out[j] = at < len(times) and times[at] <= hi[j]
    return out

"""What the label agent tracks while it runs, apart from Kafka and the LLM.

    OffsetTracker   per partition, the offsets read and which are finished: the agent
                    commits only a finished prefix, so a crash redelivers, never skips
    DriftMonitor    the uncertain share of the edge's detections over a sliding window,
                    one of the two retrain triggers
"""
from __future__ import annotations

import json
import time
from typing import Any, Sequence


class OffsetTracker:
    """Per partition, the offsets read and which are done; commits only a done prefix."""

    def __init__(self) -> None:
        self._open: dict[int, dict[int, bool]] = {}   # partition -> {offset: done}, in read order
        self.committed: dict[int, int] = {}

    def add(self, partition: int, offset: int) -> None:
        self._open.setdefault(partition, {})[offset] = False

    def done(self, partition: int, offset: int) -> None:
        if offset in self._open.get(partition, {}):
            self._open[partition][offset] = True

    def committable(self) -> dict[int, int]:
        """partition -> next offset to commit, where the done prefix grew since last time."""
        out = {}
        for p, offs in self._open.items():
            last = None
            while offs:
                first = next(iter(offs))
                if not offs[first]:
                    break
                del offs[first]
                last = first
            if last is not None:
                out[p] = self.committed[p] = last + 1
        return out

    def drop(self, partitions: Sequence[int]) -> None:
        for p in partitions:
            self._open.pop(p, None)

    def open_count(self) -> int:
        return sum(len(o) for o in self._open.values())


class DriftMonitor:
    """The uncertain share of detections over a sliding time window (read from `detections`)."""

    def __init__(self, window_s: float, clock: Any = time.monotonic) -> None:
        self.window_s, self.clock = window_s, clock
        self._buckets: list[tuple[float, int, int]] = []

    def add(self, windows: int, uncertain: int) -> None:
        now = self.clock()
        self._buckets.append((now, windows, uncertain))
        while self._buckets and self._buckets[0][0] < now - self.window_s:
            self._buckets.pop(0)

    def ratio(self) -> tuple[float, int]:
        n = sum(b[1] for b in self._buckets)
        return (sum(b[2] for b in self._buckets) / n if n else 0.0), n

    def add_batch(self, raw: bytes) -> None:
        try:
            dets = json.loads(raw).get("detections") or []
        except (ValueError, AttributeError):
            return  # the edge dead-letters its own output problems; drift is best effort
        self.add(len(dets), sum(bool(d.get("uncertain")) for d in dets if isinstance(d, dict)))

"""What a host did recently, beside each window: context longer than one window.

An 8-flow window of a slow or wide scan looks ordinary; the host's last minutes do not.
For every flow, the host its window is keyed by (the source in the `src` view, the
destination in the `dst` view) keeps damped incremental statistics in the style of
Kitsune's AfterImage: a sum decayed by 2^(-dt/h), for half-lives h of 10 s, 60 s and
300 s, of

    flows          flows of this host (log1p)
    new_peers      flows to a peer not seen within h (log1p): fan-out, fan-in
    new_services   flows to a (peer, destination port) not seen within h (log1p): the
                   distinct destination:port pairs of Zeek's scan detector
    failed         share of flows nobody answered, or answered with a reset
    bytes          mean of log1p(bytes) per flow
    bytes_sd       spread of log bytes per flow: a brute force or a scan repeats itself,
                   people do not

giving `HISTORY_FEATURES` (18 values) per flow, taken after the flow is counted. The same
class runs in training (`streams.windowing.windows_from_frame`), offline scoring and the
stream, in arrival order, so all three see the same numbers; flows that arrive out of time
order count as simultaneous (no negative decay).

Memory is bounded by two numbers, whatever the traffic: at most `max_hosts` hosts and
`max_pairs` (host, peer) plus (host, service) entries, each table least-recently-used.
A pair evicted early only makes its next flow count as new again.

    >>> h = HostHistory(max_hosts=50_000)
    >>> rows = h.update(keys, peers, ports, ts_ms, failed, nbytes)   # [n, 15] float32
"""
from __future__ import annotations

import math
from collections import OrderedDict
from typing import Sequence

import numpy as np

HISTORY_SCALES_S: tuple[float, ...] = (10.0, 60.0, 300.0)
HISTORY_STATS: tuple[str, ...] = ("flows", "new_peers", "new_services", "failed", "bytes", "bytes_sd")
HISTORY_FEATURES: tuple[str, ...] = tuple(
    f"h{int(s)}_{name}" for s in HISTORY_SCALES_S for name in HISTORY_STATS)
N_HISTORY = len(HISTORY_FEATURES)
DEFAULT_MAX_HOSTS = 50_000
_NS = len(HISTORY_SCALES_S)
_NST = len(HISTORY_STATS)  # state per scale: flows, new_peers, new_services, failed, sum lb, sum lb^2
_SCALES_MS = tuple(s * 1000.0 for s in HISTORY_SCALES_S)
_RATES = tuple(math.log(2.0) / s for s in _SCALES_MS)  # per ms


class HostHistory:
    """Bounded per-host damped statistics for one view (see the module docstring)."""

    def __init__(self, max_hosts: int = DEFAULT_MAX_HOSTS, max_pairs: int | None = None) -> None:
        if max_hosts < 1:
            raise ValueError(f"max_hosts must be >= 1, got {max_hosts}")
        self.max_hosts = max_hosts
        self.max_pairs = max_pairs if max_pairs is not None else 4 * max_hosts
        # host -> [t_last_ms, then per scale: flows, new_peers, new_services, failed,
        # sum of log1p(bytes), sum of its square]
        self._hosts: OrderedDict[str, list[float]] = OrderedDict()
        self._peers: OrderedDict[tuple[str, str], float] = OrderedDict()
        self._services: OrderedDict[tuple[str, str, int], float] = OrderedDict()

    def __len__(self) -> int:
        return len(self._hosts)

    @property
    def entries(self) -> int:
        """Hosts plus pair entries held: what memory grows with (bounded)."""
        return len(self._hosts) + len(self._peers) + len(self._services)

    def update(self, keys: Sequence[str], peers: Sequence[str], ports: Sequence[int],
               ts_ms: Sequence[float], failed: Sequence[bool], nbytes: Sequence[float]) -> np.ndarray:
        """Count n flows in order; return each flow's history features [n, N_HISTORY]."""
        n = len(keys)
        out = np.empty((n, N_HISTORY), dtype=np.float32)
        rows: list[list[float]] = [None] * n  # type: ignore[list-item]
        hosts, pairs, services = self._hosts, self._peers, self._services
        scales, rates = _SCALES_MS, _RATES
        log1p, exp, sqrt = math.log1p, math.exp, math.sqrt
        for i in range(n):
            key, peer, t = keys[i], peers[i], ts_ms[i]
            st = hosts.get(key)
            if st is None:
                if len(hosts) >= self.max_hosts:
                    hosts.popitem(last=False)
                st = hosts[key] = [t] + [0.0] * (_NS * _NST)
            else:
                hosts.move_to_end(key)
            dt = t - st[0]
            if dt > 0:
                st[0] = t
            else:
                dt = 0.0
            pk = (key, peer)
            last_peer = pairs.pop(pk, None)
            pairs[pk] = t
            sk = (key, peer, ports[i])
            last_service = services.pop(sk, None)
            services[sk] = t
            while len(pairs) > self.max_pairs:
                pairs.popitem(last=False)
            while len(services) > self.max_pairs:
                services.popitem(last=False)
            fail, size = 1.0 if failed[i] else 0.0, log1p(nbytes[i])
            row = []
            for j in range(_NS):
                d = exp(-rates[j] * dt) if dt else 1.0
                b = 1 + j * _NST
                horizon = t - scales[j]
                flows = st[b] = st[b] * d + 1.0
                newp = st[b + 1] = st[b + 1] * d + (last_peer is None or last_peer < horizon)
                news = st[b + 2] = st[b + 2] * d + (last_service is None or last_service < horizon)
                fl = st[b + 3] = st[b + 3] * d + fail
                by = st[b + 4] = st[b + 4] * d + size
                sq = st[b + 5] = st[b + 5] * d + size * size
                mean = by / flows
                var = sq / flows - mean * mean
                row += (log1p(flows), log1p(newp), log1p(news), fl / flows, mean, sqrt(var) if var > 0 else 0.0)
            rows[i] = row
        if n:
            out[:] = rows
        return out

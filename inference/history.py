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
class runs in training (`inference.windowing.windows_from_frame`), offline scoring and the
stream, in arrival order, so all three see the same numbers; flows that arrive out of time
order count as simultaneous (no negative decay).

Memory is bounded by two numbers, whatever the traffic: at most `max_hosts` hosts and
`max_pairs` (host, peer) plus (host, service) entries, each table least-recently-used (a
full pair table drops its least recently touched quarter at once: `inference.pair_table`).
A pair evicted early only makes its next flow count as new again. A host's state is a row of
one float64 array, and a pair is remembered by a 64-bit hash of (host, peer[, port]) in
numpy arrays, not by its strings or Python objects: 382 -> 247 -> 85 B an entry with full
tables, strings included (`tests/bench/bench_history.py`). Two pairs whose hashes collide
count as one: with 200,000 entries in a table, about 1 in 10^14 lookups. The pair hashes
are mixed in numpy from each address's string hash (`pair_hashes`), so a batch's flows are
grouped by host and pair without a Python tuple per flow; two hosts of one batch whose
string hashes collide (about 1 in 10^14 for a 500-flow batch) would count as one.

Two engines count the same way (`new_history`, `EDGELOOP_HOST_HISTORY`): `CompiledHistory`,
the default, counts flow by flow in C (`inference/_history_kernel.pyx`, built at install: 51 B
an entry, 0.5-0.9 us a flow), and `HostHistory` below in numpy, where no compiler built it.

    >>> h = new_history(max_hosts=50_000)
    >>> rows = h.update(keys, peers, ports, ts_ms, failed, nbytes)   # [n, N_HISTORY] float32
"""
from __future__ import annotations

import math
from collections import OrderedDict
from typing import Sequence

import numpy as np

from contracts.errors import ConfigError
from inference.pair_table import PairTable

try:  # built by setup.py where a C compiler is found (see `new_history`)
    from inference._history_kernel import HistoryKernel as _HistoryKernel
except ImportError as e:  # pragma: no cover - the numpy path below stands in
    _HistoryKernel = None
    KERNEL_MISSING: str | None = f"{type(e).__name__}: {e}"
else:
    KERNEL_MISSING = None

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
_SCALES_ARRAY = np.asarray(_SCALES_MS)
_CHUNK_ROWS = 65_536  # rows vectorised at once (bounds the scan's temporaries)
_VAR_FLOOR = 1e-10  # relative variance below which bytes_sd is 0 (float rounding, not spread)
_MIN_COLUMN_ROWS = 32  # fewer flows are cheaper counted one by one


class HostHistory:
    """Bounded per-host damped statistics for one view (see the module docstring)."""

    def __init__(self, max_hosts: int = DEFAULT_MAX_HOSTS, max_pairs: int | None = None) -> None:
        if max_hosts < 1:
            raise ValueError(f"max_hosts must be >= 1, got {max_hosts}")
        self.max_hosts = max_hosts
        self.max_pairs = max_pairs if max_pairs is not None else 4 * max_hosts
        # host -> its row in _state: [t_last_ms, then per scale: flows, new_peers,
        # new_services, failed, sum of log1p(bytes), sum of its square]. Rows are 0..len-1:
        # a host only leaves when a new one takes its row.
        self._hosts: OrderedDict[str, int] = OrderedDict()
        self._state = np.zeros((min(max_hosts, 1024), 1 + _NS * _NST), dtype=np.float64)
        # pair_hashes (host, peer) and (host, peer, port) -> when last seen (ms)
        self._peers = PairTable(self.max_pairs)
        self._services = PairTable(self.max_pairs)

    def __len__(self) -> int:
        return len(self._hosts)

    def state(self, host: str) -> np.ndarray | None:
        """A copy of the host's state row (see `__init__`), None if not remembered."""
        row = self._hosts.get(host)
        return None if row is None else self._state[row].copy()

    def _room(self, rows: int) -> None:
        """Grow the state array (doubling, up to max_hosts) to hold `rows` rows."""
        have = len(self._state)
        if rows > have:
            grown = np.zeros((min(self.max_hosts, max(rows, 2 * have)), self._state.shape[1]))
            grown[:have] = self._state
            self._state = grown

    @property
    def entries(self) -> int:
        """Hosts plus pair entries held: what memory grows with (bounded)."""
        return len(self._hosts) + len(self._peers) + len(self._services)

    def update(self, keys: Sequence[str], peers: Sequence[str], ports: Sequence[int],
               ts_ms: Sequence[float], failed: Sequence[bool], nbytes: Sequence[float]) -> np.ndarray:
        """Count n flows in order; return each flow's history features [n, N_HISTORY].

        Vectorised over the batch (see `_update_columns`); a batch that would evict entries
        from a full table is counted flow by flow (`_update_rows`), so eviction happens at the
        same flow either way and the result never depends on how the flows were batched."""
        n = len(keys)
        if n == 0:
            return np.empty((0, N_HISTORY), dtype=np.float32)
        ts = np.asarray(ts_ms, dtype=np.float64)
        out = np.empty((n, N_HISTORY), dtype=np.float32)
        for lo in range(0, n, _CHUNK_ROWS):
            hi = min(n, lo + _CHUNK_ROWS)
            sl = slice(lo, hi)
            args = (keys[sl], peers[sl], ports[sl], ts[sl], failed[sl], nbytes[sl])
            got = self._update_columns(*args) if hi - lo >= _MIN_COLUMN_ROWS else None
            out[sl] = got if got is not None else self._update_rows(*args)
        self._peers.maybe_merge()
        self._services.maybe_merge()
        return out

    def _update_columns(self, keys: Sequence[str], peers: Sequence[str], ports: Sequence[int],
                        ts: np.ndarray, failed: Sequence[bool], nbytes: Sequence[float]) -> np.ndarray | None:
        """The batch at once: flows grouped by host (a stable sort), each damped sum as a
        scan of S_i = S_(i-1) * 2^(-dt_i/h) + x_i (`_affine_scan`). None when the batch would
        evict: the caller then counts it flow by flow."""
        n = len(keys)
        hosts, pairs, services = self._hosts, self._peers, self._services
        hk = np.fromiter(map(hash, keys), dtype=np.int64, count=n)
        _, first, kc = np.unique(hk, return_index=True, return_inverse=True)
        ukeys = [keys[i] for i in first.tolist()]
        known = [hosts.get(k) for k in ukeys]
        if len(hosts) + known.count(None) > self.max_hosts:
            return None
        ph, sh = pair_hashes(hk, peers, ports)
        up, pc = np.unique(ph, return_inverse=True)
        us, sc = np.unique(sh, return_inverse=True)
        upairs, uservices = up.tolist(), us.tolist()
        pairs_before = pairs.previous(upairs)
        services_before = services.previous(uservices)
        if (len(pairs) + int(np.isnan(pairs_before).sum()) > self.max_pairs
                or len(services) + int(np.isnan(services_before).sum()) > self.max_pairs):
            return None
        order = np.argsort(kc, kind="stable")
        g = kc[order]
        t = ts[order]
        first = np.ones(n, dtype=bool)
        first[1:] = g[1:] != g[:-1]
        starts = np.flatnonzero(first)
        # Each host's state before the batch (a new host starts at its first flow's time).
        n_g = len(ukeys)
        t_first = t[starts]
        state = np.zeros((n_g, 1 + _NS * _NST), dtype=np.float64)
        state[:, 0] = t_first
        had = [j for j, row in enumerate(known) if row is not None]
        if had:
            state[had] = self._state[[known[j] for j in had]]
        # Out-of-order flows count as simultaneous: time is the host's running maximum.
        t_eff = np.maximum(t, state[g, 0])
        back = (t[1:] < t[:-1]) & ~first[1:]
        if back.any():
            bounds = np.append(starts, n)
            for j in np.unique(g[1:][back]):
                lo, hi = bounds[j], bounds[j + 1]
                t_eff[lo:hi] = np.maximum.accumulate(t_eff[lo:hi])
        prev_t = np.empty(n)
        prev_t[1:] = t_eff[:-1]
        prev_t[starts] = state[:, 0]
        dt = t_eff - prev_t  # >= 0
        # Last time each (host, peer) and (host, peer, port) was seen before each flow.
        last_peer = _previous(pc, ts, pairs_before)
        last_service = _previous(sc, ts, services_before)
        size = np.log1p(np.asarray(nbytes, dtype=np.float64))
        fail = np.asarray(failed, dtype=np.float64)
        # The 18 damped sums of each flow: x[:, scale * 6 + stat], in host-sorted order (as
        # [n, scales, stats], all scales at once).
        horizon = ts[:, None] - _SCALES_ARRAY[None, :]
        x3 = np.empty((n, _NS, _NST))
        x3[:, :, 0] = 1.0
        x3[:, :, 1] = np.isnan(last_peer)[:, None] | (last_peer[:, None] < horizon)
        x3[:, :, 2] = np.isnan(last_service)[:, None] | (last_service[:, None] < horizon)
        x3[:, :, 3] = fail[:, None]
        x3[:, :, 4] = size[:, None]
        x3[:, :, 5] = (size * size)[:, None]
        x = x3.reshape(n, _NS * _NST)[order]
        decay = np.exp(-dt[:, None] * np.asarray(_RATES)[None, :])  # [n, scales]
        # Fold each host's state into its first flow; a zero decay there stops the scan
        # from reaching into the previous host's flows.
        x[starts] += state[:, 1:] * np.repeat(decay[starts], _NST, axis=1)
        decay[starts] = 0.0
        sums = _affine_scan(decay, x, int(np.diff(np.append(starts, n)).max()))
        s3 = sums.reshape(n, _NS, _NST)
        flows = s3[:, :, 0]
        mean = s3[:, :, 4] / flows
        var = s3[:, :, 5] / flows - mean * mean
        o3 = np.empty((n, _NS, _NST), dtype=np.float64)
        o3[:, :, 0] = np.log1p(flows)
        o3[:, :, 1:3] = np.log1p(s3[:, :, 1:3])
        o3[:, :, 3] = s3[:, :, 3] / flows
        o3[:, :, 4] = mean
        # A spread under 1e-5 of the mean is rounding left by sq/n - mean^2: zero.
        o3[:, :, 5] = np.sqrt(np.where(var > _VAR_FLOOR * mean * mean, var, 0.0))
        out_sorted = o3.reshape(n, N_HISTORY)
        last_rows = np.append(starts[1:], n) - 1
        final = sums[last_rows]
        out = np.empty((n, N_HISTORY), dtype=np.float32)
        out[order] = out_sorted
        # Tables: final state per host, entries in order of their last use (as flow by flow).
        t_last = t_eff[last_rows]
        last_idx = np.empty(n_g, dtype=np.int64)
        last_idx[kc] = np.arange(n)
        self._room(len(hosts) + known.count(None))
        slots = np.empty(n_g, dtype=np.int64)
        for j in np.argsort(last_idx, kind="stable").tolist():
            k = ukeys[j]
            row = hosts.pop(k, None)
            hosts[k] = slots[j] = len(hosts) if row is None else row
        self._state[slots, 0] = t_last
        self._state[slots, 1:] = final
        for table, entries, codes in ((pairs, upairs, pc), (services, uservices, sc)):
            last = np.empty(len(entries), dtype=np.int64)
            last[codes] = np.arange(n)
            table.touch_batch(entries, last, ts[last].tolist(), n)
        return out

    def _update_rows(self, keys: Sequence[str], peers: Sequence[str], ports: Sequence[int],
                     ts_ms: Sequence[float], failed: Sequence[bool], nbytes: Sequence[float]) -> np.ndarray:
        """Flow by flow: the reference semantics (and the path that evicts)."""
        ts_ms, failed, nbytes = (c.tolist() if isinstance(c, np.ndarray) else c for c in (ts_ms, failed, nbytes))
        ts_ms = list(ts_ms)
        n = len(keys)
        out = np.empty((n, N_HISTORY), dtype=np.float32)
        rows: list[list[float]] = [None] * n  # type: ignore[list-item]
        hosts, pairs, services, table = self._hosts, self._peers, self._services, self._state
        scales, rates = _SCALES_MS, _RATES
        log1p, exp, sqrt = math.log1p, math.exp, math.sqrt
        # The pair tables do not depend on the hosts' table: they take the batch's touches first.
        ph, sh = pair_hashes(np.fromiter(map(hash, keys), dtype=np.int64, count=n), peers, ports)
        peer_seen = pairs.touch_rows(ph.tolist(), ts_ms)
        service_seen = services.touch_rows(sh.tolist(), ts_ms)
        for i in range(n):
            key, t = keys[i], ts_ms[i]
            slot = hosts.get(key)
            if slot is None:
                if len(hosts) >= self.max_hosts:
                    slot = hosts.popitem(last=False)[1]
                else:
                    slot = len(hosts)
                    if slot >= len(table):
                        self._room(slot + 1)
                        table = self._state
                hosts[key] = slot
                st = [t] + [0.0] * (_NS * _NST)
            else:
                hosts.move_to_end(key)
                st = table[slot].tolist()
            dt = t - st[0]
            if dt > 0:
                st[0] = t
            else:
                dt = 0.0
            last_peer, last_service = peer_seen[i], service_seen[i]
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
                row += (log1p(flows), log1p(newp), log1p(news), fl / flows, mean, sqrt(var) if var > _VAR_FLOOR * mean * mean else 0.0)
            table[slot] = st
            rows[i] = row
        if n:
            out[:] = rows
        return out


class CompiledHistory:
    """`HostHistory`'s counting in C (`inference/_history_kernel.pyx`): the flow-by-flow
    reference (`HostHistory._update_rows`) line for line, so every feature is the same float32
    bit for bit and the tables hold and evict the same hosts and pairs, at 0.5-0.7 us a flow
    whatever the push size (numpy's batch path: 6 us a flow in pushes of 500, 11 in pushes
    of 50; `tests/bench/bench_history.py` prints both).

    Hosts are held by their string hash (`hash(key)`), as the pairs already were: two hosts
    whose hashes collide (about 1 in 10^14 among 50,000) count as one. The tables are open
    addressing, so addresses crafted to share a slot would make long probe chains; crafting
    them needs the process's string-hash key, random per process (PYTHONHASHSEED unset, as
    everywhere in deploy/). Every table is an array allocated at its bound (a view with the
    defaults: 50,000 hosts and 200,000 pairs per table, 21.7 MiB), touched page by page as
    it fills."""

    def __init__(self, max_hosts: int = DEFAULT_MAX_HOSTS, max_pairs: int | None = None) -> None:
        if _HistoryKernel is None:
            raise ConfigError("EDGELOOP_HOST_HISTORY", "compiled",
                              f"the compiled kernel is not built here ({KERNEL_MISSING}): reinstall "
                              "edgeloop where a C compiler is found, or use numpy or auto")
        if max_hosts < 1:
            raise ValueError(f"max_hosts must be >= 1, got {max_hosts}")
        self.max_hosts = max_hosts
        self.max_pairs = max_pairs if max_pairs is not None else 4 * max_hosts
        self._kernel = _HistoryKernel(max_hosts, self.max_pairs, _SCALES_MS, _RATES, _VAR_FLOOR)

    def __len__(self) -> int:
        return self._kernel.count

    @property
    def entries(self) -> int:
        """Hosts plus pair entries held: what memory grows with (bounded)."""
        k = self._kernel
        return k.count + len(k.peers) + len(k.services)

    def state(self, host: str) -> np.ndarray | None:
        """A copy of the host's state row (see `HostHistory.__init__`), None if not held."""
        return self._kernel.state_of(hash(host))

    def order(self) -> tuple[list[int], list[int], list[int]]:
        """Hosts' hashes, then the two pair tables', least recently used first (for tests)."""
        k = self._kernel
        return k.order(), k.peers.order(), k.services.order()

    def update(self, keys: Sequence[str], peers: Sequence[str], ports: Sequence[int],
               ts_ms: Sequence[float], failed: Sequence[bool], nbytes: Sequence[float]) -> np.ndarray:
        """Count n flows in order; return each flow's history features [n, N_HISTORY]."""
        n = len(keys)
        out = np.empty((n, N_HISTORY), dtype=np.float32)
        if n:
            self._kernel.update(keys if type(keys) is list else list(keys),
                                peers if type(peers) is list else list(peers),
                                np.ascontiguousarray(ports, dtype=np.int64),
                                np.ascontiguousarray(ts_ms, dtype=np.float64),
                                np.ascontiguousarray(failed, dtype=np.uint8),
                                np.ascontiguousarray(nbytes, dtype=np.float64), out)
        return out


HISTORY_ENGINES = ("auto", "compiled", "numpy")


def new_history(max_hosts: int = DEFAULT_MAX_HOSTS, max_pairs: int | None = None,
                engine: str = "auto") -> CompiledHistory | HostHistory:
    """The host history windowing uses (`EDGELOOP_HOST_HISTORY`): "compiled" (an error where
    the kernel was not built), "numpy", or "auto": compiled where it was built, else numpy
    (`history_engine` says which)."""
    if engine not in HISTORY_ENGINES:
        raise ValueError(f"host history engine {engine!r}: one of {', '.join(HISTORY_ENGINES)}")
    cls = HostHistory if history_engine(engine) == "numpy" else CompiledHistory
    return cls(max_hosts=max_hosts, max_pairs=max_pairs)


def history_engine(engine: str = "auto") -> str:
    """What `new_history(engine=...)` counts with: "compiled" or "numpy"."""
    return "numpy" if engine == "numpy" or (engine == "auto" and _HistoryKernel is None) else "compiled"


_M1, _M2, _M3 = np.uint64(0x9E3779B97F4A7C15), np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB)


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser on uint64 (wrapping arithmetic)."""
    x = x ^ (x >> np.uint64(30))
    x = x * _M2
    x = x ^ (x >> np.uint64(27))
    x = x * _M3
    return x ^ (x >> np.uint64(31))


def pair_hashes(host_hash: np.ndarray, peers: Sequence[str], ports: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """64-bit hashes of (host, peer) and (host, peer, port) per flow, from the host's string
    hash: the peers' string hashes (cached in each string) and the ports, mixed in numpy."""
    n = len(host_hash)
    hp = np.fromiter(map(hash, peers), dtype=np.int64, count=n).view(np.uint64)
    port = np.asarray(ports, dtype=np.int64).view(np.uint64)
    with np.errstate(over="ignore"):
        pair = _mix(host_hash.view(np.uint64) * _M1 + hp)
        service = _mix(pair + (port + np.uint64(1)) * _M1)
    return pair.view(np.int64), service.view(np.int64)


def _affine_scan(decay: np.ndarray, x: np.ndarray, longest: int) -> np.ndarray:
    """S_i = S_(i-1) * decay_i + x_i down the rows, with decay [n, scales] shared by the
    _NST columns of each scale: a Hillis-Steele scan, log2(longest run) vectorised steps."""
    a = np.repeat(decay, _NST, axis=1)
    b = x
    step = 1
    while step < longest:
        b2 = b.copy()
        b2[step:] += a[step:] * b[:-step]
        a2 = a.copy()
        a2[step:] *= a[:-step]
        a, b, step = a2, b2, step * 2
    return b


def _previous(codes: np.ndarray, ts: np.ndarray, before: np.ndarray) -> np.ndarray:
    """Per flow, when its entry (code) was last seen: the previous flow with the same code
    in the batch, else the table's time from before the batch (`before`, by code, NaN if
    none)."""
    n = len(codes)
    order = np.argsort(codes, kind="stable")
    c = codes[order]
    prev = np.empty(n)
    prev[1:] = ts[order][:-1]
    first = np.ones(n, dtype=bool)
    first[1:] = c[1:] != c[:-1]
    prev[first] = before[c[first]]
    out = np.empty(n)
    out[order] = prev
    return out

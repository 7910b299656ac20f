# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""Host history counted flow by flow in C: `inference.history.CompiledHistory`'s kernel.

The same arithmetic as `HostHistory._update_rows` (the flow-by-flow reference), in the same
order, with the same libm calls (exp, log1p, sqrt), so every row is the same float32, bit for
bit; and the same tables:

- hosts: at most `max_hosts`, least recently used first; a new host past the bound takes the
  row of the least recently used one (an OrderedDict's `popitem(last=False)`);
- (host, peer) and (host, peer, port) pairs: at most `max_pairs` each, by 64-bit hash
  (`inference.history.pair_hashes`, the same mix); a touch that makes a table hold more drops
  its least recently touched entries down to three quarters (`inference.pair_table`).

Hash tables are open addressing with linear probing over power-of-two slots (half full at
most); a slot holds an entry number plus one (0: empty), so the index arrays start as
calloc'd zero pages and only the touched pages count in RSS. A host leaving the table is
removed with backward-shift deletion (no tombstones).
"""
from libc.math cimport exp, log1p, sqrt, isnan, NAN
from libc.stdint cimport int32_t, int64_t, uint8_t, uint64_t
from cpython.object cimport PyObject_Hash

import numpy as np

cdef enum:
    NS = 3       # time scales
    NST = 6      # statistics per scale
    NCOL = 19    # state row: t_last, then NS * NST sums
    NOUT = 18    # features per flow

cdef uint64_t M1 = 0x9E3779B97F4A7C15ULL
cdef uint64_t M2 = 0xBF58476D1CE4E5B9ULL
cdef uint64_t M3 = 0x94D049BB133111EBULL


cdef inline uint64_t _mix(uint64_t x) nogil:
    """splitmix64's finaliser (as `inference.history._mix`)."""
    x = x ^ (x >> 30)
    x = x * M2
    x = x ^ (x >> 27)
    x = x * M3
    return x ^ (x >> 31)


cdef int64_t _slots_for(int64_t entries):
    cdef int64_t s = 8
    while s < 2 * entries:
        s *= 2
    return s


cdef class PairKernel:
    """When each pair hash was last seen, bounded (see the module docstring)."""
    cdef readonly int64_t max_entries, keep, size, touches, evictions
    cdef int64_t mask
    cdef int64_t[::1] keys
    cdef double[::1] times
    cdef int64_t[::1] seqs
    cdef int32_t[::1] index

    def __init__(self, int64_t max_entries):
        if max_entries < 1:
            raise ValueError(f"max_entries must be >= 1, got {max_entries}")
        self.max_entries = max_entries
        self.keep = max(1, max_entries - max_entries // 4)
        self.keys = np.zeros(max_entries + 1, dtype=np.int64)
        self.times = np.zeros(max_entries + 1, dtype=np.float64)
        self.seqs = np.zeros(max_entries + 1, dtype=np.int64)
        self.index = np.zeros(_slots_for(max_entries + 1), dtype=np.int32)
        self.mask = self.index.shape[0] - 1
        self.size = self.touches = self.evictions = 0

    def __len__(self):
        return self.size

    def nbytes(self) -> int:
        return (self.keys.nbytes + self.times.nbytes + self.seqs.nbytes + self.index.nbytes)

    cdef double touch(self, int64_t h, double t):
        """Record a touch at time t; the hash's previous time, NaN if it was not held."""
        cdef int64_t pos = <int64_t>(_mix(<uint64_t>h) & <uint64_t>self.mask)
        cdef int64_t e
        cdef double prev
        while self.index[pos]:
            e = self.index[pos] - 1
            if self.keys[e] == h:
                prev = self.times[e]
                self.times[e] = t
                self.seqs[e] = self.touches
                self.touches += 1
                return prev
            pos = (pos + 1) & self.mask
        e = self.size
        self.keys[e] = h
        self.times[e] = t
        self.seqs[e] = self.touches
        self.touches += 1
        self.index[pos] = <int32_t>(e + 1)
        self.size += 1
        if self.size > self.max_entries:
            self._evict()
        return NAN

    cdef void _evict(self):
        """Keep the `keep` most recently touched entries; rebuild the index."""
        cdef int64_t n = self.size, keep = self.keep, e, j = 0, pos
        cdef int64_t threshold = np.partition(np.asarray(self.seqs[:n]), n - keep)[n - keep]
        for e in range(n):
            if self.seqs[e] >= threshold:
                self.keys[j] = self.keys[e]
                self.times[j] = self.times[e]
                self.seqs[j] = self.seqs[e]
                j += 1
        self.size = j
        self.index[:] = 0
        for e in range(j):
            pos = <int64_t>(_mix(<uint64_t>self.keys[e]) & <uint64_t>self.mask)
            while self.index[pos]:
                pos = (pos + 1) & self.mask
            self.index[pos] = <int32_t>(e + 1)
        self.evictions += 1

    def order(self) -> list:
        """The held hashes, least recently touched first (for tests)."""
        n = self.size
        return np.asarray(self.keys[:n])[np.argsort(np.asarray(self.seqs[:n]), kind="stable")].tolist()


cdef class HistoryKernel:
    """Hosts' damped statistics and the two pair tables of one view."""
    cdef readonly int64_t max_hosts, count
    cdef readonly PairKernel peers, services
    cdef double scales[NS]
    cdef double rates[NS]
    cdef double var_floor
    cdef double[:, ::1] state
    cdef int64_t[::1] host_keys
    cdef int32_t[::1] older, newer  # the LRU list over rows: -1 ends it
    cdef int32_t oldest, newest
    cdef int32_t[::1] index
    cdef int64_t mask

    def __init__(self, int64_t max_hosts, int64_t max_pairs, scales_ms, rates, double var_floor):
        if max_hosts < 1:
            raise ValueError(f"max_hosts must be >= 1, got {max_hosts}")
        if len(scales_ms) != NS or len(rates) != NS:
            raise ValueError(f"the kernel is built for {NS} time scales")
        self.max_hosts = max_hosts
        self.peers = PairKernel(max_pairs)
        self.services = PairKernel(max_pairs)
        for j in range(NS):
            self.scales[j] = scales_ms[j]
            self.rates[j] = rates[j]
        self.var_floor = var_floor
        self.state = np.zeros((max_hosts, NCOL), dtype=np.float64)
        self.host_keys = np.zeros(max_hosts, dtype=np.int64)
        self.older = np.zeros(max_hosts, dtype=np.int32)
        self.newer = np.zeros(max_hosts, dtype=np.int32)
        self.oldest = self.newest = -1
        self.index = np.zeros(_slots_for(max_hosts), dtype=np.int32)
        self.mask = self.index.shape[0] - 1
        self.count = 0

    def nbytes(self) -> int:
        """Bytes of the arrays if every row were in use (zero pages cost nothing until then)."""
        return (self.state.nbytes + self.host_keys.nbytes + self.older.nbytes + self.newer.nbytes
                + self.index.nbytes + self.peers.nbytes() + self.services.nbytes())

    cdef inline int64_t _home(self, int64_t h):
        return <int64_t>(_mix(<uint64_t>h) & <uint64_t>self.mask)

    cdef int32_t _find(self, int64_t h):
        """The host's row, -1 if not held."""
        cdef int64_t pos = self._home(h)
        cdef int32_t r
        while self.index[pos]:
            r = self.index[pos] - 1
            if self.host_keys[r] == h:
                return r
            pos = (pos + 1) & self.mask
        return -1

    cdef void _unindex(self, int64_t h):
        """Remove a held host from the index (backward-shift deletion)."""
        cdef int64_t i = self._home(h), j, k
        while self.host_keys[self.index[i] - 1] != h:
            i = (i + 1) & self.mask
        j = i
        while True:
            j = (j + 1) & self.mask
            if not self.index[j]:
                break
            k = self._home(self.host_keys[self.index[j] - 1])
            # the entry at j may move to i unless its home lies cyclically in (i, j]
            if (i <= j and (k <= i or k > j)) or (i > j and k <= i and k > j):
                self.index[i] = self.index[j]
                i = j
        self.index[i] = 0

    cdef void _link_newest(self, int32_t r):
        self.older[r] = self.newest
        self.newer[r] = -1
        if self.newest >= 0:
            self.newer[self.newest] = r
        else:
            self.oldest = r
        self.newest = r

    cdef void _unlink(self, int32_t r):
        if self.older[r] >= 0:
            self.newer[self.older[r]] = self.newer[r]
        else:
            self.oldest = self.newer[r]
        if self.newer[r] >= 0:
            self.older[self.newer[r]] = self.older[r]
        else:
            self.newest = self.older[r]

    cdef int32_t _row(self, int64_t h, double t):
        """The host's row, made the most recently used; a new host gets a fresh state row
        (the least recently used host's when the table is full)."""
        cdef int32_t r = self._find(h)
        cdef int64_t pos
        cdef int c
        if r >= 0:
            if r != self.newest:
                self._unlink(r)
                self._link_newest(r)
            return r
        if self.count >= self.max_hosts:
            r = self.oldest
            self._unindex(self.host_keys[r])
            self._unlink(r)
        else:
            r = <int32_t>self.count
            self.count += 1
        self.host_keys[r] = h
        pos = self._home(h)
        while self.index[pos]:
            pos = (pos + 1) & self.mask
        self.index[pos] = r + 1
        self._link_newest(r)
        self.state[r, 0] = t
        for c in range(1, NCOL):
            self.state[r, c] = 0.0
        return r

    def update(self, list keys, list peers, const int64_t[::1] ports, const double[::1] ts,
               const uint8_t[::1] failed, const double[::1] nbytes, float[:, ::1] out):
        """Count the flows in order; write each one's NOUT features into `out`."""
        cdef Py_ssize_t n = len(keys), i
        cdef int64_t hk, hp
        cdef uint64_t pair, service
        cdef double t, dt, lp, ls, fail, size, d, horizon, flows, newp, news, fl, by, sq, mean, var
        cdef int32_t r
        cdef int j, b, o
        if len(peers) != n or ports.shape[0] != n or ts.shape[0] != n or failed.shape[0] != n \
                or nbytes.shape[0] != n or out.shape[0] != n or out.shape[1] != NOUT:
            raise ValueError("update: columns of different lengths")
        for i in range(n):
            hk = PyObject_Hash(keys[i])
            hp = PyObject_Hash(peers[i])
            pair = _mix(<uint64_t>hk * M1 + <uint64_t>hp)
            service = _mix(pair + (<uint64_t>ports[i] + 1) * M1)
            t = ts[i]
            lp = self.peers.touch(<int64_t>pair, t)
            ls = self.services.touch(<int64_t>service, t)
            r = self._row(hk, t)
            dt = t - self.state[r, 0]
            if dt > 0:
                self.state[r, 0] = t
            else:
                dt = 0.0
            fail = 1.0 if failed[i] else 0.0
            size = log1p(nbytes[i])
            for j in range(NS):
                d = exp(-self.rates[j] * dt) if dt != 0.0 else 1.0
                b = 1 + j * NST
                horizon = t - self.scales[j]
                flows = self.state[r, b] * d + 1.0
                newp = self.state[r, b + 1] * d + (1.0 if (isnan(lp) or lp < horizon) else 0.0)
                news = self.state[r, b + 2] * d + (1.0 if (isnan(ls) or ls < horizon) else 0.0)
                fl = self.state[r, b + 3] * d + fail
                by = self.state[r, b + 4] * d + size
                sq = self.state[r, b + 5] * d + size * size
                self.state[r, b] = flows
                self.state[r, b + 1] = newp
                self.state[r, b + 2] = news
                self.state[r, b + 3] = fl
                self.state[r, b + 4] = by
                self.state[r, b + 5] = sq
                mean = by / flows
                var = sq / flows - mean * mean
                o = j * NST
                out[i, o] = <float>log1p(flows)
                out[i, o + 1] = <float>log1p(newp)
                out[i, o + 2] = <float>log1p(news)
                out[i, o + 3] = <float>(fl / flows)
                out[i, o + 4] = <float>mean
                out[i, o + 5] = <float>(sqrt(var) if var > self.var_floor * mean * mean else 0.0)

    def state_of(self, int64_t h):
        """A copy of the host's state row, None if not held."""
        cdef int32_t r = self._find(h)
        return None if r < 0 else np.asarray(self.state[r]).copy()

    def order(self) -> list:
        """The held hosts' hashes, least recently used first (for tests)."""
        out = []
        cdef int32_t r = self.oldest
        while r >= 0:
            out.append(self.host_keys[r])
            r = self.newer[r]
        return out

"""The pair tables behind host history: a compact table must answer as a plain dict with
least-recently-touched eviction would, whatever its merges."""
from __future__ import annotations

import numpy as np
import pytest

from inference.pair_table import PairTable


class _Reference:
    """The semantics, in a dict: hash -> (time, touch number); past max, keep the newest `keep`."""

    def __init__(self, most: int) -> None:
        self.most, self.keep, self.d, self.seq = most, max(1, most - most // 4), {}, 0

    def touch(self, h: int, t: float) -> float | None:
        before = self.d.get(h)
        self.d[h] = (t, self.seq)
        self.seq += 1
        if len(self.d) > self.most:
            newest = sorted(self.d.items(), key=lambda kv: kv[1][1])[-self.keep:]
            self.d = dict(newest)
        return None if before is None else before[0]

    def order(self) -> list[int]:
        return [h for h, _ in sorted(self.d.items(), key=lambda kv: kv[1][1])]


@pytest.mark.parametrize("seed", range(4))
def test_touches_one_at_a_time_and_in_batches_answer_like_a_dict(seed: int) -> None:
    rng = np.random.default_rng(seed)
    most = int(rng.integers(1, 300))
    ref, rows, batch = _Reference(most), PairTable(most, merge_at=int(rng.integers(1, 50))), PairTable(most, merge_at=7)
    for _ in range(60):
        n = int(rng.integers(1, 120))
        hashes = (rng.integers(-(2**62), 2**62, 1) + rng.integers(0, 400, n)).tolist()  # repeats, signed
        times = np.sort(rng.uniform(0, 1e6, n)).round().tolist()
        want = [ref.touch(h, t) for h, t in zip(hashes, times)]
        assert rows.touch_rows(hashes, times) == want
        rows.maybe_merge()
        # The batch path, when the caller found no eviction: distinct hashes, their last touch.
        if len(batch) + len({h for h in hashes if np.isnan(batch.previous([h])[0])}) <= most:
            uniq = list(dict.fromkeys(hashes))
            prev = batch.previous(uniq)
            first = {h: p for h, p in zip(uniq, prev.tolist())}
            got = []
            for i, h in enumerate(hashes):  # the previous flow of the same hash, else the table
                earlier = [times[j] for j in range(i) if hashes[j] == h]
                got.append(earlier[-1] if earlier else (None if np.isnan(first[h]) else first[h]))
            assert got == want
            last = np.array([max(i for i, x in enumerate(hashes) if x == h) for h in uniq])
            batch.touch_batch(uniq, last, [times[j] for j in last], n)
        else:
            assert batch.touch_rows(hashes, times) == want
        batch.maybe_merge()
        assert len(rows) == len(batch) == len(ref.d) <= most
    assert rows.order() == batch.order() == ref.order()
    assert rows.merges > 0


def test_a_full_table_evicts_the_least_recently_touched_quarter():
    t = PairTable(8)
    t.touch_rows(list(range(8)), [0.0] * 8)
    t.touch_rows([0], [1.0])  # 0 is now the most recent
    assert t.touch_rows([100], [2.0]) == [None]  # the 9th entry: down to 6, the newest
    assert len(t) == 6 and t.order() == [4, 5, 6, 7, 0, 100]
    assert t.previous([1, 0, 100]).tolist()[1:] == [1.0, 2.0] and np.isnan(t.previous([1])[0])


def test_an_entry_costs_tens_of_bytes_not_a_python_object():
    t = PairTable(200_000)
    t.touch_rows(list(range(200_000)), [0.0] * 200_000)
    t.merge()
    assert t.nbytes() / len(t) == 24

"""observe_many: a batch of values into a Prometheus histogram, the same exposition as
observe() one by one (edge and inclusive bounds, +Inf, NaN, negative values, empty):
identical bucket and count lines, the sum to float rounding (added in another order)."""
from __future__ import annotations

import math
import random

from prometheus_client import CollectorRegistry, Histogram, generate_latest

from streams.metrics import observe_many


def exposition(values: list[float], batched: bool) -> dict[str, float]:
    reg = CollectorRegistry()
    h = Histogram("t_seconds", "t", buckets=(0.001, 0.01, 0.1, 0.5, 1, 2.5), registry=reg)
    labelled = Histogram("u_seconds", "u", ["kind"], buckets=(1, 2), registry=reg).labels(kind="k")
    for target in (h, labelled):
        if batched:
            observe_many(target, values)
        else:
            for v in values:
                target.observe(v)
    out = {}
    for line in generate_latest(reg).decode().splitlines():
        if line and not line.startswith("#") and "_created" not in line:   # creation times differ
            name, value = line.rsplit(" ", 1)
            out[name] = float(value)
    return out


def same(a: dict[str, float], b: dict[str, float]) -> bool:
    return a.keys() == b.keys() and all(
        (math.isnan(a[k]) and math.isnan(b[k])) or (math.isclose(a[k], b[k], rel_tol=1e-12) if "_sum" in k
                                                    else a[k] == b[k]) for k in a)


def test_a_batch_reads_exactly_as_values_one_by_one() -> None:
    rng = random.Random(3)
    values = [rng.choice([0.001, 0.01, 0.5, 1.0, 2.5, 2.5000001, 0.0, -1.0, 1e9]) for _ in range(300)]
    values += [rng.random() * 3 for _ in range(2000)]
    got, want = exposition(values, True), exposition(values, False)
    assert same(got, want) and want['t_seconds_count'] == len(values), (got, want)
    assert same(exposition([], True), exposition([], False))
    with_nan = [0.2, math.nan, 0.7]
    assert same(exposition(with_nan, True), exposition(with_nan, False))

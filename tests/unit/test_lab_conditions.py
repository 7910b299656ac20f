"""Link conditions: seeded draws, the held-out region kept out of training, and the link
emulator's arithmetic (delay, jitter without reordering, loss, rate, tail drop)."""
from __future__ import annotations

import random
from pathlib import Path

import pytest

from contracts.errors import LabError
from trafficlab.conditions import (HELDOUT_MTU, LinkCondition, draw_conditions, draw_train_link,
                                   in_heldout_region)
from trafficlab.linkemu import Pipe, Shape
from trafficlab.plan import GenerateOptions, plan_lab

ROLES = ["vic", "att", "c1", "c2", "c3", "r1", "r2"]


def test_draws_are_seeded() -> None:
    a = draw_conditions("train", random.Random(5), ROLES)
    b = draw_conditions("train", random.Random(5), ROLES)
    c = draw_conditions("train", random.Random(6), ROLES)
    assert a == b and a != c
    assert draw_conditions("none", random.Random(5), ROLES).emulated == set()
    assert a.emulated == set(ROLES)
    with pytest.raises(LabError):
        draw_conditions("bogus", random.Random(5), ROLES)


def test_training_draws_never_enter_the_held_out_region_but_cover_the_rest() -> None:
    rng = random.Random(0)
    links = []
    for i in range(400):
        cond = draw_conditions("train", rng, ROLES)
        assert cond.mtu >= 1400
        for link in cond.links.values():
            assert not in_heldout_region(link, cond.mtu), link
            links.append(link)
    # The draw is not trivially narrow: long delays, high loss and rate limits all occur,
    # just never long delay together with high loss.
    assert max(link.delay_ms for link in links) > 250
    assert max(link.loss for link in links) > 0.03
    assert any(link.rate_mbit for link in links) and min(link.rate_mbit or 1e9 for link in links) >= 8
    assert any(link.delay_ms >= 200 for link in links) and any(link.loss >= 0.02 for link in links)


def test_slow_corner_stays_outside_the_region_and_is_slow() -> None:
    """`train-slow` draws every host from the slow edge of the training region: long delay
    with loss just under the held-out region's, never inside it."""
    rng = random.Random(0)
    links = []
    for _ in range(200):
        cond = draw_conditions("train-slow", rng, ROLES)
        assert cond.mode == "train-slow" and cond.mtu in (1400, 1420) and cond.emulated == set(ROLES)
        for link in cond.links.values():
            assert not in_heldout_region(link, cond.mtu), link
            links.append(link)
    assert all(120 <= link.delay_ms <= 300 and link.loss >= 0.005 for link in links)
    assert all((link.rate_mbit or 1e9) >= 10 for link in links)
    # both sides of the corner: 200 ms and more with loss just under 2%, less with up to 5%
    assert max(link.loss for link in links if link.delay_ms >= 200) > 0.019
    assert max(link.loss for link in links if link.delay_ms < 200) > 0.045
    assert draw_conditions("train-slow", random.Random(3), ROLES).to_dict()["train_ranges"]["delay_ms"] == "120-300"


def test_held_out_profile_lies_inside_the_region() -> None:
    for seed in range(50):
        cond = draw_conditions("heldout", random.Random(seed), ROLES)
        assert cond.mtu == HELDOUT_MTU
        for link in cond.links.values():
            assert in_heldout_region(link, 1500)      # each link on its own, not just by MTU
            assert 220 <= link.delay_ms <= 300 and 0.025 <= link.loss <= 0.05 and link.rate_mbit < 8


def test_region_predicate() -> None:
    assert in_heldout_region(LinkCondition(200, 0, 0.02, None), 1500)
    assert not in_heldout_region(LinkCondition(199, 0, 0.05, None), 1500)
    assert not in_heldout_region(LinkCondition(300, 0, 0.019, None), 1500)
    assert in_heldout_region(LinkCondition(0, 0, 0, 4.0), 1500)
    assert in_heldout_region(LinkCondition(0, 0, 0, None), 1280)
    assert draw_train_link(random.Random(1), 1500).rate_mbit != 4.0


def test_conditions_draw_does_not_change_the_attack_plan(tmp_path: Path) -> None:
    def argvs(cond: str):
        plan = plan_lab(GenerateOptions(seed=4, out_dir=tmp_path, conditions=cond, scenarios="known"),
                        tmp_path)
        return plan, [(r.variant, r.argv[:3]) for _, runs, _ in plan.attacks for r in runs]
    bare, a = argvs("none")
    shaped, b = argvs("train")
    assert a == b
    assert bare.topo.addresses == shaped.topo.addresses
    assert shaped.conditions.mode == "train" and bare.conditions.mode == "none"
    slow = plan_lab(GenerateOptions(seed=4, out_dir=tmp_path, conditions="heldout", scenarios="known"),
                    tmp_path)
    t_bare = sum(r.timeout_s for _, runs, _ in bare.attacks for r in runs)
    t_slow = sum(r.timeout_s for _, runs, _ in slow.attacks for r in runs)
    assert t_slow > 1.5 * t_bare          # slow links get longer (still bounded) timeouts


class FakeSock:
    def __init__(self) -> None:
        self.sent: list[bytes] = []

    def send(self, frame: bytes) -> None:
        self.sent.append(frame)


def _pipe(shape: Shape, seed: int = 1) -> tuple[Pipe, FakeSock]:
    out = FakeSock()
    return Pipe("t", None, out, shape, random.Random(seed)), out


def test_emulated_delay_and_jitter_keep_order() -> None:
    pipe, out = _pipe(Shape(delay_ms=40, jitter_ms=8))
    dues = [pipe.admit(bytes([i % 256]) * 60, now=i * 0.0005) for i in range(2000)]
    assert dues == sorted(dues)                             # FIFO: never reordered
    delays = [d - i * 0.0005 for i, d in enumerate(dues)]
    mean = sum(delays) / len(delays)
    # About 40 ms on average: jitter spreads it, and a FIFO of independent per-frame draws
    # (which would add the running maximum of the jitter to every frame) would not.
    assert min(delays) > 0.005 and 0.034 < mean < 0.048 and max(delays) > 0.050
    # The report gives the mean delay + jitter drawn, about the 40 ms set; the FIFO only ever
    # holds a frame longer, so the frames' own mean is no less.
    assert 34 < pipe.report()["delay_ms_mean"] <= mean * 1000 < 48
    pipe.flush(now=dues[999])
    assert len(out.sent) >= 1000 and out.sent[0] == bytes([0]) * 60


def test_emulated_loss_rate_and_tail_drop() -> None:
    lossy, _ = _pipe(Shape(loss=0.05))
    lost = sum(lossy.admit(b"x" * 100, now=i * 0.001) is None for i in range(20000))
    assert 800 < lost < 1200
    slow, _ = _pipe(Shape(rate_mbit=1.0, queue_ms=100))
    dues = [slow.admit(b"x" * 1250, now=0.0) for _ in range(20)]     # 10 ms each at 1 Mbit/s
    kept = [d for d in dues if d is not None]
    assert kept[0] == pytest.approx(0.010) and kept[4] == pytest.approx(0.050)
    assert 9 <= len(kept) <= 12 and slow.counts["tail_drop"] == 20 - len(kept)

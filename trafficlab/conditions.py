"""Link conditions for a lab generation: delay, jitter, loss, rate per host, MTU per lab.

Real traffic crosses links the lab's bridge does not have: long round trips, jitter,
lossy Wi-Fi, slow uplinks, tunnels with a small MTU. A generation therefore draws a
`LinkCondition` for every host's access link from its seed (`mode="train"`), or draws
every host from the training draw's slow corner (`mode="train-slow"`), or applies the
named evaluation profile (`mode="heldout"`), or none at all (`mode="none"`).
`trafficlab.linkemu` applies them; the datasheet records them.

A host's `delay_ms` is the round trip its access link adds (half each way); `jitter_ms`
is the standard deviation of each direction's delay (frames are never reordered);
`loss` is the chance a frame is lost in each direction; `rate_mbit` caps each direction.

The held-out region is kept out of every training draw, so evaluating on the `heldout`
profile measures link conditions the detector never saw:

    heldout region:  (delay >= 200 ms and loss >= 2 %)  or  rate < 8 Mbit/s  or  MTU < 1400
    heldout profile: every host 220-300 ms, jitter 10-15 % of it, loss 2.5-5 %,
                     2-6 Mbit/s, MTU 1280
    train-slow:      every host 120-300 ms, loss 1-5 % below 200 ms and 0.5-2 % above,
                     10-20 Mbit/s or unlimited, MTU 1400 or 1420: the edge of the training
                     region, which the plain draw reaches for about 3 % of hosts

    >>> cond = draw_conditions("train", random.Random(1), ["vic", "att", "c1"])
    >>> cond.links["vic"].delay_ms, cond.mtu
"""
from __future__ import annotations

import random
from dataclasses import asdict, dataclass, field
from typing import Iterable

from contracts.errors import LabError

MODES = ("none", "train", "train-slow", "heldout")
TRAIN_MTUS = (1500, 1500, 1500, 1460, 1420, 1400)
HELDOUT_MTU = 1280
TRAIN_RATES = (10.0, 20.0, 50.0, 100.0, 200.0)
HELDOUT_RATES = (2.0, 3.0, 4.0, 6.0)
# The training draw, for the datasheet and the README.
TRAIN_RANGES = {
    "delay_ms": "35% 0-4 (LAN), 45% 4-120 (WAN), 20% 120-300 (long haul, satellite)",
    "jitter_ms": "0-25% of the delay",
    "loss": "55% none, 35% 0-1%, 10% 1-5%",
    "rate_mbit": f"50% unlimited, else one of {list(TRAIN_RATES)}",
    "mtu": f"one per generation from {sorted(set(TRAIN_MTUS))}",
    "excluded": "the held-out region: (delay >= 200 ms and loss >= 2%) or rate < 8 Mbit/s "
                "or MTU < 1400",
}
SLOW_MTUS = (1400, 1420)
SLOW_RANGES = {
    "delay_ms": "120-300", "jitter_ms": "0-25% of the delay",
    "loss": "1-5% below 200 ms of delay, 0.5-2% (exclusive) from 200 ms",
    "rate_mbit": "50% unlimited, else 10 or 20", "mtu": f"one per generation from {list(SLOW_MTUS)}",
    "excluded": TRAIN_RANGES["excluded"],
}
HELDOUT_PROFILE = {"delay_ms": [220, 300], "jitter": "10-15% of the delay", "loss": [0.025, 0.05],
                   "rate_mbit": list(HELDOUT_RATES), "mtu": HELDOUT_MTU}


@dataclass(frozen=True)
class LinkCondition:
    """One host's access link (both directions)."""
    delay_ms: float = 0.0
    jitter_ms: float = 0.0
    loss: float = 0.0
    rate_mbit: float | None = None

    def shapes(self) -> tuple[dict, dict]:
        """(uplink, downlink) as `trafficlab.linkemu` takes them."""
        one = {"delay_ms": self.delay_ms / 2, "jitter_ms": self.jitter_ms, "loss": self.loss,
               "rate_mbit": self.rate_mbit}
        return one, dict(one)


def in_heldout_region(link: LinkCondition, mtu: int) -> bool:
    """Whether a link (with the lab's MTU) lies where training draws never go."""
    return ((link.delay_ms >= 200 and link.loss >= 0.02)
            or (link.rate_mbit is not None and link.rate_mbit < 8) or mtu < 1400)


@dataclass(frozen=True)
class Conditions:
    mode: str = "none"
    mtu: int = 1500
    links: dict[str, LinkCondition] = field(default_factory=dict)

    @property
    def emulated(self) -> set[str]:
        """Roles whose link goes through the emulator (every host, when conditions are on)."""
        return set(self.links) if self.mode != "none" else set()

    def link(self, role: str) -> LinkCondition:
        return self.links.get(role, LinkCondition())

    def slowdown(self, *roles: str) -> float:
        """How much longer a tool takes across these hosts' links (for run timeouts)."""
        rtt = sum(self.link(r).delay_ms for r in roles)
        loss = sum(self.link(r).loss for r in roles)
        rates = [self.link(r).rate_mbit for r in roles if self.link(r).rate_mbit]
        slow_rate = 1.5 if rates and min(rates) < 8 else 1.0
        return round(min(4.0, (1 + rtt / 150 + 10 * loss) * slow_rate), 2)

    def fragile(self, *roles: str) -> bool:
        """Whether any of these links is lossy (>= 2 %) or slow (< 8 Mbit/s)."""
        return any(self.link(r).loss >= 0.02 or (self.link(r).rate_mbit or 1e9) < 8 for r in roles)

    def to_dict(self) -> dict:
        return {"mode": self.mode, "mtu": self.mtu,
                "links": {r: asdict(c) for r, c in sorted(self.links.items())},
                "train_ranges": TRAIN_RANGES if self.mode == "train"
                else SLOW_RANGES if self.mode == "train-slow" else None,
                "heldout_profile": HELDOUT_PROFILE if self.mode == "heldout" else None,
                "applied_by": "trafficlab.linkemu (userspace, AF_PACKET) on every host link"
                              if self.mode != "none" else None}


def draw_train_link(rng: random.Random, mtu: int) -> LinkCondition:
    """One training link, redrawn until it lies outside the held-out region."""
    for _ in range(1000):
        r = rng.random()
        delay = rng.uniform(0, 4) if r < 0.35 else rng.uniform(4, 120) if r < 0.8 \
            else rng.uniform(120, 300)
        r = rng.random()
        loss = 0.0 if r < 0.55 else rng.uniform(0, 0.01) if r < 0.9 else rng.uniform(0.01, 0.05)
        rate = None if rng.random() < 0.5 else rng.choice(TRAIN_RATES)
        link = LinkCondition(round(delay, 1), round(delay * rng.uniform(0, 0.25), 1),
                             round(loss, 4), rate)
        if not in_heldout_region(link, mtu):
            return link
    raise LabError("could not draw a training link outside the held-out region")


def draw_slow_link(rng: random.Random, mtu: int) -> LinkCondition:
    """One training link from the slow corner next to the held-out region (never in it)."""
    delay = rng.uniform(120, 300)
    loss = rng.uniform(0.01, 0.05) if delay < 200 else rng.uniform(0.005, 0.0199)
    rate = None if rng.random() < 0.5 else rng.choice((10.0, 20.0))
    link = LinkCondition(round(delay, 1), round(delay * rng.uniform(0, 0.25), 1), round(loss, 4), rate)
    if in_heldout_region(link, mtu):
        raise LabError(f"slow training link {link} falls in the held-out region")
    return link


def heldout_link(rng: random.Random) -> LinkCondition:
    delay = rng.uniform(220, 300)
    return LinkCondition(round(delay, 1), round(delay * rng.uniform(0.10, 0.15), 1),
                         round(rng.uniform(0.025, 0.05), 4), rng.choice(HELDOUT_RATES))


def draw_conditions(mode: str, rng: random.Random, roles: Iterable[str]) -> Conditions:
    """The conditions of one generation, from its seed (`rng` is consumed only if on)."""
    if mode not in MODES:
        raise LabError(f"conditions={mode!r}: must be one of {', '.join(MODES)}")
    roles = list(roles)
    if mode == "none":
        return Conditions()
    if mode == "train":
        mtu = rng.choice(TRAIN_MTUS)
        return Conditions("train", mtu, {r: draw_train_link(rng, mtu) for r in roles})
    if mode == "train-slow":
        mtu = rng.choice(SLOW_MTUS)
        return Conditions("train-slow", mtu, {r: draw_slow_link(rng, mtu) for r in roles})
    return Conditions("heldout", HELDOUT_MTU, {r: heldout_link(rng) for r in roles})

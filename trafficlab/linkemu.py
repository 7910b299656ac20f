"""A userspace link emulator: delay, jitter, loss and a rate limit on the lab's host links.

The lab's link conditions (`trafficlab.conditions`) are what netem would do, but many
kernels (this project's CI and build VMs among them) ship without `sch_netem`. So the lab
emulates each host's access link itself: with conditions on, a host's veth does not join
the bridge directly but ends in the switch namespace as `p-<role>`, and a second veth pair
`q-<role>` / `b-<role>` joins the bridge. This process, one per lab, runs in the switch
namespace and moves raw Ethernet frames between `p-*` and `q-*` with AF_PACKET sockets:


    host eth0 ─ p-<role> ══ linkemu (uplink: delay, jitter, loss, rate) ══ q-<role> ─ b-<role> ─ br0
                         ◄══ linkemu (downlink: the same, drawn separately) ══

The capture on br0 therefore sees a host's packets after its uplink and before its
downlink, as a sensor in the middle of a path would. Each direction is a FIFO (jitter
never reorders frames), serialises frames at the link rate, drops from the tail when
more than `queue_ms` of traffic waits, and loses frames at random (seeded). Jitter is a
slowly varying delay (an Ornstein-Uhlenbeck process with a JITTER_TAU_S time constant and
`jitter_ms` standard deviation), as on real paths, where the packets of a burst see
nearly the same queue: independent per-frame jitter in a FIFO would instead add the
maximum of many draws to every frame of a flood.

    ip netns exec el-1-sw python -m trafficlab.linkemu --config links.json --until 1790000000

links.json: {"seed": 7, "links": [{"host_dev": "p-c1", "bridge_dev": "q-c1",
             "up": {"delay_ms": 40, "jitter_ms": 4, "loss": 0.01, "rate_mbit": 20}, "down": {...}}]}
It writes a JSON line of per-direction counters to stdout when it stops (SIGTERM or --until):
frames in, out, lost, dropped from the tail, and the mean delay plus jitter the admitted
frames were given (queueing behind the rate limit not included), so a run can show the
delay it applied apart from the queues its traffic built.
"""
from __future__ import annotations

import argparse
import heapq
import json
import math
import random
import selectors
import signal
import socket
import sys
import time
from collections import deque
from dataclasses import dataclass, field

ETH_P_ALL = 0x0003
PACKET_OUTGOING = 4
SOL_PACKET = 263
PACKET_IGNORE_OUTGOING = 23
BURST = 64            # frames read from one socket per wake-up
JITTER_TAU_S = 0.05


@dataclass(frozen=True)
class Shape:
    """One direction of a link: what a frame goes through on its way."""
    delay_ms: float = 0.0
    jitter_ms: float = 0.0
    loss: float = 0.0                  # probability, 0..1
    rate_mbit: float | None = None     # None: no rate limit
    queue_ms: float = 400.0            # tail drop beyond this much queued traffic

    @classmethod
    def from_dict(cls, d: dict) -> "Shape":
        return cls(**{k: d[k] for k in ("delay_ms", "jitter_ms", "loss", "rate_mbit", "queue_ms")
                      if k in d and d[k] is not None})


@dataclass
class Pipe:
    """Frames read from `src` wait in `queue` until their due time, then go out `dst`."""
    name: str
    src: socket.socket
    dst: socket.socket
    shape: Shape
    rng: random.Random
    queue: deque = field(default_factory=deque)   # (due, frame), due non-decreasing
    link_free: float = 0.0
    last_due: float = 0.0
    jitter: float = 0.0          # current jitter offset, seconds (OU process)
    jitter_at: float = 0.0
    counts: dict = field(default_factory=lambda: {"in": 0, "out": 0, "lost": 0, "tail_drop": 0})
    delay_sum: float = 0.0       # seconds of delay + jitter given to admitted frames (no queueing)
    admitted: int = 0

    def admit(self, frame: bytes, now: float) -> float | None:
        """Queue a frame; returns its due time (None if it was lost or dropped)."""
        self.counts["in"] += 1
        s = self.shape
        if s.loss and self.rng.random() < s.loss:
            self.counts["lost"] += 1
            return None
        start = max(now, self.link_free)
        if s.rate_mbit:
            if (start - now) * 1000 > s.queue_ms:
                self.counts["tail_drop"] += 1
                return None
            self.link_free = start + len(frame) * 8 / (s.rate_mbit * 1e6)
            start = self.link_free
        delay = max(0.0, s.delay_ms / 1000 + (self._jitter(now) if s.jitter_ms else 0.0))
        due = max(self.last_due, start + delay)
        self.last_due = due
        self.queue.append((due, frame))
        self.delay_sum += delay
        self.admitted += 1
        return due

    def report(self) -> dict:
        """The counters, and the mean delay + jitter given to admitted frames (ms; None if none)."""
        mean = round(self.delay_sum * 1000 / self.admitted, 2) if self.admitted else None
        return {**self.counts, "delay_ms_mean": mean}

    def _jitter(self, now: float) -> float:
        """Advance the OU jitter process to `now` and return its value (seconds)."""
        decay = math.exp(-max(0.0, now - self.jitter_at) / JITTER_TAU_S)
        sigma = self.shape.jitter_ms / 1000
        self.jitter = self.jitter * decay + sigma * math.sqrt(1 - decay * decay) * self.rng.gauss(0, 1)
        self.jitter_at = now
        return self.jitter

    def flush(self, now: float) -> None:
        while self.queue and self.queue[0][0] <= now:
            _, frame = self.queue.popleft()
            try:
                self.dst.send(frame)
                self.counts["out"] += 1
            except OSError:         # ENOBUFS under a flood: a drop, as on a real NIC
                self.counts["tail_drop"] += 1


def _open(dev: str) -> socket.socket:
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    sock.bind((dev, 0))
    try:
        sock.setsockopt(SOL_PACKET, PACKET_IGNORE_OUTGOING, 1)
    except OSError:
        pass                        # older kernels: outgoing frames are skipped in _read
    for opt in (33, socket.SO_RCVBUF):        # SO_RCVBUFFORCE needs root; fall back
        try:
            sock.setsockopt(socket.SOL_SOCKET, opt, 8 << 20)
            break
        except OSError:
            continue
    sock.setblocking(False)
    return sock


def build(config: dict) -> list[Pipe]:
    rng = random.Random(config.get("seed", 0))
    pipes = []
    for link in config["links"]:
        host, bridge = _open(link["host_dev"]), _open(link["bridge_dev"])
        pipes.append(Pipe(f"{link['host_dev']}:up", host, bridge, Shape.from_dict(link["up"]),
                          random.Random(rng.getrandbits(64))))
        pipes.append(Pipe(f"{link['host_dev']}:down", bridge, host, Shape.from_dict(link["down"]),
                          random.Random(rng.getrandbits(64))))
    return pipes


def _read(pipe: Pipe, timers: list, now: float) -> None:
    for _ in range(BURST):
        try:
            frame, addr = pipe.src.recvfrom(65535)
        except (BlockingIOError, InterruptedError):
            return
        if addr[2] == PACKET_OUTGOING:
            continue
        due = pipe.admit(frame, now)
        if due is not None and len(pipe.queue) == 1:
            heapq.heappush(timers, (due, id(pipe), pipe))


def serve(pipes: list[Pipe], until: float) -> None:
    """Move frames until `until` (epoch seconds) or SIGTERM."""
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    sel = selectors.DefaultSelector()
    for p in pipes:
        sel.register(p.src, selectors.EVENT_READ, p)
    timers: list = []          # (due of the pipe's head frame, id, pipe)
    while not stop and time.time() < until:
        now = time.monotonic()
        while timers and timers[0][0] <= now:
            _, _, pipe = heapq.heappop(timers)
            pipe.flush(now)
            if pipe.queue:
                heapq.heappush(timers, (pipe.queue[0][0], id(pipe), pipe))
        timeout = min(0.2, max(0.0, timers[0][0] - now)) if timers else 0.2
        for key, _ in sel.select(timeout):
            _read(key.data, timers, time.monotonic())


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="Lab link emulator (runs in the switch namespace).")
    ap.add_argument("--config", required=True, help="JSON file: seed and links")
    ap.add_argument("--until", type=float, required=True, help="epoch seconds to stop at")
    args = ap.parse_args(argv)
    with open(args.config) as f:
        pipes = build(json.load(f))
    print("linkemu ready", flush=True)
    try:
        serve(pipes, min(args.until, time.time() + 3600))
    finally:
        print(json.dumps({p.name: p.report() for p in pipes}), flush=True)


if __name__ == "__main__":
    sys.exit(main())
